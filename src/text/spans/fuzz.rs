//! Fuzzing of [`SpanMap`]: built as lines are written (runs in order of the
//! line and of the text), it maps any range, out of bounds or backwards
//! included, to the hull of the text its segments came from, or to
//! nothing when it touches none.

use proptest::prelude::*;

use super::*;
use crate::testing::fuzz::config;

/// One step of writing a line: a copy or a rewrite, after a gap in the
/// line (a space) and one in the text (skipped whitespace).
#[derive(Debug, Clone)]
enum Step {
    Keep {
        len: usize,
        line_gap: usize,
        text_gap: usize,
    },
    Rewrite {
        spoken: usize,
        original: usize,
        line_gap: usize,
        text_gap: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..20, 0usize..2, 0usize..3).prop_map(|(len, line_gap, text_gap)| Step::Keep {
            len,
            line_gap,
            text_gap
        }),
        (0usize..30, 0usize..10, 0usize..2, 0usize..3).prop_map(
            |(spoken, original, line_gap, text_gap)| Step::Rewrite {
                spoken,
                original,
                line_gap,
                text_gap
            }
        ),
    ]
}

/// The map of `steps` from `origin`, and the line's length.
fn build(origin: usize, steps: &[Step]) -> (SpanMap, usize) {
    let mut map = SpanMap::default();
    let (mut line, mut text) = (0, origin);
    for step in steps {
        match *step {
            Step::Keep {
                len,
                line_gap,
                text_gap,
            } => {
                line += line_gap;
                text += text_gap;
                map.keep(line..line + len, text);
                line += len;
                text += len;
            }
            Step::Rewrite {
                spoken,
                original,
                line_gap,
                text_gap,
            } => {
                line += line_gap;
                text += text_gap;
                map.rewrite(line..line + spoken, text..text + original);
                line += spoken;
                text += original;
            }
        }
    }
    (map, line)
}

proptest! {
    #![proptest_config(config(2048, 0))]

    #[test]
    fn fuzz_segments_stay_in_order_and_copies_join(
        origin in 0usize..1000,
        steps in prop::collection::vec(step(), 0..12),
    ) {
        let (map, len) = build(origin, &steps);
        let segments = map.segments();
        for seg in segments {
            prop_assert!(!seg.spoken.is_empty() && seg.spoken.end <= len);
            prop_assert!(seg.original.start >= origin);
            if !seg.rewritten {
                prop_assert_eq!(seg.spoken.len(), seg.original.len());
            }
        }
        for pair in segments.windows(2) {
            prop_assert!(pair[0].spoken.end <= pair[1].spoken.start);
            prop_assert!(pair[0].original.end <= pair[1].original.start);
            // A copy that goes on where the last stopped joined it.
            prop_assert!(
                pair[0].rewritten
                    || pair[1].rewritten
                    || pair[0].spoken.end != pair[1].spoken.start
                    || pair[0].original.end != pair[1].original.start
            );
        }
    }

    #[test]
    fn fuzz_any_range_maps_to_the_hull_of_what_it_touches(
        origin in 0usize..1000,
        steps in prop::collection::vec(step(), 0..12),
        start in 0usize..200,
        end in 0usize..200,
    ) {
        let (map, _) = build(origin, &steps);
        let found = map.original(start..end);
        // Byte by byte: what each byte of the range came from.
        let mut hull: Option<Range<usize>> = None;
        for byte in start..end {
            for seg in map.segments().iter().filter(|s| s.spoken.contains(&byte)) {
                let part = if seg.rewritten {
                    seg.original.clone()
                } else {
                    let at = seg.original.start + (byte - seg.spoken.start);
                    at..at + 1
                };
                hull = Some(match hull {
                    None => part,
                    Some(h) => h.start.min(part.start)..h.end.max(part.end),
                });
            }
        }
        prop_assert_eq!(found, hull);
    }

    #[test]
    fn fuzz_a_copy_maps_offset_by_offset(
        original in (0usize..10_000, 0usize..500).prop_map(|(s, l)| s..s + l),
        start in 0usize..600,
        len in 0usize..600,
    ) {
        let map = SpanMap::identity(original.clone());
        let end = start + len;
        let expected = (start < end && start < original.len())
            .then(|| original.start + start..original.start + end.min(original.len()));
        prop_assert_eq!(map.original(start..end), expected);
    }
}
