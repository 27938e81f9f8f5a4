//! The actor system: one supervisor, one worker per voice, one config cache.
//!
//! HTTP handlers never touch a process. They hand a [`SynthJob`] to the
//! [`supervisor`], which routes it to the [`voice_worker`] of its voice, and
//! then read [`AudioEvent`]s from the job's channel as the engine produces
//! audio. Voice configs come from the [`config_cache`].

pub mod config_cache;
pub mod supervisor;
pub mod voice_worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::engine::SynthOptions;
use crate::voices::VoiceInfo;

/// Events a job's channel can hold before the worker stops scheduling more
/// of its sentences (a slow streaming client must not fill memory).
pub const JOB_CHANNEL_CAPACITY: usize = 16;

/// One synthesis request, ready for the engine.
#[derive(Debug)]
pub struct SynthJob {
    pub voice: Arc<VoiceInfo>,
    /// Engine lines in order: speakable pieces of about a sentence each.
    pub units: Vec<String>,
    pub options: SynthOptions,
    /// Characters in the request, for metrics.
    pub chars: usize,
    /// Chunks the text was split into, for metrics.
    pub chunks: usize,
    pub received: Instant,
    pub events: mpsc::Sender<AudioEvent>,
}

impl SynthJob {
    /// A job and the receiving end of its events.
    pub fn new(
        voice: Arc<VoiceInfo>,
        units: Vec<String>,
        options: SynthOptions,
        chars: usize,
        chunks: usize,
    ) -> (SynthJob, mpsc::Receiver<AudioEvent>) {
        let (events, rx) = mpsc::channel(JOB_CHANNEL_CAPACITY);
        let job = SynthJob {
            voice,
            units,
            options,
            chars,
            chunks,
            received: Instant::now(),
            events,
        };
        (job, rx)
    }
}

/// What a job's channel carries, in order: audio, then `Done` or `Failed`.
#[derive(Debug)]
pub enum AudioEvent {
    /// 16-bit little-endian mono PCM at the voice's sample rate.
    Audio(Bytes),
    Done(SynthSummary),
    Failed(SynthError),
}

/// Totals of a finished job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthSummary {
    pub samples: u64,
    /// Pieces skipped because the engine found nothing to say in them.
    pub skipped_units: usize,
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
