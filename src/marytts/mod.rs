//! The MaryTTS front-end: the HTTP API of the MaryTTS server, for the
//! clients that speak it (Home Assistant's `marytts` platform through
//! `speak2mary`, Mycroft and OpenVoiceOS, openHAB, NVDA's SpeechHub).
//!
//! - `GET` or `POST /process` with `INPUT_TEXT`, `INPUT_TYPE=TEXT` (or
//!   `SSML`, the subset of `crate::text::ssml`), `OUTPUT_TYPE=AUDIO`,
//!   `AUDIO=WAVE_FILE` (or `WAVE`; `AU_FILE` and `AIFF_FILE` for Sun AU and
//!   AIFF, as MaryTTS sends them), `LOCALE`, `VOICE`
//!   and effects: `effect_Rate` (`durScale:1.5`) becomes the length scale,
//!   `effect_Volume` (`amount:2.0`) the volume, the others are ignored.
//!   A POST body is a form whatever its `Content-Type` says, or without one
//!   (speak2mary sends none). The answer is a complete file, with the
//!   Content-Type MaryTTS gives it (`audio/x-wav`, `audio/basic`,
//!   `audio/x-aiff`).
//! - `GET /voices`: a line per voice, `name locale gender type`; Piper
//!   voices do not tell a gender, so it is `unknown`, and the type `piper`.
//! - `GET /locales`: a line per language. `GET /version`: "Mary TTS
//!   server", which Mycroft checks for.
//!
//! Errors are plain text with a 4xx or 5xx status, as MaryTTS answers
//! them (its clients print the body). Like every front-end this one calls
//! only the speech core; the routes are served on the main port beside the
//! HTTP API (mounted by the server) and, with `PIPER_MARYTTS_PORT`, alone
//! on a port of their own.

mod form;
#[cfg(test)]
mod fuzz;

use crate::body::BodyError;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use futures::Stream;
use metrics::{counter, histogram};
use subtle::ConstantTimeEq;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::audio::AudioFormat;
use crate::metrics as m;
use crate::scheduler::SynthError;
use crate::speech::encode::{encode_complete, Output};
use crate::speech::{ErrorKind, Speech, SpeechError, Utterance, VoiceOptions};
pub use form::{MaryRequest, RequestError};

/// Largest request body or query accepted.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// What `/version` says: clients look for "Mary TTS server".
pub const VERSION_LINE: &str = concat!(
    "Mary TTS server 5.2 (compatible; piperd ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// The MaryTTS routes; any other path is rejected as not found, so that
/// the server can mount them before its other routes. API keys, when set,
/// are required here too (`Authorization: Bearer`).
pub fn routes(speech: Speech) -> BoxedFilter<(Response,)> {
    let keys = Arc::new(speech.config().api_keys.clone());
    let with_speech = warp::any().map(move || speech.clone());
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let process_get = warp::path!("process")
        .and(warp::get())
        .and(authorized(keys.clone()))
        .and(with_speech.clone())
        .and(query)
        .then(|speech: Speech, query: String| async move {
            process(speech, "GET", query.into_bytes().into()).await
        });
    let process_post = warp::path!("process")
        .and(warp::post())
        .and(authorized(keys.clone()))
        .and(with_speech.clone())
        .and(body())
        .then(
            |speech: Speech, body: Result<Bytes, RequestError>| async move {
                match body {
                    Ok(body) => process(speech, "POST", body).await,
                    Err(err) => reply_error("/process", "POST", Instant::now(), err.into()),
                }
            },
        );
    let voices = warp::path!("voices")
        .and(warp::get())
        .and(authorized(keys.clone()))
        .and(with_speech.clone())
        .then(voices);
    let locales = warp::path!("locales")
        .and(warp::get())
        .and(authorized(keys.clone()))
        .and(with_speech)
        .then(locales);
    let version = warp::path!("version")
        .and(warp::get())
        .map(|| text("/version", Instant::now(), VERSION_LINE.to_string()));
    process_get
        .or(process_post)
        .unify()
        .or(voices)
        .unify()
        .or(locales)
        .unify()
        .or(version)
        .unify()
        .recover(recover)
        .unify()
        .boxed()
}

/// The routes alone, for a port of their own: anything else is a plain 404.
pub fn standalone(speech: Speech) -> BoxedFilter<(Response,)> {
    routes(speech)
        .or(warp::any().map(|| {
            warp::reply::with_status("no such MaryTTS route\n", StatusCode::NOT_FOUND)
                .into_response()
        }))
        .unify()
        .boxed()
}

/// Why a MaryTTS request failed, with its status.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl From<RequestError> for Failure {
    fn from(err: RequestError) -> Failure {
        let status = match err {
            RequestError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Failure {
            status,
            code: err.code(),
            message: err.to_string(),
        }
    }
}

impl From<SpeechError> for Failure {
    fn from(err: SpeechError) -> Failure {
        use crate::voices::VoiceError;
        let (status, code) = match (&err, err.kind()) {
            (SpeechError::TextTooLong(_) | SpeechError::AudioTooLong { .. }, _) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_long")
            }
            (SpeechError::Voice(VoiceError::NotFound { .. }), _) => {
                (StatusCode::NOT_FOUND, "voice_not_found")
            }
            (SpeechError::InvalidSsml(_), _) => (StatusCode::BAD_REQUEST, "invalid_ssml"),
            (_, ErrorKind::Client) => (StatusCode::BAD_REQUEST, "invalid_request"),
            (_, ErrorKind::Busy | ErrorKind::ShuttingDown) => {
                (StatusCode::SERVICE_UNAVAILABLE, "busy")
            }
            // The engine's failures keep the statuses of the other APIs, so
            // a client or a load balancer tells a slow or crashed engine
            // (worth a retry) from a fault of the server.
            (SpeechError::Synth(SynthError::EngineTimeout), _) => {
                (StatusCode::GATEWAY_TIMEOUT, "engine_timeout")
            }
            (SpeechError::Synth(SynthError::EngineCrashed(_)), _) => {
                (StatusCode::BAD_GATEWAY, "engine_crashed")
            }
            (SpeechError::Synth(SynthError::EngineBadOutput(_)), _) => {
                (StatusCode::BAD_GATEWAY, "engine_bad_output")
            }
            (
                SpeechError::Synth(
                    SynthError::VoiceUnavailable { .. } | SynthError::EngineUnavailable(_),
                ),
                _,
            ) => (StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable"),
            (_, ErrorKind::Engine) => (StatusCode::INTERNAL_SERVER_ERROR, "engine"),
        };
        Failure {
            status,
            code,
            message: err.to_string(),
        }
    }
}

fn observe(route: &'static str, method: &'static str, status: StatusCode, started: Instant) {
    let status = status.as_u16().to_string();
    counter!(m::HTTP_REQUESTS, "route" => route, "method" => method, "status" => status)
        .increment(1);
    histogram!(m::HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
}

fn text(route: &'static str, started: Instant, body: String) -> Response {
    let mut response = warp::reply::with_status(body, StatusCode::OK).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    observe(route, "GET", StatusCode::OK, started);
    response
}

fn reply_error(
    route: &'static str,
    method: &'static str,
    started: Instant,
    failure: Failure,
) -> Response {
    counter!(m::ERRORS, "code" => failure.code).increment(1);
    tracing::info!(
        route,
        method,
        status = failure.status.as_u16(),
        code = failure.code,
        "MaryTTS request refused: {}",
        failure.message
    );
    let mut response =
        warp::reply::with_status(format!("{}\n", failure.message), failure.status).into_response();
    if failure.code == "body_too_large" {
        // The rest of the body is read only within bounds (see
        // `crate::body::read_bounded`), past which the connection closes
        // after this answer: clients must not send their next request on it.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    observe(route, method, failure.status, started);
    response
}

/// `/process`: the form's text spoken by the voice it picks, as a WAV,
/// AU or AIFF file.
async fn process(speech: Speech, method: &'static str, form: Bytes) -> Response {
    let started = Instant::now();
    let route = "/process";
    let result = async {
        let request = MaryRequest::parse(&form)?;
        Speech::check_text(&request.text)?;
        let options = VoiceOptions {
            length_scale: request.length_scale,
            volume: request.volume,
            ..VoiceOptions::default()
        };
        options.check_ranges()?;
        let voice = pick_voice(&speech, &request).await?;
        let options = options.resolve(&voice)?;
        let name = voice.name.clone();
        let format = request.format;
        let session = speech
            .say(Utterance {
                voice,
                text: &request.text,
                options,
                complete: true,
                normalize: true,
                ssml: request.ssml,
            })
            .await?;
        let config = speech.config();
        let (file, _) = encode_complete(
            session,
            Output::from(format),
            config.spool_threshold_bytes,
            config.temp_dir.clone(),
        )
        .await?;
        Ok::<_, Failure>((file, name, format))
    }
    .await;
    match result {
        Ok((file, voice, format)) => {
            let len = file.len();
            tracing::info!(route, method, voice = %voice, format = %format, bytes = len, status = 200u16,
                ms = started.elapsed().as_millis() as u64, "MaryTTS speech synthesized");
            let mut response = warp::reply::stream(file.into_stream()).into_response();
            let headers = response.headers_mut();
            // MaryTTS's own type for WAV; the format's for AU and AIFF.
            let content_type = match format {
                AudioFormat::Wav => "audio/x-wav",
                other => other.content_type(),
            };
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            observe(route, method, StatusCode::OK, started);
            response
        }
        Err(failure) => reply_error(route, method, started, failure),
    }
}

/// The voice a request means: `VOICE` when it is installed, else the first
/// voice of `LOCALE`, else (clients send MaryTTS's own voice names, such as
/// speak2mary's default `cmu-slt-hsmm`) the first voice.
async fn pick_voice(
    speech: &Speech,
    request: &MaryRequest,
) -> Result<Arc<crate::voices::VoiceInfo>, Failure> {
    if let Some(name) = request.voice.as_deref() {
        let installed = speech.voice_names().await;
        let wanted = name.strip_suffix(".onnx").unwrap_or(name);
        if installed.iter().any(|v| v == wanted) {
            return Ok(speech.voice(Some(wanted)).await?);
        }
    }
    if let Some(locale) = request.locale.as_deref() {
        if let Some(voice) = speech.voice_of_language(locale).await {
            return Ok(voice);
        }
    }
    Ok(speech.voice(None).await?)
}

/// `GET /voices`: `name locale gender type`, a line each.
async fn voices(speech: Speech) -> Response {
    let started = Instant::now();
    let mut lines = String::new();
    for voice in speech.voices().await.into_iter().flatten() {
        lines.push_str(&format!(
            "{} {} unknown piper\n",
            voice.name, voice.language
        ));
    }
    text("/voices", started, lines)
}

/// `GET /locales`: each installed language once, a line each.
async fn locales(speech: Speech) -> Response {
    let started = Instant::now();
    let mut languages: Vec<String> = speech
        .voices()
        .await
        .into_iter()
        .flatten()
        .map(|voice| voice.language.clone())
        .collect();
    languages.sort();
    languages.dedup();
    let lines: String = languages.iter().map(|l| format!("{l}\n")).collect();
    text("/locales", started, lines)
}

/// Requires `Authorization: Bearer <key>` when keys are set, compared in
/// constant time against every key.
fn authorized(keys: Arc<Vec<String>>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let keys = keys.clone();
            async move {
                if keys.is_empty() {
                    return Ok::<_, Infallible>(true);
                }
                let presented = header
                    .as_deref()
                    .and_then(|h| h.strip_prefix("Bearer ").or(h.strip_prefix("bearer ")))
                    .unwrap_or("")
                    .trim()
                    .as_bytes();
                let mut matched = subtle::Choice::from(0);
                for key in keys.iter() {
                    matched |= key.as_bytes().ct_eq(presented);
                }
                Ok(bool::from(matched))
            }
        })
        .and(warp::path::full())
        .and(warp::method())
        .and_then(
            |allowed: bool, path: warp::path::FullPath, method: warp::http::Method| async move {
                if allowed {
                    Ok(())
                } else {
                    Err(warp::reject::custom(Unauthorized {
                        path: path.as_str().to_string(),
                        method: method.to_string(),
                    }))
                }
            },
        )
        .untuple_one()
}

/// A MaryTTS request without a valid key: answered 401 by [`recover`].
#[derive(Debug)]
struct Unauthorized {
    path: String,
    method: String,
}

impl warp::reject::Reject for Unauthorized {}

/// Turns the MaryTTS routes' own rejections (a missing key) into plain-text
/// answers; every other rejection passes on.
async fn recover(rejection: Rejection) -> Result<Response, Rejection> {
    match rejection.find::<Unauthorized>() {
        Some(unauthorized) => {
            tracing::info!(path = %unauthorized.path, method = %unauthorized.method,
                "MaryTTS request without a valid key");
            counter!(m::ERRORS, "code" => "unauthorized").increment(1);
            let mut response =
                warp::reply::with_status("missing or invalid API key\n", StatusCode::UNAUTHORIZED)
                    .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Ok(response)
        }
        None => Err(rejection),
    }
}

/// The request body, at most [`MAX_REQUEST_BYTES`], whatever its type.
fn body() -> impl Filter<Extract = (Result<Bytes, RequestError>,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .then(|len: Option<u64>, stream| collect(stream, len))
}

async fn collect<S, B>(stream: S, declared: Option<u64>) -> Result<Bytes, RequestError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    crate::body::read_bounded(stream, declared, MAX_REQUEST_BYTES)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge => RequestError::TooLarge,
            BodyError::Unreadable(e) => RequestError::Unreadable(e.to_string()),
        })
}

#[cfg(test)]
mod status_tests {
    use super::*;

    /// Found by the soak: an engine that timed out under load was a 500,
    /// which reads as a fault of the server rather than a busy engine.
    #[test]
    fn engine_failures_keep_the_statuses_of_the_other_apis() {
        let status = |err: SynthError| Failure::from(SpeechError::Synth(err)).status;
        assert_eq!(
            status(SynthError::EngineTimeout),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status(SynthError::EngineCrashed("killed".into())),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status(SynthError::EngineBadOutput("garbled".into())),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            status(SynthError::EngineUnavailable("no python".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            Failure::from(SpeechError::Internal("bug".into())).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
