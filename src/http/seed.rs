//! piperd's own API: `POST /api/tts` and `POST /api/warmup`.

use std::convert::Infallible;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use warp::reply::{Reply, Response};

use super::answer::{self, finish};
use super::{parse_json, ApiError, AppState, RequestCtx};
use crate::audio::AudioFormat;
use crate::speech::encode::Output;
use crate::speech::{Speaker, Utterance, VoiceOptions};

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
    /// One of 8000, 16000, 22050, 24000, 44100, 48000; the voice's own (8000
    /// for G.711) when absent.
    #[serde(default)]
    pub sample_rate: Option<u32>,
}

/// Body of `POST /api/warmup`.
#[derive(Debug, Deserialize)]
pub struct WarmupRequest {
    #[serde(default)]
    pub voice_model: Option<String>,
}

/// A `response_format` name, or `default` when none is given.
pub fn format_named(name: Option<&str>, default: AudioFormat) -> Result<AudioFormat, ApiError> {
    match name {
        None => Ok(default),
        Some(name) => AudioFormat::parse(name)
            .filter(|format| format.is_supported())
            .ok_or_else(|| ApiError::UnsupportedFormat(name.to_string())),
    }
}

/// `POST /api/tts`.
pub async fn tts(state: AppState, ctx: RequestCtx, body: Bytes) -> Result<Response, Infallible> {
    let route = "/api/tts";
    let result = async {
        let request: TtsRequest = parse_json(&body)?;
        let format = format_named(request.response_format.as_deref(), AudioFormat::Wav)?;
        let output = Output::new(format, request.sample_rate)?;
        let options = VoiceOptions {
            speaker: request.speaker,
            length_scale: request.length_scale,
            noise_scale: request.noise_scale,
            noise_w_scale: request.noise_w_scale,
            sentence_silence: request.sentence_silence,
            volume: request.volume,
        };
        // Ranges first: a bad option is reported whatever the voice.
        options.check_ranges()?;
        crate::speech::Speech::check_text(&request.text)?;
        let speech = &state.speech;
        let voice = speech.voice(request.voice_model.as_deref()).await?;
        let options = options.resolve(&voice)?;
        let session = speech
            .say(Utterance {
                voice,
                text: &request.text,
                options,
                complete: !request.stream,
            })
            .await?;
        if request.stream {
            Ok((answer::streamed(&ctx, route, session, output)?, true))
        } else {
            Ok((
                answer::complete(&state, &ctx, session, output).await?,
                false,
            ))
        }
    }
    .await;
    Ok(match result {
        // A streamed answer records its own metrics when it ends.
        Ok((response, true)) => response,
        Ok((response, false)) => finish(route, &ctx, Ok(response)),
        Err(err) => {
            let response = finish(route, &ctx, Err(err));
            tracing::info!(request_id = %ctx.id, status = response.status().as_u16(),
                ms = ctx.started.elapsed().as_millis() as u64, "tts refused");
            response
        }
    })
}

/// `POST /api/warmup`.
pub async fn warmup(state: AppState, ctx: RequestCtx, body: Bytes) -> Result<Response, Infallible> {
    let result = async {
        let request: WarmupRequest = if body.iter().all(|b| b.is_ascii_whitespace()) {
            WarmupRequest { voice_model: None }
        } else {
            parse_json(&body)?
        };
        let voice = state.speech.voice(request.voice_model.as_deref()).await?;
        let name = voice.name.clone();
        let info = state.speech.warmup(voice).await?;
        Ok(warp::reply::json(&json!({
            "ok": true,
            "voice": name,
            "ready_ms": (info.ready_ms * 10.0).round() / 10.0,
            "engine": info.engine,
        }))
        .into_response())
    }
    .await;
    Ok(finish("/api/warmup", &ctx, result))
}
