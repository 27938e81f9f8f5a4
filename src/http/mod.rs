//! The HTTP front-end (warp): piperd's own API, OpenAI's, and the routes
//! for operators (health, voices, metrics, the demo page).
//!
//! Handlers parse a request, ask the [`Speech`] core for a session and turn
//! its events into a body ([`answer`]); errors become statuses in one place
//! ([`error`]).

pub mod answer;
pub mod elevenlabs;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod openai;
pub mod ops;
pub mod routes;
pub mod seed;
pub mod timed;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use warp::http::StatusCode;

use crate::config::Config;
use crate::metrics as m;
use crate::speech::Speech;

pub use error::ApiError;
pub use routes::routes;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub speech: Speech,
    pub metrics: PrometheusHandle,
    /// Set on SIGTERM: `/health` turns 503 so load balancers move away.
    pub draining: Arc<AtomicBool>,
    pub started: Instant,
    /// The ElevenLabs WebSockets open, drained by the server with HTTP.
    pub sockets: elevenlabs::Sockets,
}

impl AppState {
    pub fn config(&self) -> &Config {
        self.speech.config()
    }
}

/// Records one answered request in the HTTP metrics.
pub fn observe(route: &'static str, method: &str, status: StatusCode, started: Instant) {
    let status = status.as_u16().to_string();
    counter!(m::HTTP_REQUESTS, "route" => route, "method" => method.to_string(), "status" => status)
        .increment(1);
    histogram!(m::HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
}

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

/// Parses a JSON body, telling syntax errors from wrong fields. JSON is
/// UTF-8 (the reader would skip an unknown field's bytes unchecked), and a
/// body that is not JSON at all (cut short, say, after a field of the wrong
/// type) is `invalid_json`, whatever its fields; a body that is JSON but not
/// an object (serde would read a struct from an array: `["Hi."]`) or has
/// wrong fields is `invalid_request`.
pub fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::InvalidJson(format!("the body is not UTF-8: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if !value.is_object() {
        return Err(ApiError::InvalidRequest(
            "the body must be a JSON object".to_string(),
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiError::InvalidRequest(e.to_string()))
}
