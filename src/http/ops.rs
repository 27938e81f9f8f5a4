//! Routes for operators and tools: `/health`, `/api/voices`, `/metrics`
//! and the demo page.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use super::{observe, AppState};
use crate::speech::EngineHealth;

/// `GET /health`: 200 when the server can serve, 503 when draining or the
/// engine cannot run. Busy is not unhealthy: a full queue stays 200 (and
/// is reported), so that load balancers do not pull a replica that is
/// merely working.
pub async fn health(state: AppState) -> Result<Response, Infallible> {
    let started = Instant::now();
    let speech = &state.speech;
    let voices = speech.voice_names().await.len();
    let draining = state.draining.load(Ordering::SeqCst);
    let health = speech.health().await;
    let (waiting, max_queue) = speech.queue();
    let mut body = json!({
        "ok": true,
        "max_processes": state.config().max_processes,
        "voices": voices,
        "uptime_s": state.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "queue": {"waiting": waiting, "max": max_queue},
    });
    let mut error = None;
    match &health {
        Some(h) => {
            body["processes"] = json!(h.processes);
            let failing: Vec<_> = h
                .workers
                .iter()
                .filter_map(|w| {
                    w.failed
                        .as_ref()
                        .map(|cause| json!({"voice": w.voice, "cause": cause}))
                })
                .collect();
            body["failing_voices"] = json!(failing);
            match &h.engine {
                EngineHealth::Ok(version) => body["engine"] = json!(version),
                EngineHealth::Unknown => body["engine"] = json!("checking"),
                EngineHealth::Unavailable(reason) => error = Some(reason.clone()),
            }
        }
        None => error = Some("the supervisor did not answer".into()),
    }
    if draining {
        error = Some("draining".into());
    }
    let status = match error {
        Some(reason) => {
            body["ok"] = json!(false);
            body["error"] = json!(reason);
            StatusCode::SERVICE_UNAVAILABLE
        }
        None => StatusCode::OK,
    };
    let response = warp::reply::with_status(warp::reply::json(&body), status).into_response();
    observe("/health", "GET", status, started);
    Ok(response)
}
/// `GET /api/voices`.
pub async fn list_voices(state: AppState) -> Result<Response, Infallible> {
    let started = Instant::now();
    let found = state.speech.voices().await;
    let health = state.speech.health().await;
    let warm = |name: &str| {
        health
            .as_ref()
            .map(|h| h.workers.iter().any(|w| w.voice == name && w.running))
            .unwrap_or(false)
    };
    let voices: Vec<_> = found
        .into_iter()
        .map(|entry| match entry {
            Ok(info) => json!({
                "name": info.name,
                "file": format!("{}.onnx", info.name),
                "language": info.language,
                "quality": info.quality,
                "sample_rate": info.sample_rate,
                "num_speakers": info.num_speakers,
                "speakers": info.speakers,
                "warm": warm(&info.name),
            }),
            Err(err) => json!({ "error": err.to_string() }),
        })
        .collect();
    let response = warp::reply::json(&json!({ "voices": voices })).into_response();
    observe("/api/voices", "GET", StatusCode::OK, started);
    Ok(response)
}

/// `GET /metrics`.
pub async fn metrics(state: AppState) -> Result<Response, Infallible> {
    let started = Instant::now();
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    observe("/metrics", "GET", StatusCode::OK, started);
    Ok(response)
}

/// The demo page (`examples/web/index.html`), built into the binary.
const WEB_PAGE: &str = include_str!("../../examples/web/index.html");

/// `GET /`: the demo page, unless `PIPER_WEB_UI=0`.
pub async fn web_page(state: AppState) -> Result<Response, warp::Rejection> {
    if !state.config().web_ui {
        return Err(warp::reject::not_found());
    }
    Ok(warp::reply::html(WEB_PAGE).into_response())
}
