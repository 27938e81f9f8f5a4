//! API errors and the one place they become HTTP statuses.
//!
//! Every error body is `{"error": "<sentence>", "code": "<snake_case>"}`,
//! plus a field or two where a client can act on it (the voices available,
//! when to retry). Codes are stable: clients and alerts match on them.

use std::time::Instant;

use metrics::counter;
use serde_json::json;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::Rejection;

use crate::metrics as m;
use crate::speech::SynthError;
use crate::speech::{SpeechError, MAX_TEXT_CHARS};
use crate::voices::VoiceError;

/// The two error body shapes: piperd's own and OpenAI's.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Piperd,
    OpenAi,
}

/// Everything a request can fail with: the HTTP layer's own errors, and
/// the speech core's.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("request body is larger than {} bytes", crate::http::MAX_BODY_BYTES)]
    BodyTooLarge,
    #[error("unsupported response_format {0:?}")]
    UnsupportedFormat(String),
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error(transparent)]
    Speech(#[from] SpeechError),
}

impl From<SynthError> for ApiError {
    fn from(err: SynthError) -> ApiError {
        ApiError::Speech(err.into())
    }
}

impl ApiError {
    /// Status and stable code: the only mapping of errors to HTTP.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            UnsupportedFormat(_) => (StatusCode::BAD_REQUEST, "unsupported_format"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Speech(err) => speech_status(err),
        }
    }
    /// Seconds after which a retry may succeed, for `Retry-After`.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Speech(err) => err.retry_after().map(|d| d.as_secs().max(1)),
            _ => None,
        }
    }

    /// The JSON error response, counted in `piperd_errors_total`.
    pub fn into_response(self) -> Response {
        self.respond(Shape::Piperd)
    }

    /// The error in the shape OpenAI's SDKs expect, for `/v1/*`.
    pub fn into_openai_response(self) -> Response {
        self.respond(Shape::OpenAi)
    }

    /// Which request field an error is about, when there is one.
    fn param(&self) -> Option<&'static str> {
        use SpeechError as S;
        match self {
            ApiError::Speech(S::InvalidParameter { param, .. }) => Some(param),
            ApiError::Speech(
                S::TextTooLong(_)
                | S::EmptyText
                | S::NoSpeakableText
                | S::InvalidSsml(_)
                | S::Synth(SynthError::NoSpeakableText),
            ) => Some("input"),
            ApiError::Speech(S::Voice(
                VoiceError::NotFound { .. } | VoiceError::InvalidName(..),
            )) => Some("voice"),
            ApiError::UnsupportedFormat(_) => Some("response_format"),
            _ => None,
        }
    }

    fn respond(self, shape: Shape) -> Response {
        let (status, code) = self.status_and_code();
        counter!(m::ERRORS, "code" => code).increment(1);
        let retry = self.retry_after();
        let body = match shape {
            Shape::Piperd => {
                let mut body = json!({ "error": self.to_string(), "code": code });
                match &self {
                    ApiError::Speech(SpeechError::Voice(VoiceError::NotFound {
                        available,
                        ..
                    })) => body["available"] = json!(available),
                    ApiError::Speech(SpeechError::TextTooLong(_)) => {
                        body["max_characters"] = json!(MAX_TEXT_CHARS)
                    }
                    ApiError::Speech(SpeechError::InvalidParameter { param, .. }) => {
                        body["param"] = json!(param)
                    }
                    ApiError::Speech(SpeechError::InvalidSsml(err)) => {
                        body["line"] = json!(err.line);
                        body["column"] = json!(err.column);
                    }
                    _ => {}
                }
                if let Some(secs) = retry {
                    body["retry_after"] = json!(secs);
                }
                body
            }
            Shape::OpenAi => {
                let kind = match status.as_u16() {
                    401 => "authentication_error",
                    400..=499 => "invalid_request_error",
                    _ => "server_error",
                };
                json!({"error": {
                    "message": self.to_string(), "type": kind, "param": self.param(), "code": code,
                }})
            }
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), status).into_response();
        if let Some(secs) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE && matches!(self, ApiError::BodyTooLarge) {
            // The rest of the body is read only within bounds (see
            // `crate::body::read_bounded`), past which the connection closes
            // after this answer: say so, or a client that keeps connections
            // sends its next request into a closed one.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl warp::reject::Reject for ApiError {}

/// The status and code of each speech error.
fn speech_status(err: &SpeechError) -> (StatusCode, &'static str) {
    use SpeechError as S;
    match err {
        S::EmptyText => (StatusCode::BAD_REQUEST, "empty_text"),
        S::TextTooLong(_) => (StatusCode::PAYLOAD_TOO_LARGE, "text_too_long"),
        S::NoSpeakableText | S::Synth(SynthError::NoSpeakableText) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "no_speakable_text")
        }
        S::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
        S::InvalidSsml(_) => (StatusCode::BAD_REQUEST, "invalid_ssml"),
        S::Voice(VoiceError::InvalidName(..)) => (StatusCode::BAD_REQUEST, "invalid_voice_name"),
        S::Voice(VoiceError::NotFound { .. }) => (StatusCode::NOT_FOUND, "voice_not_found"),
        S::Voice(VoiceError::BadConfig { .. }) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "voice_config_invalid")
        }
        S::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        S::AudioTooLong { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "audio_too_long"),
        S::Synth(err) => match err {
            SynthError::ProcessLimit(_) => (StatusCode::SERVICE_UNAVAILABLE, "process_limit"),
            SynthError::VoiceUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "voice_unavailable")
            }
            SynthError::EngineUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable")
            }
            SynthError::EngineTimeout => (StatusCode::GATEWAY_TIMEOUT, "engine_timeout"),
            SynthError::EngineBadOutput(_) => (StatusCode::BAD_GATEWAY, "engine_bad_output"),
            SynthError::EngineCrashed(_) => (StatusCode::BAD_GATEWAY, "engine_crashed"),
            SynthError::NoSpeakableText => (StatusCode::UNPROCESSABLE_ENTITY, "no_speakable_text"),
            SynthError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        },
        S::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// The answer to a request warp rejected (no route, wrong method, no key,
/// body too large), as JSON — in OpenAI's shape under `/v1/` — counted
/// under its route, with the time it took.
pub fn refused(rejection: &Rejection, path: &str, method: &str, started: Instant) -> Response {
    let err = rejection_error(rejection);
    let response = if path.starts_with("/v1/") {
        err.into_openai_response()
    } else {
        err.into_response()
    };
    let route = route_of(path);
    crate::http::observe(route, method, response.status(), started);
    tracing::info!(
        route,
        method,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request refused"
    );
    response
}

/// The route label of a path: one of the routes, or "other" (labels stay
/// bounded whatever paths clients send).
fn route_of(path: &str) -> &'static str {
    const ROUTES: &[&str] = &[
        "/api/tts",
        "/api/warmup",
        "/api/phonemes",
        "/api/voices",
        "/health",
        "/metrics",
        "/v1/audio/speech",
        "/v1/models",
        "/v1/audio/voices",
        "/",
    ];
    // The WebSocket routes carry a voice id: labelled without it.
    if let Some(rest) = path.strip_prefix("/v1/text-to-speech/") {
        for kind in [
            crate::http::elevenlabs::Kind::Single,
            crate::http::elevenlabs::Kind::Multi,
        ] {
            let last = kind.route().rsplit('/').next().unwrap_or_default();
            if rest.split('/').nth(1) == Some(last) {
                return kind.route();
            }
        }
    }
    ROUTES
        .iter()
        .find(|route| path.trim_end_matches('/') == route.trim_end_matches('/'))
        .copied()
        .unwrap_or("other")
}

fn rejection_error(rejection: &Rejection) -> ApiError {
    if let Some(err) = rejection.find::<ApiError>() {
        err.clone()
    } else if rejection.is_not_found() {
        ApiError::NotFound
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::BodyTooLarge
    } else {
        ApiError::InvalidRequest(format!("{rejection:?}"))
    }
}
