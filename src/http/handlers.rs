//! Request handlers: parse, validate, ask the actors, answer.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ractor::rpc::CallResult;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use super::synthesis::{self, Speak, Spoken};
use super::{observe, ApiError, AppState, MAX_TEXT_CHARS};
use crate::audio::AudioFormat;
use crate::engine::SynthOptions;
use crate::scheduler::config_cache::ConfigMsg;
use crate::scheduler::supervisor::{EngineHealth, Health, SupervisorMsg};
use crate::scheduler::{AudioEvent, SynthJob};
use crate::text;
use crate::voices::{self, VoiceInfo};

/// How long a handler waits for an actor that should answer at once.
const ACTOR_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-request context: id for logs and `X-Request-Id`, start time.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub id: String,
    pub started: Instant,
}

impl RequestCtx {
    /// Uses the caller's `X-Request-Id` when it is sane, else makes one.
    pub fn new(incoming: Option<String>) -> RequestCtx {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = incoming
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 64
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
            })
            .unwrap_or_else(|| {
                format!(
                    "{:08x}-{:06}",
                    boot_tag(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                )
            });
        RequestCtx {
            id,
            started: Instant::now(),
        }
    }
}

/// A tag that differs between server runs, so ids do not repeat across restarts.
fn boot_tag() -> u32 {
    static TAG: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        (nanos as u32) ^ std::process::id().rotate_left(16)
    })
}

/// Finishes a non-streamed answer: error mapping, id header, metrics.
pub fn finish(
    route: &'static str,
    ctx: &RequestCtx,
    result: Result<Response, ApiError>,
) -> Response {
    let mut response = result.unwrap_or_else(ApiError::into_response);
    if let Ok(value) = HeaderValue::from_str(&ctx.id) {
        response.headers_mut().insert("x-request-id", value);
    }
    observe(route, "POST", response.status(), ctx.started);
    response
}

/// Speaker: an id or, for multi-speaker voices, a name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Speaker {
    Id(u32),
    Name(String),
}

/// Body of `POST /api/tts`.
#[derive(Debug, Deserialize)]
pub struct TtsRequest {
    pub text: String,
    #[serde(default)]
    pub voice_model: Option<String>,
    #[serde(default)]
    pub speaker: Option<Speaker>,
    #[serde(default)]
    pub length_scale: Option<f32>,
    #[serde(default)]
    pub noise_scale: Option<f32>,
    #[serde(default)]
    pub noise_w_scale: Option<f32>,
    #[serde(default)]
    pub sentence_silence: Option<f32>,
    #[serde(default)]
    pub volume: Option<f32>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub response_format: Option<String>,
}

/// Body of `POST /api/warmup`.
#[derive(Debug, Deserialize)]
pub struct WarmupRequest {
    #[serde(default)]
    pub voice_model: Option<String>,
}

/// Parses a JSON body, telling syntax errors from wrong fields.
pub fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::InvalidRequest(e.to_string()),
        _ => ApiError::InvalidJson(e.to_string()),
    })
}

pub fn check_range(
    param: &'static str,
    value: Option<f32>,
    min: f32,
    max: f32,
) -> Result<Option<f32>, ApiError> {
    match value {
        Some(v) if !(min..=max).contains(&v) => Err(ApiError::InvalidParameter {
            param,
            message: format!("{v} is outside {min}..={max}"),
        }),
        other => Ok(other),
    }
}

/// Text after validation, split for the engine.
pub struct Prepared {
    pub voice: Arc<VoiceInfo>,
    pub units: Vec<String>,
    pub chunks: usize,
    pub chars: usize,
}

/// Looks a voice up by the name a user gave, or the first voice if none.
pub async fn lookup_voice(
    state: &AppState,
    requested: Option<&str>,
) -> Result<Arc<VoiceInfo>, ApiError> {
    let name = match requested {
        Some(name) => name.to_string(),
        None => {
            let dir = state.config.voices_dir.clone();
            let names = tokio::task::spawn_blocking(move || voices::list_names(&dir))
                .await
                .unwrap_or_default();
            names
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::VoiceNotFound {
                    name: String::new(),
                    available: Vec::new(),
                })?
        }
    };
    let name_for_call = name.clone();
    match state
        .configs
        .call(
            |reply| ConfigMsg::Get(name_for_call, reply),
            Some(ACTOR_TIMEOUT),
        )
        .await
    {
        Ok(CallResult::Success(found)) => found.map_err(ApiError::from),
        _ => Err(ApiError::Internal("the config cache did not answer".into())),
    }
}

/// Validates text and splits it into engine lines.
pub fn prepare_text(
    config: &crate::config::Config,
    raw: &str,
) -> Result<(Vec<String>, usize, usize), ApiError> {
    if raw.trim().is_empty() {
        return Err(ApiError::EmptyText);
    }
    let chars = text::char_count(raw);
    if chars > MAX_TEXT_CHARS {
        return Err(ApiError::TextTooLong(chars));
    }
    let chunks = text::split_chunks(raw, config.chunk_size);
    let mut units = Vec::new();
    let mut speakable_chunks = 0;
    for chunk in &chunks {
        let before = units.len();
        for piece in
            text::split_units_at_clauses(chunk, config.unit_max_chars, config.clause_chars())
        {
            if text::is_speakable(piece) {
                units.push(text::engine_line(piece));
            }
        }
        if units.len() > before {
            speakable_chunks += 1;
        }
    }
    if units.is_empty() {
        return Err(ApiError::NoSpeakableText);
    }
    Ok((units, speakable_chunks, chars))
}

/// Hands a job to the supervisor and waits for its first event.
pub async fn start_job(
    state: &AppState,
    prepared: Prepared,
    options: SynthOptions,
) -> Result<(Bytes, mpsc::Receiver<AudioEvent>), ApiError> {
    let sentences = prepared
        .units
        .into_iter()
        .map(|line| crate::scheduler::Sentence { line, span: 0..0 })
        .collect();
    let (job, mut events) = SynthJob::whole(prepared.voice, sentences, options);
    if state
        .supervisor
        .send_message(SupervisorMsg::Synthesize(job))
        .is_err()
    {
        return Err(ApiError::ShuttingDown);
    }
    match events.recv().await {
        Some(AudioEvent::Audio { pcm, .. }) => Ok((pcm, events)),
        Some(AudioEvent::Failed(err)) => Err(err.into()),
        Some(AudioEvent::Done(_)) => Err(ApiError::NoSpeakableText),
        None => Err(ApiError::Internal("the voice worker stopped".into())),
    }
}

/// `POST /api/tts`.
pub async fn tts(state: AppState, ctx: RequestCtx, body: Bytes) -> Result<Response, Infallible> {
    let route = "/api/tts";
    let result = async {
        let request: TtsRequest = parse_json(&body)?;
        let format = match request.response_format.as_deref() {
            None => AudioFormat::Wav,
            Some(name) => AudioFormat::parse(name)
                .ok_or_else(|| ApiError::UnsupportedFormat(name.to_string()))?,
        };
        let mut options = SynthOptions {
            speaker_id: None,
            length_scale: check_range("length_scale", request.length_scale, 0.1, 10.0)?,
            noise_scale: check_range("noise_scale", request.noise_scale, 0.0, 2.0)?,
            noise_w_scale: check_range("noise_w_scale", request.noise_w_scale, 0.0, 2.0)?,
            sentence_silence: check_range("sentence_silence", request.sentence_silence, 0.0, 10.0)?,
            volume: check_range("volume", request.volume, 0.0, 10.0)?,
        };
        let (units, chunks, chars) = prepare_text(&state.config, &request.text)?;
        let voice = lookup_voice(&state, request.voice_model.as_deref()).await?;
        options.speaker_id = resolve_speaker(&voice, request.speaker)?;
        let prepared = Prepared {
            voice,
            units,
            chunks,
            chars,
        };
        let speak = Speak {
            prepared,
            options,
            format,
            stream: request.stream,
        };
        synthesis::speak(&state, &ctx, route, speak).await
    }
    .await;
    Ok(match result {
        Ok(Spoken::Streaming(response)) => response,
        Ok(Spoken::Complete(response)) => finish(route, &ctx, Ok(response)),
        Err(err) => {
            let response = finish(route, &ctx, Err(err));
            tracing::info!(request_id = %ctx.id, status = response.status().as_u16(),
                ms = ctx.started.elapsed().as_millis() as u64, "tts refused");
            response
        }
    })
}

pub fn resolve_speaker(
    voice: &VoiceInfo,
    speaker: Option<Speaker>,
) -> Result<Option<u32>, ApiError> {
    let invalid = |message: String| ApiError::InvalidParameter {
        param: "speaker",
        message,
    };
    match speaker {
        None => Ok(None),
        Some(Speaker::Id(id)) if id < voice.num_speakers => Ok(Some(id)),
        Some(Speaker::Id(id)) => Err(invalid(format!(
            "speaker {id} does not exist; voice {} has {} speaker(s)",
            voice.name, voice.num_speakers
        ))),
        Some(Speaker::Name(name)) => match voice.speakers.get(&name) {
            Some(id) => Ok(Some(*id)),
            None if voice.speakers.is_empty() && name.parse::<u32>().ok() == Some(0) => Ok(Some(0)),
            None => Err(invalid(format!(
                "speaker {name:?} does not exist; known: {:?}",
                voice.speakers.keys().collect::<Vec<_>>()
            ))),
        },
    }
}

/// `POST /api/warmup`.
pub async fn warmup(state: AppState, ctx: RequestCtx, body: Bytes) -> Result<Response, Infallible> {
    let result = async {
        let request: WarmupRequest = if body.iter().all(|b| b.is_ascii_whitespace()) {
            WarmupRequest { voice_model: None }
        } else {
            parse_json(&body)?
        };
        let voice = lookup_voice(&state, request.voice_model.as_deref()).await?;
        let name = voice.name.clone();
        let timeout =
            state.config.engine_start_timeout + state.config.queue_timeout + ACTOR_TIMEOUT;
        let answer = state
            .supervisor
            .call(|reply| SupervisorMsg::Warmup(voice, reply), Some(timeout))
            .await;
        match answer {
            Ok(CallResult::Success(Ok(info))) => Ok(warp::reply::json(&json!({
                "ok": true,
                "voice": name,
                "ready_ms": (info.ready_ms * 10.0).round() / 10.0,
                "engine": info.engine,
            }))
            .into_response()),
            Ok(CallResult::Success(Err(err))) => Err(err.into()),
            Ok(CallResult::Timeout) => Err(ApiError::EngineTimeout),
            _ => Err(ApiError::ShuttingDown),
        }
    }
    .await;
    Ok(finish("/api/warmup", &ctx, result))
}

async fn health_of(state: &AppState) -> Option<Health> {
    match state
        .supervisor
        .call(SupervisorMsg::Health, Some(ACTOR_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(health)) => Some(health),
        _ => None,
    }
}

/// `GET /health`: 200 when the server can serve, 503 when draining or the
/// engine cannot run. Load balancers route by it.
pub async fn health(state: AppState) -> Result<Response, Infallible> {
    let started = Instant::now();
    let dir = state.config.voices_dir.clone();
    let voices = tokio::task::spawn_blocking(move || voices::list_names(&dir).len())
        .await
        .unwrap_or_default();
    let draining = state.draining.load(Ordering::SeqCst);
    let health = health_of(&state).await;
    let mut body = json!({
        "ok": true,
        "max_processes": state.config.max_processes,
        "voices": voices,
        "uptime_s": state.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let mut error = None;
    match &health {
        Some(h) => {
            body["processes"] = json!(h.processes);
            let failing: Vec<_> = h
                .workers
                .iter()
                .filter_map(|w| {
                    w.failed
                        .as_ref()
                        .map(|cause| json!({"voice": w.voice, "cause": cause}))
                })
                .collect();
            body["failing_voices"] = json!(failing);
            match &h.engine {
                EngineHealth::Ok(version) => body["engine"] = json!(version),
                EngineHealth::Unknown => body["engine"] = json!("checking"),
                EngineHealth::Unavailable(reason) => error = Some(reason.clone()),
            }
        }
        None => error = Some("the supervisor did not answer".into()),
    }
    if draining {
        error = Some("draining".into());
    }
    let status = match error {
        Some(reason) => {
            body["ok"] = json!(false);
            body["error"] = json!(reason);
            StatusCode::SERVICE_UNAVAILABLE
        }
        None => StatusCode::OK,
    };
    let response = warp::reply::with_status(warp::reply::json(&body), status).into_response();
    observe("/health", "GET", status, started);
    Ok(response)
}

/// `GET /api/voices`.
pub async fn list_voices(state: AppState) -> Result<Response, Infallible> {
    let started = Instant::now();
    let found = match state
        .configs
        .call(ConfigMsg::List, Some(ACTOR_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(found)) => found,
        _ => Vec::new(),
    };
    let health = health_of(&state).await;
    let warm = |name: &str| {
        health
            .as_ref()
            .map(|h| h.workers.iter().any(|w| w.voice == name && w.running))
            .unwrap_or(false)
    };
    let voices: Vec<_> = found
        .into_iter()
        .map(|entry| match entry {
            Ok(info) => json!({
                "name": info.name,
                "file": format!("{}.onnx", info.name),
                "language": info.language,
                "quality": info.quality,
                "sample_rate": info.sample_rate,
                "num_speakers": info.num_speakers,
                "speakers": info.speakers,
                "warm": warm(&info.name),
            }),
            Err(err) => json!({ "error": err.to_string() }),
        })
        .collect();
    let response = warp::reply::json(&json!({ "voices": voices })).into_response();
    observe("/api/voices", "GET", StatusCode::OK, started);
    Ok(response)
}

/// `GET /metrics`.
pub async fn metrics(state: AppState) -> Result<Response, Infallible> {
    let started = Instant::now();
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    observe("/metrics", "GET", StatusCode::OK, started);
    Ok(response)
}

/// The demo page (`examples/web/index.html`), built into the binary.
const WEB_PAGE: &str = include_str!("../../examples/web/index.html");

/// `GET /`: the demo page, unless `PIPER_WEB_UI=0`.
pub async fn web_page(state: AppState) -> Result<Response, warp::Rejection> {
    if !state.config.web_ui {
        return Err(warp::reject::not_found());
    }
    Ok(warp::reply::html(WEB_PAGE).into_response())
}
