//! Deadlines on a connection that carries no work: one that is slow to send
//! a whole message, or silent between messages.
//!
//! The protocol decides what a message is; this module only needs to be
//! told when one is complete and its work begins ([`Activity::busy`]) and
//! when that work is over (the [`Busy`] guard drops). In between, nothing
//! times out: a long streamed answer, or a request waiting for an engine,
//! is not idle however quiet the socket is. Outside work, [`IdleIo`] fails
//! the connection's reads once the deadline passes, which makes the
//! protocol layer (hyper, or a Wyoming reader) close it.
//!
//! Why not hyper's `header_read_timeout`: hyper 1.x starts that timer as
//! soon as it waits for a request head, on a new connection and equally on
//! a kept-alive one between requests (`Conn::poll_read_head`, re-armed by
//! `State::idle`). A kept-alive connection would then be closed after the
//! header timeout (10 s) rather than the keep-alive timeout, so both
//! deadlines are kept here, where "idle" and "half a message" differ.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// How long a connection may go without completing a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// From its start, a connection must complete its first message within
    /// this, and from its first byte, every later message. `None`: no limit.
    pub message: Option<Duration>,
    /// Between messages, with no work in flight, a connection may stay
    /// silent this long. `None`: no limit.
    pub idle: Option<Duration>,
}

/// Which deadline closed a connection: the error inside the `TimedOut`
/// I/O error that [`IdleIo`] reads return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Expired {
    #[error("no whole message within {0:?}")]
    Message(Duration),
    #[error("idle for {0:?}")]
    Idle(Duration),
}

/// What one connection is doing, shared by its reader and its protocol.
#[derive(Clone, Debug)]
pub struct Activity(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// The task reading the connection, woken when its deadline changes.
    reader: AtomicWaker,
}

#[derive(Debug)]
struct State {
    /// Messages whose work is in flight.
    busy: usize,
    /// Since when no work has been in flight (the start, at first).
    quiet_since: Instant,
    /// When the first byte of the next message arrived, if one did.
    message_started: Option<Instant>,
    /// Whether a message was ever completed.
    served: bool,
    /// The connection switched protocols (a WebSocket): the protocol now on
    /// it keeps its own deadlines and its own drain.
    upgraded: bool,
}

/// Work in flight for a complete message: no deadline until it drops.
#[derive(Debug)]
pub struct Busy(Arc<Shared>);

impl Default for Activity {
    fn default() -> Self {
        Activity(Arc::new(Shared {
            state: Mutex::new(State {
                busy: 0,
                quiet_since: Instant::now(),
                message_started: None,
                served: false,
                upgraded: false,
            }),
            reader: AtomicWaker::new(),
        }))
    }
}

impl Activity {
    /// A message is complete: its work runs until the guard drops.
    pub fn busy(&self) -> Busy {
        let mut state = self.0.state.lock().expect("activity lock");
        state.busy += 1;
        state.served = true;
        state.message_started = None;
        Busy(self.0.clone())
    }

    /// The connection switched protocols: no deadline nor drain of this
    /// module applies to it any more, for as long as it lives.
    pub fn upgraded(&self) {
        self.0.state.lock().expect("activity lock").upgraded = true;
        self.0.reader.wake();
    }

    /// Whether work is in flight (an upgraded connection always has).
    pub fn is_busy(&self) -> bool {
        let state = self.0.state.lock().expect("activity lock");
        state.busy > 0 || state.upgraded
    }

    /// Bytes arrived: outside work, they start the next message.
    fn received(&self) {
        let mut state = self.0.state.lock().expect("activity lock");
        if state.busy == 0 && state.served && state.message_started.is_none() {
            state.message_started = Some(Instant::now());
        }
    }

    /// When the connection expires, and which deadline that is; `None`
    /// while work is in flight or without limits.
    fn deadline(&self, limits: &Deadlines) -> Option<(Instant, Expired)> {
        let state = self.0.state.lock().expect("activity lock");
        if state.busy > 0 || state.upgraded {
            return None;
        }
        let message = |since: Instant| limits.message.map(|d| (since + d, Expired::Message(d)));
        match state.message_started {
            _ if !state.served => message(state.quiet_since),
            Some(started) => message(started),
            None => limits
                .idle
                .map(|d| (state.quiet_since + d, Expired::Idle(d))),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().expect("activity lock");
        state.busy -= 1;
        if state.busy == 0 {
            state.quiet_since = Instant::now();
            drop(state);
            // The reader may be parked with no deadline: arm it now.
            self.0.reader.wake();
        }
    }
}

/// A connection's byte stream with the deadlines of [`Deadlines`], and an
/// end of input once `closing` fires while no work is in flight (a draining
/// server does not wait for connections that carry no request).
pub struct IdleIo<T> {
    inner: T,
    activity: Activity,
    limits: Deadlines,
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Held as long as the bytes flow, upgraded or not (a connection's
    /// place under the cap).
    _kept: Option<Box<dyn Send + Sync>>,
}

impl<T> IdleIo<T> {
    pub fn new(
        inner: T,
        activity: Activity,
        limits: Deadlines,
        closing: CancellationToken,
    ) -> Self {
        IdleIo {
            inner,
            activity,
            limits,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
            closing: Box::pin(closing.cancelled_owned()),
            _kept: None,
        }
    }

    /// Keeps `guard` until the stream is dropped: after an upgrade, that is
    /// when the new protocol ends, not when the HTTP connection does.
    pub fn keeping(mut self, guard: impl Send + Sync + 'static) -> Self {
        self._kept = Some(Box::new(guard));
        self
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.received();
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => {}
        }
        // Registered before the deadline is read, so that work ending in
        // between still wakes this task.
        this.activity.0.reader.register(cx.waker());
        if this.activity.is_busy() {
            return Poll::Pending;
        }
        if this.closing.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(())); // End of input: the connection closes.
        }
        let Some((deadline, expired)) = this.activity.deadline(&this.limits) else {
            return Poll::Pending;
        };
        if this.armed != Some(deadline) {
            this.timer.as_mut().reset(deadline.into());
            this.armed = Some(deadline);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                expired,
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: Deadlines = Deadlines {
        message: Some(Duration::from_millis(300)),
        idle: Some(Duration::from_millis(900)),
    };

    fn pair(
        limits: Deadlines,
    ) -> (
        IdleIo<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Activity,
    ) {
        let (ours, theirs) = tokio::io::duplex(1024);
        let activity = Activity::default();
        let io = IdleIo::new(ours, activity.clone(), limits, CancellationToken::new());
        (io, theirs, activity)
    }

    async fn expiry(io: &mut IdleIo<tokio::io::DuplexStream>) -> (Duration, Expired) {
        let started = Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match io.read(&mut buf).await {
                Ok(0) => panic!("end of input instead of a deadline"),
                Ok(_) => continue,
                Err(err) => {
                    let expired = *err.get_ref().unwrap().downcast_ref::<Expired>().unwrap();
                    return (started.elapsed(), expired);
                }
            }
        }
    }

    #[tokio::test]
    async fn a_silent_new_connection_expires_after_the_message_deadline() {
        let (mut io, _peer, _) = pair(LIMITS);
        let (after, expired) = expiry(&mut io).await;
        assert_eq!(expired, Expired::Message(Duration::from_millis(300)));
        assert!(after >= Duration::from_millis(250), "{after:?}");
    }

    #[tokio::test]
    async fn between_messages_the_idle_deadline_applies() {
        let (mut io, _peer, activity) = pair(LIMITS);
        drop(activity.busy());
        let (after, expired) = expiry(&mut io).await;
        assert_eq!(expired, Expired::Idle(Duration::from_millis(900)));
        assert!(after >= Duration::from_millis(800), "{after:?}");
    }

    #[tokio::test]
    async fn a_later_message_begun_gets_the_message_deadline_from_its_first_byte() {
        let (mut io, mut peer, activity) = pair(LIMITS);
        drop(activity.busy());
        peer.write_all(b"GET / HT").await.unwrap();
        let (after, expired) = expiry(&mut io).await;
        assert_eq!(expired, Expired::Message(Duration::from_millis(300)));
        assert!(after < Duration::from_millis(800), "{after:?}");
    }

    #[tokio::test]
    async fn work_in_flight_never_expires_and_its_end_rearms_the_deadline() {
        let (mut io, _peer, activity) = pair(LIMITS);
        let busy = activity.busy();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_millis(1500), io.read(&mut buf)).await;
        assert!(read.is_err(), "a busy connection expired");
        // The reader is parked; the end of the work must wake it.
        let reader = tokio::spawn(async move { expiry(&mut io).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(busy);
        let (_, expired) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the end of the work armed the idle deadline")
            .unwrap();
        assert_eq!(expired, Expired::Idle(Duration::from_millis(900)));
    }

    #[tokio::test]
    async fn an_upgraded_connection_has_no_deadline_and_no_drain() {
        let (ours, _peer) = tokio::io::duplex(1024);
        let closing = CancellationToken::new();
        let activity = Activity::default();
        let mut io = IdleIo::new(ours, activity.clone(), LIMITS, closing.clone());
        drop(activity.busy());
        activity.upgraded();
        closing.cancel();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_millis(1500), io.read(&mut buf)).await;
        assert!(read.is_err(), "an upgraded connection expired or ended");
    }

    #[tokio::test]
    async fn closing_ends_the_input_of_a_connection_without_work() {
        let (ours, _peer) = tokio::io::duplex(1024);
        let closing = CancellationToken::new();
        let mut io = IdleIo::new(ours, Activity::default(), LIMITS, closing.clone());
        closing.cancel();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_millis(200), io.read(&mut buf))
            .await
            .expect("end of input at once")
            .unwrap();
        assert_eq!(n, 0);
    }
}
