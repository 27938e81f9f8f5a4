//! The HTTP API (warp): routes, handlers, errors and audio bodies.
//!
//! Handlers only talk to actors: they ask the config cache for a voice, hand
//! a job to the supervisor and turn the job's audio events into a body.

pub mod audio;
pub mod error;
pub mod handlers;
pub mod openai;
pub mod routes;
pub mod synthesis;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::ActorRef;
use warp::http::StatusCode;

use crate::config::Config;
use crate::metrics as m;
use crate::scheduler::config_cache::ConfigMsg;
use crate::scheduler::supervisor::SupervisorMsg;

pub use error::ApiError;
pub use routes::routes;

/// Longest text accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 100_000;
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub supervisor: ActorRef<SupervisorMsg>,
    pub configs: ActorRef<ConfigMsg>,
    pub metrics: PrometheusHandle,
    /// Set on SIGTERM: `/health` turns 503 so load balancers move away.
    pub draining: Arc<AtomicBool>,
    pub started: Instant,
    pub audio_cache: Arc<crate::speech::cache::AudioCache>,
}

/// Records one answered request in the HTTP metrics.
pub fn observe(route: &'static str, method: &str, status: StatusCode, started: Instant) {
    let status = status.as_u16().to_string();
    counter!(m::HTTP_REQUESTS, "route" => route, "method" => method.to_string(), "status" => status)
        .increment(1);
    histogram!(m::HTTP_DURATION, "route" => route).record(started.elapsed().as_secs_f64());
}
