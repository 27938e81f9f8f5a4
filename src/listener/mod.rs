//! Accepting TCP connections within limits, for any front-end.
//!
//! Without limits, every socket a client opens costs the server a file
//! descriptor and a task for as long as the client likes: 400 connections
//! that sent half a request header were still open a minute later. The
//! pieces here bound that, and none of them knows HTTP, so that a Wyoming
//! front-end can reuse them:
//!
//! - [`ConnectionCap`]: at most `PIPER_MAX_CONNECTIONS` open at once;
//!   [`accept_until`] hands each accepted socket to the front-end either
//!   with an [`Admission`] (held for the connection's life) or as refused.
//! - [`idle`]: deadlines for a connection that carries no work (slow to
//!   send a whole message, or silent between messages), and an end of input
//!   for such connections when the server drains.
//! - [`fit_fd_limit`]: the descriptor limit raised to fit the cap.
//!
//! [`http`] is the HTTP front-end built on them.

pub mod http;
pub mod idle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Descriptors kept for everything but connections: the listener, three
/// pipes per engine, spooled temp files, the runtime's own, the logs.
pub const RESERVED_FDS: u64 = 256;

/// How many connections may be open at once.
#[derive(Clone, Debug)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    max: usize,
}

/// One admitted connection's place under the cap, given back on drop.
#[derive(Debug)]
pub struct Admission {
    _place: OwnedSemaphorePermit,
}

impl ConnectionCap {
    pub fn new(max: usize) -> ConnectionCap {
        ConnectionCap {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A place for one more connection, if the cap allows it.
    pub fn try_admit(&self) -> Option<Admission> {
        self.permits
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|place| Admission { _place: place })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// Accepts connections until `stop` fires, then closes the listening
/// socket (new connections are refused by the kernel from then on).
///
/// Over the cap, a connection is still accepted and handed to `refused`,
/// which should answer and close it at once rather than leave it waiting
/// in the kernel's backlog: a load balancer then gets an immediate answer
/// it can retry on another replica, where a backlogged connection looks
/// established but gets nothing until the balancer's own timeout (and once
/// the backlog is full, connection attempts are dropped and retried by the
/// client's kernel seconds later).
pub async fn accept_until(
    listener: TcpListener,
    cap: ConnectionCap,
    stop: CancellationToken,
    mut admitted: impl FnMut(TcpStream, SocketAddr, Admission),
    mut refused: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // A streamed answer ends in a small write after large ones:
                // with Nagle's algorithm it waits for the client's delayed
                // acknowledgement (about 40 ms on Linux) before it leaves.
                let _ = stream.set_nodelay(true);
                match cap.try_admit() {
                    Some(admission) => admitted(stream, peer, admission),
                    None => refused(stream, peer),
                }
            }
            // The client gave up before we took the connection: its own business.
            Err(err) if is_connection_error(&err) => {}
            // Out of descriptors, most likely: wait for some to be freed
            // rather than spin.
            Err(err) => {
                tracing::error!("accepting a connection failed: {err}; retrying in 1 s");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    drop(listener);
}

fn is_connection_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Raises the soft limit on open files to fit `max_connections` plus
/// [`RESERVED_FDS`], within the hard limit, and returns how many
/// connections fit (`max_connections` unless the hard limit is lower).
///
/// The soft limit is often 1024 (systemd's default, most shells) while the
/// hard one is far higher; a server at its soft limit fails `accept` and
/// every `open` with EMFILE, engines' pipes and temp files included, so the
/// cap must stay below it. Only the soft limit moves, and only as far as
/// needed: the engines inherit it.
pub fn fit_fd_limit(max_connections: usize) -> usize {
    let wanted = max_connections as u64 + RESERVED_FDS;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return max_connections;
    }
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = raised.rlim_cur;
        }
    }
    if limit.rlim_cur >= wanted {
        return max_connections;
    }
    let fit = limit.rlim_cur.saturating_sub(RESERVED_FDS).max(1) as usize;
    tracing::warn!(
        "PIPER_MAX_CONNECTIONS={max_connections} needs {wanted} open files but the limit is {}: \
         serving at most {fit} connections (raise LimitNOFILE / ulimit -n)",
        limit.rlim_cur
    );
    fit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_admits_up_to_its_max_and_takes_back_on_drop() {
        let cap = ConnectionCap::new(2);
        let a = cap.try_admit().unwrap();
        let _b = cap.try_admit().unwrap();
        assert!(cap.try_admit().is_none());
        assert_eq!(cap.open(), 2);
        drop(a);
        assert_eq!(cap.open(), 1);
        assert!(cap.try_admit().is_some());
    }

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (admitted_tx, refused_tx) = (tx.clone(), tx);
        let accepting = tokio::spawn(accept_until(
            listener,
            ConnectionCap::new(1),
            stop.clone(),
            move |stream, _, admission| {
                let _ = admitted_tx.send((stream.nodelay().unwrap(), Some(admission)));
            },
            move |stream, _| {
                let _ = refused_tx.send((stream.nodelay().unwrap(), None));
            },
        ));
        let _first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (nodelay, admission) = rx.recv().await.unwrap();
        assert!(admission.is_some(), "the first is admitted");
        assert!(nodelay, "an admitted connection has Nagle's algorithm off");
        // Over the cap of 1 while the first is held: refused, also at once.
        let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (nodelay, admission) = rx.recv().await.unwrap();
        assert!(admission.is_none(), "the second is over the cap");
        assert!(
            nodelay,
            "a refused connection's answer is not held back either"
        );
        stop.cancel();
        accepting.await.unwrap();
    }

    #[test]
    fn the_fd_limit_fits_a_modest_cap() {
        // Any test machine allows 64 + RESERVED_FDS open files.
        assert_eq!(fit_fd_limit(64), 64);
    }
}
