//! Splitting input text before it reaches the speech engine.
//!
//! Text is split at two levels. [`split_chunks`] makes the user-visible chunks: their size
//! (`PIPER_CHUNK_SIZE`, 5000 characters by default) bounds how much
//! text and audio one step holds in memory. [`split_units`] makes the pieces actually written
//! to the engine, one sentence each: the first audio is ready after one sentence instead of a
//! whole chunk, and the server can interleave concurrent requests sentence by sentence.
//!
//! Both return slices whose concatenation is exactly the input, so nothing is lost or
//! reordered. Limits count `char`s, not bytes, and no cut falls inside a UTF-8 character.
//!
//! [`stream`] makes the same engine pieces of text that arrives over time, sentence by
//! sentence as each is complete; [`pieces`] runs whole text through it. [`ssml`] reads an
//! SSML document into those same pieces, each with its rate and breaks.

pub mod normalize;
pub mod spans;
pub mod ssml;
pub mod stream;

pub use stream::{pieces, Piece, PieceLimits, SentenceStream};

/// Places where text may be cut, from the most to the least natural.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boundary {
    /// A whitespace run containing a blank line (two or more newlines).
    Paragraph,
    /// Sentence-ending punctuation followed by whitespace (CJK marks need none).
    Sentence,
    /// Clause punctuation followed by whitespace (CJK marks need none).
    Clause,
    /// Any whitespace run.
    Whitespace,
}

/// Levels tried for user-visible chunks; a hard cut is the last resort.
const CHUNK_LEVELS: &[Boundary] = &[
    Boundary::Paragraph,
    Boundary::Sentence,
    Boundary::Whitespace,
];

/// Boundaries that end an engine unit whatever its length: a unit is one sentence.
const UNIT_LEVELS: &[Boundary] = &[Boundary::Paragraph, Boundary::Sentence];

/// Levels tried inside a sentence too long to be one unit.
const LONG_SENTENCE_LEVELS: &[Boundary] = &[Boundary::Clause, Boundary::Whitespace];

fn is_sentence_mark(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

/// CJK text has no spaces between sentences, so these end one even when text follows directly.
fn is_cjk_sentence_mark(c: char) -> bool {
    matches!(c, '。' | '！' | '？')
}

fn is_clause_mark(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | '—' | '–' | '、' | '，' | '；')
}

fn is_cjk_clause_mark(c: char) -> bool {
    matches!(c, '、' | '，' | '；')
}

/// Closing quotes and brackets that belong to the sentence or clause they follow.
fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '”' | '’' | ')' | ']' | '}' | '»' | '」' | '』' | '）'
    )
}

/// Titles and words that are followed by a name or a number, never by the
/// end of a sentence.
const TITLES: &[&str] = &[
    "dr", "mr", "mrs", "ms", "prof", "st", "mt", "capt", "lt", "sgt", "gov", "sen", "gen", "col",
    "rev", "hon", "e.g", "i.e", "vs", "cf", "v",
];

/// Abbreviations that may end a sentence, but do not when a lowercase word or
/// a number follows them.
const ABBREVIATIONS: &[&str] = &[
    "etc", "approx", "no", "fig", "inc", "ltd", "co", "corp", "jr", "sr", "jan", "feb", "mar",
    "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "ave", "blvd", "rd", "dept",
    "est", "vol", "ch", "p", "pp", "ed", "al",
];

/// Whether the dot after `before` (the text up to it) is an abbreviation's
/// and not a sentence end, given the first char of what follows it.
fn abbreviation_before(before: &str, next: char) -> bool {
    let word_start = before
        .char_indices()
        .rev()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '.'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let word = &before[word_start..];
    if word.is_empty() || word.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let lower = word.to_lowercase();
    let single_letter = word.chars().count() == 1;
    if TITLES.contains(&lower.as_str()) {
        return true;
    }
    if next.is_lowercase() || next.is_ascii_digit() {
        // e.g "U.S. and", "etc. and", "No. 5", "p.m. today", "a. b"
        return word.contains('.') || single_letter || ABBREVIATIONS.contains(&lower.as_str());
    }
    // An initial: "J. R. R. Tolkien".
    single_letter && word.chars().all(char::is_uppercase)
}

/// Whether a paragraph or sentence cut may fall between `before` and `after`: each one
/// does (a test checks it), after whitespace and before anything else, or (CJK) after a
/// mark or closer and before a char that is none of these nor whitespace.
///
/// [`stream`] skips scanning appended text that has no such pair, since no sentence can end
/// in it: a long run of marks or whitespace pushed char by char is then not scanned again
/// on each push.
fn unit_cut_possible(before: char, after: char) -> bool {
    let ends_run = |c: char| is_sentence_mark(c) || is_closer(c);
    !after.is_whitespace() && (before.is_whitespace() || ends_run(before) && !ends_run(after))
}

fn char_at(text: &str, pos: usize) -> Option<char> {
    text[pos..].chars().next()
}

/// End of the run of chars matching `pred` starting at `pos`, never past `limit`.
fn skip_run(text: &str, pos: usize, limit: usize, mut pred: impl FnMut(char) -> bool) -> usize {
    text[pos..limit]
        .char_indices()
        .find(|&(_, c)| !pred(c))
        .map_or(limit, |(i, _)| pos + i)
}

/// Ascending cut positions (byte offsets just after a boundary) of one kind.
///
/// Only boundaries starting before `limit` are found and no cut goes past it, so finding
/// the last cut in a window costs time proportional to the window, not to the whole text.
/// One char beyond `limit` is looked at to tell whether punctuation is followed by a space.
struct Cuts<'a> {
    text: &'a str,
    pos: usize,
    limit: usize,
    kind: Boundary,
}

impl<'a> Cuts<'a> {
    fn new(text: &'a str, kind: Boundary, limit: usize) -> Self {
        Cuts {
            text,
            pos: 0,
            limit,
            kind,
        }
    }

    /// A whitespace run at `start`: its end, and whether it is a boundary of this kind.
    /// A run at offset 0 is never one, so no piece is made of whitespace only.
    fn whitespace(&self, start: usize) -> (usize, bool) {
        let mut newlines = 0;
        let end = skip_run(self.text, start, self.limit, |c| {
            newlines += usize::from(c == '\n');
            c.is_whitespace()
        });
        let hit = start > 0 && (self.kind == Boundary::Whitespace || newlines >= 2);
        (end, hit)
    }

    /// A run of marks at `start`: where to resume scanning, and the cut if it is a boundary.
    fn punctuation(
        &self,
        start: usize,
        is_mark: fn(char) -> bool,
        is_cjk: fn(char) -> bool,
    ) -> (usize, Option<usize>) {
        let (text, limit) = (self.text, self.limit);
        let mut cjk = false;
        let marks_end = skip_run(text, start, limit, |c| {
            cjk |= is_cjk(c);
            is_mark(c)
        });
        let end = skip_run(text, marks_end, limit, is_closer);
        match char_at(text, end) {
            None => (end, Some(end)),
            Some(c) if c.is_whitespace() => {
                let ws_end = skip_run(text, end, limit, char::is_whitespace);
                // "Dr. Smith", "e.g. apples", "No. 5": the char after the
                // whitespace (the resume position, so read by this step)
                // tells an abbreviation's dot from a sentence end.
                let abbreviation = self.kind == Boundary::Sentence
                    && end == start + 1
                    && char_at(text, ws_end)
                        .is_some_and(|next| abbreviation_before(&text[..start], next));
                (ws_end, (!abbreviation).then_some(ws_end))
            }
            // The run goes on past the limit (or a new one starts): not a boundary here.
            Some(c) if is_mark(c) || is_closer(c) => (end, None),
            Some(_) if cjk => (end, Some(end)),
            Some(_) => (end, None),
        }
    }

    /// One step of the scan, from `start` (below the limit): where the next step starts, and
    /// the cut this step found (always where the next step starts).
    ///
    /// A step reads text up to and including the char at its resume position, never past
    /// it, so with the limit at the end of the text, one that resumes before the end has the
    /// same outcome whatever is appended later: that is what lets [`stream`] find the
    /// boundaries of text arriving over time with this same definition, resuming where it
    /// stopped.
    fn step(&self, start: usize) -> Option<(usize, Option<usize>)> {
        let c = char_at(self.text, start)?;
        Some(match self.kind {
            Boundary::Paragraph | Boundary::Whitespace if c.is_whitespace() => {
                let (end, hit) = self.whitespace(start);
                (end, hit.then_some(end))
            }
            Boundary::Sentence if is_sentence_mark(c) => {
                self.punctuation(start, is_sentence_mark, is_cjk_sentence_mark)
            }
            Boundary::Clause if is_clause_mark(c) => {
                self.punctuation(start, is_clause_mark, is_cjk_clause_mark)
            }
            _ => (start + c.len_utf8(), None),
        })
    }
}

impl Iterator for Cuts<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.pos < self.limit {
            let (resume, cut) = self.step(self.pos)?;
            self.pos = resume;
            if cut.is_some() {
                return cut;
            }
        }
        None
    }
}

/// The one splitter behind both levels: while the rest is longer than `max_chars`, cut it
/// where [`greedy_cut`] says. Greedy, so pieces are as long as the boundaries allow.
fn split_greedy<'a>(text: &'a str, max_chars: usize, levels: &[Boundary], out: &mut Vec<&'a str>) {
    let mut rest = text;
    while let Some(cut) = greedy_cut(rest, max_chars, levels) {
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
}

/// The first cut of [`split_greedy`] in `rest`, or `None` if `rest` fits in `max_chars`
/// chars (0 counts as 1): at the last boundary of the first level that has one in the
/// window of `max_chars` chars, else hard at the window end.
///
/// It reads `rest` only up to the char just past the window, so it is decided as soon as
/// that char exists: [`stream`] relies on this to chunk text arriving over time exactly as
/// whole text.
fn greedy_cut(rest: &str, max_chars: usize, levels: &[Boundary]) -> Option<usize> {
    let (window_end, _) = rest.char_indices().nth(max_chars.max(1))?;
    let cut = levels
        .iter()
        .find_map(|&kind| Cuts::new(rest, kind, window_end).last())
        .unwrap_or(window_end);
    Some(cut)
}

/// Splits `text` into user-visible chunks of at most `max_chars` chars (0 counts as 1),
/// cut preferably after a paragraph break, then a sentence end, then whitespace.
pub fn split_chunks(text: &str, max_chars: usize) -> Vec<&str> {
    let mut out = Vec::new();
    split_greedy(text, max_chars, CHUNK_LEVELS, &mut out);
    out
}

/// Splits `text` into engine units: one per sentence (and a cut after every paragraph
/// break), whole however long up to `max_chars` chars, the engine's hard limit. A
/// sentence over it is cut at clause marks (comma, semicolon, colon, dash…) into even
/// shares where marks allow, where the speaker pauses anyway, then at whitespace, then
/// hard.
pub fn split_units(text: &str, max_chars: usize) -> Vec<&str> {
    let len = text.len();
    let mut cuts: Vec<usize> = UNIT_LEVELS
        .iter()
        .flat_map(|&kind| Cuts::new(text, kind, len))
        .filter(|&cut| cut < len)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();

    let mut out = Vec::new();
    let mut clauses = Vec::new();
    let mut start = 0;
    for end in cuts.into_iter().chain(std::iter::once(len)) {
        if end > start {
            clauses.clear();
            split_clauses(&text[start..end], max_chars, &mut clauses);
            for piece in &clauses {
                split_greedy(piece, max_chars, LONG_SENTENCE_LEVELS, &mut out);
            }
            start = end;
        }
    }
    out
}

/// Cuts `sentence` at clause marks while it is longer than `max_chars` chars (see
/// [`split_units`]); the rest, however long, is left to [`split_greedy`].
///
/// Each cut is at the mark nearest an even share of what is left (`total` split into
/// `ceil(total / max_chars)` shares: a sentence a little over the limit is cut near its
/// middle, not near the limit, which would leave a scrap), of the marks within the limit
/// that leave a quarter of it or more on each side.
fn split_clauses<'a>(sentence: &'a str, max_chars: usize, out: &mut Vec<&'a str>) {
    let clause_chars = max_chars.max(1);
    let least = clause_chars / 4;
    let mut rest = sentence;
    while rest.char_indices().nth(clause_chars).is_some() {
        let total = char_count(rest);
        let share = total / total.div_ceil(clause_chars);
        // Two chars past the limit, so that a mark at the limit is cut after
        // its space; a cut at the window's end could be one before the space.
        let window_end = rest
            .char_indices()
            .nth(clause_chars + 2)
            .map_or(rest.len(), |(i, _)| i);
        let cut = Cuts::new(rest, Boundary::Clause, window_end)
            .filter(|&cut| cut < window_end)
            .map(|cut| (cut, char_count(&rest[..cut])))
            .filter(|&(_, head)| head >= least && total - head >= least)
            .min_by_key(|&(_, head)| head.abs_diff(share));
        let Some((cut, _)) = cut else {
            break;
        };
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
}

/// The line written to the engine for one piece. The engine reads one line per utterance,
/// so control characters (newlines included) become spaces; whitespace is collapsed and
/// trimmed.
pub fn engine_line(piece: &str) -> String {
    engine_line_mapped(piece, 0).0
}

/// [`engine_line`] of a piece that starts at byte `start` of the whole text,
/// with the map from the line back to that text: each run of the line is a
/// copy of the piece's, and the single spaces put between runs map to
/// nothing.
pub fn engine_line_mapped(piece: &str, start: usize) -> (String, spans::SpanMap) {
    let mut line = String::with_capacity(piece.len());
    let mut map = spans::SpanMap::default();
    for word in piece
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
    {
        if !line.is_empty() {
            line.push(' ');
        }
        let at = word.as_ptr() as usize - piece.as_ptr() as usize;
        map.keep(line.len()..line.len() + word.len(), start + at);
        line.push_str(word);
    }
    (line, map)
}

/// Whether the engine would say anything for `piece`: it needs a letter or digit (any
/// script). Pieces of punctuation, symbols or emoji alone are skipped instead.
pub fn is_speakable(piece: &str) -> bool {
    piece.chars().any(char::is_alphanumeric)
}

/// Length in chars, the unit every limit in this module uses.
pub fn char_count(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny deterministic generator (64-bit LCG), so the random tests need no crate.
    pub(super) struct Lcg(pub(super) u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        pub(super) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random text mixing words in several scripts, punctuation, spaces and newlines.
    pub(super) fn random_text(seed: u64, tokens: usize) -> String {
        const WORDS: &[&str] = &[
            "the",
            "quick",
            "brown",
            "fox",
            "café",
            "naïve",
            "Ünïcödé",
            "日本語",
            "こんにちは",
            "😀",
            "🎉🎉",
            "x",
            "1234",
            "internationalization",
            "élève",
            "Straße",
            "Дом",
            "ok",
        ];
        const SEPS: &[&str] = &[
            " ",
            " ",
            " ",
            " ",
            ". ",
            ", ",
            "! ",
            "? ",
            "…",
            "。",
            "、",
            "！",
            "\n",
            "\n\n",
            " \r\n \r\n",
            "\t",
            "  ",
            ".\" ",
            "; ",
            " — ",
            "",
            "...",
            ":",
            "\u{0}",
        ];
        let mut rng = Lcg(seed);
        let mut text = String::new();
        for _ in 0..tokens {
            text.push_str(WORDS[rng.below(WORDS.len())]);
            text.push_str(SEPS[rng.below(SEPS.len())]);
        }
        text
    }

    /// A non-final piece is either exactly `max` chars (hard cut) or ends at a boundary:
    /// after whitespace, or after CJK punctuation.
    fn ends_at_boundary(piece: &str) -> bool {
        let last = piece.chars().last().unwrap();
        last.is_whitespace()
            || is_cjk_sentence_mark(last)
            || is_cjk_clause_mark(last)
            || is_closer(last)
    }

    fn check_pieces(text: &str, pieces: &[&str], max: usize) {
        let max = max.max(1);
        assert_eq!(pieces.concat(), text, "concatenation must equal the input");
        for (i, piece) in pieces.iter().enumerate() {
            assert!(!piece.is_empty(), "empty piece {i}");
            let n = char_count(piece);
            assert!(n <= max, "piece {i} has {n} chars > {max}: {piece:?}");
            if i + 1 < pieces.len() {
                assert!(
                    n == max || ends_at_boundary(piece),
                    "piece {i} is short but not cut at a boundary: {piece:?}"
                );
            }
        }
    }

    #[test]
    fn empty_text_gives_nothing() {
        assert!(split_chunks("", 10).is_empty());
        assert!(split_units("", 10).is_empty());
    }

    #[test]
    fn text_that_fits_is_one_chunk() {
        assert_eq!(
            split_chunks("Hello. World.\n\nAgain.", 100),
            ["Hello. World.\n\nAgain."]
        );
        assert_eq!(split_chunks("abc", 3), ["abc"]);
    }

    #[test]
    fn paragraph_beats_sentence() {
        let text = "First para.\n\nSecond one. Third one here. tail words";
        assert_eq!(
            split_chunks(text, 40),
            ["First para.\n\n", "Second one. Third one here. tail words"]
        );
    }

    #[test]
    fn paragraph_break_with_spaces_and_crlf_is_taken_whole() {
        let text = "Alpha beta. \r\n  \r\n Gamma delta. epsilon zeta";
        let chunks = split_chunks(text, 30);
        assert_eq!(chunks[0], "Alpha beta. \r\n  \r\n ");
        check_pieces(text, &chunks, 30);
    }

    #[test]
    fn single_newline_is_not_a_paragraph_break() {
        let text = "One line\nanother. More text here";
        assert_eq!(
            split_chunks(text, 25),
            ["One line\nanother. ", "More text here"]
        );
    }

    #[test]
    fn sentence_beats_whitespace() {
        let text = "One two. three four five six";
        assert_eq!(split_chunks(text, 20), ["One two. ", "three four five six"]);
    }

    #[test]
    fn sentence_end_with_closing_quote_and_mixed_marks() {
        let text = "He said \"Stop!?\" Then words and words";
        assert_eq!(
            split_chunks(text, 30),
            ["He said \"Stop!?\" ", "Then words and words"]
        );
        let text = "Wait… what now";
        assert_eq!(split_chunks(text, 12), ["Wait… ", "what now"]);
    }

    #[test]
    fn abbreviations_do_not_end_sentences() {
        let units = |text| split_units(text, 1000);
        assert_eq!(
            units("Dr. Smith met Mr. Jones. They left."),
            ["Dr. Smith met Mr. Jones. ", "They left."]
        );
        assert_eq!(
            units("Fruit, e.g. apples, i.e. food. Next."),
            ["Fruit, e.g. apples, i.e. food. ", "Next."]
        );
        assert_eq!(
            units("On St. Patrick's day vs. Easter. Yes."),
            ["On St. Patrick's day vs. Easter. ", "Yes."]
        );
        assert_eq!(
            units("See No. 5 and Fig. 3 in Jan. 2025 etc. and more."),
            ["See No. 5 and Fig. 3 in Jan. 2025 etc. and more."]
        );
        assert_eq!(
            units("J. R. R. Tolkien wrote it."),
            ["J. R. R. Tolkien wrote it."]
        );
        assert_eq!(
            units("At 5 p.m. today. Then."),
            ["At 5 p.m. today. ", "Then."]
        );
        assert_eq!(
            units("Pi is 3.14 or so. Version 1.2.3 shipped."),
            ["Pi is 3.14 or so. ", "Version 1.2.3 shipped."]
        );
        // An abbreviation that can end a sentence does before a capital.
        assert_eq!(
            units("Apples, pears, etc. Then more."),
            ["Apples, pears, etc. ", "Then more."]
        );
        assert_eq!(units("He is 5 ft. Tall."), ["He is 5 ft. ", "Tall."]);
        // Not an abbreviation: a word and a lowercase start still split.
        assert_eq!(units("it ended. then more"), ["it ended. ", "then more"]);
        // Only one dot: "Dr.." or "Dr.!" is not an abbreviation's.
        assert_eq!(units("Ask the Dr.! Now."), ["Ask the Dr.! ", "Now."]);
    }

    #[test]
    fn decimal_point_is_not_a_sentence_end() {
        let text = "Pi is 3.14 roughly so";
        assert_eq!(split_chunks(text, 15), ["Pi is 3.14 ", "roughly so"]);
    }

    #[test]
    fn whitespace_beats_hard_cut() {
        let text = "alpha beta gamma";
        assert_eq!(split_chunks(text, 12), ["alpha beta ", "gamma"]);
        assert_eq!(split_chunks("ab   cdefgh", 6), ["ab   ", "cdefgh"]);
    }

    #[test]
    fn hard_cut_at_exactly_max_chars() {
        assert_eq!(split_chunks("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(split_chunks("ééééé", 2), ["éé", "éé", "é"]);
    }

    #[test]
    fn zero_max_is_treated_as_one() {
        assert_eq!(split_chunks("abc", 0), ["a", "b", "c"]);
        assert_eq!(split_units("a. b", 0), ["a", ".", " ", "b"]);
    }

    #[test]
    fn leading_whitespace_never_makes_a_blank_chunk() {
        let text = "\n\n\nword another";
        let chunks = split_chunks(text, 8);
        check_pieces(text, &chunks, 8);
        assert!(chunks.iter().all(|c| !c.trim().is_empty()), "{chunks:?}");
        assert_eq!(
            split_units("\n\nHello. World.", 50),
            ["\n\nHello. ", "World."]
        );
    }

    #[test]
    fn cjk_sentences_cut_without_whitespace() {
        let text = "今日は晴れです。明日は雨でしょう！その後は";
        assert_eq!(
            split_chunks(text, 17),
            ["今日は晴れです。明日は雨でしょう！", "その後は"]
        );
        assert_eq!(
            split_units(text, 100),
            ["今日は晴れです。", "明日は雨でしょう！", "その後は"]
        );
    }

    #[test]
    fn closing_bracket_past_the_window_keeps_the_sentence_whole() {
        // The window ends between "。" and "」": cutting there would strand the bracket.
        assert_eq!(split_chunks("あ。いう。」え", 5), ["あ。", "いう。」え"]);
    }

    #[test]
    fn multibyte_text_is_never_cut_inside_a_char() {
        let texts = [
            "日本語のテキストには空白がありませんので強制的に切る必要があります".to_string(),
            "😀🎉👍🏽🇯🇵".repeat(20),
            "Ça été très élégant, naïve façade. Über schön. ".repeat(10),
            "mixé 日本 😀 x".repeat(30),
        ];
        for text in &texts {
            for max in 1..40 {
                // split_at / slicing would panic on a non-boundary; check limits too.
                check_pieces(text, &split_chunks(text, max), max);
                check_pieces(text, &split_units(text, max), max);
            }
        }
        let chunks = split_chunks(&texts[0], 5);
        assert_eq!(chunks[0], "日本語のテ");
        assert!(chunks.iter().all(|c| char_count(c) <= 5));
    }

    #[test]
    fn concatenation_is_exact_for_fixed_inputs() {
        let texts = [
            "a",
            " ",
            "   \n\n  ",
            "Hello world.",
            "Trailing space. ",
            "One.\n\n\n\nTwo.\r\n\r\nThree!!! Four?! \"Five.\" (Six.) Seven",
            "no punctuation at all just a lot of words to be split somewhere",
            "comma, separated, clauses; and: more — dashes – here, 、、，；",
            "\t\tTabs\tand\u{0}control\u{7}chars\n",
        ];
        for text in texts {
            for max in [0, 1, 2, 3, 5, 8, 13, 100] {
                check_pieces(text, &split_chunks(text, max), max);
                check_pieces(text, &split_units(text, max), max);
            }
        }
    }

    #[test]
    fn concatenation_is_exact_for_random_inputs() {
        for seed in 0..40u64 {
            let text = random_text(seed, 300);
            for max in [1, 2, 7, 20, 64, 200, 5000] {
                check_pieces(&text, &split_chunks(&text, max), max);
                check_pieces(&text, &split_units(&text, max), max);
            }
        }
    }

    #[test]
    fn hundred_thousand_chars_split_whole() {
        let mut text = random_text(7, 30_000);
        let cut = text.char_indices().nth(100_000).unwrap().0;
        text.truncate(cut);
        assert_eq!(char_count(&text), 100_000);

        let chunks = split_chunks(&text, 5000);
        let units = split_units(&text, 200);
        let tiny = split_chunks(&text, 3);

        check_pieces(&text, &chunks, 5000);
        check_pieces(&text, &units, 200);
        check_pieces(&text, &tiny, 3);
        assert!((20..=30).contains(&chunks.len()), "{} chunks", chunks.len());
    }

    #[test]
    fn units_are_one_per_sentence() {
        let text = "Hello there. How are you? I'm fine!\n\nNew paragraph… yes";
        assert_eq!(
            split_units(text, 1000),
            [
                "Hello there. ",
                "How are you? ",
                "I'm fine!\n\n",
                "New paragraph… ",
                "yes"
            ]
        );
    }

    #[test]
    fn units_cut_after_paragraph_break_without_punctuation() {
        assert_eq!(
            split_units("Heading\n\nBody text. More", 1000),
            ["Heading\n\n", "Body text. ", "More"]
        );
    }

    #[test]
    fn long_sentence_is_split_at_clauses_then_whitespace() {
        let text = "First part, second part, third; and then a veryverylongwordthatneverends here.";
        let units = split_units(text, 25);
        assert_eq!(
            units,
            [
                "First part, second part, ",
                "third; ",
                "and then a ",
                "veryverylongwordthatnever",
                "ends here."
            ]
        );
        check_pieces(text, &units, 25);
    }

    #[test]
    fn clauses_over_the_limit_are_cut_in_even_shares() {
        let text = "a, b, c, d, e, f.";
        assert_eq!(split_units(text, 9), ["a, b, c, ", "d, e, f."]);
        let text = "東京、大阪、京都、札幌、福岡";
        assert_eq!(
            split_units(text, 6),
            ["東京、", "大阪、京都、", "札幌、福岡"]
        );
    }

    #[test]
    fn a_sentence_stays_whole_up_to_the_hard_limit_commas_or_not() {
        let text = "When the rain stopped, the children ran outside, and the dogs followed them into the wet field. Next.";
        assert_eq!(
            split_units(text, 150),
            [
                "When the rain stopped, the children ran outside, and the dogs followed them into the wet field. ",
                "Next."
            ]
        );
    }

    #[test]
    fn a_sentence_over_the_hard_limit_is_cut_at_the_mark_nearest_an_even_share() {
        // 189 chars over 150: cut near the middle, not as late as 150 allows
        // (which would leave a scrap of 39 spoken alone).
        let text = "According to the report, about 42 percent of the letters sent to Oslo in 1950 \
                    were never delivered, and the staff, tired and underpaid, simply stopped \
                    counting them after the second winter.";
        assert_eq!(char_count(text), 189);
        assert_eq!(
            split_units(text, 150),
            [
                "According to the report, about 42 percent of the letters sent to Oslo in 1950 were never delivered, ",
                "and the staff, tired and underpaid, simply stopped counting them after the second winter."
            ]
        );
        let text =
            "Yes, the whole family walked slowly along the old river path until evening came";
        check_pieces(text, &split_units(text, 50), 50);
    }

    #[test]
    fn clause_cuts_keep_every_char_and_the_limit() {
        for seed in 200..260u64 {
            let text = random_text(seed, 300);
            for max in [150, 40, 12, 7] {
                check_pieces(&text, &split_units(&text, max), max);
            }
        }
    }

    #[test]
    fn no_unit_holds_more_than_one_sentence() {
        for seed in 100..120u64 {
            let text = random_text(seed, 200);
            for unit in split_units(&text, 10_000) {
                let len = unit.len();
                let inner = Cuts::new(unit, Boundary::Sentence, len)
                    .chain(Cuts::new(unit, Boundary::Paragraph, len))
                    .find(|&cut| cut < len);
                assert_eq!(inner, None, "unit holds a boundary: {unit:?}");
            }
        }
    }

    #[test]
    fn unit_cuts_fall_only_where_one_is_possible() {
        let fixed = ["a.\"b", "。」x", "。.x", ". \"x", "x\n\n.", "x.\"\n\n y"].map(String::from);
        let random = (300..340u64).map(|seed| random_text(seed, 300));
        for text in fixed.into_iter().chain(random) {
            let len = text.len();
            for cut in UNIT_LEVELS
                .iter()
                .flat_map(|&kind| Cuts::new(&text, kind, len))
                .filter(|&cut| cut < len)
            {
                let before = text[..cut].chars().next_back().unwrap();
                let after = char_at(&text, cut).unwrap();
                assert!(
                    unit_cut_possible(before, after),
                    "cut between {before:?} and {after:?} in {text:?}"
                );
            }
        }
        assert!(!unit_cut_possible('.', '.'));
        assert!(!unit_cut_possible('.', ' '));
        assert!(!unit_cut_possible('a', 'b'));
        assert!(!unit_cut_possible('。', '」'));
    }

    #[test]
    fn engine_line_maps_back_to_the_piece() {
        let text = "Intro.  Hello\n  world,\tagain ";
        let (line, map) = engine_line_mapped(&text[8..], 8);
        assert_eq!(line, "Hello world, again");
        assert_eq!(map.original(0..5).map(|r| &text[r]), Some("Hello"));
        assert_eq!(map.original(6..12).map(|r| &text[r]), Some("world,"));
        assert_eq!(map.original(13..18).map(|r| &text[r]), Some("again"));
        // The space the line put between two runs is in neither.
        assert_eq!(map.original(5..6), None);
        assert_eq!(map.segments().len(), 3);
    }

    #[test]
    fn engine_line_flattens_control_chars() {
        assert_eq!(
            engine_line("  Hello\nworld.\r\n\tNext\u{0}\u{7}one \u{85} end  "),
            "Hello world. Next one end"
        );
        assert_eq!(engine_line("\n\n\r\t"), "");
        assert_eq!(engine_line("日本語。"), "日本語。");
        assert!(!engine_line("a\u{1b}[0mb\u{7f}c")
            .chars()
            .any(char::is_control));
    }

    #[test]
    fn speakable_needs_a_letter_or_digit() {
        for piece in ["...", "!!!", "  ", "♪♪", "😀", "", "\n\n", "— –", "。、"] {
            assert!(!is_speakable(piece), "{piece:?} should not be speakable");
        }
        for piece in ["a", "5", "日本", "é", " x. ", "Дом"] {
            assert!(is_speakable(piece), "{piece:?} should be speakable");
        }
    }

    #[test]
    fn char_count_counts_chars_not_bytes() {
        assert_eq!(char_count(""), 0);
        assert_eq!(char_count("abc"), 3);
        assert_eq!(char_count("日本😀é"), 4);
    }
}
