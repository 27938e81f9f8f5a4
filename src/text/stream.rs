//! Sentences of text that arrives over time, each handed on as soon as it is complete.
//!
//! A speech session gets its text in pieces (an LLM's tokens, a client's chunks), cut
//! anywhere: inside a word, between a mark and its closing quote, inside a whitespace run.
//! [`SentenceStream`] buffers it and returns the engine pieces of every sentence the moment
//! its end is certain, so speech can start while the rest is still being written.
//!
//! The pieces are exactly those the server makes of the same text given whole, and
//! [`pieces`] makes those with this same code: the boundaries are found by the parent
//! module's scan (`Cuts`, resumed where it stopped), and each sentence is cut by
//! [`split_units`], filtered by [`is_speakable`] and flattened by
//! [`spoken_line`] (which also writes numbers and abbreviations out, with
//! [`Rules::English`]). Whole text is first split into user-visible chunks
//! ([`split_chunks`](super::split_chunks)), and the stream makes the same chunks too: a
//! chunk cut can fall inside the whitespace after a sentence (moving a space into the next
//! sentence, which can tip it over the hard limit) or inside a sentence longer than a
//! chunk, so leaving chunks out would change some pieces.
//!
//! A sentence is complete once the first char after the whitespace that follows its end
//! mark (and closing quotes) has arrived: until then the whitespace run, and so the
//! boundary and where the next sentence starts, may go on. CJK marks need no whitespace,
//! so the next char alone decides them; a paragraph break is decided by the char after it.
//!
//! Work stays linear in the text: each scan resumes at the first step that more text could
//! change instead of at the start, a push in which no sentence can end is not scanned at
//! all (so a long run of dots or spaces is not rescanned char by char), and each chunk is
//! cut once, when the char past its window arrives. Only the current chunk is kept, so the
//! buffer holds at most about one chunk (`PIPER_CHUNK_SIZE` chars) plus the last push.

use std::ops::Range;

use super::normalize::{spoken_line, Rules};
use super::spans::SpanMap;
use super::{
    char_count, greedy_cut, is_speakable, split_units, unit_cut_possible, Cuts, CHUNK_LEVELS,
    UNIT_LEVELS,
};
use crate::config::Config;

/// The limits text is cut by, the same for whole and streamed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceLimits {
    /// Longest piece handed to the engine, in chars ([`Config::unit_max_chars`]):
    /// the hard limit, beyond which a sentence is cut.
    pub max_chars: usize,
    /// Size of the user-visible chunks whole text is split into first
    /// ([`Config::chunk_size`]); kept so that streamed pieces are those of whole text.
    pub chunk_chars: usize,
}

impl PieceLimits {
    /// The limits the server cuts text by.
    pub fn from_config(config: &Config) -> Self {
        PieceLimits {
            max_chars: config.unit_max_chars,
            chunk_chars: config.chunk_size,
        }
    }
}

/// A piece of text ready for the engine: one sentence or part of a long one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// What goes to the engine: the spoken line of the slice (its
    /// [`engine_line`](super::engine_line) when no rules apply).
    pub line: String,
    /// Byte offsets of the piece in the whole input (everything pushed so far,
    /// concatenated), without its surrounding whitespace.
    pub span: Range<usize>,
    /// Where each part of `line` came from in the whole input.
    pub map: SpanMap,
}

/// Splits text pushed in any number of parts into engine pieces, sentence by sentence.
///
/// ```
/// use piperd::text::{PieceLimits, SentenceStream};
///
/// let limits = PieceLimits { max_chars: 700, chunk_chars: 5000 };
/// let mut stream = SentenceStream::new(limits);
/// assert!(stream.push("Hello there. ").is_empty()); // the next sentence may not start yet
/// let pieces = stream.push("General");
/// assert_eq!(pieces[0].line, "Hello there.");
/// assert_eq!(pieces[0].span, 0..12);
/// assert_eq!(stream.finish()[0].line, "General");
/// ```
///
/// The buffer holds the current chunk from its start, since its end is decided by the
/// chunk's whole window; what was emitted of it is only kept until the chunk is cut.
pub struct SentenceStream {
    limits: PieceLimits,
    /// How each piece is read ([`Rules::Off`]: as written).
    rules: Rules,
    /// Text from at most the start of the current chunk on.
    buf: String,
    /// Offset of `buf[0]` in the whole input.
    base: usize,
    /// Offset in `buf` where the current chunk starts.
    chunk: usize,
    /// Offset in `buf` of the first byte not emitted yet: the chunk start or a sentence
    /// boundary after it.
    emitted: usize,
    /// Chars in the current chunk so far, to tell without counting when it is full.
    chunk_chars: usize,
    /// Per kind of [`UNIT_LEVELS`], where its scan of the chunk goes on: the start of the
    /// first step that more text could change. Offsets in the chunk.
    scans: [usize; UNIT_LEVELS.len()],
    /// Boundaries found by the last scans (offsets in the chunk); kept to reuse its memory.
    cuts: Vec<usize>,
    /// Chars pushed in all.
    chars: usize,
    finished: bool,
}

impl SentenceStream {
    pub fn new(limits: PieceLimits) -> Self {
        Self::with_rules(limits, Rules::Off)
    }

    /// A stream whose pieces are read with `rules` (numbers, abbreviations…
    /// written out), each once its sentence is complete.
    pub fn with_rules(limits: PieceLimits, rules: Rules) -> Self {
        SentenceStream {
            limits,
            rules,
            buf: String::new(),
            base: 0,
            chunk: 0,
            emitted: 0,
            chunk_chars: 0,
            scans: [0; UNIT_LEVELS.len()],
            cuts: Vec::new(),
            chars: 0,
            finished: false,
        }
    }

    /// Appends text; returns the pieces of every sentence that is now complete.
    ///
    /// Pushing after [`finish`](Self::finish) is a bug: the text is ignored (and a debug
    /// assertion fails), since the input it would continue has been declared complete.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        debug_assert!(!self.finished, "SentenceStream::push after finish");
        let mut out = Vec::new();
        if self.finished || text.is_empty() {
            return out;
        }
        let chars = char_count(text);
        let before = self.buf[self.chunk..].chars().next_back();
        self.buf.push_str(text);
        self.chars += chars;
        self.chunk_chars += chars;
        // A new chunk is scanned afresh; otherwise only text where a sentence may end is
        // worth scanning (the scan goes on where it stopped either way).
        let new_chunk = self.cut_full_chunks(&mut out);
        let afters = text.chars().skip(usize::from(before.is_none()));
        let may_end = (before.into_iter().chain(text.chars()).zip(afters))
            .any(|(before, after)| unit_cut_possible(before, after));
        if new_chunk || may_end {
            self.emit_complete_sentences(&mut out);
        }
        self.drop_before_chunk();
        out
    }

    /// Whatever is buffered is taken as complete (an explicit flush from the client): the
    /// text so far is cut as if it ended here, and what comes next starts afresh, as a
    /// text of its own (its spans still count from the start of the whole input).
    pub fn flush(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        // Pushes cut every chunk over the limit, so this is the last chunk of the text.
        self.emit(self.emitted..self.buf.len(), &mut out);
        self.start_chunk(self.buf.len(), 0);
        self.drop_before_chunk();
        out
    }

    /// End of input: the same as [`flush`](Self::flush), and later pushes are ignored.
    pub fn finish(&mut self) -> Vec<Piece> {
        let out = self.flush();
        self.finished = true;
        out
    }

    /// Characters received so far (for the callers' limit on the length of a text).
    pub fn chars(&self) -> usize {
        self.chars
    }

    /// Bytes buffered and not yet emitted.
    pub fn pending(&self) -> &str {
        &self.buf[self.emitted..]
    }

    /// Cuts the current chunk, while it is over the limit, where whole text would be cut:
    /// that cut is decided as soon as the char past the chunk's window has arrived
    /// ([`greedy_cut`]). The sentences before the cut are emitted with it. Returns whether
    /// a chunk was cut.
    fn cut_full_chunks(&mut self, out: &mut Vec<Piece>) -> bool {
        let mut cut = false;
        while self.chunk_chars > self.limits.chunk_chars {
            let chunk = &self.buf[self.chunk..];
            let Some(len) = greedy_cut(chunk, self.limits.chunk_chars, CHUNK_LEVELS) else {
                break;
            };
            let chunk_chars = self.chunk_chars - char_count(&chunk[..len]);
            let end = self.chunk + len;
            // The end may come before sentences already emitted (a paragraph break is
            // preferred to later sentence ends): they are the next chunk's, and the same.
            if end > self.emitted {
                self.emit(self.emitted..end, out);
            }
            self.start_chunk(end, chunk_chars);
            cut = true;
        }
        cut
    }

    /// Emits every sentence of the current chunk whose end no later text can change.
    fn emit_complete_sentences(&mut self, out: &mut Vec<Piece>) {
        let chunk = &self.buf[self.chunk..];
        self.cuts.clear();
        for (pos, &kind) in self.scans.iter_mut().zip(UNIT_LEVELS) {
            // With the limit at the end of the text so far, a step that resumes before it
            // read nothing that is still to come (see `Cuts::step`); one that reaches it is
            // left to redo once more text has arrived.
            let scan = Cuts::new(chunk, kind, chunk.len());
            while let Some((resume, cut)) = scan.step(*pos).filter(|&(r, _)| r < chunk.len()) {
                *pos = resume;
                self.cuts.extend(cut);
            }
        }
        // Both kinds: the same sentence end can be found by each.
        self.cuts.sort_unstable();
        self.cuts.dedup();
        for i in 0..self.cuts.len() {
            let end = self.chunk + self.cuts[i];
            self.emit(self.emitted..end, out);
        }
    }

    /// Emits the pieces of `range` of the buffer, which starts at the chunk start or a
    /// sentence boundary and ends at a sentence boundary or the chunk end: the cuts inside
    /// it are the chunk's, as in [`split_units`] of the whole chunk.
    fn emit(&mut self, range: Range<usize>, out: &mut Vec<Piece>) {
        let mut at = self.base + range.start;
        let text = &self.buf[range.clone()];
        for piece in split_units(text, self.limits.max_chars) {
            let start = at + piece.len() - piece.trim_start().len();
            let origin = at;
            at += piece.len();
            if is_speakable(piece) {
                let (line, map) = spoken_line(piece, origin, self.rules);
                out.push(Piece {
                    line,
                    span: start..start + piece.trim().len(),
                    map,
                });
            }
        }
        self.emitted = range.end;
    }

    /// Makes `start` (a buffer offset, `chars` chars before the end) the start of the
    /// current chunk, and rescans it from what is left to emit: the emitted part ends at a
    /// boundary, after which a fresh scan finds what the old one would, while a new chunk
    /// may start anywhere (inside whitespace, or a word cut hard) and changes what follows.
    fn start_chunk(&mut self, start: usize, chars: usize) {
        self.emitted = self.emitted.max(start);
        self.chunk = start;
        self.chunk_chars = chars;
        self.scans = [self.emitted - start; UNIT_LEVELS.len()];
    }

    /// Forgets the text before the current chunk, all of it emitted.
    fn drop_before_chunk(&mut self) {
        if self.chunk > 0 {
            self.buf.drain(..self.chunk);
            self.base += self.chunk;
            self.emitted -= self.chunk;
            self.chunk = 0;
        }
    }
}

/// The pieces of a whole text at once: [`SentenceStream::new`], one push, and finish,
/// so that whole and streamed text go through the same code.
pub fn pieces(text: &str, limits: PieceLimits) -> Vec<Piece> {
    pieces_with(text, limits, Rules::Off)
}

/// [`pieces`], each read with `rules`.
pub fn pieces_with(text: &str, limits: PieceLimits, rules: Rules) -> Vec<Piece> {
    let mut stream = SentenceStream::with_rules(limits, rules);
    let mut out = stream.push(text);
    out.extend(stream.finish());
    out
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::super::tests::{random_text, Lcg};
    use super::super::{engine_line, split_chunks, split_units};
    use super::*;

    /// The server's defaults.
    const DEFAULT: PieceLimits = PieceLimits {
        max_chars: 150,
        chunk_chars: 5000,
    };

    /// Limits small enough for short texts to make many chunks and clause cuts.
    const SMALL: PieceLimits = PieceLimits {
        max_chars: 40,
        chunk_chars: 64,
    };

    /// One engine at a time: no clause cuts, and tiny chunks.
    const NO_CLAUSES: PieceLimits = PieceLimits {
        max_chars: 12,
        chunk_chars: 30,
    };

    const TINY: PieceLimits = PieceLimits {
        max_chars: 7,
        chunk_chars: 12,
    };

    const ALL_LIMITS: [PieceLimits; 4] = [DEFAULT, SMALL, NO_CLAUSES, TINY];

    /// What `http::handlers::prepare_text` does with whole text, with the span of each
    /// piece found from where its slice lies in `text`.
    fn old_pipeline(text: &str, limits: PieceLimits) -> Vec<Piece> {
        let mut out = Vec::new();
        for chunk in split_chunks(text, limits.chunk_chars) {
            for piece in split_units(chunk, limits.max_chars) {
                if is_speakable(piece) {
                    let trimmed = piece.trim();
                    let start = trimmed.as_ptr() as usize - text.as_ptr() as usize;
                    let origin = piece.as_ptr() as usize - text.as_ptr() as usize;
                    out.push(Piece {
                        line: engine_line(piece),
                        span: start..start + trimmed.len(),
                        map: spoken_line(piece, origin, Rules::Off).1,
                    });
                }
            }
        }
        out
    }

    /// The pieces of `parts` pushed one after the other, then finished; checks after each
    /// push that no complete sentence was held back.
    fn streamed<'a>(parts: impl IntoIterator<Item = &'a str>, limits: PieceLimits) -> Vec<Piece> {
        let mut stream = SentenceStream::new(limits);
        let mut out = Vec::new();
        for part in parts {
            out.extend(stream.push(part));
            let pending = stream.pending();
            let len = pending.len();
            let held = UNIT_LEVELS
                .iter()
                .flat_map(|&kind| Cuts::new(pending, kind, len))
                .find(|&cut| cut < len);
            assert_eq!(held, None, "a complete sentence is pending: {pending:?}");
        }
        out.extend(stream.finish());
        assert_eq!(stream.pending(), "");
        out
    }

    fn one_char_at_a_time(text: &str) -> impl Iterator<Item = &str> {
        text.char_indices()
            .map(move |(i, c)| &text[i..i + c.len_utf8()])
    }

    /// `text` cut into parts of 0 to `longest` chars, at random.
    fn random_parts<'a>(text: &'a str, rng: &mut Lcg, longest: usize) -> Vec<&'a str> {
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let mut parts = Vec::new();
        let mut at = 0;
        while at + 1 < bounds.len() {
            let next = (at + rng.below(longest + 1)).min(bounds.len() - 1);
            parts.push(&text[bounds[at]..bounds[next]]);
            at = next;
        }
        parts
    }

    fn lines(pieces: &[Piece]) -> Vec<&str> {
        pieces.iter().map(|piece| piece.line.as_str()).collect()
    }

    /// About `chars` chars of words in one sentence, with a comma every `comma_every` words
    /// (none if 0), and a full stop.
    fn sentence(chars: usize, comma_every: usize) -> String {
        const WORDS: &[&str] = &["river", "the", "lantern", "of", "quiet", "élan", "stone"];
        let mut text = String::from("Once");
        for i in 0.. {
            if char_count(&text) >= chars {
                break;
            }
            if comma_every > 0 && i % comma_every == comma_every - 1 {
                text.push(',');
            }
            text.push(' ');
            text.push_str(WORDS[i % WORDS.len()]);
        }
        text.push('.');
        text
    }

    /// Texts of every kind the splitter distinguishes, short enough to be cut everywhere.
    fn short_texts() -> Vec<String> {
        let mut texts: Vec<String> = [
            "",
            "   ",
            "x",
            "Hello there. General Kenobi!",
            "He said, \"Stop!\" Then she left. 'Why?' he asked. (Nobody knew.) Fine.",
            "Dr. Smith met Mr. Jones at 3.5 p.m. on St. Patrick's day. It rained.",
            "Pi is 3.14159 and e is 2.718. Version 1.2.3 shipped.",
            "Wait... what? Really?! No… yes. Well.... ok",
            "First paragraph without a mark\n\nSecond one.\r\n\r\nThird!\n\n\n\nFourth",
            "今日は晴れです。明日は雨でしょう！「本当？」と聞いた。そうです",
            "  \n\t Leading and trailing whitespace.   \n\n  ",
            "... !!! ??? — …",
            "\t\tTabs\tand\u{0}control\u{7}chars.\n Next\u{85}line. end",
            "Closers split \"like this.\" and 'that!' (or this?) [and this.] End.\"",
            "Emoji 😀 and café. Straße! Дом? 日本語。ok",
        ]
        .map(String::from)
        .to_vec();
        texts.push(sentence(400, 4));
        texts.push(sentence(2000, 0).replace('.', ""));
        texts
    }

    /// Short sentences up to char 4999, a full stop there and a space at 5000: the chunk
    /// cut falls before the space, which goes to the next sentence. That one is 99 chars
    /// and its space, so it is cut at its comma only with the extra leading space.
    fn space_after_the_chunk_window() -> String {
        let mut text = String::new();
        while char_count(&text) < 4900 {
            text.push_str("The lantern was lit. ");
        }
        let pad = 4999 - char_count(&text);
        text.push_str(&"a".repeat(pad));
        text.push('.');
        assert_eq!(char_count(&text), 5000);
        let next = "When the rain stopped at last, the children ran out into the wet field behind the older stone barn.";
        assert_eq!(char_count(next), 99);
        text.push(' ');
        text.push_str(next);
        text.push_str(" Done.");
        text
    }

    /// Texts longer than the default chunk: cut at chunk ends of every kind.
    fn long_texts() -> Vec<String> {
        let prose = short_texts()[3..15].join(" ");
        vec![
            prose.repeat(1 + 12_000 / prose.len()),
            space_after_the_chunk_window(),
            // One sentence of 6,000 chars, with and without commas.
            sentence(6000, 5),
            sentence(6000, 0),
            // No whitespace at all: chunks and pieces are cut hard.
            "abc.\"def".repeat(1500),
            "x".repeat(5003) + ". Next.",
            random_text(3, 3000),
        ]
    }

    #[test]
    fn streamed_pieces_match_whole_text_cut_at_every_position() {
        for limits in ALL_LIMITS {
            for text in short_texts() {
                let whole = pieces(&text, limits);
                for (i, _) in text.char_indices().skip(1) {
                    let halves = [&text[..i], &text[i..]];
                    assert_eq!(streamed(halves, limits), whole, "{limits:?} {halves:?}");
                }
            }
        }
        // Long texts take too long to cut at every position: every 101st char, and all
        // around the default chunk window (char 5000).
        for text in long_texts() {
            let whole = pieces(&text, DEFAULT);
            for (n, (i, _)) in text.char_indices().enumerate() {
                if n % 101 == 0 || n.abs_diff(5000) < 12 {
                    let halves = [&text[..i], &text[i..]];
                    assert_eq!(streamed(halves, DEFAULT), whole, "cut at char {n}");
                }
            }
        }
    }

    #[test]
    fn streamed_pieces_match_whole_text_one_char_at_a_time() {
        for text in short_texts().into_iter().chain(long_texts()) {
            for limits in ALL_LIMITS {
                let whole = pieces(&text, limits);
                assert_eq!(
                    streamed(one_char_at_a_time(&text), limits),
                    whole,
                    "{limits:?} {text:?}"
                );
            }
        }
    }

    #[test]
    fn streamed_pieces_match_whole_text_cut_at_random() {
        let mut rng = Lcg(99);
        let random = (0..40u64).map(|seed| random_text(seed, 300));
        for text in short_texts().into_iter().chain(random) {
            for limits in ALL_LIMITS {
                let whole = pieces(&text, limits);
                for longest in [1, 2, 5, 30, 500] {
                    let parts = random_parts(&text, &mut rng, longest);
                    assert_eq!(streamed(parts.iter().copied(), limits), whole, "{parts:?}");
                }
            }
        }
    }

    #[test]
    fn whole_text_pieces_match_the_old_pipeline() {
        let random = (0..40u64).map(|seed| random_text(seed, 300));
        let texts: Vec<String> = short_texts()
            .into_iter()
            .chain(long_texts())
            .chain(random)
            .collect();
        for text in &texts {
            for limits in ALL_LIMITS {
                // Lines and spans: the old spans come from where its slices lie.
                assert_eq!(
                    pieces(text, limits),
                    old_pipeline(text, limits),
                    "{limits:?} {text:?}"
                );
            }
        }
    }

    #[test]
    fn chunk_cuts_change_some_pieces_so_the_stream_makes_them_too() {
        // Splitting whole text into sentences without the user-visible chunks first gives
        // other pieces for these: the chunks matter, and the stream keeps them.
        let unchunked = |text: &str| -> Vec<String> {
            split_units(text, DEFAULT.max_chars)
                .into_iter()
                .filter(|piece| is_speakable(piece))
                .map(engine_line)
                .collect()
        };
        {
            let text = sentence(6000, 5);
            let old = old_pipeline(&text, DEFAULT);
            let old_lines: Vec<String> = old.iter().map(|piece| piece.line.clone()).collect();
            assert_ne!(unchunked(&text), old_lines);
            assert_eq!(pieces(&text, DEFAULT), old);
            assert_eq!(streamed(one_char_at_a_time(&text), DEFAULT), old);
        }
        // The sentence after the space stays whole: no clause cuts under the
        // hard limit, wherever the chunk cut falls.
        let text = space_after_the_chunk_window();
        let lines: Vec<String> = pieces(&text, DEFAULT).into_iter().map(|p| p.line).collect();
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "When the rain stopped at last, the children ran out into the wet field behind the older stone barn.",
                "Done."
            ]
        );
        assert_eq!(
            streamed(one_char_at_a_time(&text), DEFAULT),
            pieces(&text, DEFAULT)
        );
    }

    #[test]
    fn a_sentence_is_emitted_once_the_next_one_starts() {
        let mut stream = SentenceStream::new(DEFAULT);
        assert_eq!(stream.push("Hello there."), []);
        assert_eq!(stream.push(" "), []);
        assert_eq!(stream.pending(), "Hello there. ");
        let first = stream.push("Gen");
        assert_eq!(lines(&first), ["Hello there."]);
        assert_eq!(stream.pending(), "Gen");
        assert_eq!(lines(&stream.push("eral Kenobi!")), [""; 0]);
        assert_eq!(lines(&stream.flush()), ["General Kenobi!"]);
        assert_eq!(stream.pending(), "");

        let mut stream = SentenceStream::new(DEFAULT);
        assert_eq!(lines(&stream.push("Hello there. Gen")), ["Hello there."]);
        assert_eq!(lines(&stream.finish()), ["Gen"]);

        let mut stream = SentenceStream::new(DEFAULT);
        assert_eq!(stream.push("Hello there. "), []);
        assert_eq!(lines(&stream.finish()), ["Hello there."]);
    }

    #[test]
    fn a_boundary_waits_for_the_char_that_decides_it() {
        // Each case: pushes that must not emit yet, then the one that must.
        let cases: &[(&[&str], &str, &str)] = &[
            // A full stop, then a digit: a decimal point, no boundary.
            (&["Pi is 3.", "1", "4 or so. "], "Next", "Pi is 3.14 or so."),
            // The closing quote arrives after the mark.
            (&["He said \"Stop!", "\"", " "], "Then", "He said \"Stop!\""),
            // A run of marks, one at a time.
            (&["Wait.", ".", "."], " what", "Wait..."),
            // A paragraph break split between \r and \n.
            (&["Heading\r", "\n\r", "\n"], "Body", "Heading"),
            // CJK needs no space: the next char decides.
            (&["今日は晴れです。"], "明", "今日は晴れです。"),
            (&["「はい。"], "」と", "「はい。」"),
        ];
        for &(before, push, line) in cases {
            let mut stream = SentenceStream::new(DEFAULT);
            for part in before {
                assert_eq!(stream.push(part), [], "{before:?}");
            }
            assert_eq!(lines(&stream.push(push)), [line], "{before:?} {push:?}");
        }
    }

    #[test]
    fn spans_point_at_the_original_text() {
        let text = "  Hello there.  \n\n \"General Kenobi!\"\tYou are… bold.  ";
        let got = streamed(one_char_at_a_time(text), DEFAULT);
        let spans: Vec<&str> = got.iter().map(|piece| &text[piece.span.clone()]).collect();
        assert_eq!(
            spans,
            ["Hello there.", "\"General Kenobi!\"", "You are…", "bold."]
        );
        // Control chars are flattened in the line but kept in the span.
        let text = "One\u{0}two.\r\n\r\nthree\nfour";
        let got = pieces(text, DEFAULT);
        let spans: Vec<&str> = got.iter().map(|piece| &text[piece.span.clone()]).collect();
        assert_eq!(spans, ["One\u{0}two.", "three\nfour"]);
        assert_eq!(lines(&got), ["One two.", "three four"]);

        for text in short_texts().into_iter().chain(long_texts()) {
            for piece in pieces(&text, SMALL) {
                let slice = &text[piece.span.clone()];
                assert_eq!(slice, slice.trim(), "{piece:?}");
                assert_eq!(engine_line(slice), piece.line, "{piece:?}");
                // Every word of the line maps back to the same word in the text.
                for word in piece.line.split(' ') {
                    let at = word.as_ptr() as usize - piece.line.as_ptr() as usize;
                    let back = piece.map.original(at..at + word.len()).unwrap();
                    assert_eq!(&text[back], word, "{piece:?}");
                }
            }
        }
    }

    #[test]
    fn flush_ends_a_text_and_the_next_starts_afresh() {
        let texts = short_texts();
        let mut rng = Lcg(5);
        for _ in 0..200 {
            let a = &texts[rng.below(texts.len())];
            let b = &texts[rng.below(texts.len())];
            // Lines and spans (the maps are checked by the other tests).
            let plain = |pieces: Vec<Piece>| -> Vec<(String, Range<usize>)> {
                pieces.into_iter().map(|p| (p.line, p.span)).collect()
            };
            let mut expected = plain(pieces(a, SMALL));
            expected.extend(
                plain(pieces(b, SMALL))
                    .into_iter()
                    .map(|(line, span)| (line, span.start + a.len()..span.end + a.len())),
            );
            let mut stream = SentenceStream::new(SMALL);
            let mut got = Vec::new();
            for part in random_parts(a, &mut rng, 9) {
                got.extend(stream.push(part));
            }
            got.extend(stream.flush());
            assert_eq!(stream.pending(), "");
            for part in random_parts(b, &mut rng, 9) {
                got.extend(stream.push(part));
            }
            got.extend(stream.finish());
            assert_eq!(plain(got), expected, "{a:?} {b:?}");
        }
    }

    #[test]
    fn normalized_pieces_are_the_same_whole_or_streamed() {
        let text = "Dr. Smith paid $5.3 billion on Jan. 5, 2025 at 2:30 PM. Call 555-1234 \
                    now! The 1990s were, e.g., fine. St. Louis is 250 km away.";
        let whole = pieces_with(text, DEFAULT, Rules::English);
        assert_eq!(
            lines(&whole),
            [
                "Doctor Smith paid five point three billion dollars on January fifth, \
                 twenty twenty five at two thirty PM.",
                "Call five five five, one two three four now!",
                "The nineteen nineties were, for example, fine.",
                "Saint Louis is two hundred fifty kilometers away."
            ]
        );
        for limits in ALL_LIMITS {
            let whole = pieces_with(text, limits, Rules::English);
            let mut rng = Lcg(11);
            for parts in [
                one_char_at_a_time(text).collect::<Vec<_>>(),
                random_parts(text, &mut rng, 7),
            ] {
                let mut stream = SentenceStream::with_rules(limits, Rules::English);
                let mut got = Vec::new();
                for part in parts {
                    got.extend(stream.push(part));
                }
                got.extend(stream.finish());
                assert_eq!(got, whole, "{limits:?}");
            }
        }
    }

    #[test]
    fn a_sentence_longer_than_a_chunk_is_emitted_as_its_chunks_fill() {
        let text = sentence(12_000, 0);
        let mut stream = SentenceStream::new(DEFAULT);
        let mut emitted_at = Vec::new();
        for (n, part) in one_char_at_a_time(&text).enumerate() {
            if !stream.push(part).is_empty() {
                emitted_at.push(n);
            }
            assert!(char_count(stream.pending()) <= DEFAULT.chunk_chars + 1);
        }
        // Char 5000 decides the first chunk, char 5000 after its end the second.
        assert_eq!(emitted_at.len(), 2, "{emitted_at:?}");
        assert_eq!(emitted_at[0], 5000);
    }

    #[test]
    fn hundred_thousand_chars_one_at_a_time() {
        let mut text = random_text(7, 30_000);
        let cut = text.char_indices().nth(100_000).unwrap().0;
        text.truncate(cut);
        let mut stream = SentenceStream::new(DEFAULT);
        let mut got = Vec::new();
        for part in one_char_at_a_time(&text) {
            got.extend(stream.push(part));
        }
        got.extend(stream.finish());
        assert_eq!(stream.chars(), 100_000);
        assert!(got.len() > 1000, "{} pieces", got.len());
        assert_eq!(got, old_pipeline(&text, DEFAULT));
    }

    #[test]
    fn chars_counts_chars_pushed() {
        let mut stream = SentenceStream::new(DEFAULT);
        stream.push("日本");
        stream.push("😀é. x");
        assert_eq!(stream.chars(), 7);
        stream.flush();
        stream.push("ab");
        assert_eq!(stream.chars(), 9);
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "push after finish"))]
    fn push_after_finish_is_ignored() {
        let mut stream = SentenceStream::new(DEFAULT);
        assert_eq!(lines(&stream.push("One. Two")), ["One."]);
        assert_eq!(lines(&stream.finish()), ["Two"]);
        assert_eq!(stream.push("Three. Four"), []);
        assert_eq!(stream.finish(), []);
        assert_eq!(stream.chars(), 8);
    }

    #[test]
    fn limits_come_from_the_config() {
        let config = Config::from_vars(&Default::default()).unwrap();
        let limits = PieceLimits::from_config(&config);
        assert_eq!(limits.max_chars, config.unit_max_chars);
        assert_eq!(limits.chunk_chars, config.chunk_size);
    }
}
