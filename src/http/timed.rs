//! `/api/tts` with `"timestamps": true`: the audio with its words' times.
//!
//! Complete: one JSON object, `{"audio": base64, "format", "sample_rate",
//! "duration", "words": [{"word", "start", "end", "char_start",
//! "char_end"}], "captions"?}`. Streamed: NDJSON, one object per sentence
//! (`audio` is that sentence's piece of the encoded stream, `words` its
//! words, times over the whole stream), then `{"done": true, "audio": the
//! encoder's tail, "duration"}`, or `{"error", "code"}` if it failed. Word
//! offsets are in characters (Unicode scalar values) of the request's text;
//! times in seconds.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use super::{observe, ApiError, AppState, RequestCtx};
use crate::metrics as m;
use crate::speech::captions::{self, CaptionFormat};
use crate::speech::encode::{encode, encode_complete, encoder_for, Output};
use crate::speech::{Session, SpeechError, SpeechEvent, WordTime};

/// Byte offsets of a text to character offsets, for increasing offsets.
struct CharCursor {
    byte: usize,
    char: usize,
}

impl CharCursor {
    fn new() -> CharCursor {
        CharCursor { byte: 0, char: 0 }
    }

    fn at(&mut self, text: &str, byte: usize) -> usize {
        if byte < self.byte {
            *self = CharCursor::new();
        }
        self.char += text[self.byte..byte].chars().count();
        self.byte = byte;
        self.char
    }
}

/// Seconds, to the millisecond.
fn secs(samples: u64, rate: u32) -> f64 {
    (samples as f64 * 1000.0 / f64::from(rate.max(1))).round() / 1000.0
}

fn words_json(text: &str, words: &[WordTime], rate: u32, cursor: &mut CharCursor) -> Vec<Value> {
    words
        .iter()
        .map(|w| {
            let char_start = cursor.at(text, w.text.start);
            let char_end = cursor.at(text, w.text.end);
            json!({
                "word": &text[w.text.clone()],
                "start": secs(w.samples.start, rate),
                "end": secs(w.samples.end, rate),
                "char_start": char_start,
                "char_end": char_end,
            })
        })
        .collect()
}

/// The whole answer as one JSON object.
pub async fn complete(
    state: &AppState,
    ctx: &RequestCtx,
    session: Session,
    output: Output,
    text: &str,
    captions: Option<CaptionFormat>,
) -> Result<Response, ApiError> {
    let format = output.format;
    let config = state.config();
    let rate = session.sample_rate();
    let out_rate = encoder_for(output, rate)?.output_sample_rate();
    let cached = session.cached();
    let voice = session.voice().name.clone();
    let (chars, chunks) = session.text_size();
    let sink = Arc::new(Mutex::new(Vec::new()));
    let session = session.with_word_sink(sink.clone());
    let (file, summary) = encode_complete(
        session,
        output,
        config.spool_threshold_bytes,
        config.temp_dir.clone(),
    )
    .await?;
    let audio = file
        .into_bytes()
        .await
        .map_err(|e| SpeechError::Internal(format!("cannot read the spooled audio: {e}")))?;
    let sentences: Vec<(Range<usize>, Vec<WordTime>)> =
        std::mem::take(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()));
    let mut cursor = CharCursor::new();
    let words: Vec<Value> = sentences
        .iter()
        .flat_map(|(_, words)| words_json(text, words, rate, &mut cursor))
        .collect();
    let mut body = json!({
        "audio": BASE64.encode(&audio),
        "format": format.name(),
        "sample_rate": out_rate,
        "duration": secs(summary.samples, rate),
        "words": words,
    });
    if let Some(kind) = captions {
        let cues = captions::cues(text, &sentences, rate);
        body["captions"] = Value::String(captions::render(&cues, kind));
    }
    tracing::info!(
        request_id = %ctx.id, voice = %voice, chars, chunks, format = %format, cached,
        bytes = audio.len(), status = 200u16, ms = ctx.started.elapsed().as_millis() as u64,
        "speech synthesized with timestamps"
    );
    let mut response = warp::reply::json(&body).into_response();
    headers(&mut response, ctx, out_rate, cached);
    Ok(response)
}

/// The answer as NDJSON, one object per sentence as it is made.
pub fn streamed(
    ctx: &RequestCtx,
    route: &'static str,
    session: Session,
    output: Output,
    text: Arc<str>,
) -> Result<Response, ApiError> {
    let format = output.format;
    let rate = session.sample_rate();
    let encoder = encoder_for(output, rate)?;
    let out_rate = encoder.output_sample_rate();
    let cached = session.cached();
    let voice = session.voice().name.clone();
    let (chars, chunks) = session.text_size();
    let end_ctx = ctx.clone();
    struct State {
        session: Session,
        encoder: Option<Box<dyn crate::audio::Encoder>>,
        piece: Vec<u8>,
        cursor: CharCursor,
        text: Arc<str>,
    }
    let state = State {
        session,
        encoder: Some(encoder),
        piece: Vec::new(),
        cursor: CharCursor::new(),
        text,
    };
    let line = |value: Value| -> Result<Bytes, std::io::Error> {
        let mut bytes = serde_json::to_vec(&value).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        Ok(Bytes::from(bytes))
    };
    let finished = move |complete: bool| {
        if !complete {
            metrics::counter!(m::ERRORS, "code" => "stream_aborted").increment(1);
        }
        observe(route, "POST", StatusCode::OK, end_ctx.started);
        tracing::info!(
            request_id = %end_ctx.id, voice = %voice, chars, chunks, format = %format, cached,
            complete, status = 200u16, ms = end_ctx.started.elapsed().as_millis() as u64,
            "speech streamed with timestamps"
        );
    };
    let body = futures::stream::unfold(Some((state, finished)), move |held| async move {
        let (mut state, finished) = held?;
        loop {
            let mut encoder = state.encoder.take()?;
            match state.session.next().await {
                Some(SpeechEvent::Audio(pcm)) => {
                    let (back, out) = encode(encoder, pcm).await;
                    match out {
                        Ok(bytes) => {
                            state.piece.extend_from_slice(&bytes);
                            state.encoder = Some(back);
                        }
                        Err(err) => {
                            finished(false);
                            return Some((line(error_json(err)), None));
                        }
                    }
                }
                Some(SpeechEvent::SentenceEnd { words, .. }) => {
                    state.encoder = Some(encoder);
                    let text = state.text.clone();
                    let words = words_json(&text, &words, rate, &mut state.cursor);
                    let audio = BASE64.encode(std::mem::take(&mut state.piece));
                    let value = json!({
                        "audio": audio,
                        "format": format.name(),
                        "sample_rate": out_rate,
                        "words": words,
                    });
                    return Some((line(value), Some((state, finished))));
                }
                Some(SpeechEvent::Done(summary)) => {
                    return match encoder.finish() {
                        Ok(tail) => {
                            state.piece.extend_from_slice(&tail);
                            finished(true);
                            let value = json!({
                                "done": true,
                                "audio": BASE64.encode(std::mem::take(&mut state.piece)),
                                "duration": secs(summary.samples, rate),
                            });
                            Some((line(value), None))
                        }
                        Err(err) => {
                            finished(false);
                            let err = SpeechError::Internal(err.to_string());
                            Some((line(error_json(err)), None))
                        }
                    };
                }
                Some(SpeechEvent::Failed(err)) => {
                    finished(false);
                    return Some((line(error_json(err)), None));
                }
                None => {
                    finished(false);
                    return None;
                }
            }
        }
    });
    let mut response = warp::reply::stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers(&mut response, ctx, out_rate, cached);
    response
        .headers_mut()
        .insert("x-audio-format", HeaderValue::from_static(format.name()));
    Ok(response)
}

/// A failure after the answer started: the last line.
fn error_json(err: SpeechError) -> Value {
    tracing::warn!("timed audio stream failed: {err}");
    let err = ApiError::Speech(err);
    let (_, code) = err.status_and_code();
    json!({"error": err.to_string(), "code": code})
}

fn headers(response: &mut Response, ctx: &RequestCtx, rate: u32, cached: bool) {
    let headers = response.headers_mut();
    headers.insert("x-sample-rate", HeaderValue::from(rate));
    headers.insert(
        "x-audio-cache",
        HeaderValue::from_static(if cached { "hit" } else { "miss" }),
    );
    if let Ok(value) = HeaderValue::from_str(&ctx.id) {
        headers.insert("x-request-id", value);
    }
}
