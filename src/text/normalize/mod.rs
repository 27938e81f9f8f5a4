//! Text as a person would read it aloud, for English voices.
//!
//! The engine's phonemizer (espeak-ng) reads "$500" as "dollar five hundred",
//! "1990s" as "nineteen hundred ninety z" and "St." always as "saint". A
//! piece of text (one sentence, or part of a long one) is turned here into
//! its *spoken line*: the words to say, whitespace collapsed, with a
//! [`SpanMap`] back to the bytes of the user's text, so that word timestamps
//! name the user's own words.
//!
//! The [`tokenize`]r cuts the piece at whitespace into tokens, each a core
//! with the opening and closing punctuation around it kept apart; the rules
//! of [`rules`] look at a token and those after it (a date or a price with
//! its magnitude spans several), and either rewrite them as a whole or leave
//! the token as it is. Kept text is copied byte for byte, so words no rule
//! matches are never dropped, reordered or duplicated (a property test checks
//! it). Phoneme input (`[[ h ə l ˈoʊ ]]`) is copied untouched for the engine.

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod golden;
pub(crate) mod number;
pub(crate) mod rules;

use std::ops::Range;

use super::spans::SpanMap;

/// Which rules a piece is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// Whitespace collapsed, nothing rewritten (other languages, or
    /// `"normalize": false`).
    Off,
    /// English: numbers, money, dates, times, units, abbreviations, symbols.
    English,
}

impl Rules {
    /// The rules for a voice's language (its language code or espeak voice):
    /// English voices only, until other languages get their own.
    pub fn for_language(language: &str, wanted: bool) -> Rules {
        if wanted && language.to_ascii_lowercase().starts_with("en") {
            Rules::English
        } else {
            Rules::Off
        }
    }
}

/// The spoken line of `piece`, which starts at byte `origin` of the whole
/// text, and its map back to the whole text's bytes. With [`Rules::Off`] the
/// line equals [`super::engine_line`] of the piece.
pub fn spoken_line(piece: &str, origin: usize, rules: Rules) -> (String, SpanMap) {
    let tokens = tokenize(piece);
    let mut out = Out {
        text: piece,
        origin,
        line: String::with_capacity(piece.len() + piece.len() / 2),
        map: SpanMap::default(),
        space: false,
    };
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        // Tokens are cut at whitespace, but phoneme input ends at its "]]":
        // a word right after it stays joined to it, as written.
        out.space = i > 0 && tokens[i - 1].post.end < token.pre.start;
        let found = match rules {
            Rules::English if !token.verbatim => rules::rewrite(piece, &tokens, i),
            _ => None,
        };
        match found {
            Some(found) => {
                let last = &tokens[found.end_token - 1];
                let start = if found.from_pre {
                    token.pre.start
                } else {
                    out.keep(token.pre.clone());
                    token.core.start
                };
                out.say(&found.words, start..found.end_byte);
                out.keep(found.end_byte.max(last.core.end)..last.post.end);
                i = found.end_token;
            }
            // Phoneme input goes on as written, but on one line: its
            // newlines and whitespace runs become single spaces, as the
            // engine line makes them.
            None if token.verbatim => {
                let line = super::engine_line(&piece[token.core.clone()]);
                if line == piece[token.core.clone()] {
                    out.keep(token.core.clone());
                } else {
                    out.say(&line, token.core.clone());
                }
                i += 1;
            }
            None => {
                out.keep(token.pre.start..token.post.end);
                i += 1;
            }
        }
    }
    (out.line, out.map)
}

/// One whitespace-separated word of a piece: opening punctuation, the core,
/// closing punctuation (byte ranges of the piece, one after the other).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub pre: Range<usize>,
    pub core: Range<usize>,
    pub post: Range<usize>,
    /// Phoneme input, `[[ ... ]]` (whitespace inside it included): passed on
    /// as it is.
    pub verbatim: bool,
}

fn is_space(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

fn is_opener(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '(' | '[' | '{' | '“' | '‘' | '«' | '¿' | '¡' | '„'
    )
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '.' | ',' | ';' | ':' | '!' | '?' | '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»' | '…'
    )
}

/// The tokens of a piece, in order; whitespace and control chars between
/// them are dropped (the line puts one space between tokens).
pub fn tokenize(piece: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut at = 0;
    let len = piece.len();
    while at < len {
        let rest = &piece[at..];
        let Some((skip, _)) = rest.char_indices().find(|&(_, c)| !is_space(c)) else {
            break;
        };
        let start = at + skip;
        if piece[start..].starts_with("[[") {
            if let Some(close) = piece[start + 2..].find("]]") {
                let end = start + 2 + close + 2;
                tokens.push(Token {
                    pre: start..start,
                    core: start..end,
                    post: end..end,
                    verbatim: true,
                });
                at = end;
                continue;
            }
        }
        let end = piece[start..]
            .char_indices()
            .find(|&(_, c)| is_space(c))
            .map_or(len, |(i, _)| start + i);
        tokens.push(split_word(piece, start..end));
        at = end;
    }
    tokens
}

/// Cuts a word into opening punctuation, core and closing punctuation. An
/// apostrophe before a digit ("'90s") belongs to the core.
fn split_word(piece: &str, word: Range<usize>) -> Token {
    let text = &piece[word.clone()];
    let mut core_start = word.start;
    for (i, c) in text.char_indices() {
        let apostrophe = c == '\'' || c == '’';
        let next_is_digit = text[i + c.len_utf8()..].starts_with(|n: char| n.is_ascii_digit());
        if (is_opener(c) || apostrophe) && !(apostrophe && next_is_digit) {
            core_start = word.start + i + c.len_utf8();
        } else {
            break;
        }
    }
    let mut core_end = word.end;
    for (i, c) in piece[core_start..word.end].char_indices().rev() {
        if is_closer(c) {
            core_end = core_start + i;
        } else {
            break;
        }
    }
    Token {
        pre: word.start..core_start,
        core: core_start..core_end,
        post: core_end..word.end,
        verbatim: false,
    }
}

/// The spoken line being written, and its map.
struct Out<'a> {
    text: &'a str,
    origin: usize,
    line: String,
    map: SpanMap,
    /// A space is due before the next text written.
    space: bool,
}

impl Out<'_> {
    fn gap(&mut self) {
        if self.space && !self.line.is_empty() {
            self.line.push(' ');
        }
        self.space = false;
    }

    /// Copies `range` of the piece.
    fn keep(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        self.gap();
        let at = self.line.len();
        self.line.push_str(&self.text[range.clone()]);
        self.map
            .keep(at..self.line.len(), self.origin + range.start);
    }

    /// Writes `words` for `range` of the piece.
    fn say(&mut self, words: &str, range: Range<usize>) {
        if words.is_empty() {
            return;
        }
        self.gap();
        let at = self.line.len();
        self.line.push_str(words);
        self.map.rewrite(
            at..self.line.len(),
            self.origin + range.start..self.origin + range.end,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::engine_line;

    #[test]
    fn tokens_keep_punctuation_apart() {
        let piece = "(\"$5,\") '90s e.g. [[ h ə ]] end.";
        let tokens = tokenize(piece);
        let cores: Vec<&str> = tokens.iter().map(|t| &piece[t.core.clone()]).collect();
        assert_eq!(cores, ["$5", "'90s", "e.g", "[[ h ə ]]", "end"]);
        assert_eq!(&piece[tokens[0].pre.clone()], "(\"");
        assert_eq!(&piece[tokens[0].post.clone()], ",\")");
        assert!(tokens[3].verbatim);
    }

    #[test]
    fn without_rules_the_line_is_the_engine_line_mapped_offset_by_offset() {
        let piece = "  Hello\nworld.\r\n\tNext\u{0}\u{7}one \u{85} 42 end  ";
        let (line, map) = spoken_line(piece, 100, Rules::Off);
        assert_eq!(line, engine_line(piece));
        for seg in map.segments() {
            assert!(!seg.rewritten);
            assert_eq!(
                &line[seg.spoken.clone()],
                &piece[seg.original.start - 100..seg.original.end - 100]
            );
        }
    }

    /// Words no rule rewrites, and texts that rules do rewrite.
    const PLAIN: &[&str] = &[
        "river", "lantern", "Quiet", "stone", "élan", "of", "日本", "x",
    ];
    const TRIGGERS: &[&str] = &[
        "$500",
        "2024",
        "Dr.",
        "St.",
        "5 km",
        "1990s",
        "e.g.",
        "&",
        "3/4",
        "555-1234",
        "Henry VIII",
        "January 5, 2025",
        "[[ h ə ]]",
        "...",
        "(7)",
        "—",
        "2:30 PM",
        "50%",
        "example.com",
        "#1",
        "-3.5",
        "1st",
        "$5.3 billion",
        "72°F",
        "10-20",
        "MP3",
    ];
    const SEPARATORS: &[&str] = &[" ", "  ", "\n", ", ", ". ", "\t", " \"", "\" ", " (", ") "];

    /// Checks the map of a spoken line: segments in order of the line and of
    /// the text, never overlapping (nothing said twice, nothing reordered),
    /// kept segments copies of the text. Returns the kept original ranges.
    fn check_map(text: &str, line: &str, map: &SpanMap) -> Vec<Range<usize>> {
        let mut kept = Vec::new();
        let (mut spoken_end, mut original_end) = (0, 0);
        for seg in map.segments() {
            assert!(
                seg.spoken.start >= spoken_end,
                "{text:?} → {line:?}: {seg:?}"
            );
            assert!(
                seg.original.start >= original_end,
                "{text:?} → {line:?}: {seg:?}"
            );
            spoken_end = seg.spoken.end;
            original_end = seg.original.end;
            if !seg.rewritten {
                assert_eq!(&line[seg.spoken.clone()], &text[seg.original.clone()]);
                kept.push(seg.original.clone());
            }
        }
        kept
    }

    #[test]
    fn words_not_rewritten_are_never_dropped_reordered_or_duplicated() {
        use crate::text::tests::Lcg;
        for seed in 0..400u64 {
            let mut rng = Lcg(seed);
            let mut text = String::new();
            let mut plain = Vec::new();
            for _ in 0..(5 + rng.below(30)) {
                if rng.below(2) == 0 {
                    let word = PLAIN[rng.below(PLAIN.len())];
                    plain.push(text.len()..text.len() + word.len());
                    text.push_str(word);
                } else {
                    text.push_str(TRIGGERS[rng.below(TRIGGERS.len())]);
                }
                text.push_str(SEPARATORS[rng.below(SEPARATORS.len())]);
            }
            let (line, map) = spoken_line(&text, 0, Rules::English);
            let kept = check_map(&text, &line, &map);
            // Every plain word is inside exactly one kept segment, so it is
            // said once, as written, in its place.
            for word in &plain {
                let holders = kept
                    .iter()
                    .filter(|k| k.start <= word.start && word.end <= k.end)
                    .count();
                assert_eq!(
                    holders,
                    1,
                    "{:?} in {text:?} → {line:?}",
                    &text[word.clone()]
                );
            }
            // And the plain words appear in the line in their order.
            let mut at = 0;
            for word in &plain {
                let w = &text[word.clone()];
                let found = line[at..]
                    .find(w)
                    .unwrap_or_else(|| panic!("{w:?} lost: {line:?}"));
                at += found + w.len();
            }
        }
    }

    #[test]
    fn any_text_reads_without_panicking_and_maps_in_order() {
        for seed in 0..60u64 {
            let text = crate::text::tests::random_text(seed, 200);
            let (line, map) = spoken_line(&text, 0, Rules::English);
            check_map(&text, &line, &map);
        }
    }

    /// A measurement, not a check (`cargo test --release --lib
    /// normalization_speed -- --ignored --nocapture`): `make bench` has the
    /// same row.
    #[test]
    #[ignore]
    fn normalization_speed() {
        let sentence = "Dr. Smith paid $5.3 billion on Jan. 5, 2025 at 2:30 PM; call 555-1234 \
                        or visit example.com. In the 1990s it was 72°F, e.g. 50% of 1,234 people \
                        drove 60 km/h down Main St. with Henry VIII. ";
        let text = sentence.repeat(100_000 / sentence.chars().count());
        let chars = text.chars().count();
        let units = crate::text::split_units(&text, 150);
        let mut rounds = Vec::new();
        for _ in 0..23 {
            let started = std::time::Instant::now();
            for unit in &units {
                std::hint::black_box(spoken_line(unit, 0, Rules::English));
            }
            rounds.push(started.elapsed().as_secs_f64() / chars as f64 * 1e9);
        }
        rounds.drain(..3);
        rounds.sort_by(f64::total_cmp);
        println!(
            "normalization: {chars} chars, {} sentences; per 1,000 chars: p50 {:.0} µs, max {:.0} µs",
            units.len(),
            rounds[rounds.len() / 2],
            rounds[rounds.len() - 1]
        );
    }

    #[test]
    fn english_only_and_only_when_wanted() {
        assert_eq!(Rules::for_language("en_US", true), Rules::English);
        assert_eq!(Rules::for_language("en-gb-x-rp", true), Rules::English);
        assert_eq!(Rules::for_language("de_DE", true), Rules::Off);
        assert_eq!(Rules::for_language("en_US", false), Rules::Off);
    }

    #[test]
    fn a_rewrite_maps_as_a_whole_and_kept_words_offset_by_offset() {
        let text = "So, I owe $500.";
        let (line, map) = spoken_line(text, 0, Rules::English);
        assert_eq!(line, "So, I owe five hundred dollars.");
        let five = line.find("five").unwrap();
        assert_eq!(map.original(five..five + 4).map(|r| &text[r]), Some("$500"));
        let owe = line.find("owe").unwrap();
        assert_eq!(map.original(owe..owe + 3).map(|r| &text[r]), Some("owe"));
        assert_eq!(
            map.original(line.len() - 1..line.len()).map(|r| &text[r]),
            Some(".")
        );
    }
}
