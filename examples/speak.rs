//! Speak one text to a WAV file.
//!
//! ```sh
//! cargo run --release --example speak -- "Hello from piperd." hello.wav [voice]
//! ```
//!
//! The server is `PIPERD_URL` (default `http://127.0.0.1:5050`; start one with
//! `make run`), with `PIPERD_API_KEY` if it requires a key. Without a voice the
//! server uses its first one.

use std::process::ExitCode;

use serde_json::{json, Value};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (text, out, voice) = match args.as_slice() {
        [text, out] => (text, out, None),
        [text, out, voice] => (text, out, Some(voice)),
        _ => {
            eprintln!("usage: speak TEXT OUT.wav [VOICE]");
            return ExitCode::from(2);
        }
    };
    let base = std::env::var("PIPERD_URL").unwrap_or_else(|_| "http://127.0.0.1:5050".into());

    match speak(&base, text, voice.map(String::as_str)).await {
        Ok(wav) => {
            if let Err(err) = std::fs::write(out, &wav) {
                eprintln!("cannot write {out}: {err}");
                return ExitCode::FAILURE;
            }
            println!("wrote {out} ({} bytes)", wav.len());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Posts the text and returns the complete WAV, or a readable error.
async fn speak(base: &str, text: &str, voice: Option<&str>) -> Result<Vec<u8>, String> {
    let mut body = json!({ "text": text });
    // Leaving `voice_model` out (rather than sending null) lets the server pick
    // its default voice.
    if let Some(voice) = voice {
        body["voice_model"] = json!(voice);
    }

    let response = client()
        .post(format!("{base}/api/tts"))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("cannot reach {base}: {e}"))?;

    let status = response.status();
    if !status.is_success() {
        // Every piperd error is JSON `{"error": ..., "code": ...}`. Fall back to
        // the raw body in case something in between (a proxy) answered instead.
        let raw = response.text().await.unwrap_or_default();
        return Err(match serde_json::from_str::<Value>(&raw) {
            Ok(err) => format!(
                "piperd answered {status}: {} ({})",
                err["error"].as_str().unwrap_or("?"),
                err["code"].as_str().unwrap_or("?"),
            ),
            Err(_) => format!("piperd answered {status}: {raw}"),
        });
    }

    // Without `"stream": true` the answer is one complete WAV with exact header
    // sizes and a Content-Length, so reading it whole is fine.
    let wav = response
        .bytes()
        .await
        .map_err(|e| format!("transfer failed: {e}"))?;
    Ok(wav.to_vec())
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
