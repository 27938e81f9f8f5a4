//! Where the words the engine speaks came from in the text a user sent.
//!
//! A sentence reaches the engine as a *spoken line*: whitespace collapsed,
//! and (for languages with rules) numbers, symbols and abbreviations written
//! out as words. Word timestamps are reported for the user's own words, so
//! every spoken line carries a [`SpanMap`]: a list of segments, each a byte
//! range of the line and the byte range of the original text it was made
//! from. Text kept as it was maps offset by offset; a rewrite ("$500" →
//! "five hundred dollars") maps as a whole, so every spoken word inside it
//! points at the one original word.

use std::ops::Range;

/// One run of a spoken line and the original text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Bytes of the spoken line.
    pub spoken: Range<usize>,
    /// Bytes of the original text (offsets in the session's whole text).
    pub original: Range<usize>,
    /// Rewritten (`spoken` is not a copy of `original`): maps as a whole.
    pub rewritten: bool,
}

/// The segments of one spoken line, in order of the line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpanMap {
    segments: Vec<Segment>,
}

impl SpanMap {
    /// A line that is a copy of `original` (same bytes, same length).
    pub fn identity(original: Range<usize>) -> SpanMap {
        let mut map = SpanMap::default();
        map.keep(0..original.len(), original.start);
        map
    }

    /// `spoken` is a copy of the original text starting at `original_start`.
    pub fn keep(&mut self, spoken: Range<usize>, original_start: usize) {
        if spoken.is_empty() {
            return;
        }
        let original = original_start..original_start + spoken.len();
        // A copy that continues the previous copy extends it.
        if let Some(last) = self.segments.last_mut() {
            if !last.rewritten
                && last.spoken.end == spoken.start
                && last.original.end == original.start
            {
                last.spoken.end = spoken.end;
                last.original.end = original.end;
                return;
            }
        }
        self.segments.push(Segment {
            spoken,
            original,
            rewritten: false,
        });
    }

    /// `spoken` was written for the whole of `original`.
    pub fn rewrite(&mut self, spoken: Range<usize>, original: Range<usize>) {
        if spoken.is_empty() {
            return;
        }
        self.segments.push(Segment {
            spoken,
            original,
            rewritten: true,
        });
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// This map taken one step further back: its original text was itself
    /// a line made of another text by `outer` (SSML's text content, made of
    /// the document), so the result maps this line to `outer`'s original.
    /// Kept text stays offset by offset where `outer` kept it too; anything
    /// either map rewrote maps as a whole.
    pub fn through(&self, outer: &SpanMap) -> SpanMap {
        let mut out = SpanMap::default();
        for seg in &self.segments {
            if seg.rewritten {
                if let Some(original) = outer.original(seg.original.clone()) {
                    out.rewrite(seg.spoken.clone(), original);
                }
                continue;
            }
            for o in &outer.segments {
                let from = seg.original.start.max(o.spoken.start);
                let to = seg.original.end.min(o.spoken.end);
                if from >= to {
                    continue;
                }
                let shift = seg.spoken.start;
                let spoken = (from - seg.original.start + shift)..(to - seg.original.start + shift);
                if o.rewritten {
                    out.rewrite(spoken, o.original.clone());
                } else {
                    out.keep(spoken, from - o.spoken.start + o.original.start);
                }
            }
        }
        out
    }

    /// The original bytes a range of the spoken line came from: kept text
    /// offset by offset, a rewrite as a whole. `None` when the range touches
    /// no segment (a space the line added between two pieces, say).
    pub fn original(&self, spoken: Range<usize>) -> Option<Range<usize>> {
        let mut found: Option<Range<usize>> = None;
        for seg in &self.segments {
            let from = spoken.start.max(seg.spoken.start);
            let to = spoken.end.min(seg.spoken.end);
            if from >= to {
                continue;
            }
            let part = if seg.rewritten {
                seg.original.clone()
            } else {
                let shift = seg.original.start;
                (from - seg.spoken.start + shift)..(to - seg.spoken.start + shift)
            };
            found = Some(match found {
                None => part,
                Some(had) => had.start.min(part.start)..had.end.max(part.end),
            });
        }
        found
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_maps_offset_by_offset() {
        let map = SpanMap::identity(10..20);
        assert_eq!(map.original(0..3), Some(10..13));
        assert_eq!(map.original(4..10), Some(14..20));
        assert_eq!(map.original(10..12), None);
    }

    #[test]
    fn a_rewrite_maps_every_word_inside_it_to_the_whole() {
        // "I owe $500." spoken as "I owe five hundred dollars."
        let original = "I owe $500.";
        let spoken = "I owe five hundred dollars.";
        let mut map = SpanMap::default();
        map.keep(0..6, 0);
        map.rewrite(6..26, 6..10);
        map.keep(26..27, 10);
        assert_eq!(&spoken[6..10], "five");
        assert_eq!(map.original(6..10).map(|r| &original[r]), Some("$500"));
        assert_eq!(map.original(19..26).map(|r| &original[r]), Some("$500"));
        assert_eq!(map.original(2..5).map(|r| &original[r]), Some("owe"));
        // A range across a kept word and a rewrite covers both.
        assert_eq!(map.original(2..10).map(|r| &original[r]), Some("owe $500"));
        assert_eq!(map.segments().len(), 3);
    }

    #[test]
    fn a_map_through_another_reaches_the_first_text() {
        // Document `<s>I owe <say-as interpret-as="cardinal">500</say-as> now</s>`
        // has the content "I owe five hundred now", which is spoken as is.
        let doc = r#"<s>I owe <say-as interpret-as="cardinal">500</say-as> now</s>"#;
        let content = "I owe five hundred now";
        let mut outer = SpanMap::default();
        outer.keep(0..6, 3);
        let said = doc.find("500").unwrap();
        outer.rewrite(6..18, said..said + 3);
        let after = doc.find(" now").unwrap();
        outer.keep(18..22, after);
        // The normalizer keeps "owe five hundred now" (bytes 2.. of content).
        let inner = SpanMap::identity(2..22);
        let map = inner.through(&outer);
        let original = |r: std::ops::Range<usize>| map.original(r).map(|r| &doc[r]);
        assert_eq!(&content[2..5], "owe");
        assert_eq!(original(0..3), Some("owe"));
        assert_eq!(original(4..8), Some("500"));
        assert_eq!(original(9..16), Some("500"));
        assert_eq!(original(17..20), Some("now"));
        // A rewrite inside maps to the whole of what it covers.
        let mut inner = SpanMap::default();
        inner.rewrite(0..5, 0..5);
        assert_eq!(
            inner.through(&outer).original(0..5).map(|r| &doc[r]),
            Some("I owe")
        );
    }

    #[test]
    fn adjacent_copies_join() {
        let mut map = SpanMap::default();
        map.keep(0..3, 5);
        map.keep(3..6, 8);
        assert_eq!(map.segments().len(), 1);
        // A copy after a gap in the original (collapsed whitespace) does not.
        map.keep(6..9, 12);
        assert_eq!(map.segments().len(), 2);
        assert_eq!(map.original(6..9), Some(12..15));
    }
}
