//! The supervisor: registry of voice workers and keeper of process slots.
//!
//! It spawns one linked [`VoiceWorker`] per voice on first use and restarts
//! it if it fails (a panicking worker loses its process: the child is killed
//! when the worker's state drops). It also enforces `PIPER_MAX_PROCESSES`:
//! a worker that needs a process asks for a slot; when none is free, the
//! least recently used idle worker is asked to stop its process, and only
//! when every process is busy does the request wait in line.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::gauge;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

pub use super::messages::{EngineHealth, Health, SupervisorMsg};
use super::messages::{WorkerMsg, WorkerStatus};
use super::voice_worker::{VoiceWorker, WorkerArgs};
use super::{send_outcome, AudioEvent, SynthError};
use crate::config::Config;
use crate::engine::{self, reaper::Reaper, EngineSpec};
use crate::metrics as m;
use crate::voices::VoiceInfo;

/// How often workers sample their engine's memory.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long a failed engine check is trusted before it is run again.
const PROBE_RETRY: Duration = Duration::from_secs(10);

pub struct Supervisor;

pub struct SupervisorArgs {
    pub config: Arc<Config>,
    /// Register of the engines started, which the server drains on exit.
    pub reaper: Reaper,
}

struct Entry {
    worker: ActorRef<WorkerMsg>,
    status: WorkerStatus,
    holds_slot: bool,
    busy: bool,
    idle_since: Instant,
    evicting: bool,
}

pub struct SupervisorState {
    config: Arc<Config>,
    spec: EngineSpec,
    /// Turns to synthesize a sentence, shared by every worker.
    turns: Arc<tokio::sync::Semaphore>,
    workers: HashMap<String, Entry>,
    names: HashMap<ActorId, String>,
    /// Voices waiting for a slot, first come first served.
    waiting: VecDeque<String>,
    engine: EngineHealth,
    probed_at: Instant,
    probing: bool,
    /// The engine check running, stopped with the supervisor: the server
    /// waits for every child it started, and the check has no answer to
    /// give a server that is stopping.
    probe_task: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let config = args.config;
        let spec = EngineSpec {
            python: config.python.clone(),
            program: config.engine_program.clone(),
            // One more than the sentences it runs, so that a sentence sent
            // while a cancelled one is still stopping does not wait for it.
            parallel: config.engine_concurrency + 1,
            shared_threads: if config.engine_concurrency > 1 {
                config.engine_threads
            } else {
                0
            },
            cache_dir: config.engine_cache_dir.clone(),
            reaper: args.reaper,
        };
        myself.send_interval(SAMPLE_EVERY, || SupervisorMsg::SampleTick);
        gauge!(m::PROCESSES).set(0.0);
        let mut state = SupervisorState {
            turns: Arc::new(tokio::sync::Semaphore::new(config.engine_concurrency)),
            config,
            spec,
            workers: HashMap::new(),
            names: HashMap::new(),
            waiting: VecDeque::new(),
            engine: EngineHealth::Unknown,
            probed_at: Instant::now(),
            probing: false,
            probe_task: None,
        };
        state.probe(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Synthesize(job) => {
                if let EngineHealth::Unavailable(reason) = &state.engine {
                    let err = SynthError::EngineUnavailable(reason.clone());
                    send_outcome(&job.events, AudioEvent::Failed(err));
                    state.probe(&myself);
                    return Ok(());
                }
                let worker = state.worker_for(&myself, &job.voice).await?;
                if let Err(ractor::MessagingErr::SendErr(WorkerMsg::Synthesize(job))) =
                    worker.send_message(WorkerMsg::Synthesize(job))
                {
                    send_outcome(&job.events, AudioEvent::Failed(SynthError::ShuttingDown));
                }
            }
            SupervisorMsg::Warmup(voice, reply) => {
                if let EngineHealth::Unavailable(reason) = &state.engine {
                    let _ = reply.send(Err(SynthError::EngineUnavailable(reason.clone())));
                    state.probe(&myself);
                    return Ok(());
                }
                let worker = state.worker_for(&myself, &voice).await?;
                let _ = worker.send_message(WorkerMsg::Warmup(voice, reply));
            }
            SupervisorMsg::Health(reply) => {
                if matches!(state.engine, EngineHealth::Unavailable(_)) {
                    state.probe(&myself);
                }
                let mut workers: Vec<WorkerStatus> =
                    state.workers.values().map(|e| e.status.clone()).collect();
                workers.sort_by(|a, b| a.voice.cmp(&b.voice));
                let _ = reply.send(Health {
                    engine: state.engine.clone(),
                    processes: workers.iter().filter(|w| w.running).count(),
                    max_processes: state.config.max_processes,
                    workers,
                });
            }
            SupervisorMsg::SlotRequest { voice } => {
                if !state.waiting.contains(&voice) {
                    state.waiting.push_back(voice);
                }
                state.rebalance();
            }
            SupervisorMsg::SlotCancelled { voice } => {
                state.waiting.retain(|v| *v != voice);
                state.rebalance();
            }
            SupervisorMsg::SlotReleased { voice } => {
                if let Some(entry) = state.workers.get_mut(&voice) {
                    entry.holds_slot = false;
                    entry.evicting = false;
                }
                state.rebalance();
            }
            SupervisorMsg::VoicesPresent(names) => {
                // An idle worker is asked now; a busy one refuses, and is
                // asked again at the next listing, after its requests.
                for (voice, entry) in state.workers.iter_mut() {
                    if !names.contains(voice) && entry.holds_slot && !entry.busy && !entry.evicting
                    {
                        tracing::info!(voice = %voice, "voice removed: stopping its engine");
                        entry.evicting = true;
                        let _ = entry.worker.send_message(WorkerMsg::Evict);
                    }
                }
            }
            SupervisorMsg::EvictRefused { voice } => {
                if let Some(entry) = state.workers.get_mut(&voice) {
                    entry.evicting = false;
                }
                state.rebalance();
            }
            SupervisorMsg::WorkerReport {
                voice,
                status,
                busy,
            } => {
                if let Some(entry) = state.workers.get_mut(&voice) {
                    if entry.busy && !busy {
                        entry.idle_since = Instant::now();
                    }
                    entry.busy = busy;
                    entry.status = status;
                }
                state.rebalance();
            }
            SupervisorMsg::EngineProbed(result) => {
                state.probing = false;
                state.probed_at = Instant::now();
                state.engine = match result {
                    Ok(version) => {
                        tracing::info!("engine available: {version}");
                        EngineHealth::Ok(version)
                    }
                    Err(reason) => {
                        tracing::error!("engine unavailable: {reason}");
                        EngineHealth::Unavailable(reason)
                    }
                };
            }
            SupervisorMsg::SampleTick => {
                for entry in state.workers.values() {
                    let _ = entry.worker.send_message(WorkerMsg::Sample);
                }
                if let Some(rss) = engine::process::rss_of(std::process::id()) {
                    gauge!(m::SERVER_MEMORY).set(rss as f64);
                }
            }
            SupervisorMsg::StopWorkers(reply) => {
                let workers: Vec<_> = state.workers.drain().map(|(_, e)| e.worker).collect();
                state.names.clear();
                stop_all(workers).await;
                let _ = reply.send(());
            }
            #[cfg(test)]
            SupervisorMsg::Panic => panic!("supervisor panic asked for by a test"),
            #[cfg(test)]
            SupervisorMsg::PanicWorker(voice) => {
                if let Some(entry) = state.workers.get(&voice) {
                    let _ = entry.worker.send_message(WorkerMsg::Panic);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Never stop with a child: forget the worker, free its slot; the
        // next request for its voice starts a fresh one.
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(voice) = state.names.remove(&cell.get_id()) {
                    tracing::error!(voice, "voice worker failed: {err}; it will be restarted");
                    state.forget(&voice);
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(voice) = state.names.remove(&cell.get_id()) {
                    state.forget(&voice);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(probe) = state.probe_task.take() {
            probe.abort(); // Its child is killed and reaped as the task drops.
        }
        stop_all(state.workers.drain().map(|(_, e)| e.worker).collect()).await;
        Ok(())
    }
}

/// Stops every worker at once and waits (bounded) until each has finished
/// its `post_stop`, where it stops its engine.
///
/// Not `stop_and_wait` after `stop`: an actor's stop port is a one-shot,
/// so the second stop finds it taken and `stop_and_wait` returns at once
/// without waiting; the server then went on to exit while engines were
/// still being stopped.
async fn stop_all(workers: Vec<ActorRef<WorkerMsg>>) {
    for worker in &workers {
        worker.stop(Some("shutdown".into()));
    }
    let waits = workers
        .iter()
        .map(|w| w.wait(Some(super::voice_worker::STOP_GRACE * 2)));
    futures::future::join_all(waits).await;
}

impl SupervisorState {
    /// Runs the engine check in the background (once at a time).
    fn probe(&mut self, myself: &ActorRef<SupervisorMsg>) {
        let stale =
            matches!(self.engine, EngineHealth::Unknown) || self.probed_at.elapsed() >= PROBE_RETRY;
        if self.probing || !stale {
            return;
        }
        self.probing = true;
        let spec = self.spec.clone();
        let me = myself.clone();
        self.probe_task = Some(tokio::spawn(async move {
            let result = engine::probe(&spec).await;
            let _ = me.send_message(SupervisorMsg::EngineProbed(result));
        }));
    }

    async fn worker_for(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        voice: &Arc<VoiceInfo>,
    ) -> Result<ActorRef<WorkerMsg>, ActorProcessingErr> {
        if let Some(entry) = self.workers.get(&voice.name) {
            return Ok(entry.worker.clone());
        }
        let args = WorkerArgs {
            voice: voice.clone(),
            config: self.config.clone(),
            spec: self.spec.clone(),
            supervisor: myself.clone(),
            turns: self.turns.clone(),
        };
        let (worker, _) = Actor::spawn_linked(None, VoiceWorker, args, myself.get_cell()).await?;
        self.names.insert(worker.get_id(), voice.name.clone());
        self.workers.insert(
            voice.name.clone(),
            Entry {
                worker: worker.clone(),
                status: WorkerStatus::new(&voice.name),
                holds_slot: false,
                busy: false,
                idle_since: Instant::now(),
                evicting: false,
            },
        );
        Ok(worker)
    }

    /// A worker is gone: its slot and its place in line go with it.
    fn forget(&mut self, voice: &str) {
        if let Some(entry) = self.workers.remove(voice) {
            if entry.status.running {
                gauge!(m::PROCESSES).decrement(1.0);
            }
        }
        self.waiting.retain(|v| v != voice);
        self.rebalance();
    }

    /// Grants free slots to waiting voices, evicting an idle one if needed.
    fn rebalance(&mut self) {
        while let Some(voice) = self.waiting.front().cloned() {
            let Some(entry) = self.workers.get(&voice) else {
                self.waiting.pop_front();
                continue;
            };
            if entry.holds_slot {
                // Already has one (a stale request): nothing to grant.
                self.waiting.pop_front();
                continue;
            }
            let used = self.workers.values().filter(|e| e.holds_slot).count();
            if used < self.config.max_processes {
                self.waiting.pop_front();
                let entry = self.workers.get_mut(&voice).expect("checked above");
                entry.holds_slot = true;
                let _ = entry.worker.send_message(WorkerMsg::SlotGranted);
                continue;
            }
            // Full. One eviction at a time: it frees the slot for the front.
            if self.workers.values().any(|e| e.evicting) {
                return;
            }
            let victim = self
                .workers
                .iter_mut()
                .filter(|(_, e)| e.holds_slot && !e.busy)
                .min_by_key(|(_, e)| e.idle_since);
            if let Some((name, entry)) = victim {
                tracing::debug!(voice = %name, "asking idle engine to make room");
                entry.evicting = true;
                let _ = entry.worker.send_message(WorkerMsg::Evict);
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{SynthJob, SynthSummary};

    /// A voices folder with one voice, spoken by the test double.
    fn setup() -> (tempfile::TempDir, Arc<Config>, Arc<VoiceInfo>) {
        let (dir, config) = crate::testing::fake_engine_setup(&[]);
        let (files, fingerprint) = crate::voices::resolve(dir.path(), "v").unwrap();
        let voice = Arc::new(crate::voices::load(files, fingerprint).unwrap());
        (dir, config, voice)
    }

    async fn speak(supervisor: &ActorRef<SupervisorMsg>, voice: &Arc<VoiceInfo>) -> SynthSummary {
        let sentence = crate::scheduler::Sentence {
            line: "Hello there.".into(),
            span: 0..12,
            length_scale: None,
        };
        let (job, mut events) = SynthJob::whole(voice.clone(), vec![sentence], Default::default());
        supervisor
            .send_message(SupervisorMsg::Synthesize(job))
            .unwrap();
        loop {
            match events.recv().await.expect("the job ends with Done") {
                AudioEvent::Audio { .. } | AudioEvent::Part(_) => continue,
                AudioEvent::Done(summary) => return summary,
                AudioEvent::Failed(err) => panic!("synthesis failed: {err}"),
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_still_gets_its_failure() {
        let (_dir, config, voice) = setup();
        let args = SupervisorArgs {
            config,
            reaper: Reaper::default(),
        };
        let (supervisor, handle) = Actor::spawn(None, Supervisor, args).await.unwrap();
        // Audio for most of the channel, then a sentence that crashes the
        // engine every time: the job fails while nobody reads.
        let mut lines: Vec<String> = (0..12).map(|i| format!("Sentence {i}.")).collect();
        lines.push("CRASH every time.".into());
        let sentences = lines
            .into_iter()
            .enumerate()
            .map(|(i, line)| crate::scheduler::Sentence {
                line,
                span: i..i + 1,
                length_scale: None,
            })
            .collect();
        let (job, mut events) = SynthJob::whole(voice.clone(), sentences, Default::default());
        supervisor
            .send_message(SupervisorMsg::Synthesize(job))
            .unwrap();
        let mut waited = 0;
        while events.len() < 13 && waited < 400 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        let mut audio = 0;
        let outcome = loop {
            match events.recv().await {
                Some(AudioEvent::Audio { .. }) => audio += 1,
                Some(AudioEvent::Part(_)) => {}
                other => break other,
            }
        };
        assert_eq!(audio, 12);
        assert!(
            matches!(
                outcome,
                Some(AudioEvent::Failed(SynthError::EngineCrashed(_)))
            ),
            "{outcome:?}"
        );
        supervisor.stop(None);
        handle.await.unwrap();
    }

    async fn health(supervisor: &ActorRef<SupervisorMsg>) -> Health {
        ractor::call!(supervisor, SupervisorMsg::Health).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_worker_is_replaced_and_its_engine_killed() {
        let (_dir, config, voice) = setup();
        let args = SupervisorArgs {
            config,
            reaper: Reaper::default(),
        };
        let (supervisor, handle) = Actor::spawn(None, Supervisor, args).await.unwrap();
        assert!(speak(&supervisor, &voice).await.samples > 0);
        let pid = health(&supervisor).await.workers[0]
            .pid
            .expect("engine running");

        supervisor
            .send_message(SupervisorMsg::PanicWorker("v".into()))
            .unwrap();
        // The supervisor forgets the worker; the engine dies with its state.
        let mut gone = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let dead = stat.is_empty()
                || stat
                    .rsplit(')')
                    .next()
                    .unwrap()
                    .trim_start()
                    .starts_with('Z');
            if health(&supervisor).await.workers.is_empty() && dead {
                gone = true;
                break;
            }
        }
        assert!(gone, "the failed worker or its engine lingered");

        // Still serving: a fresh worker with a fresh engine.
        assert!(speak(&supervisor, &voice).await.samples > 0);
        let new_pid = health(&supervisor).await.workers[0].pid.unwrap();
        assert_ne!(new_pid, pid);
        supervisor.stop(None);
        handle.await.unwrap();
    }
}
