//! The route table. Path filters come before method filters so that an
//! unknown path is a 404 and a known path with a wrong method a 405.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use warp::{Filter, Rejection, Reply};

use super::error::{recover, ApiError};
use super::handlers::{self, RequestCtx};
use super::{AppState, MAX_BODY_BYTES};

/// Every route of the API, with the JSON error `recover`.
pub fn routes(
    state: AppState,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    let tts = warp::path!("api" / "tts")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(request_ctx())
        .and(body())
        .and_then(handlers::tts);
    let warmup = warp::path!("api" / "warmup")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(request_ctx())
        .and(body())
        .and_then(handlers::warmup);
    let voices = warp::path!("api" / "voices")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and_then(handlers::list_voices);
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and_then(handlers::health);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .and_then(handlers::metrics);

    tts.or(warmup)
        .unify()
        .or(voices)
        .unify()
        .or(health)
        .unify()
        .or(metrics)
        .unify()
        .recover(recover)
        .unify()
}

fn with_state(
    state: AppState,
) -> impl Filter<Extract = (AppState,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

fn request_ctx() -> impl Filter<Extract = (RequestCtx,), Error = Rejection> + Clone {
    warp::header::optional::<String>("x-request-id").map(RequestCtx::new)
}

/// The request body, at most [`MAX_BODY_BYTES`]. Unlike warp's
/// `content_length_limit`, chunked uploads (no Content-Length) work too.
fn body() -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(|len: Option<u64>| async move {
            match len {
                Some(len) if len > MAX_BODY_BYTES as u64 => {
                    Err(warp::reject::custom(ApiError::BodyTooLarge))
                }
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(|stream| async move { collect(stream).await.map_err(warp::reject::custom) })
}

async fn collect<S, B>(stream: S) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::InvalidRequest(format!("cannot read body: {e}")))?;
        if out.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(ApiError::BodyTooLarge);
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            let n = piece.len();
            out.extend_from_slice(piece);
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}
