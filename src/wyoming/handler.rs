//! One Wyoming connection: events in, speech sessions opened through the
//! core, audio events out.
//!
//! A connection answers one request at a time, in the order they came:
//! `describe` → `info`; `synthesize` → `audio-start`, `audio-chunk`s,
//! `audio-stop`; a stream (`synthesize-start`, `synthesize-chunk`s, the
//! whole text again as `synthesize`, `synthesize-stop`) → the audio of each
//! sentence as soon as the core has it, then `audio-stop` and
//! `synthesize-stopped`. A stream gets one `audio-start` (at its first
//! audio) for all its sentences: Home Assistant builds its WAV header from
//! the first one and reads on until `synthesize-stopped`.
//!
//! The socket is read all the time, also while audio goes out: events that
//! belong to a later request wait in a small backlog, and a client that
//! closes its side has hung up, so its session is dropped at once and the
//! scheduler takes its sentences back. Every failure becomes one `error
//! {text, code}` event in [`Failure::code`], then the connection closes.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::codec::{CodecError, Connection, Frame};
use super::event::{
    Attribution, AudioFormat, Incoming, Outgoing, TtsProgram, TtsSpeaker, TtsVoice, VoiceChoice,
    KNOWN_TYPES,
};
use crate::metrics as m;
use crate::speech::{
    Session, Speaker, Speech, SpeechError, SpeechEvent, SynthError, Utterance, VoiceOptions,
};
use crate::voices::{VoiceError, VoiceInfo};

/// Events held for later requests while one is answered; past this the
/// socket is not read until the backlog shrinks.
const MAX_BACKLOG: usize = 32;

/// How long, and for how many bytes, a failed connection's input is read
/// and dropped after its `error` event, so that the event is not lost to a
/// reset (see [`Connection::discard_input`]).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 << 20;

/// Settings every connection shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Samples per `audio-chunk` (`PIPER_WYOMING_SAMPLES_PER_CHUNK`).
    pub samples_per_chunk: usize,
    /// How long piperd waits for a silent client, and for a write to a
    /// client that does not read (`PIPER_WYOMING_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
}

/// Why a connection ends with an `error` event.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// An event whose data does not fit its type.
    #[error("{0}")]
    Event(String),
    /// A known event out of place.
    #[error("{0}")]
    Unexpected(&'static str),
    /// A length promised more than came within the idle timeout.
    #[error("an event did not arrive whole within {0:?}: its data_length or payload_length is more than was sent")]
    Incomplete(Duration),
    /// The client did not take what was sent within the idle timeout.
    #[error("the client read nothing for {0:?}")]
    Stalled(Duration),
    #[error("the server is shutting down; retry on another replica or later")]
    ShuttingDown,
    #[error("{0} Wyoming connections are open (PIPER_WYOMING_MAX_CONNECTIONS); retry later")]
    TooManyConnections(usize),
    #[error(transparent)]
    Speech(#[from] SpeechError),
}

impl Failure {
    /// The stable `code` of the `error` event: the only mapping of errors
    /// to Wyoming. The speech core's errors keep the codes of the HTTP API
    /// (README, "Errors"), so one alert or client matches both.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Codec(err) => match err {
                CodecError::LineTooLong | CodecError::TooLarge { .. } => "event_too_large",
                CodecError::Truncated { .. } => "incomplete_event",
                CodecError::Io(_) => "connection_error",
                _ => "invalid_event",
            },
            Failure::Event(_) => "invalid_event",
            Failure::Unexpected(_) => "unexpected_event",
            Failure::Incomplete(_) => "incomplete_event",
            Failure::Stalled(_) => "client_stalled",
            Failure::ShuttingDown => "shutting_down",
            Failure::TooManyConnections(_) => "too_many_connections",
            Failure::Speech(err) => speech_code(err),
        }
    }

    /// Whether the client can still read an `error` event.
    fn can_tell(&self) -> bool {
        !matches!(
            self,
            Failure::Codec(CodecError::Io(_) | CodecError::Truncated { .. }) | Failure::Stalled(_)
        )
    }
}

/// The code of each speech error: the same as the HTTP API's.
fn speech_code(err: &SpeechError) -> &'static str {
    use SpeechError as S;
    match err {
        S::EmptyText => "empty_text",
        S::TextTooLong(_) => "text_too_long",
        S::NoSpeakableText | S::Synth(SynthError::NoSpeakableText) => "no_speakable_text",
        S::InvalidParameter { .. } => "invalid_parameter",
        S::InvalidSsml(_) => "invalid_ssml",
        S::Voice(VoiceError::InvalidName(..)) => "invalid_voice_name",
        S::Voice(VoiceError::NotFound { .. }) => "voice_not_found",
        S::Voice(VoiceError::BadConfig { .. }) => "voice_config_invalid",
        S::Overloaded { .. } => "overloaded",
        S::AudioTooLong { .. } => "audio_too_long",
        S::Synth(err) => match err {
            SynthError::ProcessLimit(_) => "process_limit",
            SynthError::VoiceUnavailable { .. } => "voice_unavailable",
            SynthError::EngineUnavailable(_) => "engine_unavailable",
            SynthError::EngineTimeout => "engine_timeout",
            SynthError::EngineBadOutput(_) => "engine_bad_output",
            SynthError::EngineCrashed(_) => "engine_crashed",
            SynthError::NoSpeakableText => "no_speakable_text",
            SynthError::ShuttingDown => "shutting_down",
        },
        S::Internal(_) => "internal",
    }
}

/// The sentence of an `error` event: the error, plus what a client can act
/// on (the voices there are).
fn error_text(failure: &Failure) -> String {
    match failure {
        Failure::Speech(SpeechError::Voice(VoiceError::NotFound { name, available })) => {
            format!(
                "voice {name:?} not found; available: {}",
                available.join(", ")
            )
        }
        other => other.to_string(),
    }
}

/// Which of the two kinds of request is being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Synthesize,
    Stream,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Synthesize => "synthesize",
            Mode::Stream => "stream",
        }
    }
}

/// A request being answered.
struct Job {
    id: String,
    mode: Mode,
    session: Session,
    voice: String,
    format: AudioFormat,
    /// `audio-start` went out.
    started_audio: bool,
    /// Samples sent so far: the next chunk's timestamp.
    samples: u64,
    /// A stream whose text is still arriving.
    input_open: bool,
    chars: usize,
    started: Instant,
}

impl Job {
    fn timestamp_ms(&self) -> u64 {
        self.samples * 1000 / u64::from(self.format.rate.max(1))
    }

    /// Records a request that ended without its last audio.
    fn ended(self, outcome: &'static str, code: Option<&'static str>) {
        counter!(m::WYOMING_REQUESTS, "mode" => self.mode.label(), "outcome" => outcome)
            .increment(1);
        tracing::info!(
            request_id = %self.id, frontend = "wyoming", mode = self.mode.label(),
            voice = %self.voice, samples = self.samples, characters = self.chars,
            code, complete = false, ms = self.started.elapsed().as_millis() as u64,
            "speech ended early: {outcome}"
        );
    }
}

/// One connection's state.
pub struct Handler<S> {
    conn: Connection<S>,
    speech: Speech,
    settings: Arc<Settings>,
    shutdown: watch::Receiver<bool>,
    draining: bool,
    peer: SocketAddr,
    /// The connection's number, for request ids.
    number: u64,
    requests: u64,
    backlog: VecDeque<Frame>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Handler<S> {
    pub fn new(
        stream: S,
        peer: SocketAddr,
        number: u64,
        speech: Speech,
        settings: Arc<Settings>,
        shutdown: watch::Receiver<bool>,
    ) -> Handler<S> {
        let draining = *shutdown.borrow();
        Handler {
            conn: Connection::new(stream),
            speech,
            settings,
            shutdown,
            draining,
            peer,
            number,
            requests: 0,
            backlog: VecDeque::new(),
        }
    }

    /// Serves the connection until the client leaves, it fails or the
    /// server drains; a failure is told to the client before closing.
    pub async fn run(mut self) {
        let mut job = None;
        let result = self.serve(&mut job).await;
        let code = result.as_ref().err().map(Failure::code);
        if let Some(job) = job.take() {
            // Dropping its session (here) hangs up on the scheduler.
            let outcome = if code.is_some() {
                "failed"
            } else {
                "abandoned"
            };
            job.ended(outcome, code);
        }
        let limit = self.settings.idle_timeout;
        match result {
            Ok(()) => {
                let _ = bounded(limit, self.conn.shutdown()).await;
            }
            Err(failure) => {
                let code = failure.code();
                counter!(m::ERRORS, "code" => code).increment(1);
                tracing::info!(
                    peer = %self.peer, frontend = "wyoming", code,
                    "wyoming connection closed: {failure}"
                );
                if failure.can_tell() {
                    let error = Outgoing::Error {
                        text: error_text(&failure),
                        code,
                    }
                    .into_frame();
                    let conn = &mut self.conn;
                    let _ = bounded(limit, async {
                        conn.write_frame(&error).await?;
                        conn.shutdown().await
                    })
                    .await;
                    let _ = bounded(LINGER.min(limit), conn.discard_input(LINGER_BYTES)).await;
                }
            }
        }
    }

    async fn serve(&mut self, job: &mut Option<Job>) -> Result<(), Failure> {
        let idle = self.settings.idle_timeout;
        let mut last_heard = Instant::now();
        loop {
            if job.is_none() {
                if let Some(frame) = self.backlog.pop_front() {
                    self.handle(frame, job).await?;
                    continue;
                }
                if self.draining {
                    return Ok(());
                }
            }
            // The client owes the next move when no request is running or a
            // stream waits for its text; otherwise piperd does.
            let client_owes = job.as_ref().is_none_or(|j| j.input_open);
            let deadline = tokio::time::Instant::from_std(last_heard + idle);
            tokio::select! {
                event = next_event(job), if job.is_some() => {
                    if self.answer(job.as_mut().expect("polled only with a job"), event).await? {
                        if let Some(done) = job.take() {
                            finished(done);
                        }
                    }
                    last_heard = Instant::now();
                }
                frame = self.conn.read_frame(), if self.backlog.len() < MAX_BACKLOG => {
                    last_heard = Instant::now();
                    let Some(frame) = frame? else {
                        // The client closed: hanging up (`run` drops the job).
                        return Ok(());
                    };
                    count_event(&frame.kind);
                    if job.as_ref().is_none_or(|j| j.input_open) {
                        self.handle(frame, job).await?;
                    } else {
                        self.backlog.push_back(frame);
                    }
                }
                _ = tokio::time::sleep_until(deadline), if client_owes => {
                    if self.conn.has_partial_frame() {
                        return Err(Failure::Incomplete(idle));
                    }
                    tracing::debug!(peer = %self.peer, "wyoming connection idle for {idle:?}: closing");
                    return Ok(());
                }
                _ = self.shutdown.changed(), if !self.draining => {
                    // Finish the request in hand, take no new one.
                    self.draining = true;
                }
            }
        }
    }

    /// Handles one event while no request runs or a stream takes text.
    async fn handle(&mut self, frame: Frame, job: &mut Option<Job>) -> Result<(), Failure> {
        let event = Incoming::from_frame(frame).map_err(Failure::Event)?;
        let streaming = job.as_ref().is_some_and(|j| j.input_open);
        match event {
            Incoming::Describe => {
                let info = self.info().await;
                self.send(Outgoing::Info(info)).await?;
                self.flush().await?;
            }
            Incoming::Synthesize { .. } if streaming => {
                // The whole text again, for servers that do not stream.
            }
            Incoming::Synthesize { text, voice } => {
                if self.draining {
                    return Err(Failure::ShuttingDown);
                }
                *job = self.synthesize(text, voice).await?;
            }
            Incoming::SynthesizeStart { .. } if streaming => {
                tracing::debug!(peer = %self.peer, "synthesize-start inside a stream: ignored");
            }
            Incoming::SynthesizeStart { voice } => {
                if self.draining {
                    return Err(Failure::ShuttingDown);
                }
                let started = Instant::now();
                let (voice, options) = self.pick_voice(voice).await?;
                let options = options.resolve(&voice)?;
                let session = self.speech.open(voice.clone(), options)?;
                *job = Some(self.job(Mode::Stream, session, &voice, 0, started));
            }
            Incoming::SynthesizeChunk { text } => match job.as_mut() {
                Some(job) if job.input_open => {
                    job.chars += crate::text::char_count(&text);
                    job.session.push(&text)?;
                }
                _ => {
                    return Err(Failure::Unexpected(
                        "synthesize-chunk outside a stream: send synthesize-start first",
                    ))
                }
            },
            Incoming::SynthesizeStop => match job.as_mut() {
                Some(job) if job.input_open => {
                    job.input_open = false;
                    job.session.end()?;
                }
                _ => {
                    return Err(Failure::Unexpected(
                        "synthesize-stop outside a stream: send synthesize-start first",
                    ))
                }
            },
            Incoming::Other(kind) => {
                tracing::debug!(peer = %self.peer, kind, "wyoming event ignored");
            }
        }
        Ok(())
    }

    /// Starts a one-shot request. The core answers once the first audio is
    /// there; meanwhile the socket is still read, so a client that leaves
    /// cancels it.
    async fn synthesize(
        &mut self,
        text: String,
        voice: Option<VoiceChoice>,
    ) -> Result<Option<Job>, Failure> {
        let started = Instant::now();
        let (voice, options) = self.pick_voice(voice).await?;
        let options = options.resolve(&voice)?;
        let chars = crate::text::char_count(&text);
        let speech = self.speech.clone();
        let say = speech.say(Utterance {
            voice: voice.clone(),
            text: &text,
            options,
            complete: false,
            normalize: true,
            ssml: crate::text::ssml::looks_like_ssml(&text),
        });
        tokio::pin!(say);
        let said = loop {
            tokio::select! {
                said = &mut say => break said,
                frame = self.conn.read_frame(), if self.backlog.len() < MAX_BACKLOG => {
                    match frame? {
                        Some(frame) => {
                            count_event(&frame.kind);
                            self.backlog.push_back(frame);
                        }
                        // Gone before the first audio: dropping `say` cancels it.
                        None => {
                            counter!(m::WYOMING_REQUESTS, "mode" => "synthesize", "outcome" => "abandoned")
                                .increment(1);
                            return Ok(None);
                        }
                    }
                }
            }
        };
        match said {
            Ok(session) => {
                let mut job = self.job(Mode::Synthesize, session, &voice, chars, started);
                job.input_open = false;
                Ok(Some(job))
            }
            // Nothing to say is an empty answer, as wyoming-piper gives: an
            // assistant's reply of only an emoji is no failure.
            Err(
                SpeechError::EmptyText
                | SpeechError::NoSpeakableText
                | SpeechError::Synth(SynthError::NoSpeakableText),
            ) => {
                self.send(Outgoing::AudioStart(AudioFormat::mono16(voice.sample_rate)))
                    .await?;
                self.send(Outgoing::AudioStop { timestamp: 0 }).await?;
                self.flush().await?;
                counter!(m::WYOMING_REQUESTS, "mode" => "synthesize", "outcome" => "done")
                    .increment(1);
                tracing::info!(
                    frontend = "wyoming", peer = %self.peer, mode = "synthesize",
                    voice = %voice.name, characters = chars, "nothing to say: empty audio"
                );
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }

    fn job(
        &mut self,
        mode: Mode,
        session: Session,
        voice: &VoiceInfo,
        chars: usize,
        started: Instant,
    ) -> Job {
        self.requests += 1;
        Job {
            id: format!("wy{}-{}", self.number, self.requests),
            mode,
            format: AudioFormat::mono16(session.sample_rate()),
            session,
            voice: voice.name.clone(),
            started_audio: false,
            samples: 0,
            input_open: mode == Mode::Stream,
            chars,
            started,
        }
    }

    /// Sends what the session said; `true` once the request is answered.
    async fn answer(&mut self, job: &mut Job, event: Option<SpeechEvent>) -> Result<bool, Failure> {
        match event {
            Some(SpeechEvent::Audio(pcm)) => {
                self.start_audio(job).await?;
                let piece = self.settings.samples_per_chunk * 2;
                let mut at = 0;
                while at < pcm.len() {
                    let end = pcm.len().min(at + piece);
                    let chunk = Outgoing::AudioChunk {
                        format: job.format,
                        timestamp: job.timestamp_ms(),
                        pcm: pcm.slice(at..end),
                    };
                    self.send(chunk).await?;
                    job.samples += ((end - at) / 2) as u64;
                    at = end;
                }
                self.flush().await?;
                Ok(false)
            }
            Some(SpeechEvent::SentenceEnd { .. }) => Ok(false),
            Some(SpeechEvent::Done(summary)) => {
                self.end_audio(job, summary.cached).await?;
                Ok(true)
            }
            // A stream whose text held nothing to say: no audio, no failure.
            Some(SpeechEvent::Failed(
                SpeechError::NoSpeakableText | SpeechError::Synth(SynthError::NoSpeakableText),
            )) if job.samples == 0 => {
                self.end_audio(job, false).await?;
                Ok(true)
            }
            Some(SpeechEvent::Failed(err)) => Err(err.into()),
            None => Err(SpeechError::Internal("the session ended unheard".into()).into()),
        }
    }

    /// The end of a request's audio: `audio-stop`, and for a stream
    /// `synthesize-stopped` (an `audio-start` first if no audio came).
    async fn end_audio(&mut self, job: &mut Job, cached: bool) -> Result<(), Failure> {
        self.start_audio(job).await?;
        let timestamp = job.timestamp_ms();
        self.send(Outgoing::AudioStop { timestamp }).await?;
        if job.mode == Mode::Stream {
            self.send(Outgoing::SynthesizeStopped).await?;
        }
        self.flush().await?;
        tracing::info!(
            request_id = %job.id, frontend = "wyoming", peer = %self.peer,
            mode = job.mode.label(), voice = %job.voice, cached, complete = true,
            samples = job.samples, characters = job.chars,
            ms = job.started.elapsed().as_millis() as u64, "speech streamed"
        );
        Ok(())
    }

    async fn start_audio(&mut self, job: &mut Job) -> Result<(), Failure> {
        if !job.started_audio {
            job.started_audio = true;
            self.send(Outgoing::AudioStart(job.format)).await?;
        }
        Ok(())
    }

    /// Writes an event; a client that takes nothing for the idle timeout
    /// is given up on, so that its session does not hold the engine.
    async fn send(&mut self, event: Outgoing) -> Result<(), Failure> {
        let frame = event.into_frame();
        bounded(self.settings.idle_timeout, self.conn.write_frame(&frame)).await
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        bounded(self.settings.idle_timeout, self.conn.flush()).await
    }

    /// The voice a request names, else the first of its language, else the
    /// default; and its speaker, by name or id.
    async fn pick_voice(
        &self,
        choice: Option<VoiceChoice>,
    ) -> Result<(Arc<VoiceInfo>, VoiceOptions), Failure> {
        let choice = choice.unwrap_or_default();
        let name = choice.name.filter(|n| !n.is_empty());
        let language = choice.language.filter(|l| !l.is_empty());
        let voice = match (name, language) {
            (Some(name), _) => self.speech.voice(Some(&name)).await?,
            (None, Some(language)) => match self.speech.voice_of_language(&language).await {
                Some(voice) => voice,
                None => self.speech.voice(None).await?,
            },
            (None, None) => self.speech.voice(None).await?,
        };
        // The package sends speakers as strings: a number that is no
        // speaker's name is an id.
        let speaker = choice.speaker.map(|speaker| match speaker {
            Speaker::Name(name) if !voice.speakers.contains_key(&name) => {
                name.parse().map(Speaker::Id).unwrap_or(Speaker::Name(name))
            }
            other => other,
        });
        let options = VoiceOptions {
            speaker,
            ..Default::default()
        };
        Ok((voice, options))
    }

    /// piperd's one TTS program and every voice whose config reads.
    async fn info(&self) -> TtsProgram {
        let piper = || Attribution {
            name: "rhasspy".into(),
            url: "https://github.com/rhasspy/piper".into(),
        };
        let mut voices = Vec::new();
        for lookup in self.speech.voices().await {
            match lookup {
                Ok(voice) => voices.push(TtsVoice {
                    name: voice.name.clone(),
                    attribution: piper(),
                    installed: true,
                    description: Some(voice.name.clone()),
                    version: None,
                    languages: vec![voice.language.clone()],
                    speakers: speakers(&voice),
                }),
                Err(err) => tracing::warn!("voice left out of the Wyoming info: {err}"),
            }
        }
        TtsProgram {
            name: "piperd".into(),
            attribution: piper(),
            installed: true,
            description: Some("Piper neural text to speech, served by piperd".into()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            voices,
            supports_synthesize_streaming: true,
        }
    }
}

/// A multi-speaker voice's speakers in id order; `None` for one speaker.
fn speakers(voice: &VoiceInfo) -> Option<Vec<TtsSpeaker>> {
    if voice.num_speakers <= 1 {
        return None;
    }
    let mut named: Vec<(u32, String)> = voice
        .speakers
        .iter()
        .map(|(name, id)| (*id, name.clone()))
        .collect();
    if named.is_empty() {
        named = (0..voice.num_speakers)
            .map(|id| (id, id.to_string()))
            .collect();
    }
    named.sort();
    Some(
        named
            .into_iter()
            .map(|(_, name)| TtsSpeaker { name })
            .collect(),
    )
}

/// Records a request answered to its end.
fn finished(job: Job) {
    counter!(m::WYOMING_REQUESTS, "mode" => job.mode.label(), "outcome" => "done").increment(1);
    histogram!(m::WYOMING_DURATION, "mode" => job.mode.label())
        .record(job.started.elapsed().as_secs_f64());
}

/// Socket work bounded by `limit`.
async fn bounded<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, CodecError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, work).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(Failure::Stalled(limit)),
    }
}

/// The next event of the running request's session.
async fn next_event(job: &mut Option<Job>) -> Option<SpeechEvent> {
    match job {
        Some(job) => job.session.next().await,
        None => std::future::pending().await,
    }
}

fn count_event(kind: &str) {
    let label = KNOWN_TYPES
        .iter()
        .find(|known| **known == kind)
        .copied()
        .unwrap_or("other");
    counter!(m::WYOMING_EVENTS, "type" => label).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_errors_keep_the_codes_of_the_http_api() {
        let cases = [
            (SpeechError::TextTooLong(100_001), "text_too_long"),
            (
                SpeechError::Voice(VoiceError::NotFound {
                    name: "x".into(),
                    available: vec!["a".into()],
                }),
                "voice_not_found",
            ),
            (
                SpeechError::InvalidParameter {
                    param: "speaker",
                    message: "no".into(),
                },
                "invalid_parameter",
            ),
            (SpeechError::Overloaded { waiting: 3 }, "overloaded"),
            (SynthError::EngineTimeout.into(), "engine_timeout"),
            (SynthError::ShuttingDown.into(), "shutting_down"),
        ];
        for (err, code) in cases {
            assert_eq!(Failure::Speech(err).code(), code);
        }
        assert_eq!(
            Failure::Codec(CodecError::LineTooLong).code(),
            "event_too_large"
        );
        assert_eq!(Failure::Codec(CodecError::NoType).code(), "invalid_event");
        assert_eq!(
            Failure::Incomplete(Duration::ZERO).code(),
            "incomplete_event"
        );
    }

    #[test]
    fn an_unknown_voice_names_the_voices_there_are() {
        let failure = Failure::Speech(SpeechError::Voice(VoiceError::NotFound {
            name: "nope".into(),
            available: vec!["a".into(), "b".into()],
        }));
        let text = error_text(&failure);
        assert!(text.contains("nope") && text.contains("a, b"), "{text}");
    }
}
