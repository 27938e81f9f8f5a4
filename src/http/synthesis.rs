//! From a validated request to an audio answer, shared by `/api/tts` and
//! the OpenAI-compatible `/v1/audio/speech`.
//!
//! The audio comes from the cache or from a job; it goes out streamed
//! (chunked, encoded sentence by sentence) or complete (with an exact
//! `Content-Length`: a WAV written by hound, or encoded bytes spooled).

use bytes::Bytes;
use metrics::histogram;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use super::audio::{EncodedStream, Outcome, Source, Spool, WavCollector};
use super::handlers::{start_job, Prepared, RequestCtx};
use super::{observe, ApiError, AppState};
use crate::audio::{self, AudioFormat};
use crate::engine::SynthOptions;
use crate::metrics as m;
use crate::scheduler::{AudioEvent, SynthError};
use crate::speech::cache::CacheKey;

/// A request ready to be spoken.
pub struct Speak {
    pub prepared: Prepared,
    pub options: SynthOptions,
    pub format: AudioFormat,
    pub stream: bool,
}

/// An answer: complete responses are finished by the caller; streamed ones
/// record their own metrics when the stream ends.
pub enum Spoken {
    Complete(Response),
    Streaming(Response),
}

/// Synthesizes (or finds in the cache) and builds the answer.
pub async fn speak(
    state: &AppState,
    ctx: &RequestCtx,
    route: &'static str,
    request: Speak,
) -> Result<Spoken, ApiError> {
    let Speak {
        prepared,
        options,
        format,
        stream,
    } = request;
    if !format.is_supported() {
        return Err(ApiError::UnsupportedFormat(format.name().to_string()));
    }
    let voice = prepared.voice.clone();
    let (chars, chunks) = (prepared.chars, prepared.chunks);
    histogram!(m::REQUEST_CHARACTERS).record(chars as f64);
    histogram!(m::REQUEST_CHUNKS).record(chunks as f64);

    let cache = state.audio_cache.clone();
    let key = cache
        .enabled()
        .then(|| cache.key(&voice, &prepared.units, &options));
    let cached = key.as_ref().and_then(|k| cache.get(k));
    let hit = cached.is_some();
    let source = match cached {
        Some(pcm) => Source::Cached(pcm),
        None => {
            let (first, events) = start_job(state, prepared, options).await?;
            Source::Live(first, events)
        }
    };
    let encoder =
        audio::encoder(format, voice.sample_rate).map_err(|e| ApiError::Internal(e.to_string()))?;
    // A copy for the cache only when the answer can fit in it: speech runs
    // well under 3,000 bytes of PCM per character, so longer texts skip it.
    let fits = chars.saturating_mul(3_000) <= cache.max_entry();
    let tee = if hit || !fits { 0 } else { cache.max_entry() };
    let store = move |key: Option<CacheKey>, outcome: &Outcome| {
        if let (Some(key), Outcome::Complete { pcm: Some(pcm) }) = (key, outcome) {
            cache.insert(key, pcm.clone());
        }
    };

    if stream {
        let end_ctx = ctx.clone();
        let voice_name = voice.name.clone();
        let on_end = move |outcome: Outcome| {
            let complete = matches!(outcome, Outcome::Complete { .. });
            if !complete {
                // The status line said 200; count the broken transfer here so
                // error-rate alerts see it.
                metrics::counter!(m::ERRORS, "code" => "stream_aborted").increment(1);
            }
            store(key, &outcome);
            observe(route, "POST", StatusCode::OK, end_ctx.started);
            tracing::info!(
                request_id = %end_ctx.id, voice = %voice_name, chars, chunks, format = %format,
                cached = hit, complete, status = 200u16,
                ms = end_ctx.started.elapsed().as_millis() as u64, "speech streamed"
            );
        };
        let body = EncodedStream::new(source, encoder, tee, on_end);
        let mut response = warp::reply::stream(body).into_response();
        audio_headers(&mut response, ctx, format, voice.sample_rate, hit);
        return Ok(Spoken::Streaming(response));
    }

    let body = if format == AudioFormat::Wav {
        collect_wav(state, source, voice.sample_rate, key, tee, hit).await?
    } else {
        let mut spool = Spool::new(
            state.config.spool_threshold_bytes,
            state.config.temp_dir.clone(),
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut encoded = EncodedStream::new(source, encoder, tee, move |outcome| {
            let _ = tx.send(outcome);
        });
        while let Some(chunk) = futures::StreamExt::next(&mut encoded).await {
            match chunk {
                Ok(bytes) => spool.push(&bytes)?,
                Err(err) => {
                    drop(encoded);
                    return Err(match rx.try_recv() {
                        Ok(Outcome::Broken(Some(synth))) => synth.into(),
                        _ => ApiError::Internal(err.to_string()),
                    });
                }
            }
        }
        drop(encoded);
        if let Ok(outcome) = rx.try_recv() {
            store(key, &outcome);
        }
        spool.finish()?
    };
    let len = body.len();
    tracing::info!(
        request_id = %ctx.id, voice = %voice.name, chars, chunks, format = %format,
        cached = hit, bytes = len, status = 200u16,
        ms = ctx.started.elapsed().as_millis() as u64, "speech synthesized"
    );
    let mut response = warp::reply::stream(body.into_stream()).into_response();
    audio_headers(&mut response, ctx, format, voice.sample_rate, hit);
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(Spoken::Complete(response))
}

/// A complete WAV with exact sizes (hound), from a job or the cache.
async fn collect_wav(
    state: &AppState,
    source: Source,
    sample_rate: u32,
    key: Option<CacheKey>,
    tee_limit: usize,
    hit: bool,
) -> Result<super::audio::WavBody, ApiError> {
    let mut collector = WavCollector::new(
        sample_rate,
        state.config.spool_threshold_bytes,
        state.config.temp_dir.clone(),
    );
    let mut copy: Option<Vec<u8>> = (tee_limit > 0 && !hit).then(Vec::new);
    let keep = |pcm: &Bytes, copy: &mut Option<Vec<u8>>| {
        if let Some(buf) = copy.as_mut() {
            if buf.len() + pcm.len() <= tee_limit {
                buf.extend_from_slice(pcm);
            } else {
                *copy = None;
            }
        }
    };
    match source {
        Source::Cached(pcm) => collector.push(&pcm)?,
        Source::Live(first, mut events) => {
            keep(&first, &mut copy);
            collector.push(&first)?;
            loop {
                match events.recv().await {
                    Some(AudioEvent::Audio { pcm, .. }) => {
                        keep(&pcm, &mut copy);
                        collector.push(&pcm)?;
                    }
                    Some(AudioEvent::Done(_)) => break,
                    Some(AudioEvent::Failed(err)) => return Err(err.into()),
                    None => {
                        return Err(
                            SynthError::EngineCrashed("the voice worker stopped".into()).into()
                        )
                    }
                }
            }
            if let (Some(key), Some(copy)) = (key, copy) {
                state.audio_cache.insert(key, Bytes::from(copy));
            }
        }
    }
    collector.finish()
}

fn audio_headers(
    response: &mut Response,
    ctx: &RequestCtx,
    format: AudioFormat,
    rate: u32,
    hit: bool,
) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    let out_rate = if format == AudioFormat::Opus {
        48_000
    } else {
        rate
    };
    headers.insert("x-sample-rate", HeaderValue::from(out_rate));
    headers.insert(
        "x-audio-cache",
        HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
    if let Ok(value) = HeaderValue::from_str(&ctx.id) {
        headers.insert("x-request-id", value);
    }
}
