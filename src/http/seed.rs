//! piperd's own API: `POST /api/tts` and `POST /api/warmup`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use warp::reply::{Reply, Response};

use super::answer::{self, finish};
use super::timed;
use super::{parse_json, ApiError, AppState, RequestCtx};
use crate::audio::AudioFormat;
use crate::speech::captions::CaptionFormat;
use crate::speech::encode::Output;
use crate::speech::{Speaker, SpeechError, Utterance, VoiceOptions};
use crate::text::ssml::looks_like_ssml;

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
    /// Numbers, money, dates, abbreviations read as a person would (English
    /// voices); `false` sends the text as written.
    #[serde(default = "yes")]
    pub normalize: bool,
    /// The text is SSML; absent: when it starts with `<speak`.
    #[serde(default)]
    pub ssml: Option<bool>,
    /// Answer JSON (NDJSON when streamed) with each word's times.
    #[serde(default)]
    pub timestamps: bool,
    /// `vtt` or `srt`: captions in the JSON answer (implies `timestamps`).
    #[serde(default)]
    pub captions: Option<String>,
}

fn yes() -> bool {
    true
}

/// A `POST /api/tts` body, read and checked as far as it can be without
/// its voice.
#[derive(Debug)]
pub struct TtsPlan {
    pub request: TtsRequest,
    pub output: Output,
    pub captions: Option<CaptionFormat>,
    /// Words' times in the answer (asked for, or implied by captions).
    pub timestamps: bool,
    /// In their ranges; the speaker is checked against the voice.
    pub options: VoiceOptions,
}

impl TtsRequest {
    /// The request a body holds, or the client's error: what the body says
    /// is checked before any voice is looked up.
    pub fn plan(body: &[u8]) -> Result<TtsPlan, ApiError> {
        let request: TtsRequest = parse_json(body)?;
        let format = format_named(request.response_format.as_deref(), AudioFormat::Wav)?;
        let captions =
            match request.captions.as_deref() {
                None => None,
                Some(name) => Some(CaptionFormat::parse(name).ok_or_else(|| {
                    SpeechError::InvalidParameter {
                        param: "captions",
                        message: format!("captions must be \"vtt\" or \"srt\", not {name:?}"),
                    }
                })?),
            };
        if captions.is_some() && request.stream {
            return Err(SpeechError::InvalidParameter {
                param: "captions",
                message: "captions come with a complete answer, not a stream: \
                    a streamed answer's objects carry the words"
                    .into(),
            }
            .into());
        }
        let timestamps = request.timestamps || captions.is_some();
        let output = Output::new(format, request.sample_rate)?;
        let options = VoiceOptions {
            speaker: request.speaker.clone(),
            length_scale: request.length_scale,
            noise_scale: request.noise_scale,
            noise_w_scale: request.noise_w_scale,
            sentence_silence: request.sentence_silence,
            volume: request.volume,
        };
        // Ranges first: a bad option is reported whatever the voice.
        options.check_ranges()?;
        crate::speech::Speech::check_text(&request.text)?;
        Ok(TtsPlan {
            request,
            output,
            captions,
            timestamps,
            options,
        })
    }
}

impl PhonemesRequest {
    /// The request a body holds, its text checked.
    pub fn from_body(body: &[u8]) -> Result<PhonemesRequest, ApiError> {
        let request: PhonemesRequest = parse_json(body)?;
        crate::speech::Speech::check_text(&request.text)?;
        Ok(request)
    }
}

impl WarmupRequest {
    /// The request a body holds; an empty body warms the default voice.
    pub fn from_body(body: &[u8]) -> Result<WarmupRequest, ApiError> {
        if body.iter().all(|b| b.is_ascii_whitespace()) {
            Ok(WarmupRequest { voice_model: None })
        } else {
            parse_json(body)
        }
    }
}

/// Body of `POST /api/phonemes`.
#[derive(Debug, Deserialize)]
pub struct PhonemesRequest {
    pub text: String,
    #[serde(default)]
    pub voice_model: Option<String>,
    #[serde(default = "yes")]
    pub normalize: bool,
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
        let TtsPlan {
            request,
            output,
            captions,
            timestamps,
            options,
        } = TtsRequest::plan(&body)?;
        let speech = &state.speech;
        let voice = speech.voice(request.voice_model.as_deref()).await?;
        let options = options.resolve(&voice)?;
        let session = speech
            .say(Utterance {
                voice,
                text: &request.text,
                options,
                complete: !request.stream,
                normalize: request.normalize,
                ssml: request
                    .ssml
                    .unwrap_or_else(|| looks_like_ssml(&request.text)),
            })
            .await?;
        if timestamps && request.stream {
            let text = Arc::from(request.text.as_str());
            Ok((timed::streamed(&ctx, route, session, output, text)?, true))
        } else if timestamps {
            let answer =
                timed::complete(&state, &ctx, session, output, &request.text, captions).await?;
            Ok((answer, false))
        } else if request.stream {
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
        let request = WarmupRequest::from_body(&body)?;
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

/// `POST /api/phonemes`: how each sentence would be read, and its phonemes,
/// without synthesis (how a user debugs a pronunciation).
pub async fn phonemes(
    state: AppState,
    ctx: RequestCtx,
    body: Bytes,
) -> Result<Response, Infallible> {
    let result = async {
        let request = PhonemesRequest::from_body(&body)?;
        let voice = state.speech.voice(request.voice_model.as_deref()).await?;
        let name = voice.name.clone();
        let sentences = state
            .speech
            .phonemize(voice, &request.text, request.normalize)
            .await?;
        Ok(warp::reply::json(&json!({"voice": name, "sentences": sentences})).into_response())
    }
    .await;
    Ok(finish("/api/phonemes", &ctx, result))
}
