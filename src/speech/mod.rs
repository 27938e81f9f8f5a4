//! The speech core: what every front-end calls to turn text into audio.

pub mod cache;
