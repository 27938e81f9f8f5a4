//! The worker of one voice: its engine process and its requests.
//!
//! The worker owns at most one engine process. It keeps every request it
//! holds and feeds the engine sentence by sentence, round-robin across
//! requests, so a short request is never stuck behind a long one. Audio of
//! a sentence is forwarded once the sentence is complete: if the process
//! dies mid-sentence, that sentence is sent again to the next process and
//! the client never sees half of it.
//!
//! All workers take turns through one fair semaphore of
//! `PIPER_ENGINE_CONCURRENCY` permits: a sentence is sent to an engine only
//! with a turn, so engines of several voices never fight over the cores. A
//! sentence that holds every turn runs alone on every core, which is fastest
//! for it; sentences that hold one turn each run side by side on a share of
//! the cores, which makes the most audio per second. A request's first
//! sentence, whose latency is its request's time to first audio, runs alone
//! whenever the turns are free, and so does the only sentence a worker has;
//! when several wait they share. A first sentence that finds the turns taken
//! takes back those of a long request's sentences: the engine drops them and
//! they are said again right after, so a short request never waits for a
//! long one.
//!
//! Everything that happens to the process (frames, its end, deadlines, the
//! idle timer) arrives as a message, so the worker never waits on it.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use metrics::{counter, gauge, histogram};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::messages::{SupervisorMsg, WarmInfo, WorkerMsg, WorkerStatus};
use super::{AudioEvent, Sentence, SynthError, SynthJob, SynthSummary};
use crate::config::Config;
use crate::engine::protocol::{cancel_line, Request};
use crate::engine::{EngineEvent, EngineProcess, EngineSpec, Frame, ReadyInfo};
use crate::metrics::{self as m, ExitReason};
use crate::text::char_count as chars;
use crate::voices::{Fingerprint, VoiceInfo};

/// A request with at least this many sentences still to send, and audio
/// already delivered, may have its sentences in the engine taken back for a
/// newcomer's first one.
const PREEMPTIBLE_REMAINING: usize = 4;
/// Hang deadline per character of the sentence, on top of the base.
const DEADLINE_PER_CHAR: Duration = Duration::from_millis(50);
/// First restart delay after a crash; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a polite stop waits before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// Retry interval for requests whose clients are not reading.
const RESUME_AFTER: Duration = Duration::from_millis(20);

/// The worker actor (zero-sized: everything lives in [`WorkerState`]).
pub struct VoiceWorker;

pub struct WorkerArgs {
    pub voice: Arc<VoiceInfo>,
    pub config: Arc<Config>,
    pub spec: EngineSpec,
    pub supervisor: ActorRef<SupervisorMsg>,
    /// Turns to synthesize, shared by all workers.
    pub turns: Arc<Semaphore>,
}

/// Where the engine process is in its life.
enum Proc {
    /// No process and no slot.
    Stopped,
    /// Asked the supervisor for a slot.
    WaitingSlot,
    /// Holds a slot; waiting out a backoff before starting again.
    Backoff,
    Starting {
        engine: EngineProcess,
        fingerprint: Fingerprint,
        since: Instant,
    },
    Ready {
        engine: EngineProcess,
        fingerprint: Fingerprint,
        info: ReadyInfo,
    },
    /// Crash-looped: refuses requests until `until`.
    Failed { until: Instant, cause: String },
}

impl Proc {
    fn holds_slot(&self) -> bool {
        matches!(
            self,
            Proc::Backoff | Proc::Starting { .. } | Proc::Ready { .. }
        )
    }

    fn engine(&self) -> Option<&EngineProcess> {
        match self {
            Proc::Starting { engine, .. } | Proc::Ready { engine, .. } => Some(engine),
            _ => None,
        }
    }
}

/// A sentence waiting for the engine: its place in the request and whether
/// it was already lost once to a crash.
struct Unit {
    seq: u32,
    text: String,
    span: Range<usize>,
    retried: bool,
}

struct Job {
    id: u64,
    units: VecDeque<Unit>,
    /// Its client may still send sentences.
    input_open: bool,
    /// The place of its next sentence to arrive.
    next_seq: u32,
    options: crate::engine::SynthOptions,
    events: tokio::sync::mpsc::Sender<AudioEvent>,
    received: Instant,
    first_audio: Option<Instant>,
    waited: bool,
    /// Whether a sentence of it went to the engine yet.
    started: bool,
    /// Its next sentence did not fit beside those in the engine, and a
    /// later request's went instead; it is not passed over twice.
    passed_over: bool,
    samples: u64,
    skipped: usize,
    in_flight: usize,
    /// The next sentence to forward; sentences finished out of order (the
    /// engine synthesizes several at once) wait in `finished`.
    next_to_send: u32,
    finished: std::collections::BTreeMap<u32, (Range<usize>, Bytes)>,
    /// Dropped with the job: ends the task that watches for its client
    /// leaving.
    _watch: tokio::sync::oneshot::Sender<()>,
}

impl Job {
    fn fail(&self, err: SynthError) {
        let _ = self.events.try_send(AudioEvent::Failed(err));
    }
}

struct InFlight {
    unit: u32,
    job: u64,
    seq: u32,
    text: String,
    span: Range<usize>,
    pcm: Vec<Bytes>,
    retried: bool,
    /// Its turn, given back when it ends; `None` once it is taken back.
    turn: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    /// Taken back (`cancel` sent): it ends with a cancelled frame or, if the
    /// engine was already done, as usual.
    fn cancelling(&self) -> bool {
        self.turn.is_none()
    }

    /// Asks the engine to drop it, and returns its turn.
    fn cancel(&mut self, engine: &EngineProcess) -> Option<OwnedSemaphorePermit> {
        engine.send(cancel_line(self.unit));
        self.turn.take()
    }
}

pub struct WorkerState {
    voice: Arc<VoiceInfo>,
    config: Arc<Config>,
    spec: EngineSpec,
    supervisor: ActorRef<SupervisorMsg>,
    proc: Proc,
    generation: u64,
    /// Requests held, in round-robin order (front is served next).
    jobs: VecDeque<Job>,
    /// Sentences sent to the engine, in the order they were sent.
    in_flight: Vec<InFlight>,
    /// Sentences the engine synthesizes at once (from its ready frame).
    engine_parallel: usize,
    /// Whether the engine takes cancel lines (from its ready frame).
    engine_cancels: bool,
    turns: Arc<Semaphore>,
    /// A turn granted to this worker and not used yet.
    spare: Option<OwnedSemaphorePermit>,
    /// Waiting in the semaphore's queue for a turn.
    asking_turn: bool,
    next_job: u64,
    next_unit: u32,
    warmups: Vec<(Instant, RpcReplyPort<Result<WarmInfo, SynthError>>)>,
    idle_epoch: u64,
    crashes: VecDeque<Instant>,
    backoff: Duration,
    /// Replace the process once the sentences in flight are done.
    recycle: Option<ExitReason>,
    resume_pending: bool,
    slot_timer_armed: bool,
    /// What the supervisor was last told.
    reported: Option<(WorkerStatus, bool)>,
}

impl Actor for VoiceWorker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        // Series that only move on failures exist from the start, at 0, so
        // rates and alerts over them have data on a healthy server.
        let voice = args.voice.name.clone();
        counter!(m::PROCESS_RESTARTS, "voice" => voice.clone()).absolute(0);
        counter!(m::PREEMPTIONS, "voice" => voice.clone()).absolute(0);
        for cores in ["all", "shared"] {
            counter!(m::SENTENCES, "voice" => voice.clone(), "cores" => cores).absolute(0);
        }
        gauge!(m::VOICE_FAILED, "voice" => voice).set(0.0);
        Ok(WorkerState {
            voice: args.voice,
            config: args.config,
            spec: args.spec,
            supervisor: args.supervisor,
            proc: Proc::Stopped,
            generation: 0,
            jobs: VecDeque::new(),
            in_flight: Vec::new(),
            engine_parallel: 1,
            engine_cancels: false,
            turns: args.turns,
            spare: None,
            asking_turn: false,
            next_job: 0,
            next_unit: 1,
            warmups: Vec::new(),
            idle_epoch: 0,
            crashes: VecDeque::new(),
            backoff: FIRST_BACKOFF,
            recycle: None,
            resume_pending: false,
            slot_timer_armed: false,
            reported: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        for job in state.jobs.drain(..) {
            job.fail(SynthError::ShuttingDown);
        }
        for (_, reply) in state.warmups.drain(..) {
            let _ = reply.send(Err(SynthError::ShuttingDown));
        }
        if let Some(engine) = state.take_engine(ExitReason::Shutdown) {
            engine.stop(STOP_GRACE).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Synthesize(job) => state.accept(&myself, job),
            WorkerMsg::Warmup(voice, reply) => state.warmup(&myself, voice, reply),
            WorkerMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            WorkerMsg::SlotGranted => state.slot_granted(&myself),
            WorkerMsg::Turn(permit) => {
                state.asking_turn = false;
                state.spare = Some(permit);
                state.pump(&myself);
                // Not used (no sentence could go out): back to the others.
                state.spare = None;
            }
            WorkerMsg::Evict => state.evict(),
            WorkerMsg::Engine { generation, event } if generation == state.generation => {
                state.engine_event(&myself, event)
            }
            WorkerMsg::Engine { .. } => {} // from a process already replaced
            WorkerMsg::StartTimeout { generation } => {
                if generation == state.generation && matches!(state.proc, Proc::Starting { .. }) {
                    let cause = format!(
                        "the engine did not become ready within {:?}",
                        state.config.engine_start_timeout
                    );
                    state.process_failed(&myself, ExitReason::Hang, cause, None);
                }
            }
            WorkerMsg::HangCheck { generation, unit } => {
                let hung = generation == state.generation
                    && state.in_flight.iter().any(|f| f.unit == unit);
                if hung {
                    let cause = "the engine did not finish an utterance in time".to_string();
                    let blame = Some((unit, SynthError::EngineTimeout));
                    state.process_failed(&myself, ExitReason::Hang, cause, blame);
                }
            }
            WorkerMsg::IdleCheck { epoch } => {
                if epoch == state.idle_epoch && state.jobs.is_empty() && state.proc.holds_slot() {
                    tracing::info!(voice = %state.voice.name, "stopping idle engine");
                    state.stop_process(ExitReason::Idle);
                }
            }
            WorkerMsg::SlotTimeout => state.slot_timeout(&myself),
            WorkerMsg::Restart { generation } => {
                if generation == state.generation && matches!(state.proc, Proc::Backoff) {
                    state.start_process(&myself);
                }
            }
            WorkerMsg::Resume => {
                state.resume_pending = false;
                state.pump(&myself);
            }
            WorkerMsg::Sample => state.sample(&myself),
            WorkerMsg::ClientLeft => state.pump(&myself),
            WorkerMsg::MoreText { job, sentence } => state.more_text(&myself, job, sentence),
            WorkerMsg::InputEnded { job } => state.input_ended(&myself, job),
            #[cfg(test)]
            WorkerMsg::Panic => panic!("worker panic requested by a test"),
        }
        state.report();
        Ok(())
    }
}

impl WorkerState {
    fn status(&self) -> WorkerStatus {
        WorkerStatus {
            voice: self.voice.name.clone(),
            running: self.proc.engine().is_some(),
            pid: self.proc.engine().map(|e| e.pid()),
            jobs: self.jobs.len(),
            failed: match &self.proc {
                Proc::Failed { cause, .. } => Some(cause.clone()),
                _ => None,
            },
        }
    }

    /// Tells the supervisor what it needs for eviction and health.
    /// Only changes are sent: most messages (audio frames) change nothing.
    fn report(&mut self) {
        let busy = !self.jobs.is_empty() || !self.warmups.is_empty();
        let now = (self.status(), busy);
        if self.reported.as_ref() == Some(&now) {
            return;
        }
        gauge!(m::QUEUE_DEPTH, "voice" => self.voice.name.clone()).set(self.jobs.len() as f64);
        let _ = self.supervisor.send_message(SupervisorMsg::WorkerReport {
            voice: self.voice.name.clone(),
            status: now.0.clone(),
            busy,
        });
        self.reported = Some(now);
    }

    fn check_failed(&mut self) -> Option<SynthError> {
        if let Proc::Failed { until, cause } = &self.proc {
            if Instant::now() < *until {
                return Some(SynthError::VoiceUnavailable {
                    voice: self.voice.name.clone(),
                    cause: cause.clone(),
                });
            }
            self.proc = Proc::Stopped;
            self.crashes.clear();
            gauge!(m::VOICE_FAILED, "voice" => self.voice.name.clone()).set(0.0);
        }
        None
    }

    fn accept(&mut self, myself: &ActorRef<WorkerMsg>, job: SynthJob) {
        if let Some(err) = self.check_failed() {
            let _ = job.events.try_send(AudioEvent::Failed(err));
            return;
        }
        self.idle_epoch += 1;
        let id = self.next_job;
        self.next_job += 1;
        // A changed voice file means this process speaks the old voice.
        if let Proc::Starting { fingerprint, .. } | Proc::Ready { fingerprint, .. } = &self.proc {
            if *fingerprint != job.voice.fingerprint {
                self.recycle = Some(ExitReason::ConfigChange);
            }
        }
        if job.voice.fingerprint != self.voice.fingerprint {
            self.voice = job.voice.clone();
        }
        let input_open = job.more.is_some();
        let watch = watch_job(myself, id, job.events.clone(), job.more);
        let next_seq = job.sentences.len() as u32;
        let job = Job {
            _watch: watch,
            id,
            input_open,
            next_seq,
            units: job
                .sentences
                .into_iter()
                .enumerate()
                .map(|(seq, sentence)| Unit {
                    seq: seq as u32,
                    text: sentence.line,
                    span: sentence.span,
                    retried: false,
                })
                .collect(),
            options: job.options,
            events: job.events,
            received: job.received,
            first_audio: None,
            waited: false,
            started: false,
            passed_over: false,
            samples: 0,
            skipped: 0,
            in_flight: 0,
            next_to_send: 0,
            finished: Default::default(),
        };
        // Newcomers go ahead of requests already being served, so their first
        // audio does not wait a full turn, but behind earlier newcomers: first
        // come, first served among those still waiting for their first sentence.
        let at = self.jobs.iter().take_while(|j| !j.started).count();
        self.jobs.insert(at, job);
        self.ensure_process(myself);
        self.pump(myself);
    }

    /// A sentence of a job whose text is still arriving.
    fn more_text(&mut self, myself: &ActorRef<WorkerMsg>, id: u64, sentence: Sentence) {
        let Some(job) = self.jobs.iter_mut().find(|j| j.id == id) else {
            return; // failed or cancelled meanwhile
        };
        job.units.push_back(Unit {
            seq: job.next_seq,
            text: sentence.line,
            span: sentence.span,
            retried: false,
        });
        job.next_seq += 1;
        self.idle_epoch += 1;
        self.ensure_process(myself);
        self.pump(myself);
    }

    /// A job's input ended: it is done once its last sentence is.
    fn input_ended(&mut self, myself: &ActorRef<WorkerMsg>, id: u64) {
        let Some(pos) = self.jobs.iter().position(|j| j.id == id) else {
            return;
        };
        let job = &mut self.jobs[pos];
        job.input_open = false;
        if job.units.is_empty() && job.in_flight == 0 {
            let job = self.jobs.remove(pos).expect("position is valid");
            self.finish(job);
        }
        self.pump(myself);
    }

    fn warmup(
        &mut self,
        myself: &ActorRef<WorkerMsg>,
        voice: Arc<VoiceInfo>,
        reply: RpcReplyPort<Result<WarmInfo, SynthError>>,
    ) {
        if let Some(err) = self.check_failed() {
            let _ = reply.send(Err(err));
            return;
        }
        self.idle_epoch += 1;
        if voice.fingerprint != self.voice.fingerprint {
            self.voice = voice;
            if self.proc.engine().is_some() {
                self.recycle = Some(ExitReason::ConfigChange);
            }
        }
        if let Proc::Ready { info, .. } = &self.proc {
            if self.recycle.is_none() {
                let engine = info.engine.clone();
                let _ = reply.send(Ok(WarmInfo {
                    ready_ms: 0.0,
                    engine,
                }));
                self.arm_idle_timer(myself);
                return;
            }
        }
        self.warmups.push((Instant::now(), reply));
        self.ensure_process(myself);
        self.pump(myself);
    }

    /// Asks for a slot when there is work and no process.
    fn ensure_process(&mut self, myself: &ActorRef<WorkerMsg>) {
        if matches!(self.proc, Proc::Stopped) {
            self.proc = Proc::WaitingSlot;
            let _ = self.supervisor.send_message(SupervisorMsg::SlotRequest {
                voice: self.voice.name.clone(),
            });
            self.arm_slot_timer(myself);
        }
    }

    fn arm_slot_timer(&mut self, myself: &ActorRef<WorkerMsg>) {
        if self.slot_timer_armed {
            return;
        }
        let oldest = self
            .jobs
            .iter()
            .map(|j| j.received)
            .chain(self.warmups.iter().map(|(t, _)| *t))
            .min();
        if let Some(oldest) = oldest {
            let deadline = oldest + self.config.queue_timeout;
            let delay = deadline.saturating_duration_since(Instant::now());
            self.slot_timer_armed = true;
            myself.send_after(delay, || WorkerMsg::SlotTimeout);
        }
    }

    fn slot_granted(&mut self, myself: &ActorRef<WorkerMsg>) {
        match self.proc {
            Proc::WaitingSlot => {
                // One sample per waiting request, so that the distribution
                // weighs waits by the requests that suffered them.
                for job in self.jobs.iter_mut().filter(|j| !j.waited) {
                    job.waited = true;
                    histogram!(m::QUEUE_WAIT, "voice" => self.voice.name.clone())
                        .record(job.received.elapsed().as_secs_f64());
                }
                self.start_process(myself);
            }
            // The wait was given up meanwhile: hand the slot straight back.
            _ => {
                let _ = self.supervisor.send_message(SupervisorMsg::SlotReleased {
                    voice: self.voice.name.clone(),
                });
            }
        }
    }

    /// Fails the requests that waited too long for a slot.
    fn slot_timeout(&mut self, myself: &ActorRef<WorkerMsg>) {
        self.slot_timer_armed = false;
        if !matches!(self.proc, Proc::WaitingSlot) {
            return;
        }
        let now = Instant::now();
        let limit = self.config.queue_timeout;
        let expired =
            |t: Instant| now.saturating_duration_since(t) + Duration::from_millis(5) >= limit;
        let err = SynthError::ProcessLimit(limit);
        let (old, keep): (Vec<Job>, Vec<Job>) =
            self.jobs.drain(..).partition(|j| expired(j.received));
        for job in old {
            job.fail(err.clone());
        }
        self.jobs = keep.into();
        let (old, keep): (Vec<_>, Vec<_>) = self.warmups.drain(..).partition(|(t, _)| expired(*t));
        for (_, reply) in old {
            let _ = reply.send(Err(err.clone()));
        }
        self.warmups = keep;
        if self.jobs.is_empty() && self.warmups.is_empty() {
            self.proc = Proc::Stopped;
            let _ = self.supervisor.send_message(SupervisorMsg::SlotCancelled {
                voice: self.voice.name.clone(),
            });
        } else {
            self.arm_slot_timer(myself);
        }
    }

    fn evict(&mut self) {
        let idle = self.jobs.is_empty() && self.warmups.is_empty();
        if idle && self.proc.holds_slot() {
            tracing::info!(voice = %self.voice.name, "stopping engine to make room for another voice");
            self.stop_process(ExitReason::Evicted);
        } else {
            let _ = self.supervisor.send_message(SupervisorMsg::EvictRefused {
                voice: self.voice.name.clone(),
            });
        }
    }

    fn start_process(&mut self, myself: &ActorRef<WorkerMsg>) {
        self.generation += 1;
        let generation = self.generation;
        let me = myself.clone();
        let spawned = EngineProcess::spawn(
            &self.spec,
            &self.voice.files.model,
            &self.voice.files.config,
            move |event| {
                let _ = me.send_message(WorkerMsg::Engine { generation, event });
            },
        );
        match spawned {
            Ok(engine) => {
                counter!(m::PROCESS_STARTS, "voice" => self.voice.name.clone()).increment(1);
                gauge!(m::PROCESSES).increment(1.0);
                tracing::info!(voice = %self.voice.name, pid = engine.pid(), "engine starting");
                self.proc = Proc::Starting {
                    engine,
                    fingerprint: self.voice.fingerprint,
                    since: Instant::now(),
                };
                self.recycle = None;
                myself.send_after(self.config.engine_start_timeout, move || {
                    WorkerMsg::StartTimeout { generation }
                });
            }
            Err(err) => {
                let cause = format!("cannot start {}: {err}", self.spec.python.display());
                self.proc = Proc::Backoff;
                self.process_failed(myself, ExitReason::Crash, cause, None);
            }
        }
    }

    /// Takes the engine out of the state, counting its exit.
    fn take_engine(&mut self, reason: ExitReason) -> Option<EngineProcess> {
        let proc = std::mem::replace(&mut self.proc, Proc::Stopped);
        match proc {
            Proc::Starting { engine, .. } | Proc::Ready { engine, .. } => {
                counter!(m::PROCESS_EXITS, "voice" => self.voice.name.clone(), "reason" => reason.label())
                    .increment(1);
                gauge!(m::PROCESSES).decrement(1.0);
                gauge!(m::PROCESS_MEMORY, "voice" => self.voice.name.clone()).set(0.0);
                self.generation += 1;
                Some(engine)
            }
            other => {
                self.proc = other;
                None
            }
        }
    }

    /// Stops the process politely and gives the slot back.
    fn stop_process(&mut self, reason: ExitReason) {
        let held = self.proc.holds_slot();
        if let Some(engine) = self.take_engine(reason) {
            tokio::spawn(engine.stop(STOP_GRACE));
        }
        self.proc = Proc::Stopped;
        if held {
            let _ = self.supervisor.send_message(SupervisorMsg::SlotReleased {
                voice: self.voice.name.clone(),
            });
        }
    }

    fn engine_event(&mut self, myself: &ActorRef<WorkerMsg>, event: EngineEvent) {
        match event {
            EngineEvent::Frame(Frame::Ready(info)) => self.ready(myself, info),
            EngineEvent::Frame(Frame::Audio { id, pcm }) => {
                match self.in_flight.iter_mut().find(|f| f.unit == id) {
                    Some(unit) => unit.pcm.push(pcm),
                    None => {
                        self.protocol_broken(myself, format!("audio for unexpected request {id}"))
                    }
                }
            }
            EngineEvent::Frame(Frame::Done { id, .. }) => self.unit_finished(myself, id, false),
            EngineEvent::Frame(Frame::Cancelled { id }) => self.unit_cancelled(myself, id),
            EngineEvent::Frame(Frame::Error {
                id,
                message,
                unspeakable,
            }) => {
                if !unspeakable {
                    tracing::warn!(voice = %self.voice.name, "engine could not speak a sentence: {message}");
                }
                self.unit_finished(myself, id, true)
            }
            EngineEvent::Closed(None) => {
                let cause = self.stderr_cause("the engine exited");
                self.process_failed(myself, ExitReason::Crash, cause, None);
            }
            EngineEvent::Closed(Some(err)) => self.protocol_broken(myself, err.to_string()),
        }
    }

    /// The stream is not to be trusted: the oldest sentence in flight, the
    /// one the engine was most surely working on, takes the blame.
    fn protocol_broken(&mut self, myself: &ActorRef<WorkerMsg>, what: String) {
        tracing::error!(voice = %self.voice.name, "engine broke the protocol: {what}");
        let blame = self
            .in_flight
            .first()
            .map(|f| (f.unit, SynthError::EngineBadOutput(what.clone())));
        self.process_failed(myself, ExitReason::BadOutput, what, blame);
    }

    fn stderr_cause(&self, what: &str) -> String {
        match self.proc.engine().and_then(|e| e.stderr.last_line()) {
            Some(line) => format!("{what}: {line}"),
            None => what.to_string(),
        }
    }

    fn ready(&mut self, myself: &ActorRef<WorkerMsg>, info: ReadyInfo) {
        let proc = std::mem::replace(&mut self.proc, Proc::Stopped);
        let Proc::Starting {
            engine,
            fingerprint,
            since,
        } = proc
        else {
            self.proc = proc;
            return self.protocol_broken(myself, "a second ready frame".into());
        };
        let load = since.elapsed();
        histogram!(m::COLD_START, "voice" => self.voice.name.clone()).record(load.as_secs_f64());
        tracing::info!(voice = %self.voice.name, pid = engine.pid(), ms = load.as_millis() as u64, "engine ready");
        if info.sample_rate != self.voice.sample_rate {
            tracing::warn!(voice = %self.voice.name, "engine sample rate {} differs from the config's {}", info.sample_rate, self.voice.sample_rate);
        }
        self.engine_parallel = info.threads.max(1) as usize;
        self.engine_cancels = info.cancel;
        for (asked, reply) in self.warmups.drain(..) {
            let _ = reply.send(Ok(WarmInfo {
                ready_ms: asked.elapsed().as_secs_f64() * 1000.0,
                engine: info.engine.clone(),
            }));
        }
        self.proc = Proc::Ready {
            engine,
            fingerprint,
            info,
        };
        self.backoff = FIRST_BACKOFF;
        self.pump(myself);
        self.arm_idle_timer(myself);
    }

    /// A sentence is complete (or could not be spoken): forward its audio,
    /// and that of later sentences of its request that finished before it.
    fn unit_finished(&mut self, myself: &ActorRef<WorkerMsg>, unit: u32, failed: bool) {
        let Some(index) = self.in_flight.iter().position(|f| f.unit == unit) else {
            return self.protocol_broken(myself, format!("end of unexpected request {unit}"));
        };
        let mut done = self.in_flight.remove(index);
        self.log_end(&done, "done");
        drop(done.turn.take());
        if let Some(pos) = self.jobs.iter().position(|j| j.id == done.job) {
            let job = &mut self.jobs[pos];
            job.in_flight -= 1;
            if failed {
                job.skipped += 1;
            }
            job.finished.insert(done.seq, (done.span, concat(done.pcm)));
            while let Some((span, pcm)) = job.finished.remove(&job.next_to_send) {
                job.next_to_send += 1;
                if pcm.is_empty() {
                    continue;
                }
                if job.first_audio.is_none() {
                    let now = Instant::now();
                    job.first_audio = Some(now);
                    histogram!(m::TIME_TO_FIRST_AUDIO, "voice" => self.voice.name.clone())
                        .record((now - job.received).as_secs_f64());
                }
                job.samples += pcm.len() as u64 / 2;
                // Room was checked before this sentence was scheduled; a
                // closed channel means the client left.
                let _ = job.events.try_send(AudioEvent::Audio { span, pcm });
            }
            if job.units.is_empty() && job.in_flight == 0 && !job.input_open {
                let job = self.jobs.remove(pos).expect("position is valid");
                self.finish(job);
            }
        }
        self.pump(myself);
    }

    /// The engine dropped a sentence it was asked to give back: it goes
    /// back to its request, to be said later (unless the client left).
    fn unit_cancelled(&mut self, myself: &ActorRef<WorkerMsg>, unit: u32) {
        let Some(index) = self.in_flight.iter().position(|f| f.unit == unit) else {
            return self.protocol_broken(myself, format!("cancel of unexpected request {unit}"));
        };
        let done = self.in_flight.remove(index);
        self.log_end(&done, "taken back");
        if !done.cancelling() {
            return self.protocol_broken(myself, format!("request {unit} cancelled unasked"));
        }
        if let Some(job) = self.jobs.iter_mut().find(|j| j.id == done.job) {
            job.in_flight -= 1;
            if !job.events.is_closed() {
                let at = job.units.iter().take_while(|u| u.seq < done.seq).count();
                job.units.insert(
                    at,
                    Unit {
                        seq: done.seq,
                        text: done.text,
                        span: done.span,
                        retried: done.retried,
                    },
                );
            }
        }
        self.pump(myself);
    }

    /// At debug level the log is a timeline of the engine's work.
    fn log_end(&self, done: &InFlight, how: &'static str) {
        tracing::debug!(
            unit = done.unit,
            job = done.job,
            chars = chars(&done.text),
            running = self.in_flight.len(),
            "sentence {how}"
        );
    }

    fn finish(&mut self, job: Job) {
        let voice = self.voice.name.clone();
        if job.samples == 0 {
            job.fail(SynthError::NoSpeakableText);
            return;
        }
        let elapsed = job.received.elapsed().as_secs_f64();
        let audio = job.samples as f64 / self.voice.sample_rate as f64;
        histogram!(m::SYNTHESIS_DURATION, "voice" => voice.clone()).record(elapsed);
        histogram!(m::AUDIO_DURATION, "voice" => voice.clone()).record(audio);
        if audio > 0.0 {
            histogram!(m::REAL_TIME_FACTOR, "voice" => voice).record(elapsed / audio);
        }
        let _ = job.events.try_send(AudioEvent::Done(SynthSummary {
            samples: job.samples,
            skipped_sentences: job.skipped,
        }));
    }

    /// Writes sentences to the engine while it has room, round-robin.
    fn pump(&mut self, myself: &ActorRef<WorkerMsg>) {
        // Requests whose client went away free their place at once.
        self.jobs.retain(|j| {
            let gone = j.events.is_closed();
            if gone && j.in_flight == 0 {
                tracing::info!("request cancelled by its client");
            }
            !(gone && j.in_flight == 0)
        });
        for job in self.jobs.iter_mut().filter(|j| j.events.is_closed()) {
            job.units.clear();
        }
        if let Some(reason) = self.recycle {
            if self.in_flight.is_empty() && self.proc.engine().is_some() {
                tracing::info!(voice = %self.voice.name, reason = reason.label(), "replacing engine");
                if let Some(engine) = self.take_engine(reason) {
                    tokio::spawn(engine.stop(STOP_GRACE));
                }
                self.proc = Proc::Backoff;
                self.start_process(myself);
            }
            return;
        }
        let Proc::Ready { engine, .. } = &self.proc else {
            return;
        };
        // Sentences of requests whose client left are taken back at once.
        if self.engine_cancels {
            for f in self.in_flight.iter_mut().filter(|f| !f.cancelling()) {
                if self
                    .jobs
                    .iter()
                    .any(|j| j.id == f.job && j.events.is_closed())
                {
                    f.cancel(engine);
                }
            }
        }
        let mut paused = false;
        // After a crash the lost sentences go one at a time, so the one that
        // kills the engine is found and fails alone.
        let suspect = self.in_flight.iter().any(|f| f.retried)
            || self
                .jobs
                .iter()
                .any(|j| j.units.front().is_some_and(|u| u.retried));
        loop {
            let (running, _) = self.running_chars();
            if running >= self.engine_parallel || (suspect && !self.in_flight.is_empty()) {
                break;
            }
            // Next request in turn that has a sentence and a reader with room
            // for everything it has in flight or finished out of order.
            let has_room = |j: &Job| j.events.capacity() > j.in_flight + j.finished.len() + 1;
            let Some(mut pos) = self.jobs.iter().position(|j| {
                paused |= !j.units.is_empty() && !has_room(j);
                !j.units.is_empty() && has_room(j)
            }) else {
                break;
            };
            // Sentences side by side only while the engine's memory allows;
            // a first sentence may take back long ones to make room. A
            // sentence that does not fit lets one later sentence that does
            // go first, so that a core does not idle, but only once.
            let front = |j: &Job| chars(&j.units[0].text);
            if !self.fits(front(&self.jobs[pos])) && self.jobs[pos].started {
                if self.jobs[pos].passed_over {
                    break;
                }
                let later = self.jobs.iter().skip(pos + 1).position(|j| {
                    !j.units.is_empty() && has_room(j) && j.started && self.fits(front(j))
                });
                let Some(later) = later else {
                    break;
                };
                self.jobs[pos].passed_over = true;
                pos += 1 + later;
            }
            let urgent = !self.jobs[pos].started;
            let next = front(&self.jobs[pos]);
            let fits = self.fits(next);
            // Alone: no other sentence waits that could run beside it.
            let partner = self
                .jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| has_room(j))
                .flat_map(|(i, j)| j.units.iter().skip(usize::from(i == pos)).take(1))
                .map(|u| chars(&u.text))
                .min();
            let alone = partner.is_none_or(|other| next + other > self.config.engine_chars_at_once);
            let Some((turn, threads)) = self.take_turn(urgent, urgent || alone, next) else {
                // Without room in the engine, the end of a sentence in it
                // comes first; without a turn, wait for one.
                if fits {
                    self.ask_turn(myself);
                }
                break;
            };
            let Proc::Ready { engine, .. } = &self.proc else {
                return;
            };
            let cores = if threads.is_none() { "all" } else { "shared" };
            counter!(m::SENTENCES, "voice" => self.voice.name.clone(), "cores" => cores)
                .increment(1);
            let mut job = self.jobs.remove(pos).expect("position is valid");
            let Unit {
                seq,
                text,
                span,
                retried,
            } = job.units.pop_front().expect("has units");
            let unit = self.next_unit;
            self.next_unit = self.next_unit.wrapping_add(1).max(1);
            let line = Request {
                id: unit,
                text: &text,
                threads,
                options: &job.options,
            }
            .to_line();
            job.started = true;
            job.passed_over = false;
            if !job.waited {
                job.waited = true;
                histogram!(m::QUEUE_WAIT, "voice" => self.voice.name.clone())
                    .record(job.received.elapsed().as_secs_f64());
            }
            job.in_flight += 1;
            let id = job.id;
            // Round-robin: the request goes to the back of the line.
            self.jobs.push_back(job);
            tracing::debug!(
                unit,
                job = id,
                seq,
                chars = chars(&text),
                ?threads,
                running = self.in_flight.len(),
                "sentence sent"
            );
            engine.send(line);
            // Its deadline counts the sentences ahead of it in the engine.
            let ahead: usize = self.in_flight.iter().map(|f| chars(&f.text)).sum();
            let queued = (ahead + chars(&text)) as u32;
            let deadline = self.config.engine_timeout + DEADLINE_PER_CHAR * queued;
            let generation = self.generation;
            myself.send_after(deadline, move || WorkerMsg::HangCheck { generation, unit });
            self.in_flight.push(InFlight {
                unit,
                job: id,
                seq,
                text,
                span,
                pcm: Vec::new(),
                retried,
                turn: Some(turn),
            });
        }
        if paused && !self.resume_pending {
            self.resume_pending = true;
            myself.send_after(RESUME_AFTER, || WorkerMsg::Resume);
        }
        if self.jobs.is_empty() && self.warmups.is_empty() {
            self.arm_idle_timer(myself);
        }
    }

    /// A turn for the next sentence, and the onnxruntime threads it runs on
    /// (`None`: onnxruntime's default, every core). A sentence that may run
    /// `alone` gets every turn when they are all free, or when a request's
    /// first sentence (`urgent`) can make them free by taking back those of
    /// long requests' sentences; otherwise one turn, to share the cores.
    fn take_turn(
        &mut self,
        urgent: bool,
        alone: bool,
        next: usize,
    ) -> Option<(OwnedSemaphorePermit, Option<u32>)> {
        let all = self.config.engine_concurrency as u32;
        let mut held = self.spare.take();
        let free = self.turns.available_permits() as u32;
        if free > 0 {
            if let Ok(turns) = self.turns.clone().try_acquire_many_owned(free) {
                merge(&mut held, turns);
            }
        }
        let count =
            |held: &Option<OwnedSemaphorePermit>| held.as_ref().map_or(0, |t| t.num_permits());
        if urgent && (count(&held) < all as usize || !self.fits(next)) {
            // Take back every long sentence if that frees every turn, else
            // the one that makes a turn and room for this sentence, if any.
            let long = self.long_sentences();
            let gain: usize = long
                .iter()
                .filter_map(|&i| self.in_flight[i].turn.as_ref())
                .map(|t| t.num_permits())
                .sum();
            let victims = if count(&held) + gain >= all as usize {
                long
            } else if held.is_none() || !self.fits(next) {
                let (running, running_chars) = self.running_chars();
                let room = |i: &usize| {
                    running == 1
                        || running_chars - chars(&self.in_flight[*i].text) + next
                            <= self.config.engine_chars_at_once
                };
                long.into_iter().find(room).into_iter().collect()
            } else {
                Vec::new()
            };
            for index in victims {
                if let Some(turn) = self.take_back(index) {
                    merge(&mut held, turn);
                }
            }
        }
        if !self.fits(next) {
            return None;
        }
        let mut held = held?;
        let (running, _) = self.running_chars();
        if alone && running == 0 && held.num_permits() == all as usize {
            return Some((held, None));
        }
        // Share the cores: keep one turn, give the others back.
        if held.num_permits() > 1 {
            drop(held.split(held.num_permits() - 1));
        }
        Some((held, Some(self.config.engine_threads as u32)))
    }

    /// Whether a sentence of `chars` characters fits beside those the engine
    /// synthesizes now (one alone always does).
    fn fits(&self, next: usize) -> bool {
        let (count, held) = self.running_chars();
        count == 0 || held + next <= self.config.engine_chars_at_once
    }

    /// How many sentences the engine synthesizes now (not taken back), and
    /// their characters.
    fn running_chars(&self) -> (usize, usize) {
        self.in_flight
            .iter()
            .filter(|f| !f.cancelling())
            .fold((0, 0), |(n, c), f| (n + 1, c + chars(&f.text)))
    }

    /// Indexes in `in_flight` of the sentences, not already taken back, of
    /// long requests already speaking, latest sent first (the least work
    /// lost).
    fn long_sentences(&self) -> Vec<usize> {
        if !self.engine_cancels || !matches!(self.proc, Proc::Ready { .. }) {
            return Vec::new();
        }
        let long = |job: u64| {
            self.jobs.iter().any(|j| {
                j.id == job && j.first_audio.is_some() && j.units.len() >= PREEMPTIBLE_REMAINING
            })
        };
        (0..self.in_flight.len())
            .rev()
            .filter(|&i| !self.in_flight[i].cancelling() && long(self.in_flight[i].job))
            .collect()
    }

    /// Cancels a sentence in the engine and returns its turn.
    fn take_back(&mut self, index: usize) -> Option<OwnedSemaphorePermit> {
        let Proc::Ready { engine, .. } = &self.proc else {
            return None;
        };
        counter!(m::PREEMPTIONS, "voice" => self.voice.name.clone()).increment(1);
        self.in_flight[index].cancel(engine)
    }

    /// Waits in the semaphore's queue (first come, first served over all
    /// voices) for a turn; it arrives as [`WorkerMsg::Turn`].
    fn ask_turn(&mut self, myself: &ActorRef<WorkerMsg>) {
        if self.asking_turn {
            return;
        }
        self.asking_turn = true;
        let turns = self.turns.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            if let Ok(turn) = turns.acquire_owned().await {
                let _ = me.send_message(WorkerMsg::Turn(turn));
            }
        });
    }

    fn arm_idle_timer(&mut self, myself: &ActorRef<WorkerMsg>) {
        self.idle_epoch += 1;
        let epoch = self.idle_epoch;
        myself.send_after(self.config.idle_timeout, move || WorkerMsg::IdleCheck {
            epoch,
        });
    }

    /// The process died, hung or broke the protocol. `blame` names the
    /// sentence at fault and the error for its request; the other sentences
    /// in flight are sent again to the next process, once.
    fn process_failed(
        &mut self,
        myself: &ActorRef<WorkerMsg>,
        reason: ExitReason,
        cause: String,
        blame: Option<(u32, SynthError)>,
    ) {
        tracing::warn!(voice = %self.voice.name, reason = reason.label(), "engine failed: {cause}");
        if let Some(engine) = self.take_engine(reason) {
            engine.kill();
        }
        counter!(m::PROCESS_RESTARTS, "voice" => self.voice.name.clone()).increment(1);
        let mut lost = std::mem::take(&mut self.in_flight);
        // Latest first, so that pushing each to its request's front keeps order.
        lost.sort_by_key(|f| std::cmp::Reverse(f.seq));
        let mut failed_jobs = Vec::new();
        for unit in lost {
            let Some(job) = self.jobs.iter_mut().find(|j| j.id == unit.job) else {
                continue;
            };
            job.in_flight -= 1;
            let error = match &blame {
                Some((at, err)) if *at == unit.unit => Some(err.clone()),
                _ if unit.retried => Some(SynthError::EngineCrashed(cause.clone())),
                _ => None,
            };
            match error {
                Some(err) => failed_jobs.push((job.id, err)),
                // Nothing of this sentence reached the client: say it again.
                None => job.units.push_front(Unit {
                    seq: unit.seq,
                    text: unit.text,
                    span: unit.span,
                    retried: true,
                }),
            }
        }
        for (id, err) in failed_jobs {
            if let Some(pos) = self.jobs.iter().position(|j| j.id == id) {
                let job = self.jobs.remove(pos).expect("position is valid");
                job.fail(err);
            }
        }

        let now = Instant::now();
        self.crashes.push_back(now);
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.config.restart_window)
        {
            self.crashes.pop_front();
        }
        if self.crashes.len() > self.config.max_restarts {
            self.give_up(cause);
            return;
        }
        self.proc = Proc::Backoff;
        let generation = self.generation;
        myself.send_after(self.backoff, move || WorkerMsg::Restart { generation });
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Too many crashes: the voice is failed for a cool-down.
    fn give_up(&mut self, cause: String) {
        tracing::error!(voice = %self.voice.name, "voice failed after repeated engine failures: {cause}");
        gauge!(m::VOICE_FAILED, "voice" => self.voice.name.clone()).set(1.0);
        let err = SynthError::VoiceUnavailable {
            voice: self.voice.name.clone(),
            cause: cause.clone(),
        };
        for job in self.jobs.drain(..) {
            job.fail(err.clone());
        }
        for (_, reply) in self.warmups.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
        self.proc = Proc::Failed {
            until: Instant::now() + self.config.failed_cooldown,
            cause,
        };
        let _ = self.supervisor.send_message(SupervisorMsg::SlotReleased {
            voice: self.voice.name.clone(),
        });
    }

    fn sample(&mut self, _myself: &ActorRef<WorkerMsg>) {
        let Some(rss) = self.proc.engine().and_then(|e| e.rss_bytes()) else {
            return;
        };
        gauge!(m::PROCESS_MEMORY, "voice" => self.voice.name.clone()).set(rss as f64);
        // Megabytes as named: 10^6 bytes.
        if rss > self.config.engine_max_rss_mb * 1_000_000 && self.recycle.is_none() {
            tracing::info!(voice = %self.voice.name, rss, "engine above its memory cap: recycling");
            self.recycle = Some(ExitReason::Memory);
        }
    }
}

/// Watches a job from outside the worker: its sentences still arriving and
/// its client leaving (heard at once, not at the job's next event, so that
/// the engine stops that client's sentence now). Dropping the returned
/// sender, with the job, ends the watch.
fn watch_job(
    myself: &ActorRef<WorkerMsg>,
    job: u64,
    events: tokio::sync::mpsc::Sender<AudioEvent>,
    mut more: Option<tokio::sync::mpsc::UnboundedReceiver<Sentence>>,
) -> tokio::sync::oneshot::Sender<()> {
    let (watch, mut job_ended) = tokio::sync::oneshot::channel::<()>();
    let me = myself.clone();
    tokio::spawn(async move {
        loop {
            let next = async {
                match more.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = events.closed() => {
                    let _ = me.send_message(WorkerMsg::ClientLeft);
                    return;
                }
                _ = &mut job_ended => return,
                sentence = next => match sentence {
                    Some(sentence) => {
                        let _ = me.send_message(WorkerMsg::MoreText { job, sentence });
                    }
                    None => {
                        more = None;
                        let _ = me.send_message(WorkerMsg::InputEnded { job });
                    }
                },
            }
        }
    });
    watch
}

/// Adds `turns` to those `held`.
fn merge(held: &mut Option<OwnedSemaphorePermit>, turns: OwnedSemaphorePermit) {
    match held {
        Some(held) => held.merge(turns),
        None => *held = Some(turns),
    }
}

fn concat(parts: Vec<Bytes>) -> Bytes {
    match parts.len() {
        0 => Bytes::new(),
        1 => parts.into_iter().next().expect("one part"),
        _ => {
            let mut out = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for part in parts {
                out.extend_from_slice(&part);
            }
            out.freeze()
        }
    }
}
