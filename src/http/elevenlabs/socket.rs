//! One ElevenLabs socket: messages in, contexts' audio out.
//!
//! The socket's task reads messages and writes what its contexts say.
//! Each context is a task of its own around one speech session, fed text
//! through a channel and reporting audio, its end or its failure through
//! another (bounded, so a client that reads slowly slows its contexts, not
//! the server's memory). Closing a context drops its input: its task ends
//! at once, dropping its session, and the scheduler takes its sentences back.
//!
//! Every audio message carries the timing of the characters whose audio
//! starts in it, measured by the engine (never estimated): a context holds
//! a sentence's audio in its [`PendingSentence`] until the sentence's words
//! are timed, then sends it cut at character starts, about a second a
//! message.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use metrics::{counter, gauge};
use tokio::sync::mpsc;
use warp::filters::ws::{Message, WebSocket};

use super::protocol::{self, ClientMessage, Kind, SocketError};
use super::Upgrade;
use crate::audio::{AudioFormat, Encoder};
use crate::engine::SynthOptions;
use crate::http::{observe, AppState, RequestCtx};
use crate::metrics as m;
use crate::speech::encode::{encoder_for, Output};
use crate::speech::{char_samples, Session, SpeechError, SpeechEvent, SpokenLine, WordTime};
use crate::voices::VoiceInfo;

/// How long the last messages (an error, a close) may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The context of stream-input, and of multi-stream-input messages that
/// name none.
const DEFAULT_CONTEXT: &str = "default";

/// What a context's task tells the socket.
enum Out {
    /// Encoded audio, with the timing of the characters that start in it,
    /// of the text as sent and as spoken (`None` when the engine did not
    /// time the sentence's words).
    Audio {
        context: Arc<str>,
        bytes: Bytes,
        alignment: Option<protocol::CharAlignment>,
        normalized: Option<protocol::CharAlignment>,
    },
    Final(Arc<str>),
    Failed(Arc<str>, SpeechError),
}

/// What the socket tells a context's task.
enum In {
    Text(String),
    Flush,
    End,
}

struct Context {
    /// Dropping it ends the context's task at once, and so its session.
    input: mpsc::UnboundedSender<In>,
    /// The input ended (`{"text": ""}`, `close_socket`, or `close_context`
    /// after a flush): its end is awaited.
    ending: bool,
    /// The last message for it was a flush, with no text since.
    flushed: bool,
    /// Set by the context's task while its sentences are being synthesized:
    /// the socket is not idle then, however long the engine takes.
    owing: Arc<AtomicBool>,
}

/// The socket's settings, read from the upgrade's query and path.
struct Setup {
    voice: Arc<VoiceInfo>,
    format: Output,
    inactivity: Duration,
    /// `enable_ssml_parsing=true`: each context's text is SSML.
    ssml: bool,
}

/// Serves one socket until it closes.
pub(super) async fn serve(
    mut ws: WebSocket,
    state: Arc<AppState>,
    ctx: RequestCtx,
    upgrade: Upgrade,
) {
    gauge!(m::ELEVENLABS_SOCKETS_OPEN).increment(1.0);
    let route = upgrade.kind.route();
    let ended = match setup(&state, &upgrade).await {
        Ok(setup) => {
            let mut socket = Socket {
                state: state.clone(),
                kind: upgrade.kind,
                setup,
                authorized: authorized(&state, upgrade.header_key.as_deref()),
                contexts: HashMap::new(),
                closing_socket: false,
                ctx: ctx.clone(),
            };
            socket.run(&mut ws).await
        }
        Err(err) => Err(err),
    };
    let outcome = match &ended {
        Ok(()) => "closed",
        Err(err) => err.code(),
    };
    if let Err(err) = ended {
        counter!(m::ERRORS, "code" => err.code()).increment(1);
        tracing::info!(request_id = %ctx.id, route, error = %err, "websocket closed on an error");
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            ws.send(Message::text(err.message())).await?;
            ws.send(Message::close_with(err.close_code(), err.close_reason()))
                .await?;
            // Read until the client answers the close, so that it gets both.
            while let Some(Ok(_)) = ws.next().await {}
            Ok::<_, warp::Error>(())
        })
        .await;
    }
    gauge!(m::ELEVENLABS_SOCKETS_OPEN).decrement(1.0);
    observe(
        route,
        "GET",
        warp::http::StatusCode::SWITCHING_PROTOCOLS,
        ctx.started,
    );
    tracing::info!(request_id = %ctx.id, route, outcome,
        ms = ctx.started.elapsed().as_millis() as u64, "websocket ended");
}

/// Voice, format and timeout, from the path and query.
async fn setup(state: &AppState, upgrade: &Upgrade) -> Result<Setup, SocketError> {
    let inactivity =
        protocol::inactivity_timeout(upgrade.query.get("inactivity_timeout").map(String::as_str))?;
    let id = upgrade.voice_id.as_str();
    let name = state
        .config()
        .elevenlabs_voices
        .get(&id.to_ascii_lowercase())
        .cloned()
        .unwrap_or_else(|| id.to_string());
    let voice = state.speech.voice(Some(&name)).await?;
    let format_name = upgrade
        .query
        .get("output_format")
        .map(String::as_str)
        .unwrap_or(protocol::DEFAULT_OUTPUT_FORMAT);
    let format = protocol::output_format(format_name, voice.sample_rate)?;
    let ssml =
        protocol::ssml_parsing(upgrade.query.get("enable_ssml_parsing").map(String::as_str))?;
    Ok(Setup {
        voice,
        format,
        inactivity: Duration::from_secs(inactivity),
        ssml,
    })
}

/// Whether a key is needed no more: keys are off, or the upgrade carried one.
fn authorized(state: &AppState, key: Option<&str>) -> bool {
    let keys = &state.config().api_keys;
    keys.is_empty() || key.is_some_and(|key| crate::http::routes::key_matches(keys, key))
}

struct Socket {
    state: Arc<AppState>,
    kind: Kind,
    setup: Setup,
    authorized: bool,
    contexts: HashMap<Arc<str>, Context>,
    /// `close_socket` came: close once every context has ended.
    closing_socket: bool,
    ctx: RequestCtx,
}

impl Socket {
    /// Reads and writes until the socket is done: `Ok` when it closed
    /// normally (by either side), else the error to send.
    async fn run(&mut self, ws: &mut WebSocket) -> Result<(), SocketError> {
        let (out_tx, mut out_rx) = mpsc::channel::<Out>(32);
        let sockets = self.state.sockets.clone();
        let mut last_heard = Instant::now();
        let mut draining = false;
        loop {
            if draining && self.contexts.is_empty() {
                return self.close(ws, 1001, "shutting_down").await;
            }
            let idle_until = tokio::time::Instant::from_std(last_heard + self.setup.inactivity);
            tokio::select! {
                biased;
                _ = sockets.cut().cancelled() => return Err(SocketError::ShuttingDown),
                _ = sockets.closing().cancelled(), if !draining => draining = true,
                out = out_rx.recv() => {
                    // The socket holds a sender: the channel never closes first.
                    let Some(out) = out else { return Ok(()) };
                    last_heard = Instant::now();
                    if let Some(done) = self.write(ws, out).await? {
                        return done;
                    }
                }
                message = ws.next() => {
                    last_heard = Instant::now();
                    let message = match message {
                        None => return Ok(()),
                        Some(Ok(message)) => message,
                        Some(Err(err)) => return read_error(err),
                    };
                    if message.is_close() {
                        return Ok(());
                    }
                    if message.is_binary() {
                        return Err(SocketError::Binary);
                    }
                    if message.as_bytes().len() > protocol::MAX_MESSAGE_BYTES {
                        return Err(SocketError::MessageTooLarge);
                    }
                    let Ok(text) = message.to_str() else { continue }; // ping, pong
                    let message = ClientMessage::parse(text)?;
                    if let Some(done) = self.handle(ws, message, &out_tx).await? {
                        return done;
                    }
                }
                _ = tokio::time::sleep_until(idle_until) => {
                    // Speech still owed to the client (a busy engine, a long
                    // queue) is not the client's silence.
                    if self.contexts.values().any(|c| c.owing.load(Ordering::Relaxed)) {
                        last_heard = Instant::now();
                        continue;
                    }
                    return Err(SocketError::InputTimeout(self.setup.inactivity.as_secs()));
                }
            }
        }
    }

    /// Sends what a context said. `Some` when the socket is done.
    async fn write(
        &mut self,
        ws: &mut WebSocket,
        out: Out,
    ) -> Result<Option<Result<(), SocketError>>, SocketError> {
        let multi = self.kind == Kind::Multi;
        let label = |context: &Arc<str>| multi.then(|| context.to_string());
        match out {
            Out::Audio {
                context,
                bytes,
                alignment,
                normalized,
            } => {
                if !self.contexts.contains_key(&context) {
                    return Ok(None); // closed meanwhile
                }
                let text = protocol::audio_message(
                    &bytes,
                    alignment.as_ref(),
                    normalized.as_ref(),
                    label(&context).as_deref(),
                );
                send(ws, text).await?;
            }
            Out::Final(context) => {
                if self.contexts.remove(&context).is_none() {
                    return Ok(None);
                }
                send(ws, protocol::final_message(label(&context).as_deref())).await?;
                // stream-input ends with its one context; multi-stream-input
                // after close_socket, once every context has.
                if !multi || (self.closing_socket && self.contexts.is_empty()) {
                    return Ok(Some(self.close(ws, 1000, "").await));
                }
            }
            Out::Failed(context, err) => {
                if self.contexts.contains_key(&context) {
                    return Err(err.into());
                }
            }
        }
        Ok(None)
    }

    /// Acts on one client message. `Some` when the socket is done.
    async fn handle(
        &mut self,
        ws: &mut WebSocket,
        message: ClientMessage,
        out: &mpsc::Sender<Out>,
    ) -> Result<Option<Result<(), SocketError>>, SocketError> {
        if !self.authorized {
            let keys = &self.state.config().api_keys;
            match message.api_key.as_deref() {
                Some(key) if crate::http::routes::key_matches(keys, key) => self.authorized = true,
                _ => return Err(SocketError::Unauthorized),
            }
        }
        match self.kind {
            Kind::Single => {
                let id: Arc<str> = Arc::from(DEFAULT_CONTEXT);
                let text = message.text.unwrap_or_default();
                let ending = text.is_empty();
                match self.contexts.get(&id) {
                    Some(context) if context.ending => return Ok(None),
                    Some(_) => {}
                    None if self.closing_socket => return Ok(None),
                    // Ended before anything was said: the end is at once.
                    None if ending => {
                        send(ws, protocol::final_message(None)).await?;
                        return Ok(Some(self.close(ws, 1000, "").await));
                    }
                    None => self.open(id.clone(), message.speed, out)?,
                }
                let context = self.contexts.get_mut(&id).expect("just opened");
                if ending {
                    context.ending = true;
                    let _ = context.input.send(In::End);
                    self.closing_socket = true;
                    return Ok(None);
                }
                let _ = context.input.send(In::Text(text));
                if message.flush {
                    let _ = context.input.send(In::Flush);
                }
            }
            Kind::Multi => {
                if message.close_socket {
                    self.closing_socket = true;
                    for context in self.contexts.values_mut() {
                        context.ending = true;
                        let _ = context.input.send(In::End);
                    }
                    if self.contexts.is_empty() {
                        return Ok(Some(self.close(ws, 1000, "").await));
                    }
                    return Ok(None);
                }
                if self.closing_socket {
                    return Ok(None);
                }
                let named = message.context_id.is_some();
                let id: Arc<str> =
                    Arc::from(message.context_id.as_deref().unwrap_or(DEFAULT_CONTEXT));
                if message.close_context {
                    match self.contexts.get_mut(&id) {
                        // Right after a flush, the end of a turn (Pipecat
                        // and LiveKit close each turn so): what was flushed
                        // is spoken, then `isFinal`.
                        Some(context) if context.flushed && !context.ending => {
                            context.ending = true;
                            let _ = context.input.send(In::End);
                        }
                        // Otherwise an interruption (or a second close): the
                        // session drops with the task, and its sentences
                        // leave the engine at once.
                        Some(_) => {
                            self.contexts.remove(&id);
                            send(ws, protocol::final_message(Some(&id))).await?;
                        }
                        None => {}
                    }
                    return Ok(None);
                }
                if self.contexts.get(&id).is_some_and(|c| c.ending) {
                    return Ok(None); // closed: its last sentences are being spoken
                }
                let text = message.text.unwrap_or_default();
                // `{"text": ""}`, with or without a context: a keepalive.
                if text.is_empty() && !message.flush {
                    return Ok(None);
                }
                if text.is_empty() && !named && !self.contexts.contains_key(&id) {
                    return Ok(None);
                }
                if !self.contexts.contains_key(&id) {
                    if self.contexts.len() >= protocol::MAX_CONTEXTS {
                        return Err(SocketError::TooManyContexts);
                    }
                    self.open(id.clone(), message.speed, out)?;
                }
                let context = self.contexts.get_mut(&id).expect("just opened");
                if !text.is_empty() {
                    let _ = context.input.send(In::Text(text));
                    context.flushed = false;
                }
                if message.flush {
                    let _ = context.input.send(In::Flush);
                    context.flushed = true;
                }
            }
        }
        Ok(None)
    }

    /// Opens a context: a speech session and its task.
    fn open(
        &mut self,
        id: Arc<str>,
        speed: Option<f32>,
        out: &mpsc::Sender<Out>,
    ) -> Result<(), SocketError> {
        let options = SynthOptions {
            // Piper's length scale is the inverse of a speed.
            length_scale: speed.filter(|s| *s != 1.0).map(|s| 1.0 / s),
            ..SynthOptions::default()
        };
        let speech = &self.state.speech;
        let voice = self.setup.voice.clone();
        let session = match self.setup.ssml {
            true => speech.open_ssml(voice, options, true)?,
            false => speech.open(voice, options)?,
        };
        let encoder = encoder_for(self.setup.format, session.sample_rate())?;
        let (input, inbox) = mpsc::unbounded_channel();
        let owing = Arc::new(AtomicBool::new(false));
        tokio::spawn(speak(
            session,
            encoder,
            inbox,
            out.clone(),
            id.clone(),
            self.ctx.clone(),
            self.setup.format.format,
            owing.clone(),
        ));
        self.contexts.insert(
            id,
            Context {
                input,
                ending: false,
                flushed: false,
                owing,
            },
        );
        Ok(())
    }

    /// Closes the socket with `code`; its contexts end with it.
    async fn close(
        &mut self,
        ws: &mut WebSocket,
        code: u16,
        reason: &'static str,
    ) -> Result<(), SocketError> {
        self.abort_all();
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            ws.send(Message::close_with(code, reason)).await?;
            while let Some(Ok(_)) = ws.next().await {}
            Ok::<_, warp::Error>(())
        })
        .await;
        Ok(())
    }

    /// Ends every context: its task sees its input gone, drops its session
    /// (the scheduler takes its sentences back) and logs its end.
    fn abort_all(&mut self) {
        self.contexts.clear();
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // However the socket ends, its contexts' sessions end with it.
        self.abort_all();
    }
}

async fn send(ws: &mut WebSocket, text: String) -> Result<(), SocketError> {
    // A client that is gone is not an error to tell it: the loop ends when
    // the read side sees the close.
    let _ = ws.send(Message::text(text)).await;
    Ok(())
}

/// A read that failed: too large a message is the client's error, the rest
/// (a reset, a protocol violation) just ends the socket.
fn read_error(err: warp::Error) -> Result<(), SocketError> {
    use std::error::Error as _;
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(cause) = source {
        if let Some(tungstenite) = cause.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
            if matches!(
                tungstenite,
                tokio_tungstenite::tungstenite::Error::Capacity(_)
            ) {
                return Err(SocketError::MessageTooLarge);
            }
        }
        source = cause.source();
    }
    tracing::debug!("websocket read failed: {err}");
    Ok(())
}

/// A context's task: text into its session, its audio out, encoded and
/// aligned.
#[allow(clippy::too_many_arguments)] // what the socket gives each context's task
async fn speak(
    mut session: Session,
    mut encoder: Box<dyn Encoder>,
    mut inbox: mpsc::UnboundedReceiver<In>,
    out: mpsc::Sender<Out>,
    id: Arc<str>,
    ctx: RequestCtx,
    format: AudioFormat,
    owing: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let rate = session.sample_rate();
    // The text as sent, and how much of it the messages sent have aligned.
    let mut text = String::new();
    let mut aligned = 0usize;
    let mut pending = PendingSentence::default();
    let mut first_audio_ms = None;
    let outcome = loop {
        owing.store(session.owes_speech(), Ordering::Relaxed);
        tokio::select! {
            // Input first: a closed context stops before more audio is made.
            biased;
            input = inbox.recv() => {
                let pushed = match input {
                    Some(In::Text(more)) => {
                        text.push_str(&more);
                        session.push(&more)
                    }
                    Some(In::Flush) => session.flush(),
                    Some(In::End) => session.end(),
                    None => break "closed",
                };
                if let Err(err) = pushed {
                    let _ = out.send(Out::Failed(id.clone(), err)).await;
                    break "failed";
                }
            }
            event = session.next() => {
                let pieces = match event {
                    Some(SpeechEvent::Audio(pcm)) => {
                        pending.push(&pcm);
                        pending.ready(rate)
                    }
                    Some(SpeechEvent::SentenceEnd { span, words, spoken }) => {
                        let audio = pending.held();
                        let timing =
                            SentenceTiming::new(&text, &mut aligned, span, &words, spoken.as_deref(), audio);
                        pending.timed(timing);
                        pending.ready(rate)
                    }
                    Some(SpeechEvent::Done(_)) => {
                        // Audio no sentence end followed (none is expected)
                        // goes without timing, then the encoder's tail.
                        let mut pieces = pending.drain();
                        match encoder.finish() {
                            Ok(tail) if !tail.is_empty() => pieces.push(Piece::encoded(tail)),
                            _ => {}
                        }
                        if !emit(&out, &id, encoder.as_mut(), pieces, &mut first_audio_ms, started).await {
                            break "closed";
                        }
                        let _ = out.send(Out::Final(id.clone())).await;
                        break "done";
                    }
                    Some(SpeechEvent::Failed(err)) => {
                        let _ = out.send(Out::Failed(id.clone(), err)).await;
                        break "failed";
                    }
                    None => break "done",
                };
                if !emit(&out, &id, encoder.as_mut(), pieces, &mut first_audio_ms, started).await {
                    break "closed";
                }
            }
        }
    };
    counter!(m::ELEVENLABS_CONTEXTS, "outcome" => outcome).increment(1);
    tracing::info!(
        request_id = %ctx.id, frontend = "elevenlabs", context = %id, voice = %session.voice().name,
        chars = crate::text::char_count(&text), format = %format, outcome, first_audio_ms,
        ms = started.elapsed().as_millis() as u64, "speech streamed"
    );
}

/// Encodes and sends a context's messages; `false` once the socket is gone.
async fn emit(
    out: &mpsc::Sender<Out>,
    id: &Arc<str>,
    encoder: &mut dyn Encoder,
    pieces: Vec<Piece>,
    first_audio_ms: &mut Option<u64>,
    started: Instant,
) -> bool {
    for piece in pieces {
        let bytes = match piece.pcm {
            Audio::Pcm(pcm) => match encoder.push(&pcm) {
                Ok(bytes) => bytes,
                Err(err) => {
                    let err = SpeechError::Internal(err.to_string());
                    let _ = out.send(Out::Failed(id.clone(), err)).await;
                    return false;
                }
            },
            Audio::Encoded(bytes) => bytes,
        };
        // An encoder may hold a short piece back: its timing still goes,
        // with no audio, so that a client's clock stays with the audio.
        if bytes.is_empty() && piece.alignment.is_none() {
            continue;
        }
        first_audio_ms.get_or_insert(started.elapsed().as_millis() as u64);
        let audio = Out::Audio {
            context: id.clone(),
            bytes,
            alignment: piece.alignment,
            normalized: piece.normalized,
        };
        if out.send(audio).await.is_err() {
            return false;
        }
    }
    true
}

/// Audio of one message yet to be sent: voice PCM to encode, or bytes the
/// encoder already made.
#[derive(Debug, PartialEq)]
enum Audio {
    Pcm(Bytes),
    Encoded(Bytes),
}

/// One message's audio and the characters that start in it.
#[derive(Debug, PartialEq)]
struct Piece {
    pcm: Audio,
    alignment: Option<protocol::CharAlignment>,
    normalized: Option<protocol::CharAlignment>,
}

impl Piece {
    fn encoded(bytes: Bytes) -> Piece {
        Piece {
            pcm: Audio::Encoded(bytes),
            alignment: None,
            normalized: None,
        }
    }
}

/// Characters, each with the samples of the context's audio it is spoken over.
type TimedChars = Vec<(char, Range<u64>)>;

/// A sentence's characters, each with the samples of the context's audio
/// it is spoken over: as sent, and as spoken (the normalizer's line); and
/// where the sentence's audio ends. `None` in `chars` when the engine did
/// not time its words: its audio then goes without alignment.
#[derive(Debug, Clone, PartialEq)]
struct SentenceTiming {
    chars: Option<(TimedChars, TimedChars)>,
    end: u64,
}

impl SentenceTiming {
    /// The timing of the sentence at `span` of `text` (the context's text
    /// as sent), whose audio is `audio`. Its characters are those from
    /// `aligned` (the end of what earlier messages aligned: the init `" "`,
    /// spaces between sentences, and sentences the engine found nothing to
    /// say in) to the end of the spaces after it, so that the characters of
    /// a context's messages join into the text sent. The spoken line ends
    /// in one space, as ElevenLabs' normalized text does, so that a client
    /// that reads words between spaces sees each sentence's last word end.
    fn new(
        text: &str,
        aligned: &mut usize,
        span: Range<usize>,
        words: &[WordTime],
        spoken: Option<&SpokenLine>,
        audio: Range<u64>,
    ) -> SentenceTiming {
        let end = audio.end;
        let (Some(spoken), false) = (spoken, words.is_empty()) else {
            return SentenceTiming { chars: None, end };
        };
        let Some(span_end) = text.get(span.clone()).map(|_| span.end) else {
            return SentenceTiming { chars: None, end };
        };
        let from = (*aligned).min(span.start);
        let after = &text[span_end..];
        let to = span_end + (after.len() - after.trim_start().len());
        *aligned = to;
        let sent = char_samples(text, from..to, words, audio.clone());
        let line = format!("{} ", spoken.line);
        let said = char_samples(&line, 0..line.len(), &spoken.words, audio);
        SentenceTiming {
            chars: Some((sent, said)),
            end,
        }
    }
}

/// About this much audio goes in one message, cut at a character's start.
const MESSAGE_SECONDS: u64 = 1;

/// A context's audio not sent yet, held until the characters it speaks are
/// timed. Today a sentence's words are timed once its audio is all made
/// ([`SpeechEvent::SentenceEnd`]), so the whole sentence waits here; when
/// timing comes before the audio, [`PendingSentence::ready`] sends each
/// piece as soon as its audio is made. Dropping it (a closed context) drops
/// what it holds.
#[derive(Debug, Default)]
struct PendingSentence {
    /// Voice PCM held, from sample `start` of the context's audio.
    pcm: Vec<u8>,
    start: u64,
    /// The timed characters not sent yet (as sent, as spoken), in order.
    sent: VecDeque<(char, Range<u64>)>,
    said: VecDeque<(char, Range<u64>)>,
    /// Where the timed sentence's audio ends, and whether it is aligned.
    end: Option<(u64, bool)>,
}

impl PendingSentence {
    fn push(&mut self, pcm: &[u8]) {
        self.pcm.extend_from_slice(pcm);
    }

    /// The samples of the context's audio held.
    fn held(&self) -> Range<u64> {
        self.start..self.start + self.pcm.len() as u64 / 2
    }

    /// The characters of the sentence being made, and where its audio ends.
    fn timed(&mut self, timing: SentenceTiming) {
        let aligned = timing.chars.is_some();
        if let Some((sent, said)) = timing.chars {
            self.sent.extend(sent);
            self.said.extend(said);
        }
        self.end = Some((timing.end, aligned));
    }

    /// The messages that can go: pieces of about [`MESSAGE_SECONDS`] of the
    /// timed sentence, cut where a character starts, as far as its audio is
    /// held; the rest of it once its audio is all there.
    fn ready(&mut self, rate: u32) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let Some((end, aligned)) = self.end else {
            return pieces;
        };
        if end <= self.start {
            // A sentence with no audio: nothing to send its characters with.
            self.sent.clear();
            self.said.clear();
            self.end = None;
            return pieces;
        }
        let least = u64::from(rate) * MESSAGE_SECONDS;
        loop {
            let held = self.held();
            if held.is_empty() {
                break;
            }
            // The first character to start a second or more after this
            // message's start, if its audio is held and it is not the end.
            let cut = self
                .sent
                .iter()
                .map(|(_, samples)| samples.start)
                .find(|&at| at >= held.start + least)
                .filter(|&at| at < end && at <= held.end);
            let to = match cut {
                Some(at) => at,
                None if held.end >= end => end.min(held.end),
                None => break,
            };
            let last = to >= end;
            let take = |chars: &mut VecDeque<(char, Range<u64>)>| -> Vec<(char, Range<u64>)> {
                let count = if last {
                    chars.len()
                } else {
                    chars.iter().take_while(|(_, s)| s.start < to).count()
                };
                chars.drain(..count).collect()
            };
            let (sent, said) = (take(&mut self.sent), take(&mut self.said));
            let message = held.start..to;
            let align = |chars: &[(char, Range<u64>)]| {
                aligned.then(|| protocol::CharAlignment::of_message(chars, message.clone(), rate))
            };
            let bytes = ((to - held.start) * 2) as usize;
            let pcm = Bytes::from(self.pcm.drain(..bytes).collect::<Vec<u8>>());
            pieces.push(Piece {
                pcm: Audio::Pcm(pcm),
                alignment: align(&sent),
                normalized: align(&said),
            });
            self.start = to;
            if last {
                self.end = None;
                break;
            }
        }
        pieces
    }

    /// Everything held, untimed (the session ended without timing it).
    fn drain(&mut self) -> Vec<Piece> {
        self.sent.clear();
        self.said.clear();
        self.end = None;
        if self.pcm.is_empty() {
            return Vec::new();
        }
        self.start += self.pcm.len() as u64 / 2;
        vec![Piece {
            pcm: Audio::Pcm(Bytes::from(std::mem::take(&mut self.pcm))),
            alignment: None,
            normalized: None,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1000 samples a second: samples are milliseconds.
    const RATE: u32 = 1000;

    fn word(text: Range<usize>, samples: Range<u64>) -> WordTime {
        WordTime {
            text,
            phonemes: vec![samples.end],
            samples,
        }
    }

    fn alignment(piece: &Piece) -> (String, Vec<u64>, Vec<u64>) {
        let a = piece.alignment.as_ref().expect("aligned");
        (
            a.chars.concat(),
            a.char_start_times_ms.clone(),
            a.char_durations_ms.clone(),
        )
    }

    fn pcm_ms(piece: &Piece) -> u64 {
        match &piece.pcm {
            Audio::Pcm(pcm) => pcm.len() as u64 / 2,
            Audio::Encoded(_) => panic!("encoded"),
        }
    }

    #[test]
    fn characters_join_into_the_text_sent_and_spaces_go_with_their_sentence() {
        // The init " ", then two sentences; "Hi" spoken at 100..300 of the
        // first sentence's 500 samples.
        let text = " Hi there. Bye now.  ";
        let mut aligned = 0;
        let spoken = SpokenLine {
            line: "Hi there.".into(),
            words: vec![word(0..2, 100..300), word(3..8, 300..450)],
        };
        let words = [word(1..3, 100..300), word(4..9, 300..450)];
        let first = SentenceTiming::new(text, &mut aligned, 1..10, &words, Some(&spoken), 0..500);
        let (sent, said) = first.chars.clone().unwrap();
        let chars = |c: &[(char, Range<u64>)]| c.iter().map(|(ch, _)| *ch).collect::<String>();
        // From the start (the init " ") to the space after the sentence.
        assert_eq!(chars(&sent), " Hi there. ");
        assert_eq!(aligned, 11);
        assert_eq!(chars(&said), "Hi there. ");
        // The space before "Hi" shares the pause before it; "H" starts with the word.
        assert_eq!(sent[0].1, 0..100);
        assert_eq!(sent[1].1.start, 100);
        // Characters tile the sentence's audio, as sent and as spoken.
        for chars in [&sent, &said] {
            assert_eq!(chars.last().unwrap().1.end, 500);
            assert!(chars.windows(2).all(|w| w[0].1.end == w[1].1.start));
        }
        let words = [word(11..14, 600..700), word(15..18, 700..800)];
        let spoken = SpokenLine {
            line: "Bye now.".into(),
            words: vec![word(0..3, 600..700), word(4..7, 700..800)],
        };
        let second =
            SentenceTiming::new(text, &mut aligned, 11..19, &words, Some(&spoken), 500..900);
        let (sent, _) = second.chars.unwrap();
        assert_eq!(chars(&sent), "Bye now.  ");
        assert_eq!(aligned, text.len());
        // Words the engine did not time: no alignment, never an estimate.
        let mut at = 0;
        let untimed = SentenceTiming::new(text, &mut at, 1..10, &[], None, 0..500);
        assert_eq!(untimed.chars, None);
        assert_eq!(at, 0);
    }

    #[test]
    fn a_sentence_waits_for_its_timing_then_goes_in_pieces_cut_at_characters() {
        let mut pending = PendingSentence::default();
        // 2.5 s of audio, not timed yet: nothing goes.
        pending.push(&vec![0; 2 * 2500]);
        assert!(pending.ready(RATE).is_empty());
        let text = "One two three four.";
        let words = [
            word(0..3, 0..700),
            word(4..7, 700..1200),
            word(8..13, 1200..2100),
            word(14..18, 2100..2400),
        ];
        let spoken = SpokenLine {
            line: text.into(),
            words: words.to_vec(),
        };
        let mut aligned = 0;
        let timing = SentenceTiming::new(
            text,
            &mut aligned,
            0..text.len(),
            &words,
            Some(&spoken),
            pending.held(),
        );
        pending.timed(timing);
        let pieces = pending.ready(RATE);
        // Cut at the first character starting a second or more into each
        // piece: "t" of "two" is at 700, " " before "three" at 1200.
        let lengths: Vec<u64> = pieces.iter().map(pcm_ms).collect();
        assert_eq!(lengths.iter().sum::<u64>(), 2500);
        assert!(lengths.len() >= 2, "{lengths:?}");
        let mut joined = String::new();
        let mut offset = 0;
        for (piece, length) in pieces.iter().zip(&lengths) {
            let (chars, starts, durations) = alignment(piece);
            joined += &chars;
            // Times from the piece's own start: non-decreasing, within it.
            assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
            assert!(starts.last().unwrap() < length, "{starts:?} {length}");
            // Each piece's characters tile it (the first from its start,
            // since every cut is a character's start).
            assert_eq!(starts.last().unwrap() + durations.last().unwrap(), *length);
            if offset > 0 {
                assert_eq!(starts[0], 0);
            }
            offset += length;
            assert_eq!(
                piece.normalized.as_ref().unwrap().chars.concat().trim_end(),
                chars.trim_end()
            );
        }
        assert_eq!(joined, text);
        assert!(pending.held().is_empty());
        // The next sentence's audio starts where this one ended.
        pending.push(&[0; 20]);
        assert_eq!(pending.held(), 2500..2510);
        assert!(pending.ready(RATE).is_empty());
    }

    #[test]
    fn untimed_audio_goes_without_alignment_and_a_closed_context_drops_it() {
        let mut pending = PendingSentence::default();
        pending.push(&[1, 0, 2, 0]);
        pending.timed(SentenceTiming {
            chars: None,
            end: 2,
        });
        let pieces = pending.ready(RATE);
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].alignment, None);
        assert_eq!(pieces[0].pcm, Audio::Pcm(Bytes::from_static(&[1, 0, 2, 0])));
        // Held audio whose timing never comes goes out as is at the end.
        pending.push(&[3, 0]);
        let rest = pending.drain();
        assert_eq!(rest[0].pcm, Audio::Pcm(Bytes::from_static(&[3, 0])));
        assert!(pending.drain().is_empty());
    }
}
