//! Fuzzing of the normalizer: any text reads without a panic into a line
//! of bounded length whose map holds; words no rule rewrites are never
//! dropped, reordered or duplicated.

use proptest::prelude::*;

use super::*;
use crate::testing::fuzz::{config, text, HANG_MS};
use crate::text::engine_line;

/// The most bytes a line may have per byte of its piece: the longest
/// reading of one char ("#" → "number", "7" → "seven", "%" → "percent")
/// and of a number's digits, with room to spare.
const MOST_PER_BYTE: usize = 16;

/// Checks a line's map against its piece (at `origin` of the whole text):
/// segments in order of the line and of the text, inside both, never
/// overlapping (nothing said twice, nothing reordered), kept segments
/// copies of the text. Returns the kept original ranges.
fn check_map(
    piece: &str,
    origin: usize,
    line: &str,
    map: &SpanMap,
) -> Result<Vec<Range<usize>>, TestCaseError> {
    let mut kept = Vec::new();
    let (mut spoken_end, mut original_end) = (0, origin);
    for seg in map.segments() {
        prop_assert!(!seg.spoken.is_empty(), "{:?}", seg);
        prop_assert!(
            seg.spoken.start >= spoken_end && seg.spoken.end <= line.len(),
            "{:?}",
            seg
        );
        prop_assert!(
            line.is_char_boundary(seg.spoken.start) && line.is_char_boundary(seg.spoken.end)
        );
        prop_assert!(
            seg.original.start >= original_end,
            "{:?} in {:?} → {:?}",
            seg,
            piece,
            line
        );
        prop_assert!(seg.original.end <= origin + piece.len(), "{:?}", seg);
        spoken_end = seg.spoken.end;
        original_end = seg.original.end;
        let original = seg.original.start - origin..seg.original.end - origin;
        if !seg.rewritten {
            prop_assert_eq!(&line[seg.spoken.clone()], &piece[original.clone()]);
            kept.push(original);
        }
    }
    Ok(kept)
}

/// Words that no rule rewrites alone: those [`tests`] lists, and any word
/// of lowercase letters (plain lowercase words skip the rules).
fn plain_word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &["river", "lantern", "Quiet", "stone", "élan", "of", "日本", "x"][..]
        )
        .prop_map(str::to_string),
        "[a-z]{2,9}",
    ]
}

proptest! {
    #![proptest_config(config(1024, HANG_MS))]

    #[test]
    fn fuzz_any_text_reads_into_a_bounded_line_that_maps_in_order(
        piece in prop_oneof![text(), any::<String>()],
        origin in prop_oneof![Just(0usize), 0usize..100_000],
    ) {
        for rules in [Rules::Off, Rules::English] {
            let (line, map) = spoken_line(&piece, origin, rules);
            prop_assert!(
                line.len() <= MOST_PER_BYTE * piece.len(),
                "{} bytes read as {}: {:?} → {:?}", piece.len(), line.len(), piece, line
            );
            prop_assert_eq!(line.trim(), line.as_str());
            prop_assert!(!line.contains("  "), "{:?}", line);
            check_map(&piece, origin, &line, &map)?;
            if rules == Rules::Off {
                prop_assert_eq!(&line, &engine_line(&piece));
            }
            // Every word of a line is there for some of the text.
            for word in line.split(' ').filter(|w| !w.is_empty()) {
                let at = word.as_ptr() as usize - line.as_ptr() as usize;
                prop_assert!(map.original(at..at + word.len()).is_some(), "{:?} of {:?} maps to nothing", word, line);
            }
        }
    }

    /// Without rules a line reads the same again. With them it need not:
    /// "St60 km/h" reads "St sixty km/h", whose "St" then stands before a
    /// word and reads "Saint"; a second reading still holds every check.
    #[test]
    fn fuzz_a_line_read_again(piece in text()) {
        let (line, _) = spoken_line(&piece, 0, Rules::Off);
        prop_assert_eq!(&spoken_line(&line, 0, Rules::Off).0, &line);
        let (line, _) = spoken_line(&piece, 0, Rules::English);
        let (again, map) = spoken_line(&line, 0, Rules::English);
        prop_assert!(again.len() <= MOST_PER_BYTE * line.len());
        check_map(&line, 0, &again, &map)?;
    }

    /// Issue 18's property: words no rule rewrites, among any text, are
    /// said once each, as written, in their order.
    #[test]
    fn fuzz_words_not_rewritten_are_never_dropped_reordered_or_duplicated(
        parts in prop::collection::vec(
            (prop::option::of(plain_word()), text(), prop::sample::select(&[" ", "  ", "\n", ", ", ". ", "\t", " \"", "\" ", " (", ") "][..])),
            1..12,
        ),
    ) {
        let mut piece = String::new();
        let mut plain = Vec::new();
        for (word, other, separator) in &parts {
            match word {
                Some(word) => {
                    plain.push(piece.len()..piece.len() + word.len());
                    piece.push_str(word);
                }
                // Anything, kept apart from the plain words by whitespace.
                None => piece.push_str(&format!(" {other} ")),
            }
            piece.push_str(separator);
        }
        let (line, map) = spoken_line(&piece, 0, Rules::English);
        check_map(&piece, 0, &line, &map)?;
        // Each plain word is read by exactly one segment, whole: kept (and
        // so copied as written), or taken into the rewrite of a number
        // before it ("5 km", "2:30 pm").
        for word in &plain {
            let readers: Vec<_> = map
                .segments()
                .iter()
                .filter(|s| s.original.start < word.end && word.start < s.original.end)
                .collect();
            prop_assert!(
                readers.len() == 1 && readers[0].original.start <= word.start && word.end <= readers[0].original.end,
                "{:?} in {:?} → {:?}: {:?}", &piece[word.clone()], piece, line, readers
            );
        }
    }
}

/// Found by fuzzing: a word right after phoneme input was given a space
/// that the text does not have (and without rules the line was no longer
/// the engine line of the text).
#[test]
fn a_word_joined_to_phonemes_stays_joined() {
    let piece = "[[ h ə ]]$500 and [[ x ]] end";
    // And phoneme input stays on one line (found by fuzzing too).
    assert_eq!(spoken_line("[[\nh  ə]]", 0, Rules::Off).0, "[[ h ə]]");
    assert_eq!(spoken_line(piece, 0, Rules::Off).0, engine_line(piece));
    assert_eq!(
        spoken_line(piece, 0, Rules::English).0,
        "[[ h ə ]]five hundred dollars and [[ x ]] end"
    );
}
