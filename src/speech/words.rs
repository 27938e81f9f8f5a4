//! When each written word of a session's text is spoken, and each character.
//!
//! The engine reports, per sentence, every written word of the spoken line
//! (bytes of the line) with its first and last sample and where each of its
//! phonemes ends, from the durations the voice model used (see
//! docs/engine-protocol.md, `W` frames). Here those words are taken back to
//! the user's text through the sentence's [`SpanMap`] (so a word rewritten
//! before speaking, "$500" said as "five hundred dollars", is one entry) and
//! placed on the session's whole audio, after the sentences before it and
//! their silence.

use std::ops::Range;

use crate::engine::EngineWord;
use crate::text::spans::SpanMap;

/// A written word of the session's text and when it is spoken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordTime {
    /// Bytes of the session's whole text: the word as the user wrote it.
    pub text: Range<usize>,
    /// Samples from the start of the session's audio: the first, and the
    /// one after the last.
    pub samples: Range<u64>,
    /// Where each of its phonemes ends, in the same samples (increasing,
    /// the last is `samples.end`; empty when none was found for it).
    pub phonemes: Vec<u64>,
}

impl WordTime {
    /// Start in seconds at `rate` samples a second.
    pub fn start_secs(&self, rate: u32) -> f64 {
        self.samples.start as f64 / f64::from(rate.max(1))
    }

    /// End in seconds at `rate` samples a second.
    pub fn end_secs(&self, rate: u32) -> f64 {
        self.samples.end as f64 / f64::from(rate.max(1))
    }
}

/// A sentence's words from the engine, taken back to the user's text
/// through `map` and moved `offset` samples on (the audio before the
/// sentence). Spoken words from one original word (a rewrite) join into
/// one entry; words the map cannot place (a word the line added) are left
/// out.
pub fn sentence_words(engine: &[EngineWord], map: &SpanMap, offset: u64) -> Vec<WordTime> {
    let mut out: Vec<WordTime> = Vec::with_capacity(engine.len());
    for word in engine {
        let Some(text) = map.original(word.text.clone()) else {
            continue;
        };
        let samples = word.samples.start + offset..word.samples.end + offset;
        let phonemes = word.phonemes.iter().map(|p| p + offset);
        match out.last_mut() {
            Some(last) if text.start < last.text.end => {
                last.text = last.text.start.min(text.start)..last.text.end.max(text.end);
                if samples.end >= last.samples.end {
                    last.samples.end = samples.end;
                    last.phonemes.extend(phonemes);
                }
            }
            _ => out.push(WordTime {
                text,
                samples,
                phonemes: phonemes.collect(),
            }),
        }
    }
    out
}

/// A sentence as the engine was given it: its spoken line (the text after
/// the normalizer's rewrite, "five hundred dollars" for "$500") and its
/// words in bytes of that line, timed like the written words over the
/// session's whole audio. ElevenLabs' `normalizedAlignment` is made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpokenLine {
    pub line: String,
    pub words: Vec<WordTime>,
}

impl SpokenLine {
    /// The engine's words of `line`, moved `offset` samples on.
    pub fn new(line: String, engine: &[EngineWord], offset: u64) -> SpokenLine {
        let words = sentence_words(engine, &SpanMap::identity(0..line.len()), offset);
        SpokenLine { line, words }
    }
}

/// One character of a text and when it is spoken, in milliseconds from the
/// start of the session's audio (the shape of ElevenLabs' `alignment`:
/// `chars`, `charStartTimesMs`, `charDurationsMs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharTime {
    pub ch: char,
    pub start_ms: u64,
    pub duration_ms: u64,
}

/// Every character of `text[span]` (a sentence, `span` in bytes of the
/// session's text) with its time, from the sentence's measured word times
/// (`words`, as [`sentence_words`] gives them) and the sentence's audio
/// (`audio`, samples from the start of the session's audio, its silence
/// included), at `rate` samples a second.
///
/// - A character inside a word gets the phonemes at the same place in the
///   word: the word's `n` characters lay over its `m` phonemes in order,
///   character `i` covering phonemes `i·m/n` to `(i+1)·m/n` (fractions of a
///   phoneme where they do not divide), each phoneme with its measured
///   duration. So the letters of a long vowel last longer than those of a
///   short consonant. A word without phonemes spreads over its own span.
/// - Characters between words (spaces, punctuation) share the pause
///   between them (the end of one word to the start of the next); those
///   before the first word share the time from the sentence's start, and
///   those after the last word the time to its end.
///
/// Times never go back and the durations add up, so the characters tile
/// the sentence's audio from its first word's start (or from its start,
/// when characters come before the first word) to its end.
pub fn char_times(
    text: &str,
    span: Range<usize>,
    words: &[WordTime],
    audio: Range<u64>,
    rate: u32,
) -> Vec<CharTime> {
    let ms = |samples: u64| (samples as f64 * 1000.0 / f64::from(rate.max(1))).round() as u64;
    char_samples(text, span, words, audio)
        .into_iter()
        .map(|(ch, samples)| {
            let start = ms(samples.start);
            CharTime {
                ch,
                start_ms: start,
                duration_ms: ms(samples.end).saturating_sub(start),
            }
        })
        .collect()
}

/// [`char_times`] in samples: every character of `text[span]` with the
/// samples it is spoken over (from the start of the session's audio). The
/// ranges follow each other without gaps or overlaps.
pub fn char_samples(
    text: &str,
    span: Range<usize>,
    words: &[WordTime],
    audio: Range<u64>,
) -> Vec<(char, Range<u64>)> {
    let sentence = &text[span.clone()];
    let chars: Vec<(usize, char)> = sentence
        .char_indices()
        .map(|(at, ch)| (span.start + at, ch))
        .collect();
    // The boundaries of the characters, in samples: bounds[i]..bounds[i + 1].
    let mut bounds = vec![audio.start; chars.len() + 1];
    let mut words = words
        .iter()
        .filter(|w| w.text.start >= span.start && w.text.end <= span.end)
        .peekable();
    let mut gap_from = (0, audio.start);
    loop {
        let word = words.peek().copied();
        let gap_to = word.map_or(chars.len(), |w| {
            chars.partition_point(|&(at, _)| at < w.text.start)
        });
        // The characters gap_from.0..gap_to share the pause before the word.
        let until = word.map_or(audio.end, |w| w.samples.start).max(gap_from.1);
        spread(&mut bounds, gap_from.0, gap_to, gap_from.1, until);
        let Some(word) = word else { break };
        words.next();
        let end = chars.partition_point(|&(at, _)| at < word.text.end);
        place_word(&mut bounds, gap_to, end, word, until);
        gap_from = (end, bounds[end]);
    }
    chars
        .iter()
        .enumerate()
        .map(|(k, &(_, ch))| (ch, bounds[k]..bounds[k + 1]))
        .collect()
}

/// Characters `from..to` share `start..end` equally (a pause has no
/// phonemes to go by).
fn spread(bounds: &mut [u64], from: usize, to: usize, start: u64, end: u64) {
    let count = (to - from) as u64;
    for (done, bound) in bounds[from..=to].iter_mut().enumerate() {
        *bound = start
            + ((end - start) * done as u64)
                .checked_div(count)
                .unwrap_or(0);
    }
}

/// Characters `from..to` of one word over its phonemes.
fn place_word(bounds: &mut [u64], from: usize, to: usize, word: &WordTime, begin: u64) {
    let start = word.samples.start.max(begin);
    let end = word.samples.end.max(start);
    let n = (to - from) as u64;
    if n == 0 {
        return;
    }
    // Phoneme k lasts edges[k]..edges[k + 1].
    let mut edges = vec![start];
    edges.extend(word.phonemes.iter().map(|&p| p.clamp(start, end)));
    if edges.len() == 1 || *edges.last().unwrap() != end {
        edges.push(end);
    }
    let m = (edges.len() - 1) as u64;
    for k in 0..=n {
        // Position k·m/n along the phonemes: phoneme `whole`, `part`/n into it.
        let whole = (k * m / n) as usize;
        let part = k * m % n;
        bounds[from + k as usize] = if whole as u64 >= m {
            end
        } else {
            let (a, b) = (edges[whole], edges[whole + 1]);
            a + (b - a) * part / n
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine_word(text: Range<usize>, samples: Range<u64>, phonemes: &[u64]) -> EngineWord {
        EngineWord {
            text,
            samples,
            phonemes: phonemes.to_vec(),
        }
    }

    #[test]
    fn words_go_back_to_the_original_text_and_onto_the_whole_audio() {
        // "I owe   $500." spoken as "I owe five hundred dollars."
        let original = "Hi. I owe   $500.";
        let mut map = SpanMap::default();
        map.keep(0..5, 4);
        map.rewrite(6..26, 12..16);
        map.keep(26..27, 16);
        let engine = [
            engine_word(0..1, 100..200, &[200]),
            engine_word(2..5, 250..400, &[300, 400]),
            engine_word(6..10, 450..600, &[600]),
            engine_word(11..18, 620..800, &[800]),
            engine_word(19..26, 820..1000, &[900, 1000]),
        ];
        let words = sentence_words(&engine, &map, 10_000);
        let texts: Vec<&str> = words.iter().map(|w| &original[w.text.clone()]).collect();
        assert_eq!(texts, ["I", "owe", "$500"]);
        assert_eq!(words[0].samples, 10_100..10_200);
        assert_eq!(words[2].samples, 10_450..11_000);
        assert_eq!(words[2].phonemes, [10_600, 10_800, 10_900, 11_000]);
        assert_eq!(words[2].start_secs(1000), 10.45);
        // A word the map cannot place is left out.
        let only = sentence_words(&[engine_word(30..32, 0..1, &[])], &map, 0);
        assert!(only.is_empty());
    }

    #[test]
    fn letters_follow_the_phonemes_and_pauses_are_shared() {
        // 1000 samples a second: samples are milliseconds.
        let text = "Oh, see.";
        let words = [
            WordTime {
                text: 0..2,
                // "O" is a long phoneme, "h" a short one.
                samples: 100..400,
                phonemes: vec![350, 400],
            },
            WordTime {
                text: 4..7,
                samples: 500..700,
                phonemes: vec![550, 700],
            },
        ];
        let got = char_times(text, 0..8, &words, 0..900, 1000);
        let flat: Vec<(char, u64, u64)> = got
            .iter()
            .map(|c| (c.ch, c.start_ms, c.duration_ms))
            .collect();
        assert_eq!(
            flat,
            [
                ('O', 100, 250),
                ('h', 350, 50),
                (',', 400, 50),
                (' ', 450, 50),
                // Three letters over two phonemes: two thirds of them each.
                ('s', 500, 33),
                ('e', 533, 67),
                ('e', 600, 100),
                ('.', 700, 200),
            ]
        );
        // The first character starts at the sentence's start when no word does.
        let got = char_times(" (Oh", 0..4, &[], 0..40, 1000);
        assert_eq!(got.iter().map(|c| c.duration_ms).sum::<u64>(), 40);
    }

    #[test]
    fn characters_tile_the_sentence_without_going_back() {
        let text = "Well, I'm fine — really!";
        let words = [
            WordTime {
                text: 0..4,
                samples: 1000..5000,
                phonemes: vec![],
            },
            WordTime {
                text: 6..9,
                samples: 6000..8000,
                phonemes: vec![7000, 8000],
            },
            WordTime {
                text: 10..14,
                samples: 8000..12000,
                phonemes: vec![9000, 10000, 11000, 12000],
            },
            WordTime {
                text: 19..25,
                samples: 15000..20000,
                phonemes: vec![16000, 20000],
            },
        ];
        let got = char_times(text, 0..text.len(), &words, 0..22050, 22050);
        assert_eq!(got.len(), text.chars().count());
        // From the first word's start (45 ms) to the sentence's end.
        let mut at = 45;
        for c in &got {
            assert_eq!(c.start_ms, at, "{got:?}");
            at += c.duration_ms;
        }
        assert_eq!(at, 1000);
        assert_eq!(got.iter().map(|c| c.ch).collect::<String>(), text);
    }
}
