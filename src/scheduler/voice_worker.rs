//! The worker of one voice: the actor that carries out what its planner and
//! its engine's lifecycle decide.
//!
//! The worker holds the voice's [`Planner`] (which sentence runs next, on
//! how many threads, what is taken back, what fits, what a crash is blamed
//! on), its engine's [`Lifecycle`] (start, ready, backoff, crash window,
//! recycle, idle) and what those two must not touch: the engine process,
//! the jobs' channels, the turns of the shared semaphore, the timers and
//! the metrics. Every message becomes an event for one of them, and their
//! actions become writes to the engine, events to clients, timers and
//! messages to the supervisor.
//!
//! All workers take turns through one fair semaphore of
//! `PIPER_ENGINE_CONCURRENCY` permits, so engines of several voices never
//! fight over the cores. The planner counts turns as numbers; the permits
//! stay here, merged into one, and are taken and given back as it says.
//!
//! Everything that happens to the process (frames, its end, deadlines, the
//! idle timer) arrives as a message, so the worker never waits on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::lifecycle::{self, Fault, Lifecycle, Policy, Timer};
use super::messages::{SupervisorMsg, WarmInfo, WorkerMsg, WorkerStatus};
use super::planner::{self, Blame, EngineCaps, JobId, Limits, Planner};
use super::{send_outcome, AudioEvent, Sentence, SynthError, SynthJob};
use crate::config::Config;
use crate::engine::protocol::{cancel_line, Request};
use crate::engine::{EngineEvent, EngineProcess, EngineSpec, Frame, ReadyInfo};
use crate::metrics::{self as m, ExitReason};
use crate::voices::VoiceInfo;

/// How long a polite stop waits before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// Retry interval for jobs whose clients are not reading.
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

/// The worker's side of a job: what the planner does not need.
struct Client {
    events: mpsc::Sender<AudioEvent>,
    received: Instant,
    /// Its wait for a process or a first sentence was counted.
    waited: bool,
    first_audio: Option<Instant>,
    /// Dropped with the job: ends the task that watches for its client
    /// leaving.
    _watch: oneshot::Sender<()>,
}

pub struct WorkerState {
    voice: Arc<VoiceInfo>,
    config: Arc<Config>,
    spec: EngineSpec,
    supervisor: ActorRef<SupervisorMsg>,
    planner: Planner,
    lifecycle: Lifecycle,
    /// The engine process, while the lifecycle says one runs.
    engine: Option<EngineProcess>,
    /// The running engine's name and version, for warm-up answers.
    engine_name: String,
    clients: HashMap<JobId, Client>,
    next_job: JobId,
    turns: Arc<Semaphore>,
    /// Every turn the worker holds (the planner knows how many and for
    /// what): one permit, split when turns are given back.
    held: Option<OwnedSemaphorePermit>,
    warmups: Vec<(Instant, RpcReplyPort<Result<WarmInfo, SynthError>>)>,
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
            planner: Planner::new(Limits::from_config(&args.config)),
            lifecycle: Lifecycle::new(Policy::from_config(&args.config)),
            voice: args.voice,
            config: args.config,
            spec: args.spec,
            supervisor: args.supervisor,
            engine: None,
            engine_name: String::new(),
            clients: HashMap::new(),
            next_job: 0,
            turns: args.turns,
            held: None,
            warmups: Vec::new(),
            reported: None,
        })
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        let failed = state.planner.fail_all(SynthError::ShuttingDown);
        state.carry_out(&myself, failed);
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
        let me = &myself;
        match message {
            WorkerMsg::Synthesize(job) => state.accept(me, job),
            WorkerMsg::Warmup(voice, reply) => state.warmup(me, voice, reply),
            WorkerMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            WorkerMsg::SlotGranted => state.slot_granted(me),
            WorkerMsg::Turn(permit) => {
                merge(&mut state.held, permit);
                state.planner.turn_arrived();
                state.pump(me);
            }
            WorkerMsg::Evict => {
                let idle = state.planner.jobs() == 0 && state.warmups.is_empty();
                if idle && state.lifecycle.holds_slot() {
                    tracing::info!(voice = %state.voice.name, "stopping engine to make room for another voice");
                }
                let actions = state.lifecycle.evict(idle);
                state.carry_out_lifecycle(me, actions);
            }
            WorkerMsg::Engine { generation, event }
                if generation == state.lifecycle.generation() =>
            {
                state.engine_event(me, event)
            }
            WorkerMsg::Engine { .. } => {} // from a process already replaced
            WorkerMsg::StartTimeout { generation } => {
                if state.lifecycle.is_starting(generation) {
                    let cause = format!(
                        "the engine did not become ready within {:?}",
                        state.config.engine_start_timeout
                    );
                    state.engine_failed(me, Fault::StartTimeout, cause, None);
                }
            }
            WorkerMsg::HangCheck {
                generation,
                sentence,
                progress,
                after,
            } => {
                let waiting = generation == state.lifecycle.generation()
                    && state.planner.is_in_engine(sentence);
                let now = state.planner.progress();
                if waiting && now != progress {
                    // Slow, not stuck: the engine sent audio since.
                    me.send_after(after, move || WorkerMsg::HangCheck {
                        generation,
                        sentence,
                        progress: now,
                        after,
                    });
                } else if waiting {
                    let cause = "the engine did not finish an utterance in time".to_string();
                    let blame = Blame {
                        sentence,
                        err: SynthError::EngineTimeout,
                    };
                    state.engine_failed(me, Fault::Hang, cause, Some(blame));
                }
            }
            WorkerMsg::IdleCheck { epoch } => {
                let actions = state.lifecycle.idle_due(epoch, state.planner.jobs() > 0);
                if !actions.is_empty() {
                    tracing::info!(voice = %state.voice.name, "stopping idle engine");
                }
                state.carry_out_lifecycle(me, actions);
            }
            WorkerMsg::SlotTimeout => state.slot_timeout(me),
            WorkerMsg::Restart { generation } => {
                let actions = state.lifecycle.restart_due(generation);
                state.carry_out_lifecycle(me, actions);
            }
            WorkerMsg::Resume => {
                state.planner.resumed();
                state.pump(me);
            }
            WorkerMsg::Sample => state.sample(),
            WorkerMsg::ClientLeft => state.pump(me),
            WorkerMsg::MoreText { job, sentence } => state.more_text(me, job, sentence),
            WorkerMsg::InputEnded { job } => {
                let actions = state.planner.input_ended(job);
                state.carry_out(me, actions);
                state.pump(me);
            }
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
            running: self.engine.is_some(),
            pid: self.engine.as_ref().map(|e| e.pid()),
            jobs: self.planner.jobs(),
            failed: self.lifecycle.failed_cause().map(str::to_string),
        }
    }

    /// Tells the supervisor what it needs for eviction and health.
    /// Only changes are sent: most messages (audio frames) change nothing.
    fn report(&mut self) {
        let busy = self.planner.jobs() > 0 || !self.warmups.is_empty();
        let now = (self.status(), busy);
        if self.reported.as_ref() == Some(&now) {
            return;
        }
        gauge!(m::QUEUE_DEPTH, "voice" => self.voice.name.clone()).set(self.planner.jobs() as f64);
        let _ = self.supervisor.send_message(SupervisorMsg::WorkerReport {
            voice: self.voice.name.clone(),
            status: now.0.clone(),
            busy,
        });
        self.reported = Some(now);
    }

    /// `Err` with the reason while the voice is failed.
    fn admit(&mut self, myself: &ActorRef<WorkerMsg>) -> Result<(), SynthError> {
        match self.lifecycle.admit(Instant::now()) {
            Ok(actions) => {
                self.carry_out_lifecycle(myself, actions);
                Ok(())
            }
            Err(cause) => Err(SynthError::VoiceUnavailable {
                voice: self.voice.name.clone(),
                cause,
            }),
        }
    }

    /// Requests now come with `voice`: a changed voice file means the
    /// process speaks the old voice.
    fn voice_seen(&mut self, voice: &Arc<VoiceInfo>) {
        if self.lifecycle.voice_seen(voice.fingerprint) {
            self.planner.engine_paused();
        }
        if voice.fingerprint != self.voice.fingerprint {
            self.voice = voice.clone();
        }
    }

    /// When the longest waiting job or warm-up came.
    fn oldest_waiting(&self) -> Instant {
        let clients = self.clients.values().map(|c| c.received);
        let warmups = self.warmups.iter().map(|(t, _)| *t);
        clients.chain(warmups).min().unwrap_or_else(Instant::now)
    }

    fn work_arrived(&mut self, myself: &ActorRef<WorkerMsg>) {
        let actions = self
            .lifecycle
            .work_arrived(self.oldest_waiting(), Instant::now());
        self.carry_out_lifecycle(myself, actions);
    }

    fn accept(&mut self, myself: &ActorRef<WorkerMsg>, job: SynthJob) {
        if let Err(err) = self.admit(myself) {
            send_outcome(&job.events, AudioEvent::Failed(err));
            return;
        }
        self.voice_seen(&job.voice);
        let id = self.next_job;
        self.next_job += 1;
        let input_open = job.more.is_some();
        let watch = watch_job(myself, id, job.events.clone(), job.more);
        self.clients.insert(
            id,
            Client {
                events: job.events,
                received: job.received,
                waited: false,
                first_audio: None,
                _watch: watch,
            },
        );
        self.planner
            .add_job(id, job.sentences, job.options, input_open);
        if job.complete {
            self.planner.hold_parts(id);
        }
        self.work_arrived(myself);
        self.pump(myself);
    }

    /// A sentence of a job whose text is still arriving.
    fn more_text(&mut self, myself: &ActorRef<WorkerMsg>, job: JobId, sentence: Sentence) {
        if self.planner.more_text(job, sentence) {
            self.work_arrived(myself);
            self.pump(myself);
        }
    }

    fn warmup(
        &mut self,
        myself: &ActorRef<WorkerMsg>,
        voice: Arc<VoiceInfo>,
        reply: RpcReplyPort<Result<WarmInfo, SynthError>>,
    ) {
        if let Err(err) = self.admit(myself) {
            let _ = reply.send(Err(err));
            return;
        }
        self.voice_seen(&voice);
        if self.lifecycle.takes_sentences() {
            let _ = reply.send(Ok(WarmInfo {
                ready_ms: 0.0,
                engine: self.engine_name.clone(),
            }));
            let idle = self.lifecycle.arm_idle();
            self.carry_out_lifecycle(myself, vec![idle]);
            return;
        }
        self.warmups.push((Instant::now(), reply));
        self.work_arrived(myself);
        self.pump(myself);
    }

    fn slot_granted(&mut self, myself: &ActorRef<WorkerMsg>) {
        if self.lifecycle.waiting_slot() {
            // One sample per waiting request, so that the distribution
            // weighs waits by the requests that suffered them.
            for client in self.clients.values_mut().filter(|c| !c.waited) {
                client.waited = true;
                histogram!(m::QUEUE_WAIT, "voice" => self.voice.name.clone())
                    .record(client.received.elapsed().as_secs_f64());
            }
        }
        let actions = self.lifecycle.slot_granted();
        self.carry_out_lifecycle(myself, actions);
    }

    /// Fails the requests that waited too long for a slot.
    fn slot_timeout(&mut self, myself: &ActorRef<WorkerMsg>) {
        if !self.lifecycle.slot_timer_rang() {
            return;
        }
        let now = Instant::now();
        let limit = self.config.queue_timeout;
        let expired =
            |t: Instant| now.saturating_duration_since(t) + Duration::from_millis(5) >= limit;
        let err = SynthError::ProcessLimit(limit);
        let old: Vec<JobId> = self
            .clients
            .iter()
            .filter(|(_, c)| expired(c.received))
            .map(|(id, _)| *id)
            .collect();
        for job in old {
            let failed = self.planner.fail_job(job, err.clone());
            self.carry_out(myself, failed);
        }
        let (old, keep): (Vec<_>, Vec<_>) = self.warmups.drain(..).partition(|(t, _)| expired(*t));
        for (_, reply) in old {
            let _ = reply.send(Err(err.clone()));
        }
        self.warmups = keep;
        let actions = if self.planner.jobs() == 0 && self.warmups.is_empty() {
            self.lifecycle.slot_no_longer_needed()
        } else {
            let oldest = self.oldest_waiting();
            self.lifecycle
                .arm_slot_timer(oldest, now)
                .into_iter()
                .collect()
        };
        self.carry_out_lifecycle(myself, actions);
    }

    fn engine_event(&mut self, myself: &ActorRef<WorkerMsg>, event: EngineEvent) {
        match event {
            EngineEvent::Frame(Frame::Ready(info)) => self.ready(myself, info),
            EngineEvent::Frame(Frame::Audio { id, pcm }) => {
                // What its client can take now, for a part to go out at once.
                if let Some((job, _)) = self.planner.sentence(id) {
                    if let Some(client) = self.clients.get(&job) {
                        self.planner.set_room(job, client.events.capacity());
                    }
                }
                match self.planner.audio(id, pcm) {
                    Ok(actions) => self.carry_out(myself, actions),
                    Err(breach) => self.protocol_broken(myself, breach.to_string()),
                }
            }
            EngineEvent::Frame(Frame::Words { id, words }) => {
                if let Err(breach) = self.planner.words(id, words) {
                    self.protocol_broken(myself, breach.to_string());
                }
            }
            EngineEvent::Frame(Frame::Done { id, samples }) => {
                self.sentence_done(myself, id, Some(samples))
            }
            EngineEvent::Frame(Frame::Cancelled { id }) => self.sentence_cancelled(myself, id),
            EngineEvent::Frame(Frame::Error {
                id,
                message,
                unspeakable,
            }) => {
                if !unspeakable {
                    tracing::warn!(voice = %self.voice.name, "engine could not speak a sentence: {message}");
                }
                self.sentence_done(myself, id, None)
            }
            EngineEvent::Closed(None) => {
                let cause = self.stderr_cause("the engine exited");
                self.engine_failed(myself, Fault::Crash, cause, None);
            }
            EngineEvent::Closed(Some(err)) => self.protocol_broken(myself, err.to_string()),
        }
    }

    /// The stream is not to be trusted: the oldest sentence in the engine,
    /// the one it was most surely working on, takes the blame.
    fn protocol_broken(&mut self, myself: &ActorRef<WorkerMsg>, what: String) {
        tracing::error!(voice = %self.voice.name, "engine broke the protocol: {what}");
        let blame = self.planner.oldest_in_engine().map(|sentence| Blame {
            sentence,
            err: SynthError::EngineBadOutput(what.clone()),
        });
        self.engine_failed(myself, Fault::BadOutput, what, blame);
    }

    /// The process died, hung or broke the protocol: the planner settles the
    /// sentences that were in it, the lifecycle kills and restarts it.
    fn engine_failed(
        &mut self,
        myself: &ActorRef<WorkerMsg>,
        fault: Fault,
        cause: String,
        blame: Option<Blame>,
    ) {
        let reason = fault.exit_reason().label();
        tracing::warn!(voice = %self.voice.name, reason, "engine failed: {cause}");
        let settled = self.planner.engine_lost(blame, &cause);
        self.carry_out(myself, settled);
        let actions = self.lifecycle.failed(fault, cause, Instant::now());
        self.carry_out_lifecycle(myself, actions);
    }

    fn stderr_cause(&self, what: &str) -> String {
        match self.engine.as_ref().and_then(|e| e.stderr.last_line()) {
            Some(line) => format!("{what}: {line}"),
            None => what.to_string(),
        }
    }

    fn ready(&mut self, myself: &ActorRef<WorkerMsg>, info: ReadyInfo) {
        let Some(load) = self.lifecycle.ready(Instant::now()) else {
            return self.protocol_broken(myself, "a second ready frame".into());
        };
        let pid = self.engine.as_ref().map_or(0, |e| e.pid());
        histogram!(m::COLD_START, "voice" => self.voice.name.clone()).record(load.as_secs_f64());
        tracing::info!(voice = %self.voice.name, pid, ms = load.as_millis() as u64, chunked = info.chunked.unwrap_or(false), "engine ready");
        if info.sample_rate != self.voice.sample_rate {
            tracing::warn!(voice = %self.voice.name, "engine sample rate {} differs from the config's {}", info.sample_rate, self.voice.sample_rate);
        }
        if info.chunked == Some(false) {
            tracing::warn!(
                voice = %self.voice.name,
                "the voice's graph cannot be split: its sentences are synthesized whole, so first audio waits for a whole sentence (the engine's log says why)"
            );
        }
        for (asked, reply) in self.warmups.drain(..) {
            let _ = reply.send(Ok(WarmInfo {
                ready_ms: asked.elapsed().as_secs_f64() * 1000.0,
                engine: info.engine.clone(),
            }));
        }
        self.engine_name = info.engine;
        if self.lifecycle.takes_sentences() {
            self.planner.engine_ready(EngineCaps {
                parallel: info.threads.max(1) as usize,
                cancels: info.cancel,
                ahead: info.ahead,
            });
        }
        self.pump(myself);
        let idle = self.lifecycle.arm_idle();
        self.carry_out_lifecycle(myself, vec![idle]);
    }

    /// A sentence is complete with its `samples`, or could not be spoken
    /// (None).
    fn sentence_done(&mut self, myself: &ActorRef<WorkerMsg>, id: u32, samples: Option<u64>) {
        self.log_end(id, "done", samples);
        match self.planner.sentence_done(id, samples.is_none()) {
            Ok(actions) => {
                self.carry_out(myself, actions);
                self.pump(myself);
            }
            Err(breach) => self.protocol_broken(myself, breach.to_string()),
        }
    }

    /// The engine dropped a sentence it was asked to give back.
    fn sentence_cancelled(&mut self, myself: &ActorRef<WorkerMsg>, id: u32) {
        self.log_end(id, "taken back", None);
        match self.planner.sentence_cancelled(id) {
            Ok(actions) => {
                self.carry_out(myself, actions);
                self.pump(myself);
            }
            Err(breach) => self.protocol_broken(myself, breach.to_string()),
        }
    }

    /// At debug level the log is a timeline of the engine's work.
    fn log_end(&self, id: u32, how: &'static str, samples: Option<u64>) {
        if let Some((job, chars)) = self.planner.sentence(id) {
            let running = self.planner.in_engine().saturating_sub(1);
            tracing::debug!(
                sentence = id,
                job,
                chars,
                ?samples,
                running,
                "sentence {how}"
            );
        }
    }

    /// Lets the planner send what may go now: every free turn is taken
    /// before each of its decisions, so that a sentence may get them all,
    /// and what it does not use goes back at once.
    fn pump(&mut self, myself: &ActorRef<WorkerMsg>) {
        // What the clients can take now, and who left.
        for (id, client) in &self.clients {
            if client.events.is_closed() {
                self.planner.client_left(*id);
            }
            self.planner.set_room(*id, client.events.capacity());
        }
        if self.lifecycle.wants_replacing() && self.planner.in_engine() == 0 {
            tracing::info!(voice = %self.voice.name, "replacing engine");
            let actions = self.lifecycle.replace();
            self.carry_out_lifecycle(myself, actions);
        }
        loop {
            if self.planner.accepting() {
                self.take_free_turns();
            }
            let actions = self.planner.plan();
            let sent = actions
                .iter()
                .any(|a| matches!(a, planner::Action::Send { .. }));
            self.carry_out(myself, actions);
            if !sent {
                break;
            }
        }
        debug_assert_eq!(
            self.held.as_ref().map_or(0, |t| t.num_permits()),
            self.planner.turns_held(),
            "the permits held are the turns the planner counts"
        );
        if self.planner.accepting() && self.planner.jobs() == 0 && self.warmups.is_empty() {
            let idle = self.lifecycle.arm_idle();
            self.carry_out_lifecycle(myself, vec![idle]);
        }
    }

    /// Takes every turn free in the shared semaphore (those waiting in its
    /// queue are served first: none are free while anyone waits).
    fn take_free_turns(&mut self) {
        let free = self.turns.available_permits();
        if free == 0 {
            return;
        }
        if let Ok(turns) = self.turns.clone().try_acquire_many_owned(free as u32) {
            merge(&mut self.held, turns);
            self.planner.turns_granted(free);
        }
    }

    /// Audio for a job's client, timing its first.
    fn deliver(&mut self, job: JobId, event: AudioEvent) {
        let Some(client) = self.clients.get_mut(&job) else {
            return;
        };
        if client.first_audio.is_none() {
            let now = Instant::now();
            client.first_audio = Some(now);
            histogram!(m::TIME_TO_FIRST_AUDIO, "voice" => self.voice.name.clone())
                .record((now - client.received).as_secs_f64());
        }
        // The planner sends audio only into room it counted; a closed
        // channel means the client left.
        let _ = client.events.try_send(event);
    }

    /// Carries out the planner's actions.
    fn carry_out(&mut self, myself: &ActorRef<WorkerMsg>, actions: Vec<planner::Action>) {
        for action in actions {
            match action {
                planner::Action::Send {
                    id,
                    job,
                    text,
                    options,
                    threads,
                    turns,
                    deadline,
                    first,
                    next,
                    next_last,
                } => {
                    let Some(engine) = &self.engine else {
                        // The planner sends only to a ready engine; the
                        // deadline settles the sentence if that ever fails.
                        tracing::error!(voice = %self.voice.name, "sentence planned without an engine");
                        continue;
                    };
                    let voice = self.voice.name.clone();
                    let cores = if threads.is_none() { "all" } else { "shared" };
                    counter!(m::SENTENCES, "voice" => voice.clone(), "cores" => cores).increment(1);
                    if let Some(client) = self.clients.get_mut(&job).filter(|c| !c.waited) {
                        client.waited = true;
                        histogram!(m::QUEUE_WAIT, "voice" => voice)
                            .record(client.received.elapsed().as_secs_f64());
                    }
                    let running = self.planner.in_engine().saturating_sub(1);
                    let chars = crate::text::char_count(&text);
                    tracing::debug!(
                        sentence = id,
                        job,
                        chars,
                        ?threads,
                        turns,
                        running,
                        first,
                        length_scale = ?options.length_scale,
                        next = next.is_some(),
                        "sentence sent"
                    );
                    engine.send(
                        Request {
                            id,
                            text: &text,
                            threads,
                            first,
                            next: next.as_deref(),
                            next_last,
                            options: &options,
                        }
                        .to_line(),
                    );
                    let generation = self.lifecycle.generation();
                    let progress = self.planner.progress();
                    myself.send_after(deadline, move || WorkerMsg::HangCheck {
                        generation,
                        sentence: id,
                        progress,
                        after: deadline,
                    });
                }
                planner::Action::Cancel { id, preempted } => {
                    if let Some(engine) = &self.engine {
                        engine.send(cancel_line(id));
                    }
                    if preempted {
                        counter!(m::PREEMPTIONS, "voice" => self.voice.name.clone()).increment(1);
                    }
                }
                planner::Action::DeliverPart { job, pcm } => {
                    self.deliver(job, AudioEvent::Part(pcm));
                }
                planner::Action::Deliver {
                    job,
                    span,
                    pcm,
                    words,
                } => {
                    self.deliver(job, AudioEvent::Audio { span, pcm, words });
                }
                planner::Action::Finish { job, summary } => {
                    let Some(client) = self.clients.remove(&job) else {
                        continue;
                    };
                    let voice = self.voice.name.clone();
                    let elapsed = client.received.elapsed().as_secs_f64();
                    let audio = summary.samples as f64 / self.voice.sample_rate as f64;
                    histogram!(m::SYNTHESIS_DURATION, "voice" => voice.clone()).record(elapsed);
                    histogram!(m::AUDIO_DURATION, "voice" => voice.clone()).record(audio);
                    if audio > 0.0 {
                        histogram!(m::REAL_TIME_FACTOR, "voice" => voice).record(elapsed / audio);
                    }
                    send_outcome(&client.events, AudioEvent::Done(summary));
                }
                planner::Action::Fail { job, err } => {
                    if let Some(client) = self.clients.remove(&job) {
                        send_outcome(&client.events, AudioEvent::Failed(err));
                    }
                }
                planner::Action::Abandoned { job } => {
                    self.clients.remove(&job);
                    tracing::info!("request cancelled by its client");
                }
                planner::Action::AskTurn => self.ask_turn(myself),
                planner::Action::ReleaseTurns(n) => {
                    // Split off and dropped: back in the semaphore.
                    match self.held.as_mut().and_then(|held| held.split(n)) {
                        Some(turns) => drop(turns),
                        None => {
                            tracing::error!(voice = %self.voice.name, "{n} turns to give back are not held")
                        }
                    }
                }
                planner::Action::ArmResume => {
                    myself.send_after(RESUME_AFTER, || WorkerMsg::Resume);
                }
            }
        }
    }

    /// Waits in the semaphore's queue (first come, first served over all
    /// voices) for a turn; it arrives as [`WorkerMsg::Turn`].
    fn ask_turn(&mut self, myself: &ActorRef<WorkerMsg>) {
        let turns = self.turns.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            if let Ok(turn) = turns.acquire_owned().await {
                let _ = me.send_message(WorkerMsg::Turn(turn));
            }
        });
    }

    /// Carries out the lifecycle's actions.
    fn carry_out_lifecycle(
        &mut self,
        myself: &ActorRef<WorkerMsg>,
        actions: Vec<lifecycle::Action>,
    ) {
        let voice = self.voice.name.clone();
        for action in actions {
            match action {
                lifecycle::Action::AskSlot => {
                    let _ = self.supervisor.send_message(SupervisorMsg::SlotRequest {
                        voice: voice.clone(),
                    });
                }
                lifecycle::Action::CancelSlotRequest => {
                    let _ = self.supervisor.send_message(SupervisorMsg::SlotCancelled {
                        voice: voice.clone(),
                    });
                }
                lifecycle::Action::ReleaseSlot => {
                    let _ = self.supervisor.send_message(SupervisorMsg::SlotReleased {
                        voice: voice.clone(),
                    });
                }
                lifecycle::Action::RefuseEviction => {
                    let _ = self.supervisor.send_message(SupervisorMsg::EvictRefused {
                        voice: voice.clone(),
                    });
                }
                lifecycle::Action::Spawn => self.spawn(myself),
                lifecycle::Action::Stop(reason) => {
                    if let Some(engine) = self.take_engine(reason) {
                        tokio::spawn(engine.stop(STOP_GRACE));
                    }
                }
                lifecycle::Action::Kill(reason) => {
                    if let Some(engine) = self.take_engine(reason) {
                        engine.kill();
                    }
                }
                lifecycle::Action::Arm(timer, after) => arm(myself, timer, after),
                lifecycle::Action::Restarting => {
                    counter!(m::PROCESS_RESTARTS, "voice" => voice.clone()).increment(1);
                }
                lifecycle::Action::GiveUp { cause } => self.give_up(myself, cause),
                lifecycle::Action::Recovered => {
                    gauge!(m::VOICE_FAILED, "voice" => voice.clone()).set(0.0);
                }
            }
        }
    }

    /// Starts the process of the lifecycle's current generation.
    fn spawn(&mut self, myself: &ActorRef<WorkerMsg>) {
        let generation = self.lifecycle.generation();
        let me = myself.clone();
        let spawned = EngineProcess::spawn(
            &self.spec,
            &self.voice.files.model,
            &self.voice.files.config,
            move |event| {
                let _ = me.send_message(WorkerMsg::Engine { generation, event });
            },
        );
        let now = Instant::now();
        let actions = match spawned {
            Ok(engine) => {
                counter!(m::PROCESS_STARTS, "voice" => self.voice.name.clone()).increment(1);
                gauge!(m::PROCESSES).increment(1.0);
                tracing::info!(voice = %self.voice.name, pid = engine.pid(), "engine starting");
                self.engine = Some(engine);
                self.lifecycle.spawned(now, self.voice.fingerprint)
            }
            Err(err) => {
                let cause = format!("cannot start {}: {err}", self.spec.python.display());
                tracing::warn!(voice = %self.voice.name, "engine failed: {cause}");
                self.lifecycle.spawn_failed(cause, now)
            }
        };
        self.carry_out_lifecycle(myself, actions);
    }

    /// Takes the engine out of the state, counting its exit. The planner
    /// sends it nothing more (what was in it was settled before a kill, and
    /// nothing is in it at a polite stop).
    fn take_engine(&mut self, reason: ExitReason) -> Option<EngineProcess> {
        self.planner.engine_paused();
        let engine = self.engine.take()?;
        let voice = self.voice.name.clone();
        counter!(m::PROCESS_EXITS, "voice" => voice.clone(), "reason" => reason.label())
            .increment(1);
        gauge!(m::PROCESSES).decrement(1.0);
        gauge!(m::PROCESS_MEMORY, "voice" => voice).set(0.0);
        Some(engine)
    }

    /// Too many crashes: the voice is failed for a cool-down.
    fn give_up(&mut self, myself: &ActorRef<WorkerMsg>, cause: String) {
        tracing::error!(voice = %self.voice.name, "voice failed after repeated engine failures: {cause}");
        gauge!(m::VOICE_FAILED, "voice" => self.voice.name.clone()).set(1.0);
        let err = SynthError::VoiceUnavailable {
            voice: self.voice.name.clone(),
            cause,
        };
        let failed = self.planner.fail_all(err.clone());
        self.carry_out(myself, failed);
        for (_, reply) in self.warmups.drain(..) {
            let _ = reply.send(Err(err.clone()));
        }
    }

    fn sample(&mut self) {
        let Some(rss) = self.engine.as_ref().and_then(|e| e.rss_bytes()) else {
            return;
        };
        gauge!(m::PROCESS_MEMORY, "voice" => self.voice.name.clone()).set(rss as f64);
        // Megabytes as named: 10^6 bytes.
        if rss > self.config.engine_max_rss_mb * 1_000_000 && self.lifecycle.too_big() {
            tracing::info!(voice = %self.voice.name, rss, "engine above its memory cap: recycling");
            self.planner.engine_paused();
        }
    }
}

/// Arms a lifecycle timer: it comes back as the message for it.
fn arm(myself: &ActorRef<WorkerMsg>, timer: Timer, after: Duration) {
    myself.send_after(after, move || match timer {
        Timer::Start { generation } => WorkerMsg::StartTimeout { generation },
        Timer::Restart { generation } => WorkerMsg::Restart { generation },
        Timer::Idle { epoch } => WorkerMsg::IdleCheck { epoch },
        Timer::Slot => WorkerMsg::SlotTimeout,
    });
}

/// Watches a job from outside the worker: its sentences still arriving and
/// its client leaving (heard at once, not at the job's next event, so that
/// the engine stops that client's sentence now). Dropping the returned
/// sender, with the job, ends the watch.
fn watch_job(
    myself: &ActorRef<WorkerMsg>,
    job: JobId,
    events: mpsc::Sender<AudioEvent>,
    mut more: Option<mpsc::UnboundedReceiver<Sentence>>,
) -> oneshot::Sender<()> {
    let (watch, mut job_ended) = oneshot::channel::<()>();
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
