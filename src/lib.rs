//! piperd: a supervised HTTP and Wyoming server for Piper neural text-to-speech.
//!
//! # Layout
//!
//! - [`config`]: every setting, read from the environment.
//! - [`server`]: start-up, serving and the ordered shutdown.
//! - [`listener`]: accepting connections within limits (cap, deadlines).
//! - [`http`]: the warp routes, handlers, JSON errors and audio bodies.
//! - [`wyoming`]: the Wyoming protocol (Home Assistant), beside HTTP.
//! - [`audio`]: streaming encoders for WAV, PCM, MP3, Ogg/Opus and FLAC.
//! - [`scheduler`]: the supervisor, one worker per voice, the config cache.
//! - [`engine`]: the engine child process and its framed protocol.
//! - [`text`]: splitting text into chunks and sentences for the engine.
//! - [`voices`]: voice files on disk, name checks, `.onnx.json` configs.
//! - [`speech`]: the transport-neutral speech core every front-end calls.
//! - [`metrics`]: Prometheus metric names, buckets and the exporter.

pub mod audio;
pub mod config;
pub mod engine;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod scheduler;
pub mod server;
pub mod speech;
#[cfg(test)]
mod testing;
pub mod text;
pub mod voices;
pub mod wyoming;

pub use config::Config;
