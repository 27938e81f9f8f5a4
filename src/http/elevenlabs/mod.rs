//! ElevenLabs' text-to-speech WebSockets, so that voice agents built for
//! ElevenLabs (Pipecat's `ElevenLabsTTSService`, LiveKit Agents'
//! `elevenlabs.TTS`, the `elevenlabs` SDK) use piperd by changing one URL.
//!
//! - `/v1/text-to-speech/{voice_id}/stream-input`: one text over time,
//!   ended by `{"text": ""}`.
//! - `/v1/text-to-speech/{voice_id}/multi-stream-input`: up to 16 contexts
//!   at once on one socket, each its own speech session, flushed, kept alive
//!   and closed by `context_id`.
//!
//! Text goes into a [`Speech::open`](crate::speech::Speech::open) session
//! per context: each sentence reaches the engine as soon as it is complete
//! or flushed, and its audio comes back as one message. With
//! `enable_ssml_parsing=true` the text is SSML, which can only be read a
//! whole document at a time: it is buffered until a `</speak>`, a flush or
//! the end ([`Speech::open_ssml`](crate::speech::Speech::open_ssml)). Closing a context
//! before its audio is done drops its session, which takes its sentences
//! out of the engine at once.
//!
//! This lives inside the HTTP front-end because it is HTTP upgraded: same
//! listener, connection cap, API keys and metrics. Its wire format and
//! close codes are its own ([`protocol`]); the socket loop is [`socket`].

pub mod protocol;
mod socket;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::filters::ws::Ws;
use warp::reply::{Reply, Response};

use super::{observe, ApiError, AppState, RequestCtx};
use crate::speech::SynthError;
pub use protocol::Kind;

/// The open sockets, for the server's drain: they are not HTTP requests
/// once upgraded, so the HTTP server's own drain does not see them.
#[derive(Clone, Default)]
pub struct Sockets {
    open: TaskTracker,
    /// Drain: a socket closes (1001) once none of its contexts is speaking.
    closing: CancellationToken,
    /// The grace is over: every socket closes now.
    cut: CancellationToken,
}

impl Sockets {
    /// No new sockets; those open end once their speech is done.
    pub fn stop(&self) {
        self.closing.cancel();
        self.open.close();
    }

    /// Completes when every socket has closed (after [`Sockets::stop`]).
    pub async fn drained(&self) {
        self.open.wait().await;
    }

    /// Closes every socket now, and waits (briefly) for them.
    pub async fn close_all(&self) {
        self.stop();
        self.cut.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.open.wait()).await;
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }
}

/// What the upgrade request carried.
pub struct Upgrade {
    pub kind: Kind,
    pub voice_id: String,
    pub query: HashMap<String, String>,
    /// `xi-api-key`, or the key of `Authorization: Bearer`.
    pub header_key: Option<String>,
}

/// Accepts the upgrade; everything else (key, voice, format) is checked on
/// the socket, where errors are protocol messages and close codes.
pub async fn upgrade(
    state: AppState,
    ctx: RequestCtx,
    upgrade: Upgrade,
    ws: Ws,
) -> Result<Response, Infallible> {
    let route = upgrade.kind.route();
    let sockets = state.sockets.clone();
    if state.draining.load(Ordering::SeqCst) || sockets.closing.is_cancelled() {
        let response = ApiError::from(SynthError::ShuttingDown).into_response();
        observe(route, "GET", response.status(), ctx.started);
        return Ok(response);
    }
    let token = sockets.open.token();
    // The transport takes somewhat more than the protocol allows, so that
    // a message just over the limit is read whole and refused with its
    // error and close code; far larger ones fail in the transport.
    let ws = ws
        .max_message_size(protocol::MAX_TRANSPORT_BYTES)
        .max_frame_size(protocol::MAX_TRANSPORT_BYTES);
    let state = Arc::new(state);
    Ok(ws
        .on_upgrade(move |socket| async move {
            socket::serve(socket, state, ctx, upgrade).await;
            drop(token);
        })
        .into_response())
}

impl Sockets {
    fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    fn cut(&self) -> &CancellationToken {
        &self.cut
    }
}
