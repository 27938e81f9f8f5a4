//! A speech session: text in (at once or over time), events out.
//!
//! The events of a session, in order: for each sentence, its audio
//! ([`SpeechEvent::Audio`], PCM as it is made) and then its end
//! ([`SpeechEvent::SentenceEnd`], with its span in the text); finally
//! [`SpeechEvent::Done`] or [`SpeechEvent::Failed`]. A session fed from the
//! audio cache gives the same events, without the engine.
//!
//! Dropping a session is hanging up: the scheduler drops its sentences at
//! once.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::admission::{Admission, Ticket};
use super::cache::{AudioCache, CacheKey, CachedSentence, CachedSpeech};
use super::error::{SpeechError, MAX_TEXT_CHARS};
use super::words::{sentence_words, SpokenLine, WordTime};
use crate::engine::EngineWord;
use crate::scheduler::{AudioEvent, Sentence, SynthError};
use crate::text::normalize::Rules;
use crate::text::spans::SpanMap;
use crate::text::ssml::{self, Pace};
use crate::text::stream::{Piece, PieceLimits, SentenceStream};
use crate::voices::VoiceInfo;

/// What a session says, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeechEvent {
    /// 16-bit little-endian mono PCM at the voice's sample rate.
    Audio(Bytes),
    /// The audio of one sentence is complete; `span` is its place in the
    /// session's text, in bytes, and `words` its written words with when
    /// they are spoken over the session's whole audio (empty when the
    /// engine did not say); `spoken` the line the engine was given and its
    /// words, timed the same way (`None` when not known).
    SentenceEnd {
        span: Range<usize>,
        words: Vec<WordTime>,
        spoken: Option<Arc<SpokenLine>>,
    },
    Done(Summary),
    Failed(SpeechError),
}

/// Totals of a finished session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub samples: u64,
    /// Sentences the engine found nothing to say in.
    pub skipped: usize,
    /// Served from the audio cache.
    pub cached: bool,
}

/// Where a session's audio comes from.
enum Source {
    Live(mpsc::Receiver<AudioEvent>),
    /// Cached speech, handed out a second of audio at a time so that a long
    /// answer is encoded piece by piece, never in one go.
    Cached {
        speech: CachedSpeech,
        at: usize,
        mark: usize,
        piece: usize,
    },
}

/// The text side of a session whose text arrives over time.
struct Input {
    splitter: SentenceStream,
    sentences: mpsc::UnboundedSender<Sentence>,
    /// The text is SSML: read document by document instead.
    ssml: Option<SsmlInput>,
}

/// SSML arriving over time. A document can only be parsed whole, so text
/// is buffered until a `</speak>` closes one (or a flush or the end says
/// that what is buffered is all); text that does not start with `<speak>`
/// is read as a document's content (`<break time="1s"/>` among plain text).
struct SsmlInput {
    buf: String,
    /// Bytes of the session's text before `buf`.
    base: usize,
    chars: usize,
    limits: PieceLimits,
    rules: Rules,
    /// The `length_scale` a rate of 100% speaks at.
    scale: f32,
}

impl SsmlInput {
    /// The pieces of every document complete in the buffer, or (`all`) of
    /// everything buffered; spans and maps are bytes of the session's text.
    fn take(&mut self, all: bool) -> Result<Vec<(Piece, Pace)>, SpeechError> {
        let mut out = Vec::new();
        loop {
            let end = match self.buf.find("</speak>") {
                Some(at) => at + "</speak>".len(),
                None if all && !self.buf.trim().is_empty() => self.buf.len(),
                None => break,
            };
            let doc: String = self.buf.drain(..end).collect();
            let base = self.base;
            self.base += end;
            if doc.trim().is_empty() {
                continue;
            }
            let (text, at) = if ssml::looks_like_ssml(&doc) {
                (doc.clone(), 0)
            } else {
                (format!("<speak>{doc}</speak>"), "<speak>".len())
            };
            let mut outer = SpanMap::default();
            outer.keep(at..at + doc.len(), base);
            for (piece, pace) in ssml::pieces(&text, self.limits, self.rules)? {
                let Some(span) = outer.original(piece.span.clone()) else {
                    continue;
                };
                let map = piece.map.through(&outer);
                let line = piece.line;
                out.push((Piece { line, span, map }, pace));
            }
        }
        if all {
            self.base += self.buf.len();
            self.buf.clear();
        }
        Ok(out)
    }
}

/// A copy of the audio for the cache, while it stays small enough.
struct Tee {
    cache: Arc<AudioCache>,
    key: CacheKey,
    pcm: Vec<u8>,
    sentences: Vec<CachedSentence>,
}

pub struct Session {
    voice: Arc<VoiceInfo>,
    source: Source,
    input: Option<Input>,
    /// The session's place among those waiting for their first audio.
    ticket: Option<Ticket>,
    admission: Option<Arc<Admission>>,
    spoken: bool,
    tee: Option<Tee>,
    /// Most samples the session may make (complete answers).
    max_samples: Option<(u64, u64)>,
    samples: u64,
    /// Where the sentence being said began, once its first audio came.
    sentence_start: Option<u64>,
    /// Characters and chunks of a whole text, for logs.
    size: (usize, usize),
    queued: VecDeque<SpeechEvent>,
    ended: bool,
    /// The maps, spoken lines and paces of the sentences sent and not heard
    /// back yet, by the start of their span, in order.
    maps: VecDeque<(usize, SpanMap, String, Pace)>,
    /// Samples the session added (breaks) less those it took away (the
    /// quiet edges a break replaces), for the summary.
    added: i64,
    /// A sentence of this session has a break at an edge: its audio is held
    /// until its end, since the quiet edge a break replaces is only known
    /// with the whole sentence (such sessions hear each sentence whole, not
    /// from its first decoder chunk).
    paced: bool,
    /// Audio of the sentence being said, held while `paced`.
    held: Vec<Bytes>,
    /// Where each sentence's span and words go as its end is read.
    sink: Option<WordSink>,
}

/// The sentences of a session (span and timed words) as they end, for a
/// front-end that hands the session to an encoder and still wants them.
pub type WordSink = Arc<std::sync::Mutex<Vec<(Range<usize>, Vec<WordTime>)>>>;

impl Session {
    pub(super) fn live(
        voice: Arc<VoiceInfo>,
        events: mpsc::Receiver<AudioEvent>,
        ticket: Option<Ticket>,
    ) -> Session {
        Session::new(voice, Source::Live(events), ticket)
    }

    pub(super) fn from_cache(voice: Arc<VoiceInfo>, speech: CachedSpeech) -> Session {
        let piece = (voice.sample_rate as usize * 2).max(2);
        let source = Source::Cached {
            speech,
            at: 0,
            mark: 0,
            piece,
        };
        Session::new(voice, source, None)
    }

    fn new(voice: Arc<VoiceInfo>, source: Source, ticket: Option<Ticket>) -> Session {
        Session {
            voice,
            source,
            input: None,
            ticket,
            admission: None,
            spoken: false,
            tee: None,
            max_samples: None,
            samples: 0,
            sentence_start: None,
            size: (0, 0),
            queued: VecDeque::new(),
            ended: false,
            maps: VecDeque::new(),
            added: 0,
            paced: false,
            held: Vec::new(),
            sink: None,
        }
    }

    /// Every sentence end read from now on also goes to `sink`.
    pub fn with_word_sink(mut self, sink: WordSink) -> Session {
        self.sink = Some(sink);
        self
    }

    /// The maps of a whole text's sentences (start of span, map, spoken
    /// line, pace), in order.
    pub(super) fn with_maps(mut self, maps: Vec<(usize, SpanMap, String, Pace)>) -> Session {
        self.paced = maps
            .iter()
            .any(|(_, _, _, pace)| pace.before_ms.is_some() || pace.after_ms.is_some());
        self.maps = maps.into();
        self
    }

    /// Text will arrive over time through [`Session::push`].
    pub(super) fn with_input(
        mut self,
        splitter: SentenceStream,
        sentences: mpsc::UnboundedSender<Sentence>,
        admission: Arc<Admission>,
    ) -> Session {
        self.input = Some(Input {
            splitter,
            sentences,
            ssml: None,
        });
        self.admission = Some(admission);
        self
    }

    /// The text pushed is SSML (see [`SsmlInput`]); `scale` is the
    /// `length_scale` of the request's own rate.
    pub(super) fn with_ssml(mut self, limits: PieceLimits, rules: Rules, scale: f32) -> Session {
        if let Some(input) = self.input.as_mut() {
            input.ssml = Some(SsmlInput {
                buf: String::new(),
                base: 0,
                chars: 0,
                limits,
                rules,
                scale,
            });
        }
        self
    }

    /// Keeps a copy of the audio (up to the cache's largest entry) and puts
    /// it in the cache when the session is done.
    pub(super) fn with_tee(mut self, cache: Arc<AudioCache>, key: CacheKey) -> Session {
        self.tee = Some(Tee {
            cache,
            key,
            pcm: Vec::new(),
            sentences: Vec::new(),
        });
        self
    }

    /// Fails the session once it has made more than `seconds` of audio.
    pub(super) fn with_limit(mut self, seconds: u64) -> Session {
        self.max_samples = Some((seconds * self.voice.sample_rate as u64, seconds));
        self
    }

    /// Records the size of the whole text: characters and chunks.
    pub(super) fn with_size(mut self, chars: usize, chunks: usize) -> Session {
        self.size = (chars, chunks);
        self
    }

    /// Characters and chunks of the text, as logged (0 for text over time).
    pub fn text_size(&self) -> (usize, usize) {
        self.size
    }

    /// Puts an event back in front (the first one, read to see whether the
    /// session started at all).
    pub(super) fn unread(&mut self, event: SpeechEvent) {
        self.queued.push_front(event);
    }

    pub fn voice(&self) -> &Arc<VoiceInfo> {
        &self.voice
    }

    pub fn sample_rate(&self) -> u32 {
        self.voice.sample_rate
    }

    pub fn cached(&self) -> bool {
        matches!(self.source, Source::Cached { .. })
    }

    /// Adds text; every sentence it completes goes to the engine at once.
    pub fn push(&mut self, text: &str) -> Result<(), SpeechError> {
        let Some(input) = self.input.as_mut() else {
            return Err(SpeechError::Internal(
                "the session's input has ended".into(),
            ));
        };
        let had = match &input.ssml {
            Some(ssml) => ssml.chars,
            None => input.splitter.chars(),
        };
        let chars = had + crate::text::char_count(text);
        if chars > MAX_TEXT_CHARS {
            return Err(SpeechError::TextTooLong(chars));
        }
        let pieces = match input.ssml.as_mut() {
            Some(ssml) => {
                ssml.chars = chars;
                ssml.buf.push_str(text);
                ssml.take(false)?
            }
            None => plain(input.splitter.push(text)),
        };
        self.send(pieces)
    }

    /// Sends whatever text is buffered as a sentence, complete or not.
    pub fn flush(&mut self) -> Result<(), SpeechError> {
        let pieces = match self.input.as_mut() {
            Some(Input {
                ssml: Some(ssml), ..
            }) => ssml.take(true)?,
            Some(input) => plain(input.splitter.flush()),
            None => return Ok(()),
        };
        self.send(pieces)
    }

    /// The end of the text: the session is done once its last sentence is.
    pub fn end(&mut self) -> Result<(), SpeechError> {
        let pieces = match self.input.as_mut() {
            Some(Input {
                ssml: Some(ssml), ..
            }) => ssml.take(true),
            Some(input) => Ok(plain(input.splitter.finish())),
            None => return Ok(()),
        };
        let sent = pieces.and_then(|pieces| self.send(pieces));
        // Dropping the sender tells the scheduler the input has ended.
        self.input = None;
        sent
    }

    /// Whether the session still takes text.
    pub fn input_open(&self) -> bool {
        self.input.is_some()
    }

    /// Whether sentences went to the engine that have not come back yet:
    /// the client is owed speech, so its silence is not idleness.
    pub fn owes_speech(&self) -> bool {
        !self.maps.is_empty()
    }

    fn send(&mut self, pieces: Vec<(Piece, Pace)>) -> Result<(), SpeechError> {
        if pieces.is_empty() {
            return Ok(());
        }
        // A session waits for its first audio from its first sentence on.
        if !self.spoken && self.ticket.is_none() {
            if let Some(admission) = &self.admission {
                self.ticket = Some(admission.admit()?);
            }
        }
        let Some(input) = self.input.as_ref() else {
            return Ok(());
        };
        let scale = input.ssml.as_ref().map_or(1.0, |ssml| ssml.scale);
        for (piece, pace) in pieces {
            self.paced |= pace.before_ms.is_some() || pace.after_ms.is_some();
            self.maps
                .push_back((piece.span.start, piece.map, piece.line.clone(), pace));
            let sentence = Sentence {
                line: piece.line,
                span: piece.span,
                length_scale: pace.rate.map(|rate| super::rate_scale(scale, rate)),
            };
            if input.sentences.send(sentence).is_err() {
                // The job ended (it failed): its events say why.
                break;
            }
        }
        Ok(())
    }

    /// The next event; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<SpeechEvent> {
        let event = self.next_event().await;
        if let (Some(sink), Some(SpeechEvent::SentenceEnd { span, words, .. })) =
            (&self.sink, &event)
        {
            if let Ok(mut sink) = sink.lock() {
                sink.push((span.clone(), words.clone()));
            }
        }
        event
    }

    async fn next_event(&mut self) -> Option<SpeechEvent> {
        if let Some(event) = self.queued.pop_front() {
            return Some(event);
        }
        if self.ended {
            return None;
        }
        let event = match &mut self.source {
            Source::Live(events) => match events.recv().await {
                Some(AudioEvent::Part(pcm)) if self.paced => {
                    self.held.push(pcm);
                    return Box::pin(self.next_event()).await;
                }
                Some(AudioEvent::Part(pcm)) => return Some(self.part(pcm)),
                Some(AudioEvent::Audio { span, pcm, words }) => {
                    return Some(self.audio(span, pcm, words))
                }
                Some(AudioEvent::Done(done)) => SpeechEvent::Done(Summary {
                    samples: done.samples.saturating_add_signed(self.added),
                    skipped: done.skipped_sentences,
                    cached: false,
                }),
                Some(AudioEvent::Failed(err)) => SpeechEvent::Failed(err.into()),
                None => SpeechEvent::Failed(
                    SynthError::EngineCrashed("the voice worker stopped".into()).into(),
                ),
            },
            Source::Cached {
                speech,
                at,
                mark,
                piece,
            } => {
                // Up to the end of the current sentence, or of the audio
                // once the marks run out.
                let sentence = speech.sentences.get(*mark).cloned();
                let end = sentence.as_ref().map_or(speech.pcm.len(), |s| s.end);
                if *at < end {
                    let to = end.min(*at + *piece);
                    let pcm = speech.pcm.slice(*at..to);
                    *at = to;
                    if let (Some(sentence), true) = (sentence, to == end) {
                        *mark += 1;
                        self.queued.push_back(SpeechEvent::SentenceEnd {
                            span: sentence.span,
                            words: sentence.words,
                            spoken: sentence.spoken,
                        });
                    }
                    self.samples += pcm.len() as u64 / 2;
                    return Some(SpeechEvent::Audio(pcm));
                }
                SpeechEvent::Done(Summary {
                    samples: speech.pcm.len() as u64 / 2,
                    skipped: 0,
                    cached: true,
                })
            }
        };
        self.ended = true;
        self.ticket = None;
        match &event {
            SpeechEvent::Done(_) => {
                if let Some(tee) = self.tee.take() {
                    tee.cache.insert(
                        tee.key,
                        CachedSpeech {
                            pcm: Bytes::from(tee.pcm),
                            sentences: tee.sentences.into(),
                        },
                    );
                }
            }
            _ => self.tee = None,
        }
        Some(event)
    }

    /// A sentence's end, with the last of its audio (possibly none; all of
    /// it when the session is `paced`): its breaks made, counted, checked
    /// against the limit, copied for the cache, then handed out with its
    /// end behind it, its words timed from where its first audio began.
    fn audio(
        &mut self,
        span: Range<usize>,
        pcm: Bytes,
        engine_words: Vec<EngineWord>,
    ) -> SpeechEvent {
        let pcm = if self.held.is_empty() {
            pcm
        } else {
            let mut whole = BytesMut::new();
            for part in self.held.drain(..) {
                whole.extend_from_slice(&part);
            }
            whole.extend_from_slice(&pcm);
            whole.freeze()
        };
        // Where the sentence's first audio began: before this, if parts of
        // it went out already (then it has no break: see `paced`).
        let start = self.sentence_start.take().unwrap_or(self.samples);
        // Sentences the engine found nothing to say in have no audio: their
        // maps are passed over, and a break after one comes after this one.
        let mut skipped_after = None;
        while self
            .maps
            .front()
            .is_some_and(|(start, _, _, _)| *start < span.start)
        {
            if let Some((_, _, _, pace)) = self.maps.pop_front() {
                skipped_after = pace.after_ms.or(skipped_after);
            }
        }
        let (map, mut pace) = match self.maps.front() {
            Some((start, _, _, _)) if *start == span.start => {
                let (_, map, line, pace) = self.maps.pop_front().expect("front is there");
                (Some((map, line)), pace)
            }
            _ => (None, Pace::default()),
        };
        if pace.after_ms.is_none() {
            pace.after_ms = skipped_after;
        }
        let (pcm, shift) = self.breaks(pcm, pace);
        let (words, spoken) = match map {
            Some((map, line)) => {
                let len = self.samples - start + pcm.len() as u64 / 2;
                let moved: Vec<EngineWord> = engine_words
                    .into_iter()
                    .map(|w| EngineWord {
                        samples: shift(w.samples.start).min(len)..shift(w.samples.end).min(len),
                        phonemes: w.phonemes.iter().map(|p| shift(*p).min(len)).collect(),
                        text: w.text,
                    })
                    .collect();
                let spoken = SpokenLine::new(line, &moved, start);
                (sentence_words(&moved, &map, start), Some(Arc::new(spoken)))
            }
            None => (Vec::new(), None),
        };
        let event = self.part(pcm);
        self.sentence_start = None;
        if let Some(tee) = &mut self.tee {
            tee.sentences.push(CachedSentence {
                span: span.clone(),
                end: tee.pcm.len(),
                words: words.clone(),
                spoken: spoken.clone(),
            });
        }
        let end = SpeechEvent::SentenceEnd {
            span,
            words,
            spoken,
        };
        if matches!(&event, SpeechEvent::Audio(pcm) if pcm.is_empty()) {
            return end;
        }
        if matches!(event, SpeechEvent::Audio(_)) {
            self.queued.push_back(end);
        }
        event
    }

    /// Audio of the sentence being said.
    fn part(&mut self, pcm: Bytes) -> SpeechEvent {
        if self.sentence_start.is_none() {
            self.sentence_start = Some(self.samples);
        }
        if !self.spoken {
            self.spoken = true;
            self.ticket = None;
        }
        self.samples += pcm.len() as u64 / 2;
        if let Some((max, seconds)) = self.max_samples {
            if self.samples > max {
                self.ended = true;
                self.tee = None;
                // Dropping the events ends the job in the scheduler.
                self.source = Source::Live(mpsc::channel(1).1);
                return SpeechEvent::Failed(SpeechError::AudioTooLong {
                    max_seconds: seconds,
                });
            }
        }
        if let Some(tee) = &mut self.tee {
            if tee.pcm.len() + pcm.len() <= tee.cache.max_entry() {
                tee.pcm.extend_from_slice(&pcm);
            } else {
                self.tee = None;
            }
        }
        SpeechEvent::Audio(pcm)
    }

    /// A sentence's audio with the breaks its pace asks for: a break
    /// replaces the quiet edge of the audio on its side with exactly its
    /// length of silence. Returns the audio and how a sample of the
    /// engine's audio moved.
    fn breaks(&mut self, pcm: Bytes, pace: Pace) -> (Bytes, impl Fn(u64) -> u64) {
        let samples = pcm.len() / 2;
        let rate = u64::from(self.voice.sample_rate);
        let zeros = |ms: u32| (u64::from(ms) * rate / 1000) as usize;
        let (lead, before) = match pace.before_ms {
            Some(ms) => (quiet_lead(&pcm), zeros(ms)),
            None => (0, 0),
        };
        let (tail, after) = match pace.after_ms {
            Some(ms) => (quiet_tail(&pcm).min(samples - lead), zeros(ms)),
            None => (0, 0),
        };
        let shift = move |sample: u64| (sample.saturating_sub(lead as u64)) + before as u64;
        if pace.before_ms.is_none() && pace.after_ms.is_none() {
            return (pcm, shift);
        }
        let mut kept: Vec<i16> = (lead..samples - tail).map(|i| sample_at(&pcm, i)).collect();
        // The cut edge fades in or out, so that it does not click.
        let fade = (FADE_MS * rate / 1000) as usize;
        let gain = |s: &mut i16, i: usize| *s = (f64::from(*s) * i as f64 / fade as f64) as i16;
        if pace.before_ms.is_some() {
            for (i, s) in kept.iter_mut().take(fade).enumerate() {
                gain(s, i);
            }
        }
        if pace.after_ms.is_some() {
            for (i, s) in kept.iter_mut().rev().take(fade).enumerate() {
                gain(s, i);
            }
        }
        let n = kept.len();
        let mut out = Vec::with_capacity((before + n + after) * 2);
        out.resize(before * 2, 0);
        out.extend(kept.iter().flat_map(|s| s.to_le_bytes()));
        out.resize(out.len() + after * 2, 0);
        self.added += (before + after) as i64 - (lead + tail) as i64;
        (Bytes::from(out), shift)
    }
}

/// Pieces of plain text, at the pace of the request.
fn plain(pieces: Vec<Piece>) -> Vec<(Piece, Pace)> {
    pieces.into_iter().map(|p| (p, Pace::default())).collect()
}

/// Samples at or under this (-40 dBFS) are silence at a sentence's edge:
/// the engine's own pause before and after speech, which a break replaces.
/// (The bundled voice's speech fades under it in its last 20 to 30 ms.)
const QUIET: i16 = 328;
/// The edge a break cuts fades over this long.
const FADE_MS: u64 = 5;

fn sample_at(pcm: &[u8], i: usize) -> i16 {
    i16::from_le_bytes([pcm[2 * i], pcm[2 * i + 1]])
}

/// Quiet samples at the start of 16-bit PCM.
fn quiet_lead(pcm: &[u8]) -> usize {
    let n = pcm.len() / 2;
    (0..n)
        .find(|&i| sample_at(pcm, i).unsigned_abs() > QUIET as u16)
        .unwrap_or(n)
}

/// Quiet samples at the end of 16-bit PCM.
fn quiet_tail(pcm: &[u8]) -> usize {
    let n = pcm.len() / 2;
    (0..n)
        .rev()
        .find(|&i| sample_at(pcm, i).unsigned_abs() > QUIET as u16)
        .map_or(n, |last| n - 1 - last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::SynthSummary;
    use crate::text::stream::PieceLimits;

    fn voice() -> Arc<VoiceInfo> {
        Arc::new(crate::testing::voice_info("v", 100, &[]))
    }

    const LIMITS: PieceLimits = PieceLimits {
        max_chars: 150,
        chunk_chars: 5000,
    };

    /// A live session with input, and the scheduler's side of it.
    fn open() -> (
        Session,
        mpsc::UnboundedReceiver<Sentence>,
        mpsc::Sender<AudioEvent>,
        Arc<Admission>,
    ) {
        let (events_tx, events) = mpsc::channel(16);
        let (more, sentences) = mpsc::unbounded_channel();
        let admission = Arc::new(Admission::new(1));
        let session = Session::live(voice(), events, None).with_input(
            SentenceStream::new(LIMITS),
            more,
            admission.clone(),
        );
        (session, sentences, events_tx, admission)
    }

    #[tokio::test]
    async fn sentences_go_out_as_they_complete_and_end_closes_the_input() {
        let (mut session, mut sentences, _events, admission) = open();
        session.push("Hello there. Gen").unwrap();
        let first = sentences.try_recv().unwrap();
        assert_eq!(first.span, 0..12);
        assert!(sentences.try_recv().is_err(), "the second is not complete");
        // Waiting for its first audio from its first sentence on.
        assert_eq!(admission.waiting(), 1);
        session.push("eral Kenobi!").unwrap();
        session.end().unwrap();
        let second = sentences.try_recv().unwrap();
        assert_eq!(second.line, "General Kenobi!");
        assert_eq!(second.span, 13..28);
        // The scheduler sees the input's end as the channel closing.
        assert!(matches!(
            sentences.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(session.push("more").is_err());
    }

    #[tokio::test]
    async fn a_session_leaves_the_queue_at_its_first_audio() {
        let (mut session, _sentences, events, admission) = open();
        session.push("One. Two").unwrap();
        assert_eq!(admission.waiting(), 1);
        // The queue holds one: another session's first sentence is refused.
        let (mut other, _s2, _e2, _) = open();
        other.admission = Some(admission.clone());
        assert!(matches!(
            other.push("Three. Four"),
            Err(SpeechError::Overloaded { .. })
        ));
        events
            .send(AudioEvent::Audio {
                span: 0..4,
                pcm: Bytes::from_static(&[1, 0, 2, 0]),
                words: Vec::new(),
            })
            .await
            .unwrap();
        assert_eq!(
            session.next().await,
            Some(SpeechEvent::Audio(Bytes::from_static(&[1, 0, 2, 0])))
        );
        assert_eq!(admission.waiting(), 0);
        assert_eq!(
            session.next().await,
            Some(SpeechEvent::SentenceEnd {
                span: 0..4,
                words: Vec::new(),
                // The line the engine was given, though it timed no word.
                spoken: Some(Arc::new(SpokenLine {
                    line: "One.".into(),
                    words: Vec::new(),
                })),
            })
        );
        events
            .send(AudioEvent::Done(SynthSummary {
                samples: 2,
                skipped_sentences: 0,
            }))
            .await
            .unwrap();
        assert!(matches!(session.next().await, Some(SpeechEvent::Done(_))));
        assert_eq!(session.next().await, None);
    }

    #[tokio::test]
    async fn words_are_timed_over_the_whole_audio_and_kept_by_the_cache() {
        let (mut session, mut sentences, events, _) = open();
        let cache = Arc::new(AudioCache::new(1 << 20));
        let key = cache.key(&voice(), ["x"].into_iter(), &Default::default());
        session = session.with_tee(cache.clone(), key.clone());
        let text = "Hi  there.  \n Bye now.";
        session.push(text).unwrap();
        session.end().unwrap();
        let mut sent = Vec::new();
        while let Ok(sentence) = sentences.try_recv() {
            sent.push(sentence);
        }
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0].line, "Hi there.");
        // Words as the engine gives them: bytes of the line, samples of the
        // sentence's own audio (100 samples a second).
        let word = |text: Range<usize>, samples: Range<u64>| EngineWord {
            phonemes: vec![samples.end],
            text,
            samples,
        };
        for (sentence, words, samples) in [
            (&sent[0], vec![word(0..2, 5..20), word(3..8, 25..60)], 80),
            (&sent[1], vec![word(0..3, 4..30), word(4..7, 35..50)], 60),
        ] {
            events
                .send(AudioEvent::Audio {
                    span: sentence.span.clone(),
                    pcm: Bytes::from(vec![0; samples * 2]),
                    words,
                })
                .await
                .unwrap();
        }
        events
            .send(AudioEvent::Done(SynthSummary {
                samples: 140,
                skipped_sentences: 0,
            }))
            .await
            .unwrap();
        let mut heard = Vec::new();
        while let Some(event) = session.next().await {
            if let SpeechEvent::SentenceEnd { words, .. } = event {
                heard.extend(words);
            }
        }
        let flat = |words: &[WordTime]| -> Vec<(String, Range<u64>)> {
            words
                .iter()
                .map(|w| (text[w.text.clone()].to_string(), w.samples.clone()))
                .collect()
        };
        // The second sentence's words come after the first's 80 samples,
        // and point at the user's text (with its own spacing).
        assert_eq!(
            flat(&heard),
            [
                ("Hi".to_string(), 5..20),
                ("there".to_string(), 25..60),
                ("Bye".to_string(), 84..110),
                ("now".to_string(), 115..130),
            ]
        );
        let cached = cache.get(&key).expect("cached");
        let mut again = Session::from_cache(voice(), cached);
        let mut heard_again = Vec::new();
        while let Some(event) = again.next().await {
            if let SpeechEvent::SentenceEnd { words, .. } = event {
                heard_again.extend(words);
            }
        }
        assert_eq!(heard_again, heard);
    }

    /// 16-bit PCM of these samples.
    fn pcm(samples: &[i16]) -> Bytes {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[tokio::test]
    async fn a_break_replaces_the_quiet_edges_with_exact_silence() {
        let (events_tx, events) = mpsc::channel(16);
        // 100 samples a second: 100 ms is 10 samples.
        let before = Pace {
            before_ms: Some(100),
            after_ms: Some(200),
            ..Pace::default()
        };
        let after = Pace {
            before_ms: Some(0),
            ..Pace::default()
        };
        let mut session = Session::live(voice(), events, None).with_maps(vec![
            (0, SpanMap::identity(0..2), "Hi".to_string(), before),
            (3, SpanMap::identity(3..5), "Yo".to_string(), after),
        ]);
        let word = |samples: Range<u64>| EngineWord {
            text: 0..2,
            phonemes: vec![samples.end],
            samples,
        };
        // Quiet (|x| <= 100) edges: 3 samples before, 2 after.
        let first = pcm(&[0, 50, -100, 900, -800, 700, 20, 0]);
        let second = pcm(&[5, 1000, 0]);
        for (span, pcm, words) in [
            (0..2, first, vec![word(3..6)]),
            (3..5, second, vec![word(1..2)]),
        ] {
            events_tx
                .send(AudioEvent::Audio { span, pcm, words })
                .await
                .unwrap();
        }
        events_tx
            .send(AudioEvent::Done(SynthSummary {
                samples: 11,
                skipped_sentences: 0,
            }))
            .await
            .unwrap();
        let mut audio = Vec::new();
        let mut words = Vec::new();
        let summary = loop {
            match session.next().await {
                Some(SpeechEvent::Audio(bytes)) => audio.extend_from_slice(&bytes),
                Some(SpeechEvent::SentenceEnd { words: w, .. }) => words.extend(w),
                Some(SpeechEvent::Done(summary)) => break summary,
                other => panic!("{other:?}"),
            }
        };
        let samples: Vec<i16> = audio
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let mut want = vec![0; 10];
        want.extend([900, -800, 700]);
        want.extend([0; 20]);
        want.extend([1000, 0]);
        assert_eq!(samples, want);
        assert_eq!(summary.samples, want.len() as u64);
        // Words move with their audio: after the leading break, and the
        // second sentence's after the first and its break.
        let times: Vec<Range<u64>> = words.iter().map(|w| w.samples.clone()).collect();
        assert_eq!(times, [10..13, 33..34]);
    }

    #[tokio::test]
    async fn ssml_over_time_is_read_document_by_document() {
        let (events_tx, events) = mpsc::channel(16);
        let (more, mut sentences) = mpsc::unbounded_channel();
        let admission = Arc::new(Admission::new(4));
        let mut session = Session::live(voice(), events, None)
            .with_input(SentenceStream::new(LIMITS), more, admission)
            .with_ssml(LIMITS, Rules::Off, 1.0);
        drop(events_tx);
        session
            .push(r#"<speak>One <break time="1s"/> two"#)
            .unwrap();
        assert!(sentences.try_recv().is_err(), "the document is not whole");
        session
            .push(r#"</speak><speak><prosody rate="50%">Three</prosody>"#)
            .unwrap();
        let got: Vec<(String, Option<f32>)> = std::iter::from_fn(|| sentences.try_recv().ok())
            .map(|s| (s.line, s.length_scale))
            .collect();
        assert_eq!(got, [("One".into(), None), ("two".into(), None)]);
        // Text without <speak> is a document's content; the end reads the rest.
        session.push("</speak>Four<break/>").unwrap();
        session.flush().unwrap();
        session.push(" five <bad").unwrap();
        let got: Vec<(String, Range<usize>, Option<f32>)> =
            std::iter::from_fn(|| sentences.try_recv().ok())
                .map(|s| (s.line, s.span, s.length_scale))
                .collect();
        let text = r#"<speak>One <break time="1s"/> two</speak><speak><prosody rate="50%">Three</prosody></speak>Four<break/>"#;
        let three = text.find("Three").unwrap();
        let four = text.find("Four").unwrap();
        assert_eq!(
            got,
            [
                (
                    "Three".into(),
                    three..three + 5,
                    Some(crate::speech::rate_scale(1.0, 50))
                ),
                ("Four".into(), four..four + 4, None)
            ]
        );
        assert!(matches!(session.end(), Err(SpeechError::InvalidSsml(_))));
    }

    #[tokio::test]
    async fn too_much_text_is_refused_without_losing_the_session() {
        let (mut session, _sentences, _events, _) = open();
        let big = "a".repeat(MAX_TEXT_CHARS);
        session.push(&big).unwrap();
        assert_eq!(
            session.push("b"),
            Err(SpeechError::TextTooLong(MAX_TEXT_CHARS + 1))
        );
    }

    #[tokio::test]
    async fn a_complete_answer_stops_at_its_audio_limit() {
        let (events_tx, events) = mpsc::channel(16);
        // 100 samples a second: 1 s is 200 bytes.
        let mut session = Session::live(voice(), events, None).with_limit(1);
        for _ in 0..2 {
            events_tx
                .send(AudioEvent::Audio {
                    span: 0..1,
                    pcm: Bytes::from(vec![0; 150]),
                    words: Vec::new(),
                })
                .await
                .unwrap();
        }
        assert!(matches!(session.next().await, Some(SpeechEvent::Audio(_))));
        assert!(matches!(
            session.next().await,
            Some(SpeechEvent::SentenceEnd { .. })
        ));
        assert_eq!(
            session.next().await,
            Some(SpeechEvent::Failed(SpeechError::AudioTooLong {
                max_seconds: 1
            }))
        );
        assert_eq!(session.next().await, None);
        // Hanging up on the job: the scheduler sees its events closed.
        assert!(events_tx.is_closed());
    }

    #[tokio::test]
    async fn cached_speech_comes_a_second_at_a_time_with_its_sentences() {
        // 100 samples a second: 200 bytes a second; sentences end at 500 and 600.
        let speech = CachedSpeech {
            pcm: Bytes::from(vec![0; 600]),
            sentences: Arc::from(vec![
                CachedSentence {
                    span: 0..5,
                    end: 500,
                    words: Vec::new(),
                    spoken: None,
                },
                CachedSentence {
                    span: 6..9,
                    end: 600,
                    words: Vec::new(),
                    spoken: None,
                },
            ]),
        };
        let mut session = Session::from_cache(voice(), speech);
        let mut seen = Vec::new();
        while let Some(event) = session.next().await {
            seen.push(match event {
                SpeechEvent::Audio(pcm) => format!("audio {}", pcm.len()),
                SpeechEvent::SentenceEnd { span, .. } => format!("end {span:?}"),
                SpeechEvent::Done(summary) => format!("done {}", summary.samples),
                SpeechEvent::Failed(err) => format!("failed {err}"),
            });
        }
        assert_eq!(
            seen,
            [
                "audio 200",
                "audio 200",
                "audio 100",
                "end 0..5",
                "audio 100",
                "end 6..9",
                "done 300"
            ]
        );
    }
}
