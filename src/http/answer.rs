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
