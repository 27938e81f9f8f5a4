//! One ElevenLabs socket: messages in, contexts' audio out.
//!
//! The socket's task reads messages and writes what its contexts say.
//! Each context is a task of its own around one speech session, fed text
//! through a channel and reporting audio, its end or its failure through
//! another (bounded, so a client that reads slowly slows its contexts, not
//! the server's memory). Closing a context drops its input: its task ends
//! at once, dropping its session, and the scheduler takes its sentences back.

use std::collections::HashMap;
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
use crate::speech::{Session, SpeechError, SpeechEvent};
use crate::voices::VoiceInfo;

/// How long the last messages (an error, a close) may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The context of stream-input, and of multi-stream-input messages that
/// name none.
const DEFAULT_CONTEXT: &str = "default";

/// What a context's task tells the socket.
enum Out {
    /// Encoded audio, with the per-character timing of the text it speaks
    /// when known (`None` until word timings are measured by the core).
    Audio {
        context: Arc<str>,
        bytes: Bytes,
        alignment: Option<protocol::CharAlignment>,
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
    /// The input ended (`{"text": ""}` or `close_socket`): its end is awaited.
    ending: bool,
    /// Set by the context's task while its sentences are being synthesized:
    /// the socket is not idle then, however long the engine takes.
    owing: Arc<AtomicBool>,
}

/// The socket's settings, read from the upgrade's query and path.
struct Setup {
    voice: Arc<VoiceInfo>,
    format: Output,
    inactivity: Duration,
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
    Ok(Setup {
        voice,
        format,
        inactivity: Duration::from_secs(inactivity),
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
            } => {
                if !self.contexts.contains_key(&context) {
                    return Ok(None); // closed meanwhile
                }
                let text = protocol::audio_message(
                    &bytes,
                    alignment.as_ref(),
                    None,
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
                    // An interruption when its audio is not done: the
                    // session drops with the task, and its sentences leave
                    // the engine at once.
                    if self.contexts.remove(&id).is_some() {
                        send(ws, protocol::final_message(Some(&id))).await?;
                    }
                    return Ok(None);
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
                let context = &self.contexts[&id];
                if !text.is_empty() {
                    let _ = context.input.send(In::Text(text));
                }
                if message.flush {
                    let _ = context.input.send(In::Flush);
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
        let session = self.state.speech.open(self.setup.voice.clone(), options)?;
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

/// A context's task: text into its session, its audio out, encoded.
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
    let mut chars = 0usize;
    let mut first_audio_ms = None;
    let outcome = loop {
        owing.store(session.owes_speech(), Ordering::Relaxed);
        tokio::select! {
            // Input first: a closed context stops before more audio is made.
            biased;
            input = inbox.recv() => {
                let pushed = match input {
                    Some(In::Text(text)) => {
                        chars += crate::text::char_count(&text);
                        session.push(&text)
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
            event = session.next() => match event {
                Some(SpeechEvent::Audio(pcm)) => {
                    first_audio_ms.get_or_insert(started.elapsed().as_millis() as u64);
                    let bytes = match encoder.push(&pcm) {
                        Ok(bytes) => bytes,
                        Err(err) => {
                            let err = SpeechError::Internal(err.to_string());
                            let _ = out.send(Out::Failed(id.clone(), err)).await;
                            break "failed";
                        }
                    };
                    if !bytes.is_empty() {
                        // Word timings (issue "Word timestamps") fill this:
                        // never an estimate.
                        let audio = Out::Audio { context: id.clone(), bytes, alignment: None };
                        if out.send(audio).await.is_err() {
                            break "closed";
                        }
                    }
                }
                Some(SpeechEvent::SentenceEnd { .. }) => {}
                Some(SpeechEvent::Done(_)) => {
                    if let Ok(tail) = encoder.finish() {
                        if !tail.is_empty() {
                            let audio = Out::Audio { context: id.clone(), bytes: tail, alignment: None };
                            let _ = out.send(audio).await;
                        }
                    }
                    let _ = out.send(Out::Final(id.clone())).await;
                    break "done";
                }
                Some(SpeechEvent::Failed(err)) => {
                    let _ = out.send(Out::Failed(id.clone(), err)).await;
                    break "failed";
                }
                None => break "done",
            }
        }
    };
    counter!(m::ELEVENLABS_CONTEXTS, "outcome" => outcome).increment(1);
    tracing::info!(
        request_id = %ctx.id, frontend = "elevenlabs", context = %id, voice = %session.voice().name,
        chars, format = %format, outcome, first_audio_ms,
        ms = started.elapsed().as_millis() as u64, "speech streamed"
    );
}
