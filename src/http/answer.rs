//! A session's audio as an HTTP answer, for piperd's API and OpenAI's.
//!
//! Streamed answers are chunked and encoded sentence by sentence; a failure
//! after the first bytes aborts the transfer, so a client never mistakes a
//! cut answer for a complete one. Complete answers carry an exact
//! `Content-Length` (and exact WAV sizes), spooled past a threshold.

use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use super::{observe, ApiError, AppState, RequestCtx};
use crate::metrics as m;
use crate::speech::encode::{encode_complete, encoded_stream, encoder_for, Ending, Output};
use crate::speech::Session;

/// Calls its function once: with how the stream ended, or with `None` when
/// the stream is dropped first (the client went away).
struct OnEnd(Option<Box<dyn FnOnce(Option<Ending>) + Send + Sync>>);

impl OnEnd {
    fn call(mut self, ending: Ending) {
        if let Some(f) = self.0.take() {
            f(Some(ending));
        }
    }
}

impl Drop for OnEnd {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(None);
        }
    }
}

/// The session's audio, streamed as it is made. The request's metrics and
/// log line are recorded when the stream ends.
pub fn streamed(
    ctx: &RequestCtx,
    route: &'static str,
    session: Session,
    output: Output,
) -> Result<Response, ApiError> {
    let format = output.format;
    let encoder = encoder_for(output, session.sample_rate())?;
    let rate = encoder.output_sample_rate();
    let cached = session.cached();
    let voice = session.voice().name.clone();
    let (chars, chunks) = session.text_size();
    let end_ctx = ctx.clone();
    let on_end = OnEnd(Some(Box::new(move |ending: Option<Ending>| {
        let complete = matches!(ending, Some(Ending::Done(_)));
        if !complete {
            // The status line said 200; count the broken transfer here so
            // error-rate alerts see it.
            metrics::counter!(m::ERRORS, "code" => "stream_aborted").increment(1);
        }
        observe(route, "POST", StatusCode::OK, end_ctx.started);
        tracing::info!(
            request_id = %end_ctx.id, voice = %voice, chars, chunks, format = %format, cached, complete,
            status = 200u16, ms = end_ctx.started.elapsed().as_millis() as u64, "speech streamed"
        );
    })));
    let body = encoded_stream(session, encoder, move |ending| on_end.call(ending));
    let body = futures::StreamExt::map(body, |piece| {
        piece.map_err(|err| {
            tracing::warn!("audio stream aborted: {err}");
            std::io::Error::other(err.to_string())
        })
    });
    let mut response = warp::reply::stream(body).into_response();
    audio_headers(&mut response, ctx, format, rate, cached);
    Ok(response)
}

/// The session's audio as OpenAI's Server-Sent Events: a
/// `speech.audio.delta` event (base64 audio in `format`) per encoded piece
/// as it is made, then `speech.audio.done`. Its `usage` counts no tokens,
/// since Piper reads characters, not tokens; the characters read and the
/// seconds of audio made are given beside them, as measured. A failure
/// after the first event aborts the transfer, as a streamed answer does.
pub fn sse(
    ctx: &RequestCtx,
    route: &'static str,
    session: Session,
    output: Output,
) -> Result<Response, ApiError> {
    use base64::Engine as _;
    let format = output.format;
    let encoder = encoder_for(output, session.sample_rate())?;
    let rate = encoder.output_sample_rate();
    let cached = session.cached();
    let source_rate = session.sample_rate() as f64;
    let voice = session.voice().name.clone();
    let (chars, chunks) = session.text_size();
    let end_ctx = ctx.clone();
    let ended = std::sync::Arc::new(std::sync::Mutex::new(None::<Ending>));
    let ended_tx = ended.clone();
    let on_end = OnEnd(Some(Box::new(move |ending: Option<Ending>| {
        let complete = matches!(ending, Some(Ending::Done(_)));
        if let Some(ending) = ending {
            *ended_tx.lock().expect("ending lock") = Some(ending);
        }
        if !complete {
            metrics::counter!(m::ERRORS, "code" => "stream_aborted").increment(1);
        }
        observe(route, "POST", StatusCode::OK, end_ctx.started);
        tracing::info!(
            request_id = %end_ctx.id, voice = %voice, chars, chunks, format = %format, cached, complete,
            stream_format = "sse", status = 200u16, ms = end_ctx.started.elapsed().as_millis() as u64,
            "speech streamed"
        );
    })));
    let audio = encoded_stream(session, encoder, move |ending| on_end.call(ending));
    let deltas = futures::StreamExt::map(audio, |piece| {
        piece
            .map(|bytes| {
                let event = serde_json::json!({
                    "type": "speech.audio.delta",
                    "audio": base64::engine::general_purpose::STANDARD.encode(&bytes),
                });
                bytes::Bytes::from(format!("data: {event}\n\n"))
            })
            .map_err(|err| {
                tracing::warn!("audio stream aborted: {err}");
                std::io::Error::other(err.to_string())
            })
    });
    // After the audio: the done event, only when the session ended well.
    let done = futures::stream::once(async move {
        let ending = ended.lock().expect("ending lock").take();
        match ending {
            Some(Ending::Done(summary)) => {
                let event = serde_json::json!({
                    "type": "speech.audio.done",
                    "usage": {
                        "input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                        "input_characters": chars,
                        "output_audio_seconds": summary.samples as f64 / source_rate,
                    },
                });
                Ok(bytes::Bytes::from(format!("data: {event}\n\n")))
            }
            _ => Err(std::io::Error::other("the speech ended unfinished")),
        }
    });
    let body = futures::StreamExt::chain(deltas, done);
    let mut response = warp::reply::stream(body).into_response();
    audio_headers(&mut response, ctx, format, rate, cached);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The session's whole audio with its exact length.
pub async fn complete(
    state: &AppState,
    ctx: &RequestCtx,
    session: Session,
    output: Output,
) -> Result<Response, ApiError> {
    let config = state.config();
    let format = output.format;
    let rate = encoder_for(output, session.sample_rate())?.output_sample_rate();
    let cached = session.cached();
    let voice = session.voice().name.clone();
    let (chars, chunks) = session.text_size();
    let (file, _) = encode_complete(
        session,
        output,
        config.spool_threshold_bytes,
        config.temp_dir.clone(),
    )
    .await?;
    let len = file.len();
    tracing::info!(
        request_id = %ctx.id, voice = %voice, chars, chunks, format = %format, cached, bytes = len,
        status = 200u16, ms = ctx.started.elapsed().as_millis() as u64, "speech synthesized"
    );
    let mut response = warp::reply::stream(file.into_stream()).into_response();
    audio_headers(&mut response, ctx, format, rate, cached);
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(response)
}

fn audio_headers(
    response: &mut Response,
    ctx: &RequestCtx,
    format: crate::audio::AudioFormat,
    rate: u32,
    cached: bool,
) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    headers.insert("x-sample-rate", HeaderValue::from(rate));
    headers.insert(
        "x-audio-cache",
        HeaderValue::from_static(if cached { "hit" } else { "miss" }),
    );
    if let Ok(value) = HeaderValue::from_str(&ctx.id) {
        headers.insert("x-request-id", value);
    }
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
