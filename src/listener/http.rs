//! The HTTP front-end: hyper serving the API on the connections of the
//! accept loop, with the cap and deadlines of [`super`], and the drain.
//!
//! warp's own `serve(..).incoming(..).graceful(..)` has no knob for any of
//! that (it builds hyper's connection itself, with no timer, so not even
//! hyper's header timeout is on), so the routes are served here through
//! `warp::service`. Each connection runs on a task of [`HttpServer`]'s
//! tracker, so that the server can wait for all of them (the drain) and
//! cut those left (after the grace).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::idle::{Activity, Busy, Deadlines, Expired, IdleIo};
use super::{accept_until, Admission, ConnectionCap};

/// Refused connections answered at once; beyond, they are just closed (a
/// flood must not turn the answers themselves into open descriptors).
const REFUSALS_AT_ONCE: usize = 64;
/// How long a refused connection is kept to let its client read the 503.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The answer over the cap, written before the request is read: a load
/// balancer retries a 503 on another replica, a client honours Retry-After.
static REFUSAL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"error":"Too many connections: the server is at PIPER_MAX_CONNECTIONS, retry shortly","code":"too_many_connections"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// A running HTTP front-end.
pub struct HttpServer {
    connections: TaskTracker,
    /// Stop accepting; connections finish their request and close.
    closing: CancellationToken,
    /// Close every connection now.
    cut: CancellationToken,
}

impl HttpServer {
    /// Starts accepting on `listener`. The handle is the accept loop's
    /// task: it ends only after [`stop_accepting`](Self::stop_accepting)
    /// (or a bug), which the server watches.
    pub fn start<S, B>(
        listener: TcpListener,
        cap: ConnectionCap,
        deadlines: Deadlines,
        service: S,
    ) -> (HttpServer, JoinHandle<()>)
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
        B: Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let server = HttpServer {
            connections: TaskTracker::new(),
            closing: CancellationToken::new(),
            cut: CancellationToken::new(),
        };
        let connections = server.connections.clone();
        let closing = server.closing.clone();
        let cut = server.cut.clone();
        let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
        let mut refusal_log = RefusalLog::default();
        let accept = tokio::spawn(async move {
            let (tracker, refusing) = (connections.clone(), connections.clone());
            let (conn_closing, conn_cut, refuse_cut) = (closing.clone(), cut.clone(), cut.clone());
            accept_until(
                listener,
                cap,
                closing,
                move |stream, peer, admission| {
                    tracker.spawn(serve_connection(
                        stream,
                        peer,
                        admission,
                        service.clone(),
                        deadlines,
                        conn_closing.clone(),
                        conn_cut.clone(),
                    ));
                },
                move |stream, peer| {
                    refusal_log.refused(peer);
                    // Without a free answerer the socket just closes.
                    if let Ok(answerer) = refusals.clone().try_acquire_owned() {
                        let cut = refuse_cut.clone();
                        refusing.spawn(async move {
                            tokio::select! {
                                _ = refuse(stream) => {}
                                _ = cut.cancelled() => {}
                            }
                            drop(answerer);
                        });
                    }
                },
            )
            .await;
            // Closed once no more connections can come, so that `drained`
            // completes when the last one ends.
            connections.close();
        });
        (server, accept)
    }

    /// Closes the listening socket and asks every connection to close
    /// once its request is answered (at once for those without one).
    pub fn stop_accepting(&self) {
        self.closing.cancel();
    }

    /// Completes when accepting has stopped and every connection is closed.
    pub async fn drained(&self) {
        self.connections.wait().await;
    }

    /// Closes every connection still open, mid-answer or not, and waits
    /// (briefly: they end at once) for their tasks.
    pub async fn close_all(&self) {
        self.closing.cancel();
        self.cut.cancel();
        self.connections.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.connections.wait()).await;
    }
}

/// Warns of refused connections at most every [`REFUSAL_LOG_EVERY`], with
/// their count: under a flood, a line per connection would flood the log.
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    since: u64,
}

/// How often refused connections are reported.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

impl RefusalLog {
    fn refused(&mut self, peer: SocketAddr) {
        self.since += 1;
        if self.last.is_some_and(|at| at.elapsed() < REFUSAL_LOG_EVERY) {
            return;
        }
        tracing::warn!(
            %peer,
            refused = self.since,
            "PIPER_MAX_CONNECTIONS reached: refusing new connections with 503"
        );
        self.last = Some(std::time::Instant::now());
        self.since = 0;
    }
}

/// Serves one admitted connection until it closes, the server drains it,
/// or the server cuts it.
async fn serve_connection<S, B>(
    stream: TcpStream,
    peer: SocketAddr,
    admission: Admission,
    service: S,
    deadlines: Deadlines,
    closing: CancellationToken,
    cut: CancellationToken,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Activity::default();
    // The connection's place under the cap goes with its bytes: past an
    // upgrade (a WebSocket) it is held until the socket closes.
    let io = TokioIo::new(
        IdleIo::new(stream, activity.clone(), deadlines, closing.clone()).keeping(admission),
    );
    let service = Tracked {
        inner: service,
        activity,
    };
    // HTTP/1.1 with keep-alive, and HTTP/2 for clients that speak it, as
    // warp's server did. hyper's header timeout stays off: `IdleIo` keeps
    // that deadline (see `idle` for why).
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => result,
                _ = cut.cancelled() => return,
            }
        }
        _ = cut.cancelled() => return,
    };
    if let Err(err) = result {
        match expired(&*err) {
            Some(expired) => tracing::debug!(%peer, "connection closed: {expired}"),
            None => tracing::debug!(%peer, "connection ended: {err}"),
        }
    }
}

/// The deadline behind a connection's error, if one closed it.
fn expired(mut err: &(dyn std::error::Error + 'static)) -> Option<Expired> {
    loop {
        if let Some(expired) = err.downcast_ref::<Expired>() {
            return Some(*expired);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(expired) = io.get_ref().and_then(|e| e.downcast_ref::<Expired>()) {
                return Some(*expired);
            }
        }
        err = err.source()?;
    }
}

/// Answers 503 over the cap and closes. The request is drained for a
/// moment after the answer: closing a socket with unread input sends a
/// reset, which can destroy the answer before the client reads it.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(&REFUSAL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}

/// The API's service, marking each request's work on the connection's
/// [`Activity`] from the moment its header is in until its answer's body
/// is over, so that no deadline cuts a request being answered.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<BusyBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = self.activity.busy();
        let activity = self.activity.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                activity.upgraded();
            }
            Ok(response.map(|body| BusyBody { body, _busy: busy }))
        })
    }
}

/// An answer's body holding its request's [`Busy`] until hyper drops it,
/// after the last frame (or when the connection goes).
struct BusyBody<B> {
    body: B,
    _busy: Busy,
}

impl<B: Body + Unpin> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_answer() {
        let text = String::from_utf8(REFUSAL.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], "too_many_connections");
    }
}
