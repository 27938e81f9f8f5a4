//! Why speech could not be made: the one error of the speech core.
//!
//! Every front-end maps it once, in its own place, to what its clients
//! understand (an HTTP status and code, a Wyoming `error` event, a WebSocket
//! close code). [`SpeechError::kind`] tells the four families apart for
//! front-ends that only need that much.

use std::time::Duration;

use crate::scheduler::SynthError;
use crate::text::ssml::SsmlError;
use crate::voices::VoiceError;

/// Longest text accepted in one request or session, in characters.
pub const MAX_TEXT_CHARS: usize = 100_000;

/// Who is at fault, broadly: what a front-end needs to pick a status family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong; retrying it unchanged fails again.
    Client,
    /// The server is full for now; the same request may succeed later.
    Busy,
    /// The engine failed or cannot run.
    Engine,
    /// The server is stopping.
    ShuttingDown,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SpeechError {
    #[error("text is empty")]
    EmptyText,
    #[error("text has {0} characters; the limit is {MAX_TEXT_CHARS}")]
    TextTooLong(usize),
    #[error("nothing in the text can be spoken")]
    NoSpeakableText,
    #[error("invalid {param}: {message}")]
    InvalidParameter {
        param: &'static str,
        message: String,
    },
    #[error(transparent)]
    InvalidSsml(#[from] SsmlError),
    #[error(transparent)]
    Voice(#[from] VoiceError),
    #[error("the server is overloaded: {waiting} requests are waiting for their first audio; retry later")]
    Overloaded { waiting: usize },
    #[error("the answer would hold more than {max_seconds} s of audio (PIPER_MAX_AUDIO_SECONDS); stream it instead")]
    AudioTooLong { max_seconds: u64 },
    #[error(transparent)]
    Synth(#[from] SynthError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl SpeechError {
    pub fn kind(&self) -> ErrorKind {
        use SpeechError::*;
        match self {
            EmptyText
            | TextTooLong(_)
            | NoSpeakableText
            | InvalidParameter { .. }
            | InvalidSsml(_)
            | AudioTooLong { .. } => ErrorKind::Client,
            Voice(VoiceError::BadConfig { .. }) => ErrorKind::Engine,
            Voice(_) => ErrorKind::Client,
            Overloaded { .. } => ErrorKind::Busy,
            Synth(err) => match err {
                SynthError::ProcessLimit(_) => ErrorKind::Busy,
                SynthError::NoSpeakableText => ErrorKind::Client,
                SynthError::ShuttingDown => ErrorKind::ShuttingDown,
                _ => ErrorKind::Engine,
            },
            Internal(_) => ErrorKind::Engine,
        }
    }

    /// When a retry may succeed, for errors that pass.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SpeechError::Overloaded { .. } => Some(Duration::from_secs(1)),
            SpeechError::Synth(SynthError::ProcessLimit(waited)) => {
                Some((*waited).clamp(Duration::from_secs(1), Duration::from_secs(30)))
            }
            SpeechError::Synth(
                SynthError::VoiceUnavailable { .. } | SynthError::EngineUnavailable(_),
            ) => Some(Duration::from_secs(10)),
            SpeechError::Synth(SynthError::ShuttingDown) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}
