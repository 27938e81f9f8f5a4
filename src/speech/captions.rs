//! Captions (WebVTT, SRT) from a session's timed words.
//!
//! One cue per sentence, cut where a sentence would not fit in two lines of
//! about [`LINE_CHARS`] characters (the usual limit for subtitles), at word
//! boundaries. A cue lasts from its first word's start to its last word's
//! end, and shows the user's own text, punctuation included.

use std::fmt::Write;
use std::ops::Range;

use super::words::WordTime;

/// Characters a caption line holds.
pub const LINE_CHARS: usize = 42;
/// Lines a cue holds.
pub const CUE_LINES: usize = 2;

/// The caption formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptionFormat {
    Vtt,
    Srt,
}

impl CaptionFormat {
    pub fn parse(name: &str) -> Option<CaptionFormat> {
        match name.to_ascii_lowercase().as_str() {
            "vtt" | "webvtt" => Some(CaptionFormat::Vtt),
            "srt" => Some(CaptionFormat::Srt),
            _ => None,
        }
    }
}

/// A cue: its lines and its times in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    pub lines: Vec<String>,
    pub start: f64,
    pub end: f64,
}

/// The cues of a text's sentences (`span` in bytes of `text`, and its
/// words) at `rate` samples a second.
pub fn cues(text: &str, sentences: &[(Range<usize>, Vec<WordTime>)], rate: u32) -> Vec<Cue> {
    let mut out = Vec::new();
    for (span, words) in sentences {
        let mut lines: Vec<String> = Vec::new();
        let mut first: Option<&WordTime> = None;
        let mut last: Option<&WordTime> = None;
        for (k, word) in words.iter().enumerate() {
            // The word with the punctuation after it, up to the next word
            // (or the end of the sentence).
            let to = words.get(k + 1).map_or(span.end, |next| next.text.start);
            let piece: String = text[word.text.start..to.max(word.text.end)]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let fits = lines
                .last()
                .is_some_and(|line| line.chars().count() + 1 + piece.chars().count() <= LINE_CHARS);
            if fits {
                let line = lines.last_mut().expect("a line");
                line.push(' ');
                line.push_str(&piece);
            } else if lines.len() < CUE_LINES && first.is_some() {
                lines.push(piece);
            } else {
                if let (Some(a), Some(b)) = (first, last) {
                    out.push(cue(std::mem::take(&mut lines), a, b, rate));
                }
                lines.push(piece);
                first = Some(word);
            }
            if first.is_none() {
                first = Some(word);
            }
            last = Some(word);
        }
        if let (Some(a), Some(b)) = (first, last) {
            out.push(cue(lines, a, b, rate));
        }
    }
    out
}

fn cue(lines: Vec<String>, first: &WordTime, last: &WordTime, rate: u32) -> Cue {
    Cue {
        lines,
        start: first.start_secs(rate),
        end: last.end_secs(rate).max(first.start_secs(rate)),
    }
}

/// The cues as a caption file.
pub fn render(cues: &[Cue], format: CaptionFormat) -> String {
    let mut out = String::new();
    if format == CaptionFormat::Vtt {
        out.push_str("WEBVTT\n\n");
    }
    for (k, cue) in cues.iter().enumerate() {
        let (start, end) = (stamp(cue.start, format), stamp(cue.end, format));
        if format == CaptionFormat::Srt {
            let _ = writeln!(out, "{}", k + 1);
        }
        let _ = writeln!(out, "{start} --> {end}");
        for line in &cue.lines {
            // "-->" would end a WebVTT cue's text early.
            let _ = writeln!(out, "{}", line.replace("-->", "->"));
        }
        out.push('\n');
    }
    out
}

/// `hh:mm:ss.mmm` (WebVTT) or `hh:mm:ss,mmm` (SRT).
fn stamp(seconds: f64, format: CaptionFormat) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mark = if format == CaptionFormat::Srt {
        ','
    } else {
        '.'
    };
    format!("{h:02}:{m:02}:{s:02}{mark}{milli:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words of `text` at one a second, 1000 samples a second.
    fn timed(text: &str, span: Range<usize>, from: u64) -> Vec<WordTime> {
        let mut at = from;
        let mut out = Vec::new();
        for word in text[span].split_whitespace() {
            let start = word.as_ptr() as usize - text.as_ptr() as usize;
            let trimmed = word.trim_end_matches(['.', ',']);
            out.push(WordTime {
                text: start..start + trimmed.len(),
                samples: at..at + 800,
                phonemes: vec![at + 800],
            });
            at += 1000;
        }
        out
    }

    #[test]
    fn a_cue_per_sentence_in_two_lines_at_most() {
        let text = "Hello there. This sentence is long enough that it cannot fit in two lines of forty-two characters, so it is cut.";
        let first = 0..12;
        let second = 13..text.len();
        let sentences = vec![
            (first.clone(), timed(text, first, 0)),
            (second.clone(), timed(text, second, 2000)),
        ];
        let cues = cues(text, &sentences, 1000);
        assert_eq!(cues[0].lines, ["Hello there."]);
        assert_eq!((cues[0].start, cues[0].end), (0.0, 1.8));
        assert!(cues.len() >= 3, "{cues:?}");
        for cue in &cues {
            assert!(cue.lines.len() <= CUE_LINES, "{cue:?}");
            for line in &cue.lines {
                assert!(line.chars().count() <= LINE_CHARS, "{line:?}");
            }
        }
        // Every word once, in order.
        let all: Vec<String> = cues.iter().flat_map(|c| c.lines.clone()).collect();
        assert_eq!(all.join(" "), text);
        for pair in cues.windows(2) {
            assert!(pair[0].end <= pair[1].start, "{pair:?}");
        }
    }

    #[test]
    fn vtt_and_srt_stamps() {
        let cues = [Cue {
            lines: vec!["Hi --> there".into()],
            start: 3661.5,
            end: 3662.0004,
        }];
        assert_eq!(
            render(&cues, CaptionFormat::Vtt),
            "WEBVTT\n\n01:01:01.500 --> 01:01:02.000\nHi -> there\n\n"
        );
        assert_eq!(
            render(&cues, CaptionFormat::Srt),
            "1\n01:01:01,500 --> 01:01:02,000\nHi -> there\n\n"
        );
        assert_eq!(CaptionFormat::parse("VTT"), Some(CaptionFormat::Vtt));
        assert_eq!(CaptionFormat::parse("ass"), None);
    }
}
