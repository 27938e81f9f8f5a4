//! What one voice's engine does next: a pure planner.
//!
//! The planner holds the voice's jobs with the sentences they still have to
//! say, the sentences in the engine and the turns it holds, and answers each
//! event (a job came, a sentence is done, the engine was lost, a turn came
//! free, ...) with the [`Action`]s that follow from it: sentences to send or
//! take back, audio to deliver, jobs to end, turns to ask for or give back.
//! It does no I/O and reads no clock, so the rules below are unit-tested
//! with plain values; the worker actor carries the actions out.
//!
//! - **Round-robin**: a job whose sentence went to the engine goes to the
//!   back of the line, so a short job is never stuck behind a long one. A
//!   newcomer goes ahead of the jobs already speaking, but behind earlier
//!   newcomers: first come, first served until their first sentence.
//! - **Turns**: a sentence goes to the engine only with a turn, one of
//!   `PIPER_ENGINE_CONCURRENCY` shared by every voice. A sentence holding
//!   every turn runs alone on every core (`threads: None`), which is fastest
//!   for it; sentences holding one turn each run side by side on
//!   `PIPER_ENGINE_THREADS` threads, which makes the most audio per second.
//!   A job's first sentence (its time to first audio) and a sentence with no
//!   other beside which it could run get every turn when all are free, and
//!   wait for the turn their voice asked for when it is on its way.
//! - **Memory**: sentences go side by side only while their characters stay
//!   within `PIPER_ENGINE_CHARS_AT_ONCE`. A sentence that does not fit lets
//!   one later sentence that does go first, so a core does not idle, but its
//!   job is passed over only once.
//! - **Preemption**: a job's first sentence that finds no turn or no room
//!   takes back the sentences of long jobs (audio delivered and at least
//!   [`PREEMPTIBLE_REMAINING`] sentences to go); they are said again later.
//! - **Crash isolation**: the sentences lost with an engine go back to their
//!   jobs as suspects and are said one at a time, so a sentence that kills
//!   the engine is found; lost a second time, it fails its job alone.
//! - **Order and room**: audio goes out in order: the engine's parts of a
//!   job's current sentence at once (its first audio comes mid-sentence),
//!   later sentences' held until it ends; a sentence with audio out is never
//!   taken back, and lost with an engine it fails its job (it cannot be said
//!   again seamlessly); a job gets a sentence only while its client has
//!   room for the audio of all of its sentences in the engine plus its last
//!   event, so a slow client fills no memory and always gets its outcome.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{Sentence, SynthError, SynthSummary};
use crate::config::Config;
use crate::engine::{EngineWord, SynthOptions};
use crate::text::char_count as chars;

/// A job, as numbered by the worker.
pub type JobId = u64;
/// A sentence in the engine: the id its request line carries there. A
/// sentence sent again gets a new one.
pub type SentenceId = u32;

/// A job with at least this many sentences still to send, and audio
/// already delivered, may have its sentences in the engine taken back for a
/// newcomer's first one.
pub const PREEMPTIBLE_REMAINING: usize = 4;
/// Hang deadline per character of speech at the voice's own speed.
pub const DEADLINE_PER_CHAR: Duration = Duration::from_millis(50);
/// Room a job's channel keeps for its last event (`Done` or `Failed`).
const ROOM_FOR_OUTCOME: usize = 1;

/// The settings the planner follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Turns there are over every voice (`PIPER_ENGINE_CONCURRENCY`).
    pub turns: usize,
    /// onnxruntime threads of a sentence beside others (`PIPER_ENGINE_THREADS`).
    pub shared_threads: u32,
    /// Most characters an engine synthesizes at once.
    pub chars_at_once: usize,
    /// Base of every hang deadline (`PIPER_ENGINE_TIMEOUT`).
    pub hang_base: Duration,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            turns: config.engine_concurrency,
            shared_threads: config.engine_threads as u32,
            chars_at_once: config.engine_chars_at_once,
            hang_base: config.engine_timeout,
        }
    }
}

/// What a ready engine can do, from its ready frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineCaps {
    /// Sentences it synthesizes at once.
    pub parallel: usize,
    /// Whether it takes cancel lines.
    pub cancels: bool,
    /// Whether it makes the frontend of a request's `next` sentence ahead,
    /// in the idle tail of its decoder chunks: then a job's sentences go
    /// one after the other, each on every core, rather than side by side.
    pub ahead: bool,
}

/// What the worker is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write the sentence to the engine, on `threads` onnxruntime threads
    /// (`None`: every core), holding `turns` of the turns held; it has hung
    /// if it is not done after `deadline`. `first`: a listener may be
    /// waiting for its start (small first decoder chunks); otherwise audio
    /// of the job plays before it, and large chunks spend less on margins.
    Send {
        id: SentenceId,
        job: JobId,
        text: String,
        options: SynthOptions,
        threads: Option<u32>,
        turns: usize,
        deadline: Duration,
        first: bool,
        /// The job's next sentence, when it is known and takes the same
        /// options: the engine may make its frontend ahead.
        next: Option<String>,
        /// Nothing is known to follow `next`: the engine leaves part of its
        /// decode to that sentence's own request, whose threads have no
        /// other work, rather than decode it whole ahead on one thread.
        next_last: bool,
    },
    /// Ask the engine to drop the sentence: `preempted` for a newcomer's
    /// sake, else because its client left.
    Cancel { id: SentenceId, preempted: bool },
    /// Part of the audio of the job's sentence being said, as the engine
    /// made it (a decoder chunk); more of the same sentence follows.
    DeliverPart { job: JobId, pcm: Bytes },
    /// A sentence's audio (the rest of it, after its parts), in the job's
    /// order; its end.
    Deliver {
        job: JobId,
        span: Range<usize>,
        pcm: Bytes,
        words: Vec<EngineWord>,
    },
    /// The job is complete.
    Finish { job: JobId, summary: SynthSummary },
    /// The job is over with an error.
    Fail { job: JobId, err: SynthError },
    /// The job's client left and nothing of it is in the engine: forget it.
    Abandoned { job: JobId },
    /// Wait in the shared queue for a turn (it comes back as
    /// [`Planner::turn_arrived`]).
    AskTurn,
    /// Give this many of the turns held back to the other voices.
    ReleaseTurns(usize),
    /// Plan again soon: a client without room may have read meanwhile.
    ArmResume,
}

/// The sentence the engine's failure is blamed on, and its job's error.
#[derive(Debug, Clone, PartialEq)]
pub struct Blame {
    pub sentence: SentenceId,
    pub err: SynthError,
}

/// An engine answer that does not fit what was sent to it: the engine broke
/// the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolBreach {
    #[error("audio for unexpected request {0}")]
    Audio(SentenceId),
    #[error("words for unexpected request {0}")]
    Words(SentenceId),
    #[error("end of unexpected request {0}")]
    End(SentenceId),
    #[error("cancel of unexpected request {0}")]
    Cancel(SentenceId),
    #[error("request {0} cancelled unasked")]
    UnaskedCancel(SentenceId),
}

/// How much later than [`Limits::hang_base`] a sentence may end, for itself
/// and for each sentence sent after it while it is in the engine: 50 ms a
/// character, stretched by a length scale that slows speech down, plus the
/// silence asked for after it. A slow but valid request is not a hang.
pub fn hang_allowance(chars: usize, options: &SynthOptions) -> Duration {
    // `max` also turns a NaN into 1.
    let slower = f64::from(options.length_scale.unwrap_or(1.0).max(1.0));
    let silence = f64::from(options.sentence_silence.unwrap_or(0.0));
    DEADLINE_PER_CHAR.mul_f64(chars as f64 * slower)
        + Duration::try_from_secs_f64(silence).unwrap_or_default()
}

/// A sentence waiting for the engine.
#[derive(Debug)]
struct Waiting {
    /// Its place in its job.
    seq: u32,
    text: String,
    span: Range<usize>,
    /// Its own `length_scale`, over the job's.
    length_scale: Option<f32>,
    /// It was in an engine that was lost: a suspect.
    lost_once: bool,
}

/// A sentence in the engine.
#[derive(Debug)]
struct Running {
    id: SentenceId,
    job: JobId,
    seq: u32,
    text: String,
    span: Range<usize>,
    length_scale: Option<f32>,
    lost_once: bool,
    /// Its audio not delivered yet.
    pcm: Vec<Bytes>,
    /// When its words are spoken, if the engine said.
    words: Vec<EngineWord>,
    /// Part of its audio went to the client: it can no longer be said again,
    /// so it is not taken back for a newcomer, and a crash fails its job.
    streamed: bool,
    /// Turns it holds; none once it is taken back (then it ends with a
    /// cancelled frame or, if the engine was already done, as usual).
    turns: usize,
    /// Sent without a turn: a newcomer's first sentence beside sentences
    /// that hold every turn and cannot be taken back (see
    /// [`Planner::may_borrow`]).
    borrowed: bool,
    /// Its share of the hang deadlines of itself and the sentences after it.
    allowance: Duration,
}

impl Running {
    fn cancelling(&self) -> bool {
        self.turns == 0 && !self.borrowed
    }

    /// Marks it taken back; the turns it held, to give back.
    fn take_back(&mut self) -> usize {
        self.borrowed = false;
        std::mem::take(&mut self.turns)
    }

    fn back_to_waiting(self, lost_once: bool) -> Waiting {
        Waiting {
            seq: self.seq,
            text: self.text,
            span: self.span,
            length_scale: self.length_scale,
            lost_once,
        }
    }
}

#[derive(Debug)]
struct Job {
    id: JobId,
    waiting: VecDeque<Waiting>,
    /// Its client may still send sentences.
    input_open: bool,
    /// The place of its next sentence to arrive.
    next_seq: u32,
    options: SynthOptions,
    /// A sentence of it went to the engine.
    started: bool,
    /// Its next sentence did not fit beside those in the engine, and a later
    /// job's went instead; it is not passed over twice.
    passed_over: bool,
    /// Audio of it was delivered.
    spoke: bool,
    samples: u64,
    skipped: usize,
    /// The next sentence to deliver; those finished before it wait in `held`.
    next_to_deliver: u32,
    /// Their span, audio, words, and whether part of their audio went out
    /// already.
    held: BTreeMap<u32, (Range<usize>, Bytes, Vec<EngineWord>, bool)>,
    /// Events its client's channel can take now.
    room: usize,
    /// Its client left.
    gone: bool,
    /// Its client takes a complete answer: the engine's parts of a sentence
    /// are held until the sentence ends, so that a sentence lost with an
    /// engine can still be said again (it has not been heard).
    hold_parts: bool,
}

impl Job {
    /// Puts a sentence back in its place.
    fn requeue(&mut self, sentence: Waiting) {
        let at = self
            .waiting
            .iter()
            .take_while(|w| w.seq < sentence.seq)
            .count();
        self.waiting.insert(at, sentence);
    }
}

/// The scheduling state of one voice.
#[derive(Debug)]
pub struct Planner {
    limits: Limits,
    /// Jobs in round-robin order (the front is served next).
    jobs: VecDeque<Job>,
    /// Sentences in the engine, in the order they were sent.
    running: Vec<Running>,
    /// The engine, while it takes sentences.
    engine: Option<EngineCaps>,
    /// Turns held and not given to a sentence: granted, or taken back, and
    /// given back before [`Planner::plan`] returns.
    spare: usize,
    /// Waiting in the shared queue for a turn.
    asking: bool,
    resume_armed: bool,
    next_id: SentenceId,
    /// Frames of audio and ends of sentences the engine has sent: a hang
    /// deadline that passes while this moved is re-armed, not a hang (a
    /// long sentence on a busy machine is slow, not stuck).
    progress: u64,
}

impl Planner {
    pub fn new(limits: Limits) -> Planner {
        Planner {
            limits,
            jobs: VecDeque::new(),
            running: Vec::new(),
            engine: None,
            spare: 0,
            asking: false,
            resume_armed: false,
            next_id: 1,
            progress: 0,
        }
    }

    /// The job's client takes a complete answer: its sentences' audio goes
    /// out whole, so a crash never fails it for audio already heard.
    pub fn hold_parts(&mut self, id: JobId) {
        if let Some(job) = self.job_mut(id) {
            job.hold_parts = true;
        }
    }

    /// How much the engine has sent so far (see [`Planner::is_in_engine`]):
    /// changes with every frame of audio and every end of a sentence.
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// Jobs held.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Sentences in the engine, taken back or not.
    pub fn in_engine(&self) -> usize {
        self.running.len()
    }

    pub fn is_in_engine(&self, id: SentenceId) -> bool {
        self.running.iter().any(|r| r.id == id)
    }

    /// The job and characters of a sentence in the engine, for the log.
    pub fn sentence(&self, id: SentenceId) -> Option<(JobId, usize)> {
        let r = self.running.iter().find(|r| r.id == id)?;
        Some((r.job, chars(&r.text)))
    }

    /// The sentence the engine was most surely working on.
    pub fn oldest_in_engine(&self) -> Option<SentenceId> {
        self.running.first().map(|r| r.id)
    }

    /// Every turn held, by sentences in the engine or spare.
    pub fn turns_held(&self) -> usize {
        self.spare + self.running.iter().map(|r| r.turns).sum::<usize>()
    }

    /// Whether the engine takes sentences.
    pub fn accepting(&self) -> bool {
        self.engine.is_some()
    }

    /// A new job. Its sentences are planned at the next [`Planner::plan`].
    pub fn add_job(
        &mut self,
        id: JobId,
        sentences: Vec<Sentence>,
        options: SynthOptions,
        input_open: bool,
    ) {
        let next_seq = sentences.len() as u32;
        let waiting = sentences
            .into_iter()
            .enumerate()
            .map(|(seq, s)| Waiting {
                seq: seq as u32,
                text: s.line,
                span: s.span,
                length_scale: s.length_scale,
                lost_once: false,
            })
            .collect();
        let job = Job {
            id,
            waiting,
            input_open,
            next_seq,
            options,
            started: false,
            passed_over: false,
            spoke: false,
            samples: 0,
            skipped: 0,
            next_to_deliver: 0,
            held: BTreeMap::new(),
            room: 0,
            gone: false,
            hold_parts: false,
        };
        let at = self.jobs.iter().take_while(|j| !j.started).count();
        self.jobs.insert(at, job);
    }

    /// A sentence of a job whose text is still arriving; false if the job
    /// is over already.
    pub fn more_text(&mut self, job: JobId, sentence: Sentence) -> bool {
        let Some(job) = self.job_mut(job) else {
            return false;
        };
        job.waiting.push_back(Waiting {
            seq: job.next_seq,
            text: sentence.line,
            span: sentence.span,
            length_scale: sentence.length_scale,
            lost_once: false,
        });
        job.next_seq += 1;
        true
    }

    /// A job's input ended: it is done once its last sentence is.
    pub fn input_ended(&mut self, job: JobId) -> Vec<Action> {
        let Some(pos) = self.position(job) else {
            return Vec::new();
        };
        self.jobs[pos].input_open = false;
        self.end_if_complete(pos).into_iter().collect()
    }

    /// Events the job's client can take now.
    pub fn set_room(&mut self, job: JobId, room: usize) {
        if let Some(job) = self.job_mut(job) {
            job.room = room;
        }
    }

    /// The job's client left: its sentences are dropped.
    pub fn client_left(&mut self, job: JobId) {
        if let Some(job) = self.job_mut(job) {
            job.gone = true;
        }
    }

    /// The engine is ready for sentences.
    pub fn engine_ready(&mut self, caps: EngineCaps) {
        self.engine = Some(caps);
    }

    /// The engine takes no new sentences (it is to be replaced, or stops);
    /// those in it still end as usual.
    pub fn engine_paused(&mut self) {
        self.engine = None;
    }

    /// The engine died, hung or broke the protocol: the blamed sentence
    /// fails its job, sentences lost a second time fail theirs, and the
    /// others go back to their jobs as suspects.
    pub fn engine_lost(&mut self, blame: Option<Blame>, cause: &str) -> Vec<Action> {
        self.engine = None;
        let mut out = Vec::new();
        let lost = std::mem::take(&mut self.running);
        let freed: usize = lost.iter().map(|r| r.turns).sum();
        if freed > 0 {
            out.push(Action::ReleaseTurns(freed));
        }
        let mut failed = Vec::new();
        for sentence in lost {
            let err = match &blame {
                Some(b) if b.sentence == sentence.id => Some(b.err.clone()),
                _ if sentence.lost_once || sentence.streamed => {
                    Some(SynthError::EngineCrashed(cause.to_string()))
                }
                _ => None,
            };
            let job = sentence.job;
            match err {
                Some(err) => failed.push((job, err)),
                // Nothing of it reached the client: say it again.
                None => {
                    if let Some(job) = self.job_mut(job) {
                        job.requeue(sentence.back_to_waiting(true));
                    }
                }
            }
        }
        for (job, err) in failed {
            out.extend(self.fail_job(job, err));
        }
        out
    }

    /// Audio of a sentence in the engine (it is delivered once complete).
    ///
    /// The audio of a job's next sentence to deliver goes out at once, as a
    /// part, while its client has room beyond what the job's sentences in
    /// the engine and its last event are owed; otherwise it is held, and
    /// goes out with a later part or the sentence's end.
    pub fn audio(&mut self, id: SentenceId, pcm: Bytes) -> Result<Vec<Action>, ProtocolBreach> {
        let index = self.running_index(id).ok_or(ProtocolBreach::Audio(id))?;
        self.progress += 1;
        self.running[index].pcm.push(pcm);
        let r = &self.running[index];
        let (job_id, seq) = (r.job, r.seq);
        if r.cancelling() {
            return Ok(Vec::new());
        }
        let owed = self.running.iter().filter(|r| r.job == job_id).count();
        let Some(job) = self.job_mut(job_id) else {
            return Ok(Vec::new());
        };
        if job.gone
            || job.hold_parts
            || job.next_to_deliver != seq
            || job.room <= owed + ROOM_FOR_OUTCOME
        {
            return Ok(Vec::new());
        }
        job.room -= 1;
        let r = &mut self.running[index];
        let pcm = concat(std::mem::take(&mut r.pcm));
        r.streamed = true;
        let job = self.job_mut(job_id).expect("found above");
        job.spoke = true;
        job.samples += pcm.len() as u64 / 2;
        Ok(vec![Action::DeliverPart { job: job_id, pcm }])
    }

    /// When the words of a sentence in the engine are spoken.
    pub fn words(&mut self, id: SentenceId, words: Vec<EngineWord>) -> Result<(), ProtocolBreach> {
        let running = self.running.iter_mut().find(|r| r.id == id);
        running.ok_or(ProtocolBreach::Words(id))?.words = words;
        Ok(())
    }

    /// A sentence is complete (`skipped`: the engine found nothing to say in
    /// it): its audio goes out, with that of the job's later sentences that
    /// finished before it.
    pub fn sentence_done(
        &mut self,
        id: SentenceId,
        skipped: bool,
    ) -> Result<Vec<Action>, ProtocolBreach> {
        let index = self.running_index(id).ok_or(ProtocolBreach::End(id))?;
        self.progress += 1;
        let done = self.running.remove(index);
        let mut out = Vec::new();
        if done.turns > 0 {
            out.push(Action::ReleaseTurns(done.turns));
        }
        let Some(pos) = self.position(done.job) else {
            return Ok(out);
        };
        let job = &mut self.jobs[pos];
        job.skipped += usize::from(skipped);
        job.held.insert(
            done.seq,
            (done.span, concat(done.pcm), done.words, done.streamed),
        );
        while let Some((span, pcm, words, streamed)) = job.held.remove(&job.next_to_deliver) {
            job.next_to_deliver += 1;
            // Nothing said (an unspeakable sentence); one that streamed
            // parts still needs its end.
            if pcm.is_empty() && !streamed {
                continue;
            }
            job.spoke = true;
            job.samples += pcm.len() as u64 / 2;
            job.room = job.room.saturating_sub(1);
            out.push(Action::Deliver {
                job: job.id,
                span,
                pcm,
                words,
            });
        }
        out.extend(self.end_if_complete(pos));
        Ok(out)
    }

    /// The engine dropped a sentence it was asked to give back: it goes back
    /// to its job, to be said later (unless the client left). A cancel that
    /// was not asked for is a broken engine: the sentence stays in the
    /// engine until [`Planner::engine_lost`] settles it with the others, so
    /// that its job is failed or said again, never left waiting.
    pub fn sentence_cancelled(&mut self, id: SentenceId) -> Result<Vec<Action>, ProtocolBreach> {
        let index = self.running_index(id).ok_or(ProtocolBreach::Cancel(id))?;
        if !self.running[index].cancelling() {
            return Err(ProtocolBreach::UnaskedCancel(id));
        }
        let back = self.running.remove(index);
        if let Some(job) = self.job_mut(back.job).filter(|j| !j.gone) {
            let lost_once = back.lost_once;
            job.requeue(back.back_to_waiting(lost_once));
        }
        Ok(Vec::new())
    }

    /// Ends a job with an error. Its sentences in the engine, if any, still
    /// end there; their audio goes nowhere.
    pub fn fail_job(&mut self, job: JobId, err: SynthError) -> Vec<Action> {
        match self.position(job) {
            Some(pos) => {
                self.jobs.remove(pos);
                vec![Action::Fail { job, err }]
            }
            None => Vec::new(),
        }
    }

    /// Ends every job with an error.
    pub fn fail_all(&mut self, err: SynthError) -> Vec<Action> {
        self.jobs
            .drain(..)
            .map(|j| Action::Fail {
                job: j.id,
                err: err.clone(),
            })
            .collect()
    }

    /// Free turns the worker took from the shared queue.
    pub fn turns_granted(&mut self, turns: usize) {
        self.spare += turns;
    }

    /// The turn asked for with [`Action::AskTurn`].
    pub fn turn_arrived(&mut self) {
        self.asking = false;
        self.spare += 1;
    }

    /// The timer of [`Action::ArmResume`] rang.
    pub fn resumed(&mut self) {
        self.resume_armed = false;
    }

    /// What runs next: drops what clients left, then sends at most one
    /// sentence. The worker calls it again, with the free turns it took,
    /// until no sentence is sent; spare turns are given back every time.
    pub fn plan(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.drop_abandoned(&mut out);
        if let Some(engine) = self.engine {
            let sent = self.send_next(engine, &mut out);
            if !sent && !self.resume_armed && self.jobs.iter().any(|j| self.paused(j)) {
                self.resume_armed = true;
                out.push(Action::ArmResume);
            }
        }
        if self.spare > 0 {
            out.push(Action::ReleaseTurns(self.spare));
            self.spare = 0;
        }
        out
    }

    /// Jobs whose client left lose their sentences at once, and their
    /// sentences in the engine are taken back.
    fn drop_abandoned(&mut self, out: &mut Vec<Action>) {
        let running = &self.running;
        self.jobs.retain(|j| {
            let drop = j.gone && !running.iter().any(|r| r.job == j.id);
            if drop {
                out.push(Action::Abandoned { job: j.id });
            }
            !drop
        });
        for job in self.jobs.iter_mut().filter(|j| j.gone) {
            job.waiting.clear();
        }
        if !self.engine.is_some_and(|e| e.cancels) {
            return;
        }
        let mut freed = 0;
        for r in self.running.iter_mut().filter(|r| !r.cancelling()) {
            if self.jobs.iter().any(|j| j.id == r.job && j.gone) {
                out.push(Action::Cancel {
                    id: r.id,
                    preempted: false,
                });
                freed += r.take_back();
            }
        }
        if freed > 0 {
            out.push(Action::ReleaseTurns(freed));
        }
    }

    /// Sends the next sentence in turn, if any may go now.
    fn send_next(&mut self, engine: EngineCaps, out: &mut Vec<Action>) -> bool {
        // After a crash the lost sentences go one at a time, so the one that
        // kills the engine is found and fails alone.
        let suspect = self.running.iter().any(|r| r.lost_once)
            || self
                .jobs
                .iter()
                .any(|j| j.waiting.front().is_some_and(|w| w.lost_once));
        let (running, _) = self.load();
        if running >= engine.parallel || (suspect && !self.running.is_empty()) {
            return false;
        }
        let Some(mut pos) = self.jobs.iter().position(|j| self.ready(j)) else {
            return false;
        };
        let front = |j: &Job| chars(&j.waiting[0].text);
        if !self.fits(front(&self.jobs[pos])) && self.jobs[pos].started {
            if self.jobs[pos].passed_over {
                return false;
            }
            let later = self
                .jobs
                .iter()
                .skip(pos + 1)
                .position(|j| self.ready(j) && j.started && self.fits(front(j)));
            let Some(later) = later else {
                return false;
            };
            self.jobs[pos].passed_over = true;
            pos += 1 + later;
        }
        let urgent = !self.jobs[pos].started;
        let next = front(&self.jobs[pos]);
        let fits = self.fits(next);
        // Alone: no other sentence waits that could run beside it. With an
        // engine that makes the next sentence's frontend ahead, a job's own
        // sentences are no partners: they go one after the other, each on
        // every core, while no other job waits, and the engine makes the
        // next one's frontend beside this one's decoder chunks. Two
        // of them side by side end apart, and a core idles until the longer
        // ends (measured at concurrency 1: 23.8 audio s per s one after the
        // other against 21.8 side by side, 7% idle against 14%).
        let own = usize::from(!engine.ahead);
        let partner = self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| self.has_room(j))
            .flat_map(|(i, j)| {
                j.waiting
                    .iter()
                    .skip(usize::from(i == pos))
                    .take(if i == pos { own } else { 1 })
            })
            .map(|w| chars(&w.text))
            .min();
        let alone = partner.is_none_or(|other| next + other > self.limits.chars_at_once);
        let Some((turns, threads)) = self.take_turns(engine, urgent, alone, next, out) else {
            // Without room in the engine, the end of a sentence in it comes
            // first; without a turn, wait for one.
            if fits && !self.asking {
                self.asking = true;
                out.push(Action::AskTurn);
            }
            return false;
        };
        let mut job = self.jobs.remove(pos).expect("position is valid");
        let sentence = job.waiting.pop_front().expect("has a sentence");
        job.started = true;
        job.passed_over = false;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        // Its deadline counts the sentences ahead of it in the engine.
        let options = match sentence.length_scale {
            Some(scale) => SynthOptions {
                length_scale: Some(scale),
                ..job.options.clone()
            },
            None => job.options.clone(),
        };
        let allowance = hang_allowance(chars(&sentence.text), &options);
        let ahead: Duration = self.running.iter().map(|r| r.allowance).sum();
        // Waited on: nothing of the job is before it, and the job has not
        // been heard yet, or takes its text over time (and may have run
        // dry). A complete answer is heard whole: only its end is waited on.
        let before = job.held.len() + self.running.iter().filter(|r| r.job == job.id).count();
        let first = !job.hold_parts && before == 0 && (!job.spoke || job.input_open);
        let mut send = Action::Send {
            id,
            job: job.id,
            text: sentence.text.clone(),
            options,
            threads,
            turns,
            deadline: self.limits.hang_base + ahead + allowance,
            first,
            next: None,
            next_last: false,
        };
        self.running.push(Running {
            id,
            job: job.id,
            seq: sentence.seq,
            text: sentence.text,
            span: sentence.span,
            length_scale: sentence.length_scale,
            lost_once: sentence.lost_once,
            pcm: Vec::new(),
            words: Vec::new(),
            streamed: false,
            turns,
            borrowed: turns == 0,
            allowance,
        });
        // Round-robin: the job goes to the back of the line.
        self.jobs.push_back(job);
        if let Action::Send {
            next,
            next_last,
            options,
            text,
            ..
        } = &mut send
        {
            if engine.ahead {
                if let Some((found, last)) = self.next_in_line(options, chars(text)) {
                    *next = Some(found);
                    *next_last = last;
                }
            }
        }
        out.push(send);
        true
    }

    /// The sentence most likely sent after one of `chars_now` characters
    /// with these `options`: the first in line (the job just served went to
    /// the back, so with no other job it is that job's next sentence), when
    /// it takes the same options, since the engine makes its frontend ahead
    /// with them, and when the two fit in `chars_at_once` as sentences side
    /// by side do: its frontend's memory then comes beside this one's
    /// decoder chunks (a 1,254-character sentence cut in two made the
    /// engine peak at 413 MiB with the second half's frontend made ahead).
    /// With it, whether nothing is known to follow it: no other sentence
    /// waits, and its job's client sends no more.
    fn next_in_line(&self, options: &SynthOptions, chars_now: usize) -> Option<(String, bool)> {
        let job = self.jobs.iter().find(|j| self.ready(j))?;
        let next = job.waiting.front()?;
        if chars_now + chars(&next.text) > self.limits.chars_at_once {
            return None;
        }
        let its_options = match next.length_scale {
            Some(scale) => SynthOptions {
                length_scale: Some(scale),
                ..job.options.clone()
            },
            None => job.options.clone(),
        };
        if its_options != *options {
            return None;
        }
        let last = job.waiting.len() == 1
            && !job.input_open
            && !self
                .jobs
                .iter()
                .any(|j| j.id != job.id && !j.waiting.is_empty());
        Some((next.text.clone(), last))
    }

    /// Turns for the next sentence, and the onnxruntime threads it runs on.
    /// A job's first sentence (`urgent`) or one with no partner to run
    /// beside (`alone`) gets every turn when they are all free, or when an
    /// urgent one can make them free by taking back those of long jobs'
    /// sentences; otherwise one turn, to share the cores, and the others go
    /// back.
    fn take_turns(
        &mut self,
        engine: EngineCaps,
        urgent: bool,
        alone: bool,
        next: usize,
        out: &mut Vec<Action>,
    ) -> Option<(usize, Option<u32>)> {
        let all = self.limits.turns;
        if urgent && (self.spare < all || !self.fits(next)) {
            // Take back every long sentence if that frees every turn, else
            // the one that makes a turn and room for this sentence, if any.
            let long = self.long_sentences(engine);
            let gain: usize = long.iter().map(|&i| self.running[i].turns).sum();
            let victims: Vec<usize> = if self.spare + gain >= all {
                long
            } else if self.spare == 0 || !self.fits(next) {
                let (running, load) = self.load();
                let room = |i: &usize| {
                    running == 1
                        || load - chars(&self.running[*i].text) + next <= self.limits.chars_at_once
                };
                long.into_iter().find(room).into_iter().collect()
            } else {
                Vec::new()
            };
            for i in victims {
                let r = &mut self.running[i];
                out.push(Action::Cancel {
                    id: r.id,
                    preempted: true,
                });
                self.spare += r.take_back();
            }
        }
        if self.spare == 0 && urgent && self.fits(next) && self.may_borrow(engine) {
            return Some((0, Some(self.limits.shared_threads)));
        }
        if !self.fits(next) || self.spare == 0 {
            return None;
        }
        let (running, _) = self.load();
        if alone && running == 0 && self.spare < all && self.asking {
            // Nothing could run beside it, and the turns this voice just
            // gave back went to its own ask first (the shared queue serves
            // those in line before anyone takes a free turn), so that turn is
            // on its way: wait for it, and the sentence gets every core
            // instead of one beside an idle core (found with Wyoming: a
            // request's last sentence ran alone on one thread, 230 ms where
            // every core takes 150). With a partner waiting, it goes at once
            // on one turn, and the partner takes the asked one.
            return None;
        }
        if (urgent || alone) && running == 0 && self.spare == all {
            self.spare = 0;
            return Some((all, None));
        }
        if self.spare > 1 {
            out.push(Action::ReleaseTurns(self.spare - 1));
        }
        self.spare = 0;
        // One turn is every turn (PIPER_ENGINE_CONCURRENCY=1): nothing runs
        // beside it, so it gets every core, not the shared threads (measured
        // at concurrency 16: 22.0 audio s per s against 21.3, and 23.4 with
        // the next in line named to the engine; two 20 s runs each).
        let threads = (all > 1).then_some(self.limits.shared_threads);
        Some((1, threads))
    }

    /// Whether a newcomer's first sentence may run without a turn: every
    /// turn is held by this engine's sentences, none of which can be taken
    /// back (part of their audio went out), none runs on a borrowed turn
    /// already, and the engine has room. Waiting would hold the newcomer's
    /// first audio for the rest of a streamed sentence (up to seconds: found
    /// with a Wyoming command sent just after a long announcement started,
    /// 241 ms against 73 ms a moment later); beside it, on the shared threads,
    /// the cores are over-committed by one run until that sentence ends,
    /// which only slows audio that is already ahead of its playback.
    fn may_borrow(&self, engine: EngineCaps) -> bool {
        let (running, _) = self.load();
        let held: usize = self.running.iter().map(|r| r.turns).sum();
        running > 0
            && running < engine.parallel
            && held == self.limits.turns
            && self
                .running
                .iter()
                .filter(|r| !r.cancelling())
                .all(|r| r.streamed && !r.borrowed)
    }

    /// Indexes in `running` of the sentences, not already taken back, of
    /// long jobs already speaking, latest sent first (the least work lost).
    fn long_sentences(&self, engine: EngineCaps) -> Vec<usize> {
        if !engine.cancels {
            return Vec::new();
        }
        let long = |job: JobId| {
            self.jobs
                .iter()
                .any(|j| j.id == job && j.spoke && j.waiting.len() >= PREEMPTIBLE_REMAINING)
        };
        (0..self.running.len())
            .rev()
            .filter(|&i| {
                let r = &self.running[i];
                !r.cancelling() && !r.streamed && long(r.job)
            })
            .collect()
    }

    /// Whether a sentence of `next` characters fits beside those the engine
    /// synthesizes now (one alone always does).
    fn fits(&self, next: usize) -> bool {
        let (running, load) = self.load();
        running == 0 || load + next <= self.limits.chars_at_once
    }

    /// How many sentences the engine synthesizes now (not taken back), and
    /// their characters.
    fn load(&self) -> (usize, usize) {
        self.running
            .iter()
            .filter(|r| !r.cancelling())
            .fold((0, 0), |(n, c), r| (n + 1, c + chars(&r.text)))
    }

    /// Whether the job's client can take the audio of one more sentence,
    /// beside that of its sentences in the engine or held, and still its
    /// last event.
    fn has_room(&self, job: &Job) -> bool {
        let owed = self.running.iter().filter(|r| r.job == job.id).count() + job.held.len();
        job.room > owed + ROOM_FOR_OUTCOME
    }

    /// A sentence of the job may go now.
    fn ready(&self, job: &Job) -> bool {
        !job.waiting.is_empty() && self.has_room(job)
    }

    /// The job waits for its client to read.
    fn paused(&self, job: &Job) -> bool {
        !job.waiting.is_empty() && !self.has_room(job)
    }

    /// Ends the job at `pos` if nothing of it is left to say.
    fn end_if_complete(&mut self, pos: usize) -> Option<Action> {
        let job = &self.jobs[pos];
        let in_engine = self.running.iter().any(|r| r.job == job.id);
        if !job.waiting.is_empty() || job.input_open || in_engine {
            return None;
        }
        let job = self.jobs.remove(pos).expect("position is valid");
        Some(if job.samples == 0 {
            Action::Fail {
                job: job.id,
                err: SynthError::NoSpeakableText,
            }
        } else {
            Action::Finish {
                job: job.id,
                summary: SynthSummary {
                    samples: job.samples,
                    skipped_sentences: job.skipped,
                },
            }
        })
    }

    fn position(&self, job: JobId) -> Option<usize> {
        self.jobs.iter().position(|j| j.id == job)
    }

    fn job_mut(&mut self, job: JobId) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == job)
    }

    fn running_index(&self, id: SentenceId) -> Option<usize> {
        self.running.iter().position(|r| r.id == id)
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

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_S: Duration = Duration::from_secs(10);
    /// An engine like the real one: a sentence more than the turns, cancels.
    const CAPS: EngineCaps = EngineCaps {
        parallel: 3,
        cancels: true,
        ahead: false,
    };

    fn limits(turns: usize) -> Limits {
        Limits {
            turns,
            shared_threads: 1,
            chars_at_once: 200,
            hang_base: TEN_S,
        }
    }

    fn sentences(texts: &[&str]) -> Vec<Sentence> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| Sentence {
                line: t.to_string(),
                span: i * 100..i * 100 + t.len(),
                length_scale: None,
            })
            .collect()
    }

    fn chars_long(n: usize) -> String {
        "a".repeat(n)
    }

    /// Gives released turns back to the shared `free` ones and returns the
    /// other actions.
    fn settle(actions: Vec<Action>, free: &mut usize) -> Vec<Action> {
        actions
            .into_iter()
            .filter(|a| match a {
                Action::ReleaseTurns(n) => {
                    *free += n;
                    false
                }
                _ => true,
            })
            .collect()
    }

    /// The worker's loop in miniature: every free turn goes to the planner
    /// before each plan, until no sentence is sent.
    fn pump(p: &mut Planner, free: &mut usize) -> Vec<Action> {
        let mut all = Vec::new();
        loop {
            p.turns_granted(std::mem::take(free));
            let actions = p.plan();
            let sent = actions.iter().any(|a| matches!(a, Action::Send { .. }));
            all.extend(settle(actions, free));
            if !sent {
                assert_eq!(p.spare, 0, "no turn is kept spare between plans");
                return all;
            }
        }
    }

    /// One planner with a ready engine and every turn free.
    struct Bench {
        p: Planner,
        free: usize,
    }

    impl Bench {
        fn new(turns: usize) -> Bench {
            Bench::with(limits(turns), CAPS)
        }

        fn with(limits: Limits, caps: EngineCaps) -> Bench {
            let free = limits.turns;
            let mut p = Planner::new(limits);
            p.engine_ready(caps);
            Bench { p, free }
        }

        fn job(&mut self, id: JobId, texts: &[&str]) {
            self.p
                .add_job(id, sentences(texts), SynthOptions::default(), false);
            self.p.set_room(id, 16);
        }

        /// Plans, after handing over the turn asked for if one is free
        /// (the shared queue serves those in line first).
        fn pump(&mut self) -> Vec<Action> {
            if self.p.asking && self.free > 0 {
                self.free -= 1;
                self.p.turn_arrived();
            }
            let actions = pump(&mut self.p, &mut self.free);
            assert_eq!(self.p.turns_held() + self.free, self.p.limits.turns);
            actions
        }

        /// Plans as the worker does when the shared queue handed one of the
        /// free turns to this voice's ask: first without it (its message is
        /// on its way), then again once it has arrived.
        fn pump_before_the_asked_turn(&mut self) -> [Vec<Action>; 2] {
            assert!(self.p.asking && self.free > 0);
            self.free -= 1;
            let before = pump(&mut self.p, &mut self.free);
            // No turn is held while waiting: each is a running sentence's,
            // free, or the one on its way.
            assert_eq!(
                self.p.turns_held() + self.free + 1,
                self.p.limits.turns,
                "the free turn is not held while waiting"
            );
            self.p.turn_arrived();
            [before, pump(&mut self.p, &mut self.free)]
        }

        /// The engine says the sentence (two samples of audio).
        fn done(&mut self, id: SentenceId) -> Vec<Action> {
            let mut actions = self.p.audio(id, Bytes::from_static(&[1, 0, 2, 0])).unwrap();
            actions.extend(self.p.sentence_done(id, false).unwrap());
            settle(actions, &mut self.free)
        }

        fn lost(&mut self, blame: Option<Blame>, cause: &str) -> Vec<Action> {
            let actions = self.p.engine_lost(blame, cause);
            settle(actions, &mut self.free)
        }

        /// Sends the job's sentences one at a time until it is done.
        fn say_first(&mut self, text: &str) {
            let sent = self.pump();
            let id = id_of(&sent, text);
            self.done(id);
        }
    }

    /// (job, text, threads, turns) of each sentence sent.
    fn sends(actions: &[Action]) -> Vec<(JobId, String, Option<u32>, usize)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send {
                    job,
                    text,
                    threads,
                    turns,
                    ..
                } => Some((*job, text.clone(), *threads, *turns)),
                _ => None,
            })
            .collect()
    }

    fn texts(actions: &[Action]) -> Vec<String> {
        sends(actions).into_iter().map(|s| s.1).collect()
    }

    fn id_of(actions: &[Action], wanted: &str) -> SentenceId {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Send { id, text, .. } if text == wanted => Some(*id),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{wanted:?} was not sent: {actions:?}"))
    }

    fn cancels(actions: &[Action]) -> Vec<(SentenceId, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Cancel { id, preempted } => Some((*id, *preempted)),
                _ => None,
            })
            .collect()
    }

    // Turns and cores.

    #[test]
    fn a_first_sentence_alone_gets_every_turn_and_every_core() {
        let mut b = Bench::new(2);
        b.job(1, &["Hello there."]);
        let sent = b.pump();
        assert_eq!(sends(&sent), [(1, "Hello there.".into(), None, 2)]);
        assert_eq!(b.free, 0);
    }

    #[test]
    fn sentences_side_by_side_hold_one_turn_and_a_share_of_the_cores_each() {
        let mut b = Bench::new(2);
        b.job(1, &["one", "two", "three"]);
        b.say_first("one");
        let sent = b.pump();
        assert_eq!(
            sends(&sent),
            [
                (1, "two".into(), Some(1), 1),
                (1, "three".into(), Some(1), 1)
            ]
        );
    }

    #[test]
    fn the_only_sentence_waiting_gets_every_core() {
        let mut b = Bench::new(2);
        b.job(1, &["one", "two"]);
        b.say_first("one");
        assert_eq!(sends(&b.pump()), [(1, "two".into(), None, 2)]);
    }

    /// An engine that makes a request's `next` frontend ahead.
    const AHEAD: EngineCaps = EngineCaps {
        parallel: 3,
        cancels: true,
        ahead: true,
    };

    /// `next_last` of each sentence sent.
    fn next_lasts(actions: &[Action]) -> Vec<bool> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { next_last, .. } => Some(*next_last),
                _ => None,
            })
            .collect()
    }

    /// (text, next) of each sentence sent.
    fn nexts(actions: &[Action]) -> Vec<(String, Option<String>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { text, next, .. } => Some((text.clone(), next.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn with_frontends_made_ahead_a_jobs_sentences_go_one_after_the_other_on_every_core() {
        let mut b = Bench::with(limits(2), AHEAD);
        b.job(1, &["one", "two", "three"]);
        let mut said = Vec::new();
        for _ in 0..3 {
            let sent = b.pump();
            assert_eq!(sends(&sent).len(), 1, "one at a time: {sent:?}");
            let (job, text, threads, turns) = sends(&sent).remove(0);
            assert_eq!((job, threads, turns), (1, None, 2), "every core for {text}");
            said.extend(nexts(&sent));
            b.done(id_of(&sent, &text));
        }
        assert_eq!(
            said,
            [
                ("one".into(), Some("two".into())),
                ("two".into(), Some("three".into())),
                ("three".into(), None)
            ],
            "each names the job's next sentence"
        );
    }

    #[test]
    fn with_frontends_made_ahead_sentences_of_two_jobs_still_go_side_by_side() {
        let mut b = Bench::with(limits(2), AHEAD);
        b.job(1, &["a0", "a1", "a2"]);
        b.say_first("a0");
        b.job(2, &["b0", "b1"]);
        b.say_first("b0");
        let sent = b.pump();
        assert_eq!(
            sends(&sent),
            [(1, "a1".into(), Some(1), 1), (2, "b1".into(), Some(1), 1)]
        );
    }

    #[test]
    fn the_next_sentence_named_is_the_next_in_line_when_it_takes_the_same_options() {
        let mut b = Bench::with(limits(1), AHEAD);
        b.job(1, &["a0", "a1"]);
        b.job(2, &["b0"]);
        let (mut said, mut lasts) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let sent = b.pump();
            said.extend(nexts(&sent));
            lasts.extend(next_lasts(&sent));
            let id = b.p.oldest_in_engine().expect("in the engine");
            b.done(id);
        }
        let said: Vec<(&str, Option<&str>)> = said
            .iter()
            .map(|(t, n)| (t.as_str(), n.as_deref()))
            .collect();
        assert_eq!(
            said,
            [("a0", Some("b0")), ("b0", Some("a1")), ("a1", None)],
            "round-robin"
        );
        // a1 follows b0; nothing follows a1.
        assert_eq!(lasts, [false, true, false], "what follows the next");
        // A job whose client may still send: more may follow.
        let mut b = Bench::with(limits(1), AHEAD);
        b.p.add_job(1, sentences(&["a0", "a1"]), SynthOptions::default(), true);
        b.p.set_room(1, 16);
        let sent = b.pump();
        assert_eq!(nexts(&sent), [("a0".into(), Some("a1".into()))]);
        assert_eq!(next_lasts(&sent), [false], "its input is open");
        let mut b = Bench::with(limits(1), AHEAD);
        b.job(1, &["a0", "a1"]);
        assert_eq!(next_lasts(&b.pump()), [true], "a1 ends the only job");
        let mut b = Bench::with(limits(1), AHEAD);
        b.job(1, &["a0", "a1"]);
        let other = SynthOptions {
            speaker_id: Some(1),
            ..Default::default()
        };
        b.p.add_job(2, sentences(&["b0"]), other, false);
        b.p.set_room(2, 16);
        assert_eq!(
            nexts(&b.pump()),
            [("a0".into(), None)],
            "b0 has other options"
        );
        // Not beyond what fits side by side (200 characters here).
        let mut b = Bench::with(limits(1), AHEAD);
        let (long, short) = (chars_long(150), chars_long(50));
        b.job(1, &[&long, &long, &short]);
        let sent = b.pump();
        assert_eq!(nexts(&sent), [(long.clone(), None)], "150 + 150 > 200");
        b.done(id_of(&sent, &long));
        assert_eq!(nexts(&b.pump()), [(long, Some(short))], "150 + 50 fit");
    }

    #[test]
    fn no_next_sentence_is_named_to_an_engine_that_does_not_make_it_ahead_or_with_other_options() {
        let mut b = Bench::new(2);
        b.job(1, &["one", "two"]);
        assert_eq!(nexts(&b.pump()), [("one".into(), None)]);
        let mut b = Bench::with(limits(2), AHEAD);
        let mut slow = line("two");
        slow.length_scale = Some(1.5);
        b.p.add_job(1, vec![line("one"), slow], SynthOptions::default(), false);
        b.p.set_room(1, 16);
        assert_eq!(
            nexts(&b.pump()),
            [("one".into(), None)],
            "its own length scale"
        );
    }

    #[test]
    fn with_one_turn_every_sentence_gets_every_core() {
        let mut b = Bench::new(1);
        b.job(1, &["a0", "a1"]);
        b.job(2, &["b0", "b1"]);
        let mut threads = Vec::new();
        // a1 is neither a first sentence nor alone (b1 waits): it still gets
        // every core, since nothing can run beside it.
        for _ in 0..4 {
            let sent = sends(&b.pump());
            assert_eq!(sent.len(), 1, "one at a time: {sent:?}");
            threads.push(sent[0].2);
            let id = b.p.oldest_in_engine().expect("in the engine");
            b.done(id);
        }
        assert_eq!(threads, [None, None, None, None]);
    }

    #[test]
    fn a_sentence_alone_waits_for_the_turn_it_asked_for_rather_than_take_one_core() {
        let mut b = Bench::new(2);
        b.job(1, &["one", "two"]);
        let sent = b.pump();
        assert!(b.p.asking, "the waiting sentence asked for a turn");
        b.done(id_of(&sent, "one"));
        assert_eq!(b.free, 2);
        let [before, after] = b.pump_before_the_asked_turn();
        assert!(sends(&before).is_empty(), "{before:?}");
        assert_eq!(sends(&after), [(1, "two".into(), None, 2)]);
    }

    #[test]
    fn a_sentence_with_a_partner_does_not_wait_for_the_turn_it_asked_for() {
        let mut b = Bench::new(2);
        b.job(1, &["one", "two", "three"]);
        let sent = b.pump();
        b.done(id_of(&sent, "one"));
        let [before, after] = b.pump_before_the_asked_turn();
        assert_eq!(sends(&before), [(1, "two".into(), Some(1), 1)]);
        assert_eq!(sends(&after), [(1, "three".into(), Some(1), 1)]);
    }

    #[test]
    fn a_first_sentence_with_a_partner_does_not_wait_for_the_turn_it_asked_for() {
        let mut b = Bench::new(2);
        b.job(1, &["one"]);
        let sent = b.pump();
        // Two newcomers while "one" holds every turn (it cannot be taken
        // back: it is not a long job's).
        b.job(2, &["a"]);
        b.job(3, &["b"]);
        assert!(sends(&b.pump()).is_empty());
        assert!(b.p.asking);
        b.done(id_of(&sent, "one"));
        let [before, after] = b.pump_before_the_asked_turn();
        assert_eq!(sends(&before), [(2, "a".into(), Some(1), 1)]);
        assert_eq!(sends(&after), [(3, "b".into(), Some(1), 1)]);
    }

    #[test]
    fn turns_are_given_back_while_no_engine_takes_sentences() {
        let mut p = Planner::new(limits(2));
        p.add_job(1, sentences(&["Hi."]), SynthOptions::default(), false);
        p.set_room(1, 16);
        let mut free = 2;
        assert!(sends(&pump(&mut p, &mut free)).is_empty());
        assert_eq!((free, p.turns_held()), (2, 0));
    }

    #[test]
    fn a_voice_without_a_free_turn_waits_in_line_once() {
        let mut free = 2;
        let mut one = Planner::new(limits(2));
        let mut two = Planner::new(limits(2));
        for p in [&mut one, &mut two] {
            p.engine_ready(CAPS);
            p.add_job(1, sentences(&["Hi."]), SynthOptions::default(), false);
            p.set_room(1, 16);
        }
        let first = pump(&mut one, &mut free);
        let waiting = pump(&mut two, &mut free);
        assert!(sends(&waiting).is_empty());
        assert!(waiting.contains(&Action::AskTurn));
        assert!(!pump(&mut two, &mut free).contains(&Action::AskTurn));
        // The first voice's sentence ends; the queue hands one turn to the
        // second, which takes the other free one too and runs alone.
        let id = id_of(&first, "Hi.");
        one.audio(id, Bytes::from_static(&[0, 0])).unwrap();
        settle(one.sentence_done(id, false).unwrap(), &mut free);
        free -= 1;
        two.turn_arrived();
        assert_eq!(
            sends(&pump(&mut two, &mut free)),
            [(1, "Hi.".into(), None, 2)]
        );
    }

    // Fairness.

    #[test]
    fn jobs_take_turns_round_robin() {
        let caps = EngineCaps {
            parallel: 1,
            cancels: true,
            ahead: false,
        };
        let mut b = Bench::with(limits(2), caps);
        b.job(1, &["a1", "a2", "a3"]);
        b.job(2, &["b1", "b2", "b3"]);
        let mut order = Vec::new();
        let mut sent = b.pump();
        while let Some((_, text, ..)) = sends(&sent).pop() {
            order.push(text.clone());
            b.done(id_of(&sent, &text));
            sent = b.pump();
        }
        assert_eq!(order, ["a1", "b1", "a2", "b2", "a3", "b3"]);
    }

    #[test]
    fn newcomers_go_first_come_first_served_ahead_of_started_jobs() {
        let caps = EngineCaps {
            parallel: 1,
            cancels: true,
            ahead: false,
        };
        let mut b = Bench::with(limits(2), caps);
        b.job(1, &["a1", "a2"]);
        b.say_first("a1");
        b.job(2, &["b1"]);
        b.job(3, &["c1"]);
        let mut order = Vec::new();
        let mut sent = b.pump();
        while let Some((_, text, ..)) = sends(&sent).pop() {
            order.push(text.clone());
            b.done(id_of(&sent, &text));
            sent = b.pump();
        }
        assert_eq!(order, ["b1", "c1", "a2"]);
    }

    // The memory budget.

    #[test]
    fn sentences_side_by_side_stay_within_the_character_budget() {
        let long = chars_long(120);
        let mut b = Bench::new(2);
        b.job(1, &["start", &long, &long]);
        b.say_first("start");
        // Two of 120 characters do not fit in 200: the first runs alone, on
        // every core, and the second waits for it without asking for a turn.
        let sent = b.pump();
        assert_eq!(sends(&sent), [(1, long.clone(), None, 2)]);
        assert!(!sent.contains(&Action::AskTurn));
        b.done(id_of(&sent, &long));
        assert_eq!(texts(&b.pump()), [long]);
    }

    #[test]
    fn a_sentence_that_does_not_fit_lets_one_later_go_first_once() {
        let (x, big, small, tiny) = (
            chars_long(150),
            chars_long(100),
            "c".repeat(40),
            "d".repeat(10),
        );
        let mut b = Bench::new(3);
        b.job(1, &["x", &x]);
        b.job(2, &["b", &big]);
        b.job(3, &["c", &small]);
        b.job(4, &["d", &tiny]);
        for first in ["x", "b", "c", "d"] {
            b.say_first(first);
        }
        // 150 + 100 is over 200: the 40 goes before the 100, which is
        // passed over only once: the 10 that would still fit waits too.
        let sent = b.pump();
        assert_eq!(texts(&sent), [x.clone(), small.clone()]);
        b.done(id_of(&sent, &small));
        assert!(sends(&b.pump()).is_empty());
        b.done(id_of(&sent, &x));
        assert_eq!(texts(&b.pump()), [big, tiny]);
    }

    /// With the default settings, two sentences near the hard limit go one
    /// after the other: side by side, a 1,254-character sentence cut in two
    /// took the engine to 435 MiB and 5.6 s, one after the other 388 MiB and
    /// 4.3 s (README, `PIPER_ENGINE_CHARS_AT_ONCE`).
    #[test]
    fn by_default_two_sentences_near_the_hard_limit_do_not_run_side_by_side() {
        let config = crate::config::Config::from_vars(&Default::default()).unwrap();
        let half = chars_long(config.unit_max_chars * 9 / 10);
        let mut b = Bench::with(Limits::from_config(&config), CAPS);
        b.job(1, &["start", &half, &half]);
        b.say_first("start");
        let sent = b.pump();
        assert_eq!(texts(&sent), std::slice::from_ref(&half));
        b.done(id_of(&sent, &half));
        assert_eq!(texts(&b.pump()), [half]);
    }

    #[test]
    fn a_sentence_alone_always_fits() {
        let mut b = Bench::new(2);
        b.job(1, &[&chars_long(400)]);
        assert_eq!(sends(&b.pump()).len(), 1);
    }

    // Preemption.

    /// Job 1, long and speaking, with two sentences side by side in the
    /// engine holding every turn; what was sent for them.
    fn long_job_speaking(b: &mut Bench) -> Vec<Action> {
        b.job(1, &["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"]);
        b.say_first("a0");
        let sent = b.pump();
        assert_eq!(texts(&sent), ["a1", "a2"]);
        sent
    }

    #[test]
    fn a_newcomers_first_sentence_takes_back_a_long_jobs_sentences() {
        let mut b = Bench::new(2);
        let long = long_job_speaking(&mut b);
        let (a1, a2) = (id_of(&long, "a1"), id_of(&long, "a2"));
        b.job(2, &["b0"]);
        let sent = b.pump();
        assert_eq!(cancels(&sent), [(a2, true), (a1, true)], "latest first");
        assert_eq!(sends(&sent), [(2, "b0".into(), None, 2)]);
        for id in [a1, a2] {
            assert_eq!(b.p.sentence_cancelled(id), Ok(Vec::new()));
        }
        let b0 = id_of(&sent, "b0");
        let ended = b.done(b0);
        assert!(matches!(ended.last(), Some(Action::Finish { job: 2, .. })));
        // Nothing of the long job is lost: its sentences go again, in order.
        assert_eq!(texts(&b.pump()), ["a1", "a2"]);
    }

    #[test]
    fn a_first_sentence_takes_back_the_long_sentence_that_makes_room_for_it() {
        let caps = EngineCaps {
            parallel: 4,
            cancels: true,
            ahead: false,
        };
        let mut b = Bench::with(limits(3), caps);
        let x = chars_long(150);
        b.job(1, &["a0", &x, "a2", "a3", "a4", "a5", "a6"]);
        b.job(2, &["c0", &"c".repeat(30), "c2"]);
        b.say_first("a0");
        b.say_first("c0");
        let running = b.pump();
        assert_eq!(texts(&running), [x.clone(), "c".repeat(30), "a2".into()]);
        // A newcomer of 100 characters does not fit beside 182: taking back
        // the long job's 150 makes room; the others run on.
        let big = chars_long(100);
        b.job(3, &[&big]);
        let sent = b.pump();
        assert_eq!(cancels(&sent), [(id_of(&running, &x), true)]);
        assert_eq!(texts(&sent), [big]);
    }

    /// Found with Wyoming: a command sent just after a long announcement
    /// started waited for the rest of its first sentence, which had begun
    /// to stream and so could not be taken back.
    #[test]
    fn a_newcomer_runs_beside_a_streamed_sentence_that_holds_every_turn() {
        let mut b = Bench::new(2);
        let long = chars_long(150);
        b.job(1, &[&long, "a1", "a2"]);
        let sent = b.pump();
        assert_eq!(sends(&sent), [(1, long.clone(), None, 2)]);
        let a0 = id_of(&sent, &long);
        // Part of its audio went out: it cannot be taken back.
        let parts = b.p.audio(a0, Bytes::from_static(&[0, 0])).unwrap();
        assert!(matches!(parts[..], [Action::DeliverPart { job: 1, .. }]));
        b.job(2, &["b0", "b1"]);
        let sent = b.pump();
        assert!(cancels(&sent).is_empty());
        assert_eq!(sends(&sent), [(2, "b0".into(), Some(1), 0)]);
        let b0 = id_of(&sent, "b0");
        // One borrowed run at most: the next newcomer waits for a turn.
        b.job(3, &["c0"]);
        let sent = b.pump();
        assert!(sends(&sent).is_empty() && cancels(&sent).is_empty());
        // The borrowed run ends without giving back a turn it never held.
        let ended = b.done(b0);
        assert!(!ended.iter().any(|a| matches!(a, Action::ReleaseTurns(_))));
        assert!(ended
            .iter()
            .any(|a| matches!(a, Action::Deliver { job: 2, .. })));
        // Now the next newcomer may borrow; job 2's next sentence is no
        // newcomer's, and waits for a turn.
        let sent = b.pump();
        assert_eq!(sends(&sent), [(3, "c0".into(), Some(1), 0)]);
        assert_eq!((b.p.turns_held(), b.free), (2, 0));
        // The streamed sentence ends: what waits goes on the turns it held.
        b.done(a0);
        let sent = sends(&b.pump());
        assert!(!sent.is_empty() && sent.iter().all(|s| s.3 > 0), "{sent:?}");
    }

    #[test]
    fn a_newcomer_does_not_borrow_beside_sentences_that_can_be_taken_back() {
        let mut b = Bench::new(2);
        b.job(1, &["a0", "a1", "a2", "a3", "a4", "a5", "a6"]);
        assert_eq!(texts(&b.pump()), ["a0"]);
        // Nothing of job 1 went out yet, and it is not long enough to be
        // taken back: the newcomer waits in line, as before.
        b.job(2, &["b0"]);
        let sent = b.pump();
        assert!(sends(&sent).is_empty() && cancels(&sent).is_empty());
        assert!(b.p.asking);
    }

    #[test]
    fn short_or_silent_jobs_are_never_taken_back() {
        // Three sentences left: not long.
        let mut b = Bench::new(2);
        b.job(1, &["a0", "a1", "a2", "a3", "a4", "a5"]);
        b.say_first("a0");
        assert_eq!(texts(&b.pump()), ["a1", "a2"]);
        b.job(2, &["b0"]);
        let sent = b.pump();
        assert!(cancels(&sent).is_empty() && sends(&sent).is_empty());
        assert!(b.p.asking, "it waits in line for a turn");
        // No audio delivered yet: not speaking.
        let mut b = Bench::new(2);
        b.job(1, &["a0", "a1", "a2", "a3", "a4", "a5", "a6"]);
        assert_eq!(texts(&b.pump()), ["a0"]);
        b.job(2, &["b0"]);
        let sent = b.pump();
        assert!(cancels(&sent).is_empty() && sends(&sent).is_empty());
    }

    #[test]
    fn an_engine_that_cannot_cancel_is_never_asked_to() {
        let caps = EngineCaps {
            parallel: 3,
            cancels: false,
            ahead: false,
        };
        let mut b = Bench::with(limits(2), caps);
        long_job_speaking(&mut b);
        b.job(2, &["b0"]);
        assert!(cancels(&b.pump()).is_empty());
        b.p.client_left(1);
        assert!(cancels(&b.pump()).is_empty());
    }

    // Crash isolation.

    #[test]
    fn sentences_lost_with_the_engine_go_again_one_at_a_time() {
        let mut b = Bench::new(2);
        b.job(1, &["a0", "a1", "a2", "a3"]);
        b.say_first("a0");
        assert_eq!(texts(&b.pump()), ["a1", "a2"]);
        assert!(b.lost(None, "the engine exited").is_empty());
        assert_eq!((b.p.in_engine(), b.free), (0, 2));
        b.p.engine_ready(CAPS);
        for next in ["a1", "a2", "a3"] {
            let sent = b.pump();
            assert_eq!(texts(&sent), [next]);
            b.done(id_of(&sent, next));
        }
    }

    /// Jobs 1 and 2, both started, with "boom" and "b1" side by side in an
    /// engine that was then lost.
    fn two_lost(b: &mut Bench) -> Vec<Action> {
        b.job(1, &["a0", "boom"]);
        b.job(2, &["b0", "b1"]);
        b.say_first("a0");
        b.say_first("b0");
        let sent = b.pump();
        assert_eq!(texts(&sent), ["boom", "b1"]);
        sent
    }

    #[test]
    fn a_sentence_lost_twice_fails_its_job_only() {
        let mut b = Bench::new(2);
        two_lost(&mut b);
        assert!(b.lost(None, "died").is_empty());
        b.p.engine_ready(CAPS);
        let again = b.pump();
        assert_eq!(texts(&again), ["boom"], "suspects go alone");
        let failed = b.lost(None, "died again");
        let err = SynthError::EngineCrashed("died again".into());
        assert_eq!(failed, [Action::Fail { job: 1, err }]);
        b.p.engine_ready(CAPS);
        let sent = b.pump();
        assert_eq!(texts(&sent), ["b1"]);
        let ended = b.done(id_of(&sent, "b1"));
        assert!(matches!(ended.last(), Some(Action::Finish { job: 2, .. })));
    }

    #[test]
    fn the_blamed_sentence_fails_its_job_and_the_others_go_again() {
        let mut b = Bench::new(2);
        let sent = two_lost(&mut b);
        let blame = Blame {
            sentence: id_of(&sent, "boom"),
            err: SynthError::EngineTimeout,
        };
        let failed = b.lost(Some(blame), "hung");
        let err = SynthError::EngineTimeout;
        assert_eq!(failed, [Action::Fail { job: 1, err }]);
        b.p.engine_ready(CAPS);
        assert_eq!(texts(&b.pump()), ["b1"]);
    }

    #[test]
    fn an_unasked_cancel_keeps_the_sentence_counted_until_the_engine_is_lost() {
        let mut b = Bench::new(2);
        b.job(1, &["a0", "a1"]);
        let sent = b.pump();
        let a0 = id_of(&sent, "a0");
        assert_eq!(
            b.p.sentence_cancelled(a0),
            Err(ProtocolBreach::UnaskedCancel(a0))
        );
        assert_eq!(b.p.in_engine(), 1);
        let blame = Blame {
            sentence: b.p.oldest_in_engine().unwrap(),
            err: SynthError::EngineBadOutput("request cancelled unasked".into()),
        };
        let failed = b.lost(Some(blame.clone()), "broken");
        assert_eq!(
            failed,
            [Action::Fail {
                job: 1,
                err: blame.err
            }]
        );
        assert_eq!((b.p.jobs(), b.p.in_engine(), b.free), (0, 0, 2));
    }

    #[test]
    fn answers_for_sentences_not_in_the_engine_break_the_protocol() {
        let mut p = Planner::new(limits(2));
        assert_eq!(p.audio(7, Bytes::new()), Err(ProtocolBreach::Audio(7)));
        assert_eq!(p.sentence_done(7, false), Err(ProtocolBreach::End(7)));
        assert_eq!(p.sentence_cancelled(7), Err(ProtocolBreach::Cancel(7)));
    }

    // Order, room and clients.

    #[test]
    fn audio_goes_out_in_order_when_sentences_finish_out_of_order() {
        let mut b = Bench::new(2);
        b.job(1, &["a0", "a1", "a2"]);
        b.say_first("a0");
        let sent = b.pump();
        assert!(b.done(id_of(&sent, "a2")).is_empty(), "held");
        let out = b.done(id_of(&sent, "a1"));
        let spans: Vec<_> = out
            .iter()
            .filter_map(|a| match a {
                Action::Deliver { span, .. } => Some(span.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(spans, [100..102, 200..202]);
        let summary = SynthSummary {
            samples: 6,
            skipped_sentences: 0,
        };
        assert_eq!(out.last(), Some(&Action::Finish { job: 1, summary }));
    }

    #[test]
    fn parts_of_the_current_sentence_go_out_at_once_and_later_ones_wait_for_its_end() {
        let mut b = Bench::new(2);
        b.job(1, &["a0", "a1", "a2"]);
        b.say_first("a0");
        let sent = b.pump();
        let (a1, a2) = (id_of(&sent, "a1"), id_of(&sent, "a2"));
        let part = |n: u8| Bytes::from(vec![n, 0]);
        // a2 is not the sentence being said: held.
        assert!(b.p.audio(a2, part(5)).unwrap().is_empty());
        // a1 is: each part goes out as it comes.
        assert_eq!(
            b.p.audio(a1, part(1)).unwrap(),
            [Action::DeliverPart {
                job: 1,
                pcm: part(1)
            }]
        );
        assert_eq!(
            b.p.audio(a1, part(2)).unwrap(),
            [Action::DeliverPart {
                job: 1,
                pcm: part(2)
            }]
        );
        // Its end carries nothing more, and still ends it.
        let out = settle(b.p.sentence_done(a1, false).unwrap(), &mut b.free);
        assert_eq!(
            out,
            [Action::Deliver {
                job: 1,
                span: 100..102,
                pcm: Bytes::new(),
                words: Vec::new(),
            }]
        );
        // Now a2 is said: what it held goes out with its next part.
        assert_eq!(
            b.p.audio(a2, part(6)).unwrap(),
            [Action::DeliverPart {
                job: 1,
                pcm: Bytes::from_static(&[5, 0, 6, 0])
            }]
        );
    }

    #[test]
    fn a_part_waits_while_its_client_has_no_room_beyond_what_is_owed() {
        let mut b = Bench::new(2);
        b.job(1, &["a0"]);
        let a0 = id_of(&b.pump(), "a0");
        // One event owed for the sentence's end, one for the outcome.
        b.p.set_room(1, 2);
        assert!(b
            .p
            .audio(a0, Bytes::from_static(&[1, 0]))
            .unwrap()
            .is_empty());
        b.p.set_room(1, 3);
        assert_eq!(
            b.p.audio(a0, Bytes::from_static(&[2, 0])).unwrap(),
            [Action::DeliverPart {
                job: 1,
                pcm: Bytes::from_static(&[1, 0, 2, 0])
            }]
        );
    }

    #[test]
    fn a_sentence_with_audio_out_is_not_said_again_after_a_crash_nor_taken_back() {
        let mut b = Bench::new(2);
        b.job(1, &["a0", "a1", "a2", "a3", "a4", "a5"]);
        let a0 = id_of(&b.pump(), "a0");
        assert_eq!(b.p.audio(a0, Bytes::from_static(&[1, 0])).unwrap().len(), 1);
        // A newcomer's first sentence finds nothing it may take back: a0
        // streamed, and the job has spoken, but its audio cannot be undone.
        b.job(2, &["b0"]);
        let out = b.pump();
        assert!(
            !out.iter()
                .any(|a| matches!(a, Action::Cancel { id, .. } if *id == a0)),
            "{out:?}"
        );
        // Lost with the engine: the job fails at once, not said again.
        let out = b.lost(None, "the engine exited");
        assert!(
            out.iter().any(|a| matches!(
                a,
                Action::Fail {
                    job: 1,
                    err: SynthError::EngineCrashed(_)
                }
            )),
            "{out:?}"
        );
    }

    #[test]
    fn a_client_without_room_pauses_its_job_and_keeps_room_for_its_outcome() {
        let mut b = Bench::new(2);
        b.job(1, &["a0", "a1", "a2"]);
        b.p.set_room(1, 2);
        // Room for one sentence's audio and the outcome.
        let sent = b.pump();
        assert_eq!(texts(&sent), ["a0"]);
        assert!(sent.contains(&Action::ArmResume));
        assert!(!b.pump().contains(&Action::ArmResume), "armed once");
        b.done(id_of(&sent, "a0"));
        assert!(sends(&b.pump()).is_empty(), "one event left: the outcome's");
        b.p.resumed();
        b.p.set_room(1, 16);
        assert_eq!(texts(&b.pump()), ["a1", "a2"]);
    }

    #[test]
    fn a_client_that_leaves_has_its_sentences_taken_back_and_is_forgotten() {
        let mut b = Bench::new(2);
        b.job(1, &["a0", "a1"]);
        let a0 = id_of(&b.pump(), "a0");
        b.p.client_left(1);
        let out = b.pump();
        assert_eq!(
            out,
            [Action::Cancel {
                id: a0,
                preempted: false
            }]
        );
        assert_eq!(b.free, 2, "its turns went back at once");
        assert_eq!(b.p.sentence_cancelled(a0), Ok(Vec::new()));
        assert_eq!(b.pump(), [Action::Abandoned { job: 1 }]);
        assert_eq!(b.p.jobs(), 0);
    }

    #[test]
    fn skipped_sentences_are_counted_and_a_job_with_no_audio_fails() {
        let mut b = Bench::new(2);
        b.job(1, &["?", "Hi."]);
        let q = id_of(&b.pump(), "?");
        assert!(settle(b.p.sentence_done(q, true).unwrap(), &mut b.free).is_empty());
        let hi = id_of(&b.pump(), "Hi.");
        let summary = SynthSummary {
            samples: 2,
            skipped_sentences: 1,
        };
        assert_eq!(b.done(hi).last(), Some(&Action::Finish { job: 1, summary }));

        b.job(2, &["?"]);
        let q = id_of(&b.pump(), "?");
        let out = settle(b.p.sentence_done(q, true).unwrap(), &mut b.free);
        let err = SynthError::NoSpeakableText;
        assert_eq!(out, [Action::Fail { job: 2, err }]);
    }

    // Text arriving over time.

    fn open_job(b: &mut Bench, id: JobId, texts: &[&str]) {
        b.p.add_job(id, sentences(texts), SynthOptions::default(), true);
        b.p.set_room(id, 16);
    }

    fn line(text: &str) -> Sentence {
        Sentence {
            line: text.into(),
            span: 0..text.len(),
            length_scale: None,
        }
    }

    #[test]
    fn an_open_job_without_sentences_stays_open() {
        let mut b = Bench::new(2);
        open_job(&mut b, 1, &[]);
        assert!(b.pump().is_empty());
        assert_eq!(b.p.jobs(), 1);
        let out = b.p.input_ended(1);
        let err = SynthError::NoSpeakableText;
        assert_eq!(out, [Action::Fail { job: 1, err }]);
    }

    /// (text, first) of each sentence sent.
    fn firsts(actions: &[Action]) -> Vec<(String, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { text, first, .. } => Some((text.clone(), *first)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn only_a_sentence_a_listener_may_wait_on_is_sent_as_first() {
        let mut b = Bench::new(2);
        b.job(1, &["One.", "Two.", "Three."]);
        let sent = b.pump();
        assert_eq!(firsts(&sent), [("One.".to_string(), true)]);
        // Heard: the rest plays after its audio, side by side.
        let out = b.done(id_of(&sent, "One."));
        assert!(!out.is_empty());
        let sent = b.pump();
        assert_eq!(
            firsts(&sent),
            [("Two.".to_string(), false), ("Three.".to_string(), false)]
        );
        // Text over time: a sentence after the job ran dry may be waited on.
        let mut b = Bench::new(2);
        open_job(&mut b, 3, &["Early."]);
        let early = id_of(&b.pump(), "Early.");
        b.done(early);
        assert!(b.p.more_text(3, line("Late.")));
        assert_eq!(firsts(&b.pump()), [("Late.".to_string(), true)]);
        // A complete answer: nobody hears its start before its end.
        let mut b = Bench::new(2);
        b.job(4, &["Whole."]);
        b.p.hold_parts(4);
        assert_eq!(firsts(&b.pump()), [("Whole.".to_string(), false)]);
    }

    #[test]
    fn sentences_arriving_later_are_sent_at_once() {
        let mut b = Bench::new(2);
        open_job(&mut b, 1, &[]);
        b.pump();
        assert!(b.p.more_text(1, line("Later.")));
        assert_eq!(sends(&b.pump()), [(1, "Later.".into(), None, 2)]);
        assert!(!b.p.more_text(9, line("No such job.")));
    }

    #[test]
    fn an_open_job_ends_only_after_its_input_ended_and_its_last_sentence_is_done() {
        let mut b = Bench::new(2);
        open_job(&mut b, 1, &["One."]);
        let one = id_of(&b.pump(), "One.");
        let out = b.done(one);
        assert!(
            matches!(
                out[..],
                [Action::DeliverPart { .. }, Action::Deliver { .. }]
            ),
            "{out:?}"
        );
        assert_eq!(b.p.jobs(), 1, "more may come");
        // Input ends while a sentence is in the engine: done with it.
        assert!(b.p.more_text(1, line("Two.")));
        let two = id_of(&b.pump(), "Two.");
        assert!(b.p.input_ended(1).is_empty());
        let out = b.done(two);
        assert!(matches!(out.last(), Some(Action::Finish { job: 1, .. })));
        assert_eq!(b.p.jobs(), 0);
    }

    #[test]
    fn a_sentence_with_its_own_length_scale_is_sent_with_it() {
        let mut b = Bench::new(2);
        let job = SynthOptions {
            length_scale: Some(1.5),
            volume: Some(0.5),
            ..Default::default()
        };
        b.p.add_job(1, Vec::new(), job, true);
        b.p.set_room(1, 16);
        b.pump();
        let slow = Sentence {
            length_scale: Some(3.0),
            ..line("Slowly.")
        };
        assert!(b.p.more_text(1, slow));
        assert!(b.p.more_text(1, line("As asked.")));
        let mut scales = Vec::new();
        for _ in 0..2 {
            let out = b.pump();
            for action in &out {
                if let Action::Send {
                    id, text, options, ..
                } = action
                {
                    scales.push((text.clone(), options.length_scale, options.volume));
                    b.done(*id);
                }
            }
        }
        assert_eq!(
            scales,
            [
                ("Slowly.".to_string(), Some(3.0), Some(0.5)),
                ("As asked.".to_string(), Some(1.5), Some(0.5))
            ]
        );
    }

    // Deadlines.

    #[test]
    fn the_hang_deadline_grows_with_the_length_scale_and_the_silence() {
        let second = Duration::from_secs(1);
        let at = |length_scale, sentence_silence| SynthOptions {
            length_scale,
            sentence_silence,
            ..Default::default()
        };
        assert_eq!(hang_allowance(20, &at(None, None)), second);
        assert_eq!(hang_allowance(20, &at(Some(10.0), None)), 10 * second);
        // Faster speech does not shorten it.
        assert_eq!(hang_allowance(20, &at(Some(0.5), None)), second);
        assert_eq!(hang_allowance(20, &at(None, Some(10.0))), 11 * second);
        assert_eq!(
            hang_allowance(20, &at(Some(2.0), Some(0.5))),
            2500 * second / 1000
        );
        assert_eq!(
            hang_allowance(20, &at(Some(f32::NAN), Some(f32::NAN))),
            second
        );
    }

    #[test]
    fn a_sentence_deadline_counts_the_sentences_ahead_of_it() {
        let mut b = Bench::new(2);
        let slow = SynthOptions {
            length_scale: Some(2.0),
            ..Default::default()
        };
        let (one, two) = (chars_long(10), chars_long(20));
        b.p.add_job(1, sentences(&["start", &one, &two]), slow, false);
        b.p.set_room(1, 16);
        b.say_first("start");
        let deadlines: Vec<Duration> = b
            .pump()
            .iter()
            .filter_map(|a| match a {
                Action::Send { deadline, .. } => Some(*deadline),
                _ => None,
            })
            .collect();
        let ms = Duration::from_millis;
        assert_eq!(deadlines, [TEN_S + ms(1000), TEN_S + ms(1000) + ms(2000)]);
    }

    #[test]
    fn progress_moves_with_every_frame_and_end_the_engine_sends() {
        let mut b = Bench::new(2);
        b.job(1, &["one", "two"]);
        let sent = b.pump();
        let id = id_of(&sent, "one");
        let before = b.p.progress();
        b.p.audio(id, Bytes::from_static(&[1, 0])).unwrap();
        let after_audio = b.p.progress();
        assert!(after_audio > before, "audio is progress");
        b.p.sentence_done(id, false).unwrap();
        assert!(b.p.progress() > after_audio, "an end is progress");
        assert!(!b.p.is_in_engine(id));
    }

    #[test]
    fn a_complete_answer_hears_each_sentence_whole_so_a_crash_can_say_it_again() {
        let mut b = Bench::new(2);
        b.job(1, &["a0", "a1"]);
        b.p.hold_parts(1);
        let sent = b.pump();
        let a0 = id_of(&sent, "a0");
        // The sentence being said: its parts wait for its end all the same.
        assert!(b
            .p
            .audio(a0, Bytes::from_static(&[1, 0]))
            .unwrap()
            .is_empty());
        // Lost with the engine, it is not failed: nothing of it was heard.
        let out = b.lost(None, "killed");
        assert!(
            !out.iter().any(|a| matches!(a, Action::Fail { .. })),
            "{out:?}"
        );
        assert_eq!(b.p.jobs(), 1);
    }
}
