//! Speak several texts to `output_0.wav`, `output_1.wav`, ...
//!
//! ```sh
//! cargo run --release --example batch
//! ```
//!
//! The usual version of this is a loop that posts one text after another. This
//! one warms the voice first, keeps two requests in flight, and retries when the
//! server says it is busy. The server is `PIPERD_URL` (default
//! `http://127.0.0.1:5050`), with `PIPERD_API_KEY` if it requires a key.

use std::process::ExitCode;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use reqwest::{header, Client, StatusCode};
use serde_json::{json, Value};

const VOICE: &str = "en_US-joe-medium.onnx";

/// Requests in flight at once. All requests for one voice share its one engine
/// process, which takes them in turns sentence by sentence, so a higher number
/// does not make a batch faster; two keeps the engine busy while the other
/// answer is still being transferred and written.
const CONCURRENCY: usize = 2;

/// Attempts per text when the server answers 503 (busy, restarting a voice, or
/// draining for a restart). Bounded so a server that stays down fails the batch
/// instead of hanging it.
const MAX_ATTEMPTS: u32 = 4;

/// Longest wait we accept from a `Retry-After`; a longer one means the server
/// will not recover soon enough to be worth waiting for.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Piper turns text into speech on your own machine, with no cloud service.",
        "This is the third and last sentence of the batch. Thank you for listening.",
    ];
    let base = std::env::var("PIPERD_URL").unwrap_or_else(|_| "http://127.0.0.1:5050".into());
    // One client for every request: it reuses connections. Cloning it is cheap.
    let client = client();

    // Loading a voice takes about a second. Doing it once up front, before the
    // batch, keeps that out of the first request and fails fast if the voice is
    // missing or broken.
    let warmup_url = format!("{base}/api/warmup");
    match post_json(&client, &warmup_url, json!({ "voice_model": VOICE })).await {
        Ok(response) => {
            let ready: Value = response.json().await.unwrap_or_default();
            println!("voice {} ready in {} ms", ready["voice"], ready["ready_ms"]);
        }
        Err(err) => {
            eprintln!("warmup failed: {err}");
            return ExitCode::FAILURE;
        }
    }

    // `buffer_unordered` runs up to CONCURRENCY futures at once and yields each
    // result as it completes. Each future writes its own file, so order does
    // not matter.
    let results: Vec<Result<String, String>> = stream::iter(texts.iter().enumerate())
        .map(|(i, text)| {
            let client = client.clone();
            let url = format!("{base}/api/tts");
            async move {
                let out = format!("output_{i}.wav");
                let body = json!({ "text": text, "voice_model": VOICE });
                let wav = post_json(&client, &url, body)
                    .await
                    .map_err(|e| format!("{out}: {e}"))?
                    .bytes()
                    .await
                    .map_err(|e| format!("{out}: transfer failed: {e}"))?;
                tokio::fs::write(&out, &wav)
                    .await
                    .map_err(|e| format!("cannot write {out}: {e}"))?;
                Ok(format!("wrote {out} ({} bytes)", wav.len()))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    // Report every text, then fail if any failed, so one bad text does not hide
    // the others' results.
    let mut failed = 0;
    for result in results {
        match result {
            Ok(line) => println!("{line}"),
            Err(err) => {
                eprintln!("{err}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} texts failed", texts.len());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Posts `body` and returns the successful response, retrying on 503 as told by
/// `Retry-After`. Any other error becomes the server's `error (code)`.
async fn post_json(client: &Client, url: &str, body: Value) -> Result<reqwest::Response, String> {
    let mut attempt = 1;
    loop {
        let response = client
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }

        // piperd sets Retry-After (in seconds) on every 503 that is worth
        // retrying; without one, wait a second anyway rather than hammering.
        let wait = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs);
        let error = describe(status, response).await;
        if status != StatusCode::SERVICE_UNAVAILABLE
            || attempt == MAX_ATTEMPTS
            || wait > MAX_RETRY_WAIT
        {
            return Err(error);
        }
        eprintln!(
            "{error}; retrying in {}s (attempt {attempt} of {MAX_ATTEMPTS})",
            wait.as_secs()
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// The server's JSON error as `status: error (code)`.
async fn describe(status: StatusCode, response: reqwest::Response) -> String {
    let raw = response.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&raw) {
        Ok(err) => format!(
            "{status}: {} ({})",
            err["error"].as_str().unwrap_or("?"),
            err["code"].as_str().unwrap_or("?"),
        ),
        Err(_) => format!("{status}: {raw}"),
    }
}

/// An HTTP client that sends `Authorization: Bearer $PIPERD_API_KEY` when that
/// variable is set: a server started with `PIPER_API_KEYS` requires it on the
/// `/api/` routes.
fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(key) = std::env::var("PIPERD_API_KEY") {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .expect("PIPERD_API_KEY must be printable ASCII");
        value.set_sensitive(true); // keeps it out of debug output
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("building a client fails only on a broken TLS setup")
}
