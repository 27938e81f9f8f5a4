//! The Wyoming front-end: Home Assistant's protocol for voice services, so
//! that it and any client of the `wyoming` Python package use piperd as
//! they would wyoming-piper.
//!
//! - [`codec`]: frames (JSON header line, data block, payload) over a stream.
//! - [`event`]: the events piperd reads and writes, typed.
//! - [`handler`]: one connection, from events to speech sessions and back.
//! - [`zeroconf`]: the mDNS announcement Home Assistant discovers.
//! - this module: the listener, with a cap on connections and the drain.
//!
//! Like every front-end it calls only the speech core ([`Speech`]); it
//! knows nothing of HTTP. Its connection cap is a semaphore of its own
//! (`PIPER_WYOMING_MAX_CONNECTIONS`) and its idle timeout lives in the
//! handler, since one Wyoming connection is one request: HTTP's listener
//! ([`crate::listener`], a floor above) deals in header and keep-alive
//! deadlines that Wyoming does not have.

pub mod codec;
pub mod event;
pub mod handler;
pub mod zeroconf;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::metrics as m;
use crate::speech::Speech;
use codec::Connection;
use event::Outgoing;
pub use handler::{Failure, Settings};

/// How long a refused connection may take to hear why.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            samples_per_chunk: config.wyoming_samples_per_chunk,
            idle_timeout: config.wyoming_idle_timeout,
        }
    }
}

/// Keeps the open-connections gauge right however a connection's task
/// ends (also when it is aborted at the end of the grace period).
struct Open;

impl Open {
    fn new() -> Open {
        gauge!(m::WYOMING_OPEN).increment(1.0);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        gauge!(m::WYOMING_OPEN).decrement(1.0);
    }
}

/// Serves Wyoming on `listener` until `shutdown` turns true (or its sender
/// goes), then stops accepting and waits for the connections: each
/// finishes the request in hand and closes. Dropping the future (the
/// server's grace period is over) aborts them, which drops their sessions.
pub async fn serve(
    listener: TcpListener,
    speech: Speech,
    settings: Settings,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    gauge!(m::WYOMING_OPEN).set(0.0);
    counter!(m::WYOMING_CONNECTIONS).absolute(0);
    counter!(m::WYOMING_REFUSED).absolute(0);
    let settings = Arc::new(settings);
    let slots = Arc::new(Semaphore::new(max_connections));
    let numbers = AtomicU64::new(1);
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Audio goes out per sentence and the last events are
                    // small: no waiting for more to fill a packet.
                    let _ = stream.set_nodelay(true);
                    match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            counter!(m::WYOMING_CONNECTIONS).increment(1);
                            let number = numbers.fetch_add(1, Ordering::Relaxed);
                            let handler = handler::Handler::new(
                                stream,
                                peer,
                                number,
                                speech.clone(),
                                settings.clone(),
                                shutdown.clone(),
                            );
                            tasks.spawn(async move {
                                let _open = Open::new();
                                handler.run().await;
                                drop(slot);
                            });
                        }
                        Err(_) => {
                            counter!(m::WYOMING_REFUSED).increment(1);
                            tasks.spawn(refuse(stream, peer, max_connections));
                        }
                    }
                }
                Err(err) => {
                    // Out of file descriptors, most likely: let some close.
                    tracing::warn!("wyoming accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if !tasks.is_empty() {
        tracing::info!(
            connections = tasks.len(),
            "wyoming: no new connections; finishing the requests in hand"
        );
    }
    while tasks.join_next().await.is_some() {}
}

/// One connection over the cap: told why, then closed.
async fn refuse(stream: TcpStream, peer: SocketAddr, max: usize) {
    let failure = Failure::TooManyConnections(max);
    let code = failure.code();
    counter!(m::ERRORS, "code" => code).increment(1);
    tracing::warn!(peer = %peer, frontend = "wyoming", code, "{failure}");
    let mut conn = Connection::new(stream);
    let error = Outgoing::Error {
        text: failure.to_string(),
        code,
    }
    .into_frame();
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        conn.write_frame(&error).await?;
        conn.shutdown().await
    })
    .await;
}
