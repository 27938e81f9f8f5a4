//! The scheduler: one supervisor and one worker per voice (actors).
//!
//! Front-ends never touch a process. The speech core hands a [`SynthJob`]
//! to the [`supervisor`], which routes it to the [`voice_worker`] of its
//! voice, and then reads [`AudioEvent`]s from the job's channel as the
//! engine produces audio. The two actors talk through the [`messages`] module, so neither imports the other's
//! insides: the supervisor spawns workers, and workers only send it
//! messages.
//!
//! A worker is an actor shell around two pure parts that do no I/O and
//! import nothing from the actors: the [`planner`] (what runs next in the
//! engine, on how many threads, what is taken back, what fits, what a
//! crash is blamed on) and the engine's [`lifecycle`] (slot, start, ready,
//! backoff, crash window, recycle, idle). Events go in, actions come out,
//! and the worker carries them out.

pub mod lifecycle;
pub mod messages;
pub mod planner;
pub mod supervisor;
pub mod voice_worker;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::engine::{EngineWord, SynthOptions};
use crate::voices::VoiceInfo;

/// Events a job's channel can hold before the worker stops scheduling more
/// of its sentences (a slow streaming client must not fill memory).
pub const JOB_CHANNEL_CAPACITY: usize = 16;

/// A sentence for the engine: one line of text, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sentence {
    /// What the engine speaks.
    pub line: String,
    /// Byte offsets in the session's whole text; the scheduler only hands
    /// them back with the sentence's audio.
    pub span: Range<usize>,
    /// The engine's `length_scale` for this sentence alone (an SSML
    /// `prosody rate`), over the job's.
    pub length_scale: Option<f32>,
}

/// One synthesis request. Its text may still be arriving: sentences come
/// first in `sentences`, then one at a time on `more` as the client writes
/// them; `more` closing (its sender dropped) is the end of the input. The
/// job ends when its input has ended and its last sentence is done.
#[derive(Debug)]
pub struct SynthJob {
    pub voice: Arc<VoiceInfo>,
    pub sentences: Vec<Sentence>,
    pub more: Option<mpsc::UnboundedReceiver<Sentence>>,
    pub options: SynthOptions,
    pub received: Instant,
    pub events: mpsc::Sender<AudioEvent>,
    /// A complete answer: no audio before each sentence's end (see
    /// `Planner::hold_parts`).
    pub complete: bool,
}

impl SynthJob {
    /// A job whose whole text is known, and the receiving end of its events.
    pub fn whole(
        voice: Arc<VoiceInfo>,
        sentences: Vec<Sentence>,
        options: SynthOptions,
    ) -> (SynthJob, mpsc::Receiver<AudioEvent>) {
        SynthJob::open(voice, sentences, None, options)
    }

    /// A job with `sentences` now and, when `more` is given, more to come.
    pub fn open(
        voice: Arc<VoiceInfo>,
        sentences: Vec<Sentence>,
        more: Option<mpsc::UnboundedReceiver<Sentence>>,
        options: SynthOptions,
    ) -> (SynthJob, mpsc::Receiver<AudioEvent>) {
        let (events, rx) = mpsc::channel(JOB_CHANNEL_CAPACITY);
        let job = SynthJob {
            voice,
            sentences,
            more,
            options,
            received: Instant::now(),
            events,
            complete: false,
        };
        (job, rx)
    }
}

/// What a job's channel carries, in order: audio, then `Done` or `Failed`.
#[derive(Debug)]
pub enum AudioEvent {
    /// The audio of one sentence: 16-bit little-endian mono PCM at the
    /// voice's sample rate, the sentence's span, and when each written
    /// word of its line is spoken (empty if the engine did not say).
    Audio {
        span: Range<usize>,
        pcm: Bytes,
        words: Vec<EngineWord>,
    },
    /// Part of the audio of the sentence being said (a decoder chunk); its
    /// end comes as `Audio`, with the rest of its audio, possibly none.
    Part(Bytes),
    Done(SynthSummary),
    Failed(SynthError),
}

/// Sends a job's last event, `Done` or `Failed`, so that it always arrives.
/// Audio goes out with `try_send`, into room checked before its sentence was
/// planned, and that room keeps a place for the outcome; should the channel
/// be full all the same, the outcome waits for the client on a task of its
/// own, which ends when the client reads it or leaves. Lost, it would leave
/// a slow client with a bare close instead of the error.
pub(crate) fn send_outcome(events: &mpsc::Sender<AudioEvent>, outcome: AudioEvent) {
    match events.try_send(outcome) {
        Ok(()) | Err(TrySendError::Closed(_)) => {}
        Err(TrySendError::Full(outcome)) => {
            let events = events.clone();
            tokio::spawn(async move {
                let _ = events.send(outcome).await;
            });
        }
    }
}

/// Totals of a finished job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthSummary {
    pub samples: u64,
    /// Sentences skipped because the engine found nothing to say in them.
    pub skipped_sentences: usize,
}

/// Why a job did not finish. The HTTP layer maps each to a status.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SynthError {
    #[error("Process limit reached: every engine process stayed busy for {0:?}")]
    ProcessLimit(Duration),
    #[error("voice {voice} is unavailable after repeated engine failures: {cause}")]
    VoiceUnavailable { voice: String, cause: String },
    #[error("the speech engine cannot run: {0}")]
    EngineUnavailable(String),
    #[error("the speech engine did not finish an utterance in time")]
    EngineTimeout,
    #[error("the speech engine produced invalid output: {0}")]
    EngineBadOutput(String),
    #[error("the speech engine stopped while synthesizing: {0}")]
    EngineCrashed(String),
    #[error("nothing in the text can be spoken")]
    NoSpeakableText,
    #[error("the server is shutting down")]
    ShuttingDown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_outcome_waits_for_room_in_a_full_channel() {
        let (events, mut rx) = mpsc::channel(JOB_CHANNEL_CAPACITY);
        let audio = || AudioEvent::Audio {
            span: 0..1,
            pcm: Bytes::from_static(&[0, 0]),
            words: Vec::new(),
        };
        while events.try_send(audio()).is_ok() {}
        send_outcome(&events, AudioEvent::Failed(SynthError::EngineTimeout));
        drop(events);
        for _ in 0..JOB_CHANNEL_CAPACITY {
            assert!(matches!(rx.recv().await, Some(AudioEvent::Audio { .. })));
        }
        let last = rx.recv().await;
        assert!(
            matches!(last, Some(AudioEvent::Failed(SynthError::EngineTimeout))),
            "{last:?}"
        );
        assert!(rx.recv().await.is_none());
    }
}
