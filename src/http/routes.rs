//! The route table. Path filters come before method filters so that an
//! unknown path is a 404 and a known path with a wrong method a 405.

use crate::body::BodyError;
use bytes::{Buf, Bytes};
use futures::Stream;
use warp::{Filter, Rejection, Reply};

use std::sync::Arc;

use subtle::ConstantTimeEq;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use std::convert::Infallible;
use std::time::Instant;

use warp::http::Method;
use warp::path::FullPath;

use super::error::{refused, ApiError};
use super::{elevenlabs, openai};
use super::{ops, seed, RequestCtx};
use super::{AppState, MAX_BODY_BYTES};
use std::collections::HashMap;

/// Every route of the API, with the JSON error `recover`s, API keys and CORS.
pub fn routes(state: AppState) -> BoxedFilter<(Response,)> {
    let keys = Arc::new(state.config().api_keys.clone());
    let tts = warp::path!("api" / "tts")
        .and(warp::post())
        .and(authorized(keys.clone()))
        .and(with_state(state.clone()))
        .and(request_ctx())
        .and(body())
        .and_then(seed::tts);
    let warmup = warp::path!("api" / "warmup")
        .and(warp::post())
        .and(authorized(keys.clone()))
        .and(with_state(state.clone()))
        .and(request_ctx())
        .and(body())
        .and_then(seed::warmup);
    let phonemes = warp::path!("api" / "phonemes")
        .and(warp::post())
        .and(authorized(keys.clone()))
        .and(with_state(state.clone()))
        .and(request_ctx())
        .and(body())
        .and_then(seed::phonemes);
    let voices = warp::path!("api" / "voices")
        .and(warp::get())
        .and(authorized(keys.clone()))
        .and(with_state(state.clone()))
        .and_then(ops::list_voices);
    // Probes and scrapers carry no key: these two stay open.
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and_then(ops::health);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and_then(ops::metrics);
    let web = warp::path::end()
        .and(warp::get())
        .and(with_state(state.clone()))
        .and_then(ops::web_page);

    // `/v1/*` answers every error, its own 404s included, in OpenAI's shape.
    let speech = warp::path!("audio" / "speech")
        .and(warp::post())
        .and(authorized(keys.clone()))
        .and(with_state(state.clone()))
        .and(request_ctx())
        .and(body())
        .and_then(openai::speech);
    let models = warp::path!("models")
        .and(warp::get())
        .and(authorized(keys.clone()))
        .and(with_state(state.clone()))
        .and_then(openai::models);
    let audio_voices = warp::path!("audio" / "voices")
        .and(warp::get())
        .and(authorized(keys))
        .and(with_state(state.clone()))
        .and_then(openai::audio_voices);
    // ElevenLabs' WebSockets: the key is checked on the socket, where it
    // may also come in the query or the first message.
    let stream_input = warp::path!("text-to-speech" / String / "stream-input")
        .map(|voice| (voice, elevenlabs::Kind::Single));
    let multi_stream_input = warp::path!("text-to-speech" / String / "multi-stream-input")
        .map(|voice| (voice, elevenlabs::Kind::Multi));
    let live = stream_input
        .or(multi_stream_input)
        .unify()
        .untuple_one()
        .and(warp::ws())
        .and(with_state(state.clone()))
        .and(request_ctx())
        .and(
            warp::query::<HashMap<String, String>>()
                .or(warp::any().map(HashMap::new))
                .unify(),
        )
        .and(warp::header::optional::<String>("xi-api-key"))
        .and(warp::header::optional::<String>("authorization"))
        .and_then(
            |voice_id: String,
             kind,
             ws,
             state,
             ctx,
             query: HashMap<String, String>,
             xi_key: Option<String>,
             bearer: Option<String>| {
                let header_key =
                    xi_key.or_else(|| bearer.map(|b| elevenlabs::protocol::bearer(&b).to_string()));
                let header_key = header_key.or_else(|| {
                    query
                        .get("authorization")
                        .or_else(|| query.get("xi_api_key"))
                        .map(|b| elevenlabs::protocol::bearer(b).to_string())
                });
                let upgrade = elevenlabs::Upgrade {
                    kind,
                    voice_id,
                    query,
                    header_key,
                };
                elevenlabs::upgrade(state, ctx, upgrade, ws)
            },
        );
    let v1 = warp::path("v1").and(
        speech
            .or(models)
            .unify()
            .or(audio_voices)
            .unify()
            .or(live)
            .unify(),
    );

    let api = v1
        .or(tts)
        .unify()
        .or(warmup)
        .unify()
        .or(phonemes)
        .unify()
        .or(voices)
        .unify()
        .or(health)
        .unify()
        .or(metrics)
        .unify()
        .or(web)
        .unify();
    // Rejections (unknown routes, wrong methods, missing keys, bodies too
    // large) become JSON errors here, counted under their route with the
    // time they took.
    let api = warp::any()
        .map(Instant::now)
        .and(warp::path::full())
        .and(warp::method())
        .and(
            api.map(Ok::<Response, Rejection>)
                .or_else(|rejection| async move { Ok::<_, Infallible>((Err(rejection),)) }),
        )
        .map(
            |started: Instant,
             path: FullPath,
             method: Method,
             answer: Result<Response, Rejection>| {
                answer.unwrap_or_else(|rejection| {
                    refused(&rejection, path.as_str(), method.as_str(), started)
                })
            },
        );
    let origins = &state.config().cors_origins;
    if origins.is_empty() {
        return api.boxed();
    }
    let mut cors = warp::cors()
        .allow_methods(["GET", "POST", "OPTIONS"])
        .allow_headers(["authorization", "content-type", "x-request-id"])
        .expose_headers([
            "x-request-id",
            "x-sample-rate",
            "x-audio-cache",
            "retry-after",
        ]);
    cors = if origins.iter().any(|o| o == "*") {
        cors.allow_any_origin()
    } else {
        cors.allow_origins(origins.iter().map(String::as_str))
    };
    api.with(cors).map(Reply::into_response).boxed()
}

/// Requires `Authorization: Bearer <key>` when keys are configured. Keys
/// are compared in constant time, against every key, so neither timing nor
/// position tells anything about them.
fn authorized(keys: Arc<Vec<String>>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let keys = keys.clone();
            async move {
                if keys.is_empty() {
                    return Ok(());
                }
                let presented = header
                    .as_deref()
                    .and_then(|h| {
                        h.strip_prefix("Bearer ")
                            .or_else(|| h.strip_prefix("bearer "))
                    })
                    .unwrap_or("")
                    .trim();
                if key_matches(&keys, presented) {
                    Ok(())
                } else {
                    Err(warp::reject::custom(ApiError::Unauthorized))
                }
            }
        })
        .untuple_one()
}

/// Whether `presented` is one of `keys`. Compared in constant time, against
/// every key, so neither timing nor position tells anything about them.
pub fn key_matches(keys: &[String], presented: &str) -> bool {
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        matched |= key.as_bytes().ct_eq(presented.as_bytes());
    }
    bool::from(matched)
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
        .and(warp::body::stream())
        .and_then(|len: Option<u64>, stream| async move {
            collect(stream, len).await.map_err(warp::reject::custom)
        })
}

async fn collect<S, B>(stream: S, declared: Option<u64>) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    crate::body::read_bounded(stream, declared, MAX_BODY_BYTES)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge => ApiError::BodyTooLarge,
            BodyError::Unreadable(e) => ApiError::InvalidRequest(format!("cannot read body: {e}")),
        })
}
