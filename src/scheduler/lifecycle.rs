//! The life of one voice's engine process: a pure state machine.
//!
//! A voice with work and no process asks the supervisor for a slot, starts
//! its engine with it, waits for the ready frame and keeps the engine until
//! it idles, is evicted or must be replaced: its voice files changed, or it
//! grew past its memory cap (then only once the sentences in it are done).
//! An engine that dies, hangs or breaks the protocol is killed and started
//! again after a backoff that doubles from 100 ms to 5 s. More than
//! `PIPER_MAX_RESTARTS` crashes in `PIPER_RESTART_WINDOW` fail the voice for
//! `PIPER_FAILED_COOLDOWN`. A hang is not counted there: the deadline is
//! a guess about one request (a very slow one looks the same), the hung
//! request fails alone with `engine_timeout`, and a few of them must not
//! fail the voice for everyone; an engine that never gets ready does count.
//!
//! The machine does no I/O and reads no clock: it gets the time with the
//! events and answers with [`Action`]s, timers included, that the worker
//! carries out. The process itself stays with the worker; every process
//! has a generation, so that the worker can ignore what an old one says.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::metrics::ExitReason;
use crate::voices::Fingerprint;

/// First restart delay after a failure; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The settings the machine follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub max_restarts: usize,
    pub restart_window: Duration,
    pub failed_cooldown: Duration,
    pub start_timeout: Duration,
    pub idle_timeout: Duration,
    pub queue_timeout: Duration,
}

impl Policy {
    pub fn from_config(config: &Config) -> Policy {
        Policy {
            max_restarts: config.max_restarts,
            restart_window: config.restart_window,
            failed_cooldown: config.failed_cooldown,
            start_timeout: config.engine_start_timeout,
            idle_timeout: config.idle_timeout,
            queue_timeout: config.queue_timeout,
        }
    }
}

/// Where the process is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// No process and no slot.
    Stopped,
    /// Asked the supervisor for a slot.
    WaitingSlot,
    /// Holds a slot and no process: waiting out a backoff, or being started.
    Backoff,
    Starting {
        since: Instant,
        fingerprint: Fingerprint,
    },
    Ready {
        fingerprint: Fingerprint,
    },
    /// Crash-looped: refuses requests until `until`.
    Failed {
        until: Instant,
        cause: String,
    },
}

/// How an engine failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It exited, or could not be started.
    Crash,
    /// It wrote something that is not the protocol.
    BadOutput,
    /// It did not become ready in time.
    StartTimeout,
    /// A sentence passed its deadline.
    Hang,
}

impl Fault {
    /// The `reason` its process's exit is counted under.
    pub fn exit_reason(self) -> ExitReason {
        match self {
            Fault::Crash => ExitReason::Crash,
            Fault::BadOutput => ExitReason::BadOutput,
            Fault::StartTimeout | Fault::Hang => ExitReason::Hang,
        }
    }

    /// Whether it counts toward failing the voice.
    fn counts(self) -> bool {
        self != Fault::Hang
    }
}

/// The timers the worker arms; each comes back as an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// [`Lifecycle::is_starting`] is checked when it rings.
    Start { generation: u64 },
    /// Rings into [`Lifecycle::restart_due`].
    Restart { generation: u64 },
    /// Rings into [`Lifecycle::idle_due`].
    Idle { epoch: u64 },
    /// Rings into [`Lifecycle::slot_timer_rang`].
    Slot,
}

/// What the worker is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    AskSlot,
    /// Nobody waits for the slot asked for any more.
    CancelSlotRequest,
    ReleaseSlot,
    /// The worker is busy: the supervisor must evict another voice.
    RefuseEviction,
    /// Start a process of the current generation, then report
    /// [`Lifecycle::spawned`] or [`Lifecycle::spawn_failed`].
    Spawn,
    /// Stop the process politely.
    Stop(ExitReason),
    Kill(ExitReason),
    Arm(Timer, Duration),
    /// A failed process is to be started again (counted for metrics).
    Restarting,
    /// The voice failed: every job and warm-up fails with `cause`.
    GiveUp {
        cause: String,
    },
    /// A failed voice's cool-down is over.
    Recovered,
}

/// The state of one voice's engine process.
#[derive(Debug)]
pub struct Lifecycle {
    policy: Policy,
    phase: Phase,
    /// Bumped at every start and end of a process.
    generation: u64,
    /// When the counted failures within the window happened.
    crashes: VecDeque<Instant>,
    backoff: Duration,
    /// Replace the process once the sentences in it are done.
    recycle: Option<ExitReason>,
    /// Bumped with new work, so that only the latest idle timer counts.
    idle_epoch: u64,
    slot_timer_armed: bool,
}

impl Lifecycle {
    pub fn new(policy: Policy) -> Lifecycle {
        Lifecycle {
            policy,
            phase: Phase::Stopped,
            generation: 0,
            crashes: VecDeque::new(),
            backoff: FIRST_BACKOFF,
            recycle: None,
            idle_epoch: 0,
            slot_timer_armed: false,
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn holds_slot(&self) -> bool {
        matches!(
            self.phase,
            Phase::Backoff | Phase::Starting { .. } | Phase::Ready { .. }
        )
    }

    /// Whether a process runs (starting or ready).
    pub fn has_engine(&self) -> bool {
        matches!(self.phase, Phase::Starting { .. } | Phase::Ready { .. })
    }

    /// Ready, and not to be replaced: it takes sentences.
    pub fn takes_sentences(&self) -> bool {
        matches!(self.phase, Phase::Ready { .. }) && self.recycle.is_none()
    }

    /// A replacement is due once the engine has no sentence left.
    pub fn wants_replacing(&self) -> bool {
        self.recycle.is_some() && self.has_engine()
    }

    pub fn waiting_slot(&self) -> bool {
        self.phase == Phase::WaitingSlot
    }

    pub fn is_starting(&self, generation: u64) -> bool {
        generation == self.generation && matches!(self.phase, Phase::Starting { .. })
    }

    /// Why the voice is failed, during its cool-down.
    pub fn failed_cause(&self) -> Option<&str> {
        match &self.phase {
            Phase::Failed { cause, .. } => Some(cause),
            _ => None,
        }
    }

    /// Whether a request may be served: `Err(cause)` during a failed
    /// voice's cool-down; after it, the voice starts afresh.
    pub fn admit(&mut self, now: Instant) -> Result<Vec<Action>, String> {
        let Phase::Failed { until, cause } = &self.phase else {
            return Ok(Vec::new());
        };
        if now < *until {
            return Err(cause.clone());
        }
        self.phase = Phase::Stopped;
        self.crashes.clear();
        Ok(vec![Action::Recovered])
    }

    /// Work arrived (`oldest`: the longest waiting): it needs a process,
    /// and the engine is not idle.
    pub fn work_arrived(&mut self, oldest: Instant, now: Instant) -> Vec<Action> {
        self.idle_epoch += 1;
        if self.phase != Phase::Stopped {
            return Vec::new();
        }
        self.phase = Phase::WaitingSlot;
        let mut out = vec![Action::AskSlot];
        out.extend(self.arm_slot_timer(oldest, now));
        out
    }

    /// Arms the timer that fails what waited `PIPER_QUEUE_TIMEOUT` for a
    /// slot, counted from the longest waiting, `oldest`.
    pub fn arm_slot_timer(&mut self, oldest: Instant, now: Instant) -> Option<Action> {
        if self.slot_timer_armed {
            return None;
        }
        self.slot_timer_armed = true;
        let due = (oldest + self.policy.queue_timeout).saturating_duration_since(now);
        Some(Action::Arm(Timer::Slot, due))
    }

    /// The slot timer rang: whether the worker still waits for a slot (then
    /// it fails what waited too long).
    pub fn slot_timer_rang(&mut self) -> bool {
        self.slot_timer_armed = false;
        self.waiting_slot()
    }

    /// Everything waiting for a slot gave up.
    pub fn slot_no_longer_needed(&mut self) -> Vec<Action> {
        if !self.waiting_slot() {
            return Vec::new();
        }
        self.phase = Phase::Stopped;
        vec![Action::CancelSlotRequest]
    }

    pub fn slot_granted(&mut self) -> Vec<Action> {
        match self.phase {
            Phase::WaitingSlot => self.start(),
            // The wait was given up meanwhile: hand the slot straight back.
            _ => vec![Action::ReleaseSlot],
        }
    }

    fn start(&mut self) -> Vec<Action> {
        self.generation += 1;
        self.phase = Phase::Backoff;
        vec![Action::Spawn]
    }

    /// The process of the current generation started.
    pub fn spawned(&mut self, now: Instant, fingerprint: Fingerprint) -> Vec<Action> {
        self.phase = Phase::Starting {
            since: now,
            fingerprint,
        };
        self.recycle = None;
        let timer = Timer::Start {
            generation: self.generation,
        };
        vec![Action::Arm(timer, self.policy.start_timeout)]
    }

    pub fn spawn_failed(&mut self, cause: String, now: Instant) -> Vec<Action> {
        self.failed(Fault::Crash, cause, now)
    }

    /// The ready frame: how long the engine took to load, or `None` when it
    /// was not starting (a second ready frame breaks the protocol).
    pub fn ready(&mut self, now: Instant) -> Option<Duration> {
        let Phase::Starting { since, fingerprint } = self.phase else {
            return None;
        };
        self.phase = Phase::Ready { fingerprint };
        self.backoff = FIRST_BACKOFF;
        Some(now.saturating_duration_since(since))
    }

    /// The engine failed: it is killed and started again after the backoff,
    /// or, after too many counted failures, the voice fails.
    pub fn failed(&mut self, fault: Fault, cause: String, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.has_engine() {
            self.generation += 1;
            out.push(Action::Kill(fault.exit_reason()));
        }
        out.push(Action::Restarting);
        if fault.counts() {
            self.crashes.push_back(now);
            let window = self.policy.restart_window;
            while self
                .crashes
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) > window)
            {
                self.crashes.pop_front();
            }
            if self.crashes.len() > self.policy.max_restarts {
                self.phase = Phase::Failed {
                    until: now + self.policy.failed_cooldown,
                    cause: cause.clone(),
                };
                out.push(Action::GiveUp { cause });
                out.push(Action::ReleaseSlot);
                return out;
            }
        }
        self.phase = Phase::Backoff;
        let timer = Timer::Restart {
            generation: self.generation,
        };
        out.push(Action::Arm(timer, self.backoff));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        out
    }

    /// The restart timer of `generation` rang.
    pub fn restart_due(&mut self, generation: u64) -> Vec<Action> {
        if generation == self.generation && self.phase == Phase::Backoff {
            self.start()
        } else {
            Vec::new()
        }
    }

    /// Requests now speak a voice with these files: a process that speaks
    /// other ones is replaced. True when that is newly decided.
    pub fn voice_seen(&mut self, fingerprint: Fingerprint) -> bool {
        let speaks = match &self.phase {
            Phase::Starting { fingerprint, .. } | Phase::Ready { fingerprint } => *fingerprint,
            _ => return false,
        };
        let newly = speaks != fingerprint && self.recycle != Some(ExitReason::ConfigChange);
        if speaks != fingerprint {
            self.recycle = Some(ExitReason::ConfigChange);
        }
        newly
    }

    /// The process grew past its memory cap: it is replaced between
    /// sentences. True when that is newly decided.
    pub fn too_big(&mut self) -> bool {
        if !self.has_engine() || self.recycle.is_some() {
            return false;
        }
        self.recycle = Some(ExitReason::Memory);
        true
    }

    /// The engine has no sentence left: the replacement decided earlier
    /// happens now.
    pub fn replace(&mut self) -> Vec<Action> {
        if !self.has_engine() {
            return Vec::new();
        }
        let Some(reason) = self.recycle.take() else {
            return Vec::new();
        };
        self.generation += 1;
        let mut out = vec![Action::Stop(reason)];
        out.extend(self.start());
        out
    }

    /// Arms the idle timer (any earlier one no longer counts).
    pub fn arm_idle(&mut self) -> Action {
        self.idle_epoch += 1;
        let timer = Timer::Idle {
            epoch: self.idle_epoch,
        };
        Action::Arm(timer, self.policy.idle_timeout)
    }

    /// The idle timer of `epoch` rang: the process stops if nothing came
    /// since and nothing is `busy`.
    pub fn idle_due(&mut self, epoch: u64, busy: bool) -> Vec<Action> {
        if epoch != self.idle_epoch || busy || !self.holds_slot() {
            return Vec::new();
        }
        self.stop(ExitReason::Idle)
    }

    /// The supervisor wants the slot back for another voice.
    pub fn evict(&mut self, idle: bool) -> Vec<Action> {
        if idle && self.holds_slot() {
            self.stop(ExitReason::Evicted)
        } else {
            vec![Action::RefuseEviction]
        }
    }

    fn stop(&mut self, reason: ExitReason) -> Vec<Action> {
        let mut out = Vec::new();
        if self.has_engine() {
            self.generation += 1;
            out.push(Action::Stop(reason));
        }
        if self.holds_slot() {
            out.push(Action::ReleaseSlot);
        }
        self.phase = Phase::Stopped;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            max_restarts: 2,
            restart_window: Duration::from_secs(60),
            failed_cooldown: Duration::from_secs(30),
            start_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            queue_timeout: Duration::from_secs(30),
        }
    }

    fn files(n: u64) -> Fingerprint {
        Fingerprint {
            model: (None, n),
            config: (None, n),
        }
    }

    /// A machine with a ready engine, at `now`.
    fn ready(now: Instant) -> Lifecycle {
        let mut l = Lifecycle::new(policy());
        l.work_arrived(now, now);
        assert_eq!(l.slot_granted(), [Action::Spawn]);
        l.spawned(now, files(1));
        l.ready(now).unwrap();
        l
    }

    fn restart_delay(actions: &[Action]) -> Option<Duration> {
        actions.iter().find_map(|a| match a {
            Action::Arm(Timer::Restart { .. }, after) => Some(*after),
            _ => None,
        })
    }

    #[test]
    fn work_asks_for_a_slot_once_and_the_slot_starts_the_engine() {
        let now = Instant::now();
        let mut l = Lifecycle::new(policy());
        let asked = l.work_arrived(now, now + Duration::from_secs(10));
        let wait = Duration::from_secs(20);
        assert_eq!(asked, [Action::AskSlot, Action::Arm(Timer::Slot, wait)]);
        assert!(l.work_arrived(now, now).is_empty());
        assert_eq!(l.slot_granted(), [Action::Spawn]);
        let generation = l.generation();
        let timer = Timer::Start { generation };
        assert_eq!(
            l.spawned(now, files(1)),
            [Action::Arm(timer, Duration::from_secs(60))]
        );
        assert!(l.is_starting(generation) && !l.takes_sentences());
        let load = l.ready(now + Duration::from_secs(2));
        assert_eq!(load, Some(Duration::from_secs(2)));
        assert!(l.takes_sentences());
        assert_eq!(l.ready(now), None, "a second ready frame");
    }

    #[test]
    fn a_slot_granted_after_the_wait_was_given_up_goes_back() {
        let now = Instant::now();
        let mut l = Lifecycle::new(policy());
        l.work_arrived(now, now);
        assert!(l.slot_timer_rang());
        assert_eq!(l.slot_no_longer_needed(), [Action::CancelSlotRequest]);
        assert_eq!(l.slot_granted(), [Action::ReleaseSlot]);
        assert_eq!(*l.phase(), Phase::Stopped);
    }

    #[test]
    fn the_backoff_doubles_from_100_ms_to_5_s_and_ready_resets_it() {
        let now = Instant::now();
        let mut l = Lifecycle::new(Policy {
            max_restarts: 100,
            ..policy()
        });
        l.work_arrived(now, now);
        l.slot_granted();
        let mut delays = Vec::new();
        for _ in 0..8 {
            let out = l.spawn_failed("cannot start".into(), now);
            delays.push(restart_delay(&out).unwrap().as_millis());
            assert_eq!(l.restart_due(l.generation()), [Action::Spawn]);
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        l.spawned(now, files(1));
        l.ready(now);
        let out = l.failed(Fault::Crash, "exited".into(), now);
        assert_eq!(restart_delay(&out), Some(FIRST_BACKOFF));
    }

    #[test]
    fn a_crash_kills_the_engine_and_restarts_it_later() {
        let now = Instant::now();
        let mut l = ready(now);
        let old = l.generation();
        let out = l.failed(Fault::Crash, "exited".into(), now);
        let generation = l.generation();
        assert_ne!(generation, old, "what the old process says is ignored");
        assert_eq!(
            out,
            [
                Action::Kill(ExitReason::Crash),
                Action::Restarting,
                Action::Arm(Timer::Restart { generation }, FIRST_BACKOFF)
            ]
        );
        assert!(l.restart_due(old).is_empty(), "a stale timer");
        assert_eq!(l.restart_due(generation), [Action::Spawn]);
    }

    #[test]
    fn more_crashes_than_allowed_in_the_window_fail_the_voice_for_a_cool_down() {
        let now = Instant::now();
        let mut l = ready(now);
        for _ in 0..2 {
            l.failed(Fault::Crash, "exited".into(), now);
            l.restart_due(l.generation());
            l.spawned(now, files(1));
        }
        let out = l.failed(Fault::BadOutput, "garbage".into(), now);
        assert_eq!(
            out[out.len() - 2..],
            [
                Action::GiveUp {
                    cause: "garbage".into()
                },
                Action::ReleaseSlot
            ]
        );
        assert_eq!(l.failed_cause(), Some("garbage"));
        let later = now + Duration::from_secs(29);
        assert_eq!(l.admit(later), Err("garbage".into()));
        let after = now + Duration::from_secs(30);
        assert_eq!(l.admit(after), Ok(vec![Action::Recovered]));
        assert_eq!(*l.phase(), Phase::Stopped);
        // Starting afresh: the old crashes are forgotten.
        l.work_arrived(after, after);
        l.slot_granted();
        l.spawned(after, files(1));
        let out = l.failed(Fault::Crash, "exited".into(), after);
        assert!(restart_delay(&out).is_some());
    }

    #[test]
    fn crashes_older_than_the_window_are_forgotten() {
        let now = Instant::now();
        let mut l = ready(now);
        for minute in 0..5 {
            let at = now + Duration::from_secs(61 * minute);
            let out = l.failed(Fault::Crash, "exited".into(), at);
            assert!(restart_delay(&out).is_some(), "crash {minute}");
            l.restart_due(l.generation());
            l.spawned(at, files(1));
        }
    }

    #[test]
    fn hangs_restart_the_engine_but_never_fail_the_voice() {
        let now = Instant::now();
        let mut l = ready(now);
        for _ in 0..10 {
            let out = l.failed(Fault::Hang, "too slow".into(), now);
            assert_eq!(out[0], Action::Kill(ExitReason::Hang));
            assert!(restart_delay(&out).is_some());
            l.restart_due(l.generation());
            l.spawned(now, files(1));
            l.ready(now);
        }
        assert_eq!(l.failed_cause(), None);
    }

    #[test]
    fn an_engine_that_never_gets_ready_counts_toward_failing_the_voice() {
        let now = Instant::now();
        let mut l = Lifecycle::new(policy());
        l.work_arrived(now, now);
        l.slot_granted();
        let mut last = Vec::new();
        for _ in 0..3 {
            l.spawned(now, files(1));
            assert!(l.is_starting(l.generation()));
            last = l.failed(Fault::StartTimeout, "not ready".into(), now);
            l.restart_due(l.generation());
        }
        assert!(last.contains(&Action::GiveUp {
            cause: "not ready".into()
        }));
    }

    #[test]
    fn changed_voice_files_replace_the_engine_once_it_is_drained() {
        let now = Instant::now();
        let mut l = ready(now);
        assert!(!l.voice_seen(files(1)));
        assert!(l.voice_seen(files(2)));
        assert!(!l.voice_seen(files(2)), "decided once");
        assert!(l.wants_replacing() && !l.takes_sentences());
        let old = l.generation();
        assert_eq!(
            l.replace(),
            [Action::Stop(ExitReason::ConfigChange), Action::Spawn]
        );
        assert!(l.generation() > old);
        l.spawned(now, files(2));
        assert!(!l.wants_replacing());
    }

    #[test]
    fn a_bloated_engine_is_replaced_once() {
        let now = Instant::now();
        let mut l = ready(now);
        assert!(l.too_big());
        assert!(!l.too_big());
        assert_eq!(
            l.replace(),
            [Action::Stop(ExitReason::Memory), Action::Spawn]
        );
        assert!(l.replace().is_empty());
        let mut idle = Lifecycle::new(policy());
        assert!(!idle.too_big(), "no engine, nothing to replace");
    }

    #[test]
    fn only_the_latest_idle_timer_stops_an_idle_engine() {
        let now = Instant::now();
        let mut l = ready(now);
        let Action::Arm(Timer::Idle { epoch: first }, _) = l.arm_idle() else {
            panic!("an idle timer");
        };
        l.work_arrived(now, now);
        assert!(l.idle_due(first, false).is_empty(), "work came since");
        let Action::Arm(Timer::Idle { epoch }, _) = l.arm_idle() else {
            panic!("an idle timer");
        };
        assert!(l.idle_due(epoch, true).is_empty(), "busy");
        assert_eq!(
            l.idle_due(epoch, false),
            [Action::Stop(ExitReason::Idle), Action::ReleaseSlot]
        );
        assert_eq!(*l.phase(), Phase::Stopped);
    }

    #[test]
    fn a_busy_worker_refuses_eviction() {
        let now = Instant::now();
        let mut l = ready(now);
        assert_eq!(l.evict(false), [Action::RefuseEviction]);
        assert_eq!(
            l.evict(true),
            [Action::Stop(ExitReason::Evicted), Action::ReleaseSlot]
        );
        assert_eq!(l.evict(true), [Action::RefuseEviction], "no slot held");
    }
}
