//! The messages of the supervisor and the voice workers, and what they tell
//! about themselves.
//!
//! They live apart from both actors so that each imports the messages, not
//! the other: the supervisor spawns workers and the workers report to it,
//! and neither file needs the other's insides for that.

use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;
use tokio::sync::OwnedSemaphorePermit;

use super::planner::{JobId, SentenceId};
use super::{Sentence, SynthError, SynthJob};
use crate::engine::EngineEvent;
use crate::voices::VoiceInfo;

/// A warm-up answer.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmInfo {
    pub ready_ms: f64,
    pub engine: String,
}

/// What a worker tells about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStatus {
    pub voice: String,
    pub running: bool,
    pub pid: Option<u32>,
    pub jobs: usize,
    pub failed: Option<String>,
}

impl WorkerStatus {
    /// A worker just spawned: no process, no jobs.
    pub fn new(voice: &str) -> WorkerStatus {
        WorkerStatus {
            voice: voice.to_string(),
            running: false,
            pid: None,
            jobs: 0,
            failed: None,
        }
    }
}

/// Whether the engine can run at all.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineHealth {
    Unknown,
    Ok(String),
    Unavailable(String),
}

/// What `/health` needs.
#[derive(Debug, Clone)]
pub struct Health {
    pub engine: EngineHealth,
    pub processes: usize,
    pub max_processes: usize,
    pub workers: Vec<WorkerStatus>,
}

pub enum SupervisorMsg {
    Synthesize(SynthJob),
    Warmup(Arc<VoiceInfo>, RpcReplyPort<Result<WarmInfo, SynthError>>),
    Health(RpcReplyPort<Health>),
    SlotRequest {
        voice: String,
    },
    SlotCancelled {
        voice: String,
    },
    SlotReleased {
        voice: String,
    },
    EvictRefused {
        voice: String,
    },
    WorkerReport {
        voice: String,
        status: WorkerStatus,
        busy: bool,
    },
    EngineProbed(Result<String, String>),
    SampleTick,
    /// The voices in the folder now: the engine of a voice no longer there
    /// stops once its requests are done.
    VoicesPresent(Arc<[String]>),
    /// Stops every worker (and so every engine) and waits for them.
    StopWorkers(RpcReplyPort<()>),
    #[cfg(test)]
    PanicWorker(String),
    /// Makes the supervisor itself fail, as a bug in it would.
    #[cfg(test)]
    Panic,
}

pub enum WorkerMsg {
    Synthesize(SynthJob),
    Warmup(Arc<VoiceInfo>, RpcReplyPort<Result<WarmInfo, SynthError>>),
    Status(RpcReplyPort<WorkerStatus>),
    /// The supervisor granted a process slot.
    SlotGranted,
    /// The turn the worker waited for in the shared queue.
    Turn(OwnedSemaphorePermit),
    /// The supervisor wants the slot back if this worker is idle.
    Evict,
    Engine {
        generation: u64,
        event: EngineEvent,
    },
    StartTimeout {
        generation: u64,
    },
    /// A sentence's hang deadline passed.
    HangCheck {
        generation: u64,
        sentence: SentenceId,
        /// The planner's `progress()` when the deadline was set.
        progress: u64,
        /// The deadline, to arm again if the engine made progress.
        after: Duration,
    },
    IdleCheck {
        epoch: u64,
    },
    SlotTimeout,
    Restart {
        generation: u64,
    },
    /// A client without room may have read: plan again.
    Resume,
    /// Periodic tick: sample memory, recycle a bloated engine.
    Sample,
    /// A client stopped reading: its sentences in the engine are dropped.
    ClientLeft,
    /// A sentence of a job whose text is still arriving.
    MoreText {
        job: JobId,
        sentence: Sentence,
    },
    /// A job's input has ended: it ends once its last sentence is done.
    InputEnded {
        job: JobId,
    },
    #[cfg(test)]
    Panic,
}
