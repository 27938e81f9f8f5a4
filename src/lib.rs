//! piperd: a supervised HTTP and Wyoming server for Piper neural text-to-speech.
//!
//! # Layout
//!
//! Every arrow points down: a module imports only from the floors below it.
//!
//! 1. [`server`] (start-up, serving, the ordered shutdown), [`listener`]
//!    (accepting connections within a cap and deadlines) and [`say`] (the
//!    `piperd say` command: the same core and engines, no port).
//! 2. The front-ends, each a thin adapter that imports no other: [`http`]
//!    (piperd's API, OpenAI's, the ops routes), [`wyoming`] (Home
//!    Assistant's protocol) and [`marytts`] (the MaryTTS server's API).
//! 3. [`speech`]: the transport-neutral core every front-end calls (request
//!    checks, voice catalog, audio cache, admission, sessions and events,
//!    word timings and captions).
//! 4. [`scheduler`]: the supervisor, one worker per voice (an actor shell
//!    over a pure planner and engine lifecycle).
//! 5. Leaves: [`body`] (request bodies read within a bound), [`engine`] (child process, framed protocol), [`text`]
//!    (sentence splitting, also as text arrives; normalization; SSML), [`audio`] (encoders,
//!    spool), [`voices`], [`config`], [`metrics`].

pub mod audio;
pub mod body;
pub mod config;
pub mod engine;
pub mod http;
pub mod listener;
pub mod marytts;
pub mod metrics;
pub mod say;
pub mod scheduler;
pub mod server;
pub mod speech;
#[cfg(test)]
mod testing;
pub mod text;
pub mod voices;
pub mod wyoming;

pub use config::Config;
