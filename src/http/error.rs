//! API errors and the one place they become HTTP statuses.
//!
//! Every error body is `{"error": "<sentence>", "code": "<snake_case>"}`,
//! plus a field or two where a client can act on it (the voices available,
//! when to retry). Codes are stable: clients and alerts match on them.

use std::convert::Infallible;
use std::time::Duration;

use metrics::counter;
use serde_json::json;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::Rejection;

use crate::metrics as m;
use crate::scheduler::SynthError;
use crate::voices::VoiceError;

/// The two error body shapes: piperd's own and OpenAI's.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Piperd,
    OpenAi,
}

/// Everything a request can fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("text is empty")]
    EmptyText,
    #[error("text has {0} characters; the limit is {max}", max = crate::http::MAX_TEXT_CHARS)]
    TextTooLong(usize),
    #[error("request body is larger than {} bytes", crate::http::MAX_BODY_BYTES)]
    BodyTooLarge,
    #[error("invalid {param}: {message}")]
    InvalidParameter {
        param: &'static str,
        message: String,
    },
    #[error("{0}")]
    InvalidVoiceName(String),
    #[error("voice {name:?} not found")]
    VoiceNotFound {
        name: String,
        available: Vec<String>,
    },
    #[error("{0}")]
    VoiceConfigInvalid(String),
    #[error("unsupported response_format {0:?}")]
    UnsupportedFormat(String),
    #[error("nothing in the text can be spoken")]
    NoSpeakableText,
    #[error("Process limit reached: every engine process is busy; retry later")]
    ProcessLimit { retry_after: Duration },
    #[error("{0}")]
    VoiceUnavailable(String),
    #[error("{0}")]
    EngineUnavailable(String),
    #[error("the speech engine did not finish in time")]
    EngineTimeout,
    #[error("{0}")]
    EngineBadOutput(String),
    #[error("{0}")]
    EngineCrashed(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Status and stable code: the only mapping of errors to HTTP.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            EmptyText => (StatusCode::BAD_REQUEST, "empty_text"),
            TextTooLong(_) => (StatusCode::PAYLOAD_TOO_LARGE, "text_too_long"),
            BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            InvalidVoiceName(_) => (StatusCode::BAD_REQUEST, "invalid_voice_name"),
            VoiceNotFound { .. } => (StatusCode::NOT_FOUND, "voice_not_found"),
            VoiceConfigInvalid(_) => (StatusCode::INTERNAL_SERVER_ERROR, "voice_config_invalid"),
            UnsupportedFormat(_) => (StatusCode::BAD_REQUEST, "unsupported_format"),
            NoSpeakableText => (StatusCode::UNPROCESSABLE_ENTITY, "no_speakable_text"),
            ProcessLimit { .. } => (StatusCode::SERVICE_UNAVAILABLE, "process_limit"),
            VoiceUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "voice_unavailable"),
            EngineUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable"),
            EngineTimeout => (StatusCode::GATEWAY_TIMEOUT, "engine_timeout"),
            EngineBadOutput(_) => (StatusCode::BAD_GATEWAY, "engine_bad_output"),
            EngineCrashed(_) => (StatusCode::BAD_GATEWAY, "engine_crashed"),
            ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Seconds after which a retry may succeed, for `Retry-After`.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::ProcessLimit { retry_after } => Some(retry_after.as_secs().max(1)),
            ApiError::VoiceUnavailable(_) | ApiError::EngineUnavailable(_) => Some(10),
            ApiError::ShuttingDown => Some(1),
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
        match self {
            ApiError::InvalidParameter { param, .. } => Some(param),
            ApiError::TextTooLong(_) | ApiError::EmptyText | ApiError::NoSpeakableText => {
                Some("input")
            }
            ApiError::VoiceNotFound { .. } | ApiError::InvalidVoiceName(_) => Some("voice"),
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
                    ApiError::VoiceNotFound { available, .. } => {
                        body["available"] = json!(available)
                    }
                    ApiError::TextTooLong(_) => {
                        body["max_characters"] = json!(crate::http::MAX_TEXT_CHARS)
                    }
                    ApiError::InvalidParameter { param, .. } => body["param"] = json!(param),
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
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl warp::reject::Reject for ApiError {}

impl From<VoiceError> for ApiError {
    fn from(err: VoiceError) -> ApiError {
        match err {
            VoiceError::InvalidName(..) => ApiError::InvalidVoiceName(err.to_string()),
            VoiceError::NotFound { name, available } => ApiError::VoiceNotFound { name, available },
            VoiceError::BadConfig { .. } => ApiError::VoiceConfigInvalid(err.to_string()),
        }
    }
}

impl From<SynthError> for ApiError {
    fn from(err: SynthError) -> ApiError {
        let text = err.to_string();
        match err {
            SynthError::ProcessLimit(waited) => ApiError::ProcessLimit {
                retry_after: waited.min(Duration::from_secs(30)),
            },
            SynthError::VoiceUnavailable { .. } => ApiError::VoiceUnavailable(text),
            SynthError::EngineUnavailable(_) => ApiError::EngineUnavailable(text),
            SynthError::EngineTimeout => ApiError::EngineTimeout,
            SynthError::EngineBadOutput(_) => ApiError::EngineBadOutput(text),
            SynthError::EngineCrashed(_) => ApiError::EngineCrashed(text),
            SynthError::NoSpeakableText => ApiError::NoSpeakableText,
            SynthError::ShuttingDown => ApiError::ShuttingDown,
        }
    }
}

/// The single `recover`: warp's own rejections become JSON errors too.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let response = rejection_error(&rejection).into_response();
    crate::http::observe("other", "", response.status(), std::time::Instant::now());
    Ok(response)
}

/// The same for `/v1/*`, in OpenAI's shape.
pub async fn recover_openai(rejection: Rejection) -> Result<Response, Infallible> {
    let response = rejection_error(&rejection).into_openai_response();
    crate::http::observe("other", "", response.status(), std::time::Instant::now());
    Ok(response)
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
