//! Fuzzing of the incremental sentence splitter: any text, cut anywhere,
//! gives the pieces of the whole text; every word is in a piece; the
//! buffer stays within a chunk.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::testing::fuzz::{config, text, HANG_MS};

/// The limits the server would cut by with these settings (read as the
/// server reads them, so that they stay its limits whatever they become).
fn limits(max_chars: usize, chunk_chars: usize, at_once: usize) -> PieceLimits {
    let vars: HashMap<String, String> = [
        ("PIPER_ENGINE_MAX_CHARS", max_chars),
        ("PIPER_CHUNK_SIZE", chunk_chars),
        ("PIPER_ENGINE_CHARS_AT_ONCE", at_once),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    PieceLimits::from_config(&Config::from_vars(&vars).expect("positive settings are valid"))
}

/// Small limits, so that short texts make many chunks and cuts, and the
/// server's.
fn any_limits() -> impl Strategy<Value = PieceLimits> {
    prop_oneof![
        (1usize..60, 1usize..120, 1usize..120).prop_map(|(m, c, a)| limits(m, c, a)),
        Just(limits(150, 5000, 200)),
    ]
}

fn rules() -> impl Strategy<Value = Rules> {
    prop_oneof![Just(Rules::Off), Just(Rules::English)]
}

/// `text` cut at `cuts` (any indices, moved back to a char boundary).
fn parts<'a>(text: &'a str, cuts: &[prop::sample::Index]) -> Vec<&'a str> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|i| {
            let mut at = i.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            at
        })
        .collect();
    at.sort_unstable();
    at.push(text.len());
    let mut out = Vec::new();
    let mut from = 0;
    for to in at {
        out.push(&text[from..to]);
        from = to;
    }
    out
}

proptest! {
    #![proptest_config(config(512, HANG_MS))]

    #[test]
    fn fuzz_any_cut_of_a_text_gives_the_pieces_of_the_whole(
        text in text(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        limits in any_limits(),
        rules in rules(),
    ) {
        let whole = pieces_with(&text, limits, rules);
        let mut stream = SentenceStream::with_rules(limits, rules);
        let mut streamed = Vec::new();
        for part in parts(&text, &cuts) {
            streamed.extend(stream.push(part));
            // Only the current chunk is kept.
            prop_assert!(char_count(&stream.buf) <= limits.chunk_chars);
        }
        streamed.extend(stream.finish());
        prop_assert_eq!(streamed, whole);
    }

    /// Every letter and digit of the text is in a piece, once, in order:
    /// what is left out between pieces has nothing to say.
    #[test]
    fn fuzz_pieces_cover_every_word_in_order(
        text in prop_oneof![text(), any::<String>()],
        limits in any_limits(),
        rules in rules(),
    ) {
        let mut at = 0;
        for piece in pieces_with(&text, limits, rules) {
            prop_assert!(piece.span.start >= at, "{:?} overlaps what came before", piece);
            let left_out = &text[at..piece.span.start];
            prop_assert!(!is_speakable(left_out), "{:?} left out", left_out);
            let slice = &text[piece.span.clone()];
            prop_assert_eq!(slice.trim(), slice);
            prop_assert!(is_speakable(slice));
            prop_assert!(!piece.line.is_empty());
            prop_assert!(char_count(slice) <= limits.max_chars.max(1));
            at = piece.span.end;
        }
        prop_assert!(!is_speakable(&text[at..]), "{:?} left out", &text[at..]);
    }

    /// A flush ends a text: what follows is cut as a text of its own.
    #[test]
    fn fuzz_a_flush_ends_a_text(
        texts in prop::collection::vec(text(), 1..4),
        limits in any_limits(),
    ) {
        let mut stream = SentenceStream::new(limits);
        let mut streamed = Vec::new();
        let mut expected = Vec::new();
        let mut base = 0;
        for text in &texts {
            streamed.extend(stream.push(text));
            streamed.extend(stream.flush());
            for mut piece in pieces(text, limits) {
                piece.span = piece.span.start + base..piece.span.end + base;
                let mut map = SpanMap::default();
                for seg in piece.map.segments() {
                    if seg.rewritten {
                        let original = seg.original.start + base..seg.original.end + base;
                        map.rewrite(seg.spoken.clone(), original);
                    } else {
                        map.keep(seg.spoken.clone(), seg.original.start + base);
                    }
                }
                piece.map = map;
                expected.push(piece);
            }
            base += text.len();
        }
        prop_assert_eq!(streamed, expected);
    }
}
