//! Stream a long text to a WAV file, writing audio as it arrives.
//!
//! ```sh
//! cargo run --release --example stream -- "First sentence. Second one. And a third." long.wav [voice]
//! ```
//!
//! With `"stream": true` piperd answers as soon as the first sentence is
//! synthesized and sends each further sentence when it is ready, so playback (or
//! here, writing) can start long before a long text is finished. The server is
//! `PIPERD_URL` (default `http://127.0.0.1:5050`), with `PIPERD_API_KEY` if it
//! requires a key.

use std::io::SeekFrom;
use std::process::ExitCode;
use std::time::Instant;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::fs::File;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// Size of the WAV header piperd sends: RIFF header, a 16-byte `fmt ` chunk for
/// 16-bit mono PCM, and the `data` chunk header. Audio starts right after.
const HEADER_LEN: u64 = 44;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (text, out, voice) = match args.as_slice() {
        [text, out] => (text, out, None),
        [text, out, voice] => (text, out, Some(voice)),
        _ => {
            eprintln!("usage: stream TEXT OUT.wav [VOICE]");
            return ExitCode::from(2);
        }
    };
    let base = std::env::var("PIPERD_URL").unwrap_or_else(|_| "http://127.0.0.1:5050".into());

    match stream_to_file(&base, text, voice.map(String::as_str), out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            // A cut stream is not a usable WAV: remove it rather than leave a
            // file that looks complete.
            let _ = std::fs::remove_file(out);
            ExitCode::FAILURE
        }
    }
}

async fn stream_to_file(
    base: &str,
    text: &str,
    voice: Option<&str>,
    out: &str,
) -> Result<(), String> {
    let mut body = json!({ "text": text, "stream": true });
    if let Some(voice) = voice {
        body["voice_model"] = json!(voice);
    }

    let started = Instant::now();
    let response = client()
        .post(format!("{base}/api/tts"))
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("cannot reach {base}: {e}"))?;

    // Errors found before any audio (bad voice, empty text, server busy) still
    // come back as an ordinary JSON error with a status code.
    let status = response.status();
    if !status.is_success() {
        let err: Value = response.json().await.unwrap_or_default();
        return Err(format!(
            "piperd answered {status}: {} ({})",
            err["error"].as_str().unwrap_or("?"),
            err["code"].as_str().unwrap_or("?"),
        ));
    }

    let mut file = File::create(out)
        .await
        .map_err(|e| format!("cannot create {out}: {e}"))?;
    let mut written: u64 = 0;
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    let mut rate = 0; // samples per second, read from the header
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        // A failure after audio went out aborts the transfer, so an error here
        // (rather than a clean end) means the audio is incomplete.
        let chunk = chunk.map_err(|e| format!("stream broken after {written} bytes: {e}"))?;
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("cannot write {out}: {e}"))?;
        written += chunk.len() as u64;

        // Keep the first 44 bytes to check the layout and read the rate.
        if header.len() < HEADER_LEN as usize {
            let want = (HEADER_LEN as usize - header.len()).min(chunk.len());
            header.extend_from_slice(&chunk[..want]);
            if header.len() == HEADER_LEN as usize {
                // The fix-up below writes at fixed offsets, which is right only
                // for a plain header with `data` straight after `fmt `.
                if &header[0..4] != b"RIFF" || &header[36..40] != b"data" {
                    return Err("the answer is not a 44-byte-header WAV".into());
                }
                rate = u32::from_le_bytes(header[24..28].try_into().unwrap());
            }
        }
        if written <= HEADER_LEN {
            continue; // only the header so far
        }
        if written - (chunk.len() as u64) <= HEADER_LEN {
            println!("first audio after {} ms", started.elapsed().as_millis());
        }
        // 16-bit mono: two bytes per sample.
        let seconds = (written - HEADER_LEN) as f64 / (2.0 * f64::from(rate));
        print!("\r{written} bytes, {seconds:.1} s of audio");
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }
    if written <= HEADER_LEN {
        return Err("the answer ended before any audio".into());
    }
    println!(", done in {} ms", started.elapsed().as_millis());

    // While streaming, the server cannot know the length, so the header's two
    // size fields are 0xFFFFFFFF ("unknown"). Browsers, ffmpeg and most players
    // accept that, but other tools (Python's `wave`, some editors) then get the
    // length wrong or refuse the file. Now that it is complete, write the sizes:
    //   offset 4:  RIFF chunk size = file length - 8 (everything after this field)
    //   offset 40: data chunk size = file length - 44 (the audio bytes)
    // Both are little-endian u32s, so this holds for files under 4 GiB (about
    // 27 hours of 22,050 Hz audio).
    fix_wav_sizes(&mut file, written)
        .await
        .map_err(|e| format!("cannot fix the header of {out}: {e}"))?;
    println!("wrote {out}");
    Ok(())
}

async fn fix_wav_sizes(file: &mut File, len: u64) -> std::io::Result<()> {
    let riff_size = u32::try_from(len - 8).map_err(std::io::Error::other)?;
    let data_size = u32::try_from(len - HEADER_LEN).map_err(std::io::Error::other)?;
    file.seek(SeekFrom::Start(4)).await?;
    file.write_all(&riff_size.to_le_bytes()).await?;
    file.seek(SeekFrom::Start(40)).await?;
    file.write_all(&data_size.to_le_bytes()).await?;
    // tokio's File writes in the background; flush so errors surface here and
    // the file is complete when we return.
    file.flush().await
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
