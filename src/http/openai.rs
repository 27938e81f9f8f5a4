//! The OpenAI-compatible speech API: `/v1/audio/speech`, `/v1/models`,
//! `/v1/audio/voices`.
//!
//! Clients built for OpenAI (the official SDKs, Open WebUI, LiveKit and
//! Pipecat agents, Home Assistant) only need a base URL. Their voice names
//! map to installed voices through `PIPER_OPENAI_VOICES`; errors use
//! OpenAI's shape so SDKs raise their usual exceptions.

use std::convert::Infallible;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use warp::reply::{Reply, Response};

use super::seed::format_named;
use super::{answer, observe, parse_json, ApiError, AppState, RequestCtx};
use crate::audio::AudioFormat;
use crate::engine::SynthOptions;
use crate::speech::encode::Output;
use crate::speech::{SpeechError, Utterance};
use crate::voices;

/// OpenAI's voice names, answered with a mapped installed voice.
pub const OPENAI_VOICES: &[&str] = &[
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
];
/// OpenAI's speech models; all are served by the voices installed here.
pub const OPENAI_MODELS: &[&str] = &["tts-1", "tts-1-hd", "gpt-4o-mini-tts"];

/// Body of `POST /v1/audio/speech`.
#[derive(Debug, Deserialize)]
pub struct SpeechRequest {
    pub model: String,
    pub input: String,
    pub voice: String,
    #[serde(default)]
    pub response_format: Option<String>,
    #[serde(default)]
    pub speed: Option<f32>,
    /// `sse`: Server-Sent Events of base64 audio; `audio` (the default):
    /// the audio itself.
    #[serde(default)]
    pub stream_format: Option<String>,
    /// Not OpenAI's: a sample rate for phone systems and other players.
    #[serde(default)]
    pub sample_rate: Option<u32>,
    /// Accepted for compatibility; Piper voices take no instructions.
    #[serde(default)]
    #[allow(dead_code)]
    pub instructions: Option<String>,
}

/// A `POST /v1/audio/speech` body, read and checked as far as it can be
/// without its voice.
#[derive(Debug)]
pub struct SpeechPlan {
    pub request: SpeechRequest,
    pub output: Output,
    /// 0.25 to 4.
    pub speed: f32,
    /// Server-Sent Events rather than the audio itself.
    pub sse: bool,
}

impl SpeechRequest {
    /// The request a body holds, or the client's error; `names` are the
    /// installed voices, which `model` may name.
    pub fn plan(body: &[u8], names: &[String]) -> Result<SpeechPlan, ApiError> {
        let request: SpeechRequest = parse_json(body)?;
        let model_known = OPENAI_MODELS.contains(&request.model.as_str())
            || voices::validate_name(&request.model)
                .is_ok_and(|name| names.iter().any(|v| v == name));
        if !model_known {
            return Err(SpeechError::InvalidParameter {
                param: "model",
                message: format!(
                    "unknown model {:?}; use one of {OPENAI_MODELS:?} or a voice name",
                    request.model
                ),
            }
            .into());
        }
        let format = format_named(
            Some(request.response_format.as_deref().unwrap_or("mp3")),
            AudioFormat::Mp3,
        )?;
        let output = Output::new(format, request.sample_rate)?;
        let speed = request.speed.unwrap_or(1.0);
        if !(0.25..=4.0).contains(&speed) {
            return Err(SpeechError::InvalidParameter {
                param: "speed",
                message: format!("{speed} is outside 0.25..=4.0"),
            }
            .into());
        }
        let sse = match request.stream_format.as_deref() {
            None | Some("audio") => false,
            Some("sse") => true,
            Some(other) => {
                return Err(SpeechError::InvalidParameter {
                    param: "stream_format",
                    message: format!("{other:?} is neither \"sse\" nor \"audio\""),
                }
                .into())
            }
        };
        crate::speech::Speech::check_text(&request.input)?;
        Ok(SpeechPlan {
            request,
            output,
            speed,
            sse,
        })
    }
}

/// Which installed voice a request means: a voice name in `voice`, an
/// OpenAI voice name through the table, or a voice-file name in `model`.
fn choose_voice(
    state: &AppState,
    names: &[String],
    model: &str,
    voice: &str,
) -> Result<String, ApiError> {
    let model_is_voice = !OPENAI_MODELS.contains(&model);
    let voice_lower = voice.to_ascii_lowercase();
    if OPENAI_VOICES.contains(&voice_lower.as_str()) {
        if let Some(mapped) = state.config().openai_voices.get(&voice_lower) {
            return Ok(mapped.clone());
        }
        if model_is_voice {
            return Ok(model.strip_suffix(".onnx").unwrap_or(model).to_string());
        }
        return names.first().cloned().ok_or_else(|| {
            SpeechError::from(voices::VoiceError::NotFound {
                name: voice.to_string(),
                available: Vec::new(),
            })
            .into()
        });
    }
    Ok(voice.to_string())
}

/// `POST /v1/audio/speech`: always streamed, as OpenAI streams it; as
/// Server-Sent Events with `stream_format: "sse"`.
pub async fn speech(state: AppState, ctx: RequestCtx, body: Bytes) -> Result<Response, Infallible> {
    let route = "/v1/audio/speech";
    let result = async {
        let names = state.speech.voice_names().await;
        let SpeechPlan {
            request,
            output,
            speed,
            sse,
        } = SpeechRequest::plan(&body, &names)?;
        let name = choose_voice(&state, &names, &request.model, &request.voice)?;
        let voice = state.speech.voice(Some(&name)).await?;
        let options = SynthOptions {
            // Piper's length scale is the inverse of a speed.
            length_scale: (speed != 1.0).then(|| 1.0 / speed),
            ..SynthOptions::default()
        };
        let session = state
            .speech
            .say(Utterance {
                voice,
                text: &request.input,
                options,
                complete: false,
                normalize: true,
                // OpenAI's API has no SSML; a document is known by its start.
                ssml: crate::text::ssml::looks_like_ssml(&request.input),
            })
            .await?;
        if sse {
            return answer::sse(&ctx, route, session, output);
        }
        answer::streamed(&ctx, route, session, output)
    }
    .await;
    Ok(match result {
        Ok(response) => response,
        Err(err) => {
            let response = err.into_openai_response();
            observe(route, "POST", response.status(), ctx.started);
            response
        }
    })
}

/// `GET /v1/models`.
pub async fn models(state: AppState) -> Result<Response, Infallible> {
    let started = std::time::Instant::now();
    let names = state.speech.voice_names().await;
    let data: Vec<_> = OPENAI_MODELS
        .iter()
        .map(|m| m.to_string())
        .chain(names.iter().cloned())
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "piperd"}))
        .collect();
    let response = warp::reply::json(&json!({"object": "list", "data": data})).into_response();
    observe("/v1/models", "GET", response.status(), started);
    Ok(response)
}

/// `GET /v1/audio/voices`: installed voices, and the OpenAI names with the
/// voice each one stands for.
pub async fn audio_voices(state: AppState) -> Result<Response, Infallible> {
    let started = std::time::Instant::now();
    let names = state.speech.voice_names().await;
    let first = names.first().cloned();
    let aliases: Vec<_> = OPENAI_VOICES
        .iter()
        .map(|alias| {
            let target = state
                .config()
                .openai_voices
                .get(*alias)
                .cloned()
                .or(first.clone());
            json!({"id": alias, "voice": target})
        })
        .collect();
    let voices: Vec<_> = names.iter().map(|n| json!({"id": n, "name": n})).collect();
    let response =
        warp::reply::json(&json!({"voices": voices, "openai_aliases": aliases})).into_response();
    observe("/v1/audio/voices", "GET", response.status(), started);
    Ok(response)
}
