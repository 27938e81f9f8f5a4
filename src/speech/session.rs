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

use bytes::Bytes;
use tokio::sync::mpsc;

use super::admission::{Admission, Ticket};
use super::cache::{AudioCache, CacheKey, CachedSentence, CachedSpeech};
use super::error::{SpeechError, MAX_TEXT_CHARS};
use super::words::{sentence_words, WordTime};
use crate::engine::EngineWord;
use crate::scheduler::{AudioEvent, Sentence, SynthError};
use crate::text::spans::SpanMap;
use crate::text::stream::{Piece, SentenceStream};
use crate::voices::VoiceInfo;

/// What a session says, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeechEvent {
    /// 16-bit little-endian mono PCM at the voice's sample rate.
    Audio(Bytes),
    /// The audio of one sentence is complete; `span` is its place in the
    /// session's text, in bytes, and `words` its written words with when
    /// they are spoken over the session's whole audio (empty when the
    /// engine did not say).
    SentenceEnd {
        span: Range<usize>,
        words: Vec<WordTime>,
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
    /// Characters and chunks of a whole text, for logs.
    size: (usize, usize),
    queued: VecDeque<SpeechEvent>,
    ended: bool,
    /// The maps of the sentences sent and not heard back yet, by the start
    /// of their span, in order.
    maps: VecDeque<(usize, SpanMap)>,
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
            size: (0, 0),
            queued: VecDeque::new(),
            ended: false,
            maps: VecDeque::new(),
            sink: None,
        }
    }

    /// Every sentence end read from now on also goes to `sink`.
    pub fn with_word_sink(mut self, sink: WordSink) -> Session {
        self.sink = Some(sink);
        self
    }

    /// The maps of a whole text's sentences (start of span, map), in order.
    pub(super) fn with_maps(mut self, maps: Vec<(usize, SpanMap)>) -> Session {
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
        });
        self.admission = Some(admission);
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
        let chars = input.splitter.chars() + crate::text::char_count(text);
        if chars > MAX_TEXT_CHARS {
            return Err(SpeechError::TextTooLong(chars));
        }
        let pieces = input.splitter.push(text);
        self.send(pieces)
    }

    /// Sends whatever text is buffered as a sentence, complete or not.
    pub fn flush(&mut self) -> Result<(), SpeechError> {
        let pieces = match self.input.as_mut() {
            Some(input) => input.splitter.flush(),
            None => return Ok(()),
        };
        self.send(pieces)
    }

    /// The end of the text: the session is done once its last sentence is.
    pub fn end(&mut self) -> Result<(), SpeechError> {
        let pieces = match self.input.as_mut() {
            Some(input) => input.splitter.finish(),
            None => return Ok(()),
        };
        let sent = self.send(pieces);
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

    fn send(&mut self, pieces: Vec<Piece>) -> Result<(), SpeechError> {
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
        for piece in pieces {
            self.maps.push_back((piece.span.start, piece.map));
            let sentence = Sentence {
                line: piece.line,
                span: piece.span,
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
        if let (Some(sink), Some(SpeechEvent::SentenceEnd { span, words })) = (&self.sink, &event) {
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
                Some(AudioEvent::Audio { span, pcm, words }) => {
                    return Some(self.audio(span, pcm, words))
                }
                Some(AudioEvent::Done(done)) => SpeechEvent::Done(Summary {
                    samples: done.samples,
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

    /// A sentence's audio from the engine: counted, checked against the
    /// limit, copied for the cache, then handed out with its end behind it.
    fn audio(
        &mut self,
        span: Range<usize>,
        pcm: Bytes,
        engine_words: Vec<EngineWord>,
    ) -> SpeechEvent {
        if !self.spoken {
            self.spoken = true;
            self.ticket = None;
        }
        // Sentences the engine found nothing to say in have no audio: their
        // maps are passed over.
        while self
            .maps
            .front()
            .is_some_and(|(start, _)| *start < span.start)
        {
            self.maps.pop_front();
        }
        let words = match self.maps.front() {
            Some((start, map)) if *start == span.start => {
                let words = sentence_words(&engine_words, map, self.samples);
                self.maps.pop_front();
                words
            }
            _ => Vec::new(),
        };
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
                tee.sentences.push(CachedSentence {
                    span: span.clone(),
                    end: tee.pcm.len(),
                    words: words.clone(),
                });
            } else {
                self.tee = None;
            }
        }
        self.queued
            .push_back(SpeechEvent::SentenceEnd { span, words });
        SpeechEvent::Audio(pcm)
    }
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
        clause_chars: 100,
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
                words: Vec::new()
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
                },
                CachedSentence {
                    span: 6..9,
                    end: 600,
                    words: Vec::new(),
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
