//! SSML through the real binary and the real engine: breaks measured in the
//! audio, `prosody rate` measured in its length, malformed documents
//! refused with their line and column, on piperd's API, OpenAI's and
//! MaryTTS's.

mod common;

use common::*;
use serde_json::{json, Value};

/// Samples a second of the bundled voice.
const RATE: f64 = 22_050.0;
/// Silence, for measuring: samples within -40 dBFS.
const SILENT: u16 = 328;

/// The samples of one complete `/api/tts` answer for `body`.
async fn speak(server: &Server, body: Value) -> Vec<i16> {
    let (status, _, bytes) = post(server, "/api/tts", body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    parse_wav(&bytes).samples
}

/// Deterministic speech (both noise scales at 0) of `text`.
async fn speak_ssml(server: &Server, text: &str) -> Vec<i16> {
    speak(
        server,
        json!({"text": text, "voice_model": VOICE, "noise_scale": 0.0, "noise_w_scale": 0.0}),
    )
    .await
}

/// The silent runs between speech (not at the edges), in ms, in order.
fn gaps_ms(samples: &[i16], at_least_ms: f64) -> Vec<f64> {
    let mut gaps = Vec::new();
    let mut run_start: Option<usize> = None;
    let mut spoke = false;
    for (i, s) in samples.iter().enumerate() {
        if s.unsigned_abs() <= SILENT {
            run_start.get_or_insert(i);
        } else {
            if let (Some(start), true) = (run_start, spoke) {
                let ms = (i - start) as f64 / RATE * 1000.0;
                if ms >= at_least_ms {
                    gaps.push(ms);
                }
            }
            run_start = None;
            spoke = true;
        }
    }
    gaps
}

/// Samples from the first to the last sound.
fn speech_span(samples: &[i16]) -> usize {
    let loud = |s: &&i16| s.unsigned_abs() > SILENT;
    let first = samples.iter().position(|s| loud(&s)).unwrap_or(0);
    let last = samples.iter().rposition(|s| loud(&s)).unwrap_or(0);
    last.saturating_sub(first)
}

fn near(got: f64, want: f64, within: f64) -> bool {
    (got - want).abs() <= within
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaks_are_silence_of_the_asked_length() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    // Between sentences without a break, the voice's own pause is shorter
    // than any break asked for below.
    let plain = speak_ssml(&server, "<speak>The door is open. The light is on.</speak>").await;
    let natural = gaps_ms(&plain, 150.0);
    assert!(
        natural.iter().all(|g| *g < 400.0),
        "natural pauses {natural:?}"
    );
    let samples = speak_ssml(
        &server,
        r#"<speak>The door is open.<break time="700ms"/>The light is on.
           <break strength="x-strong"/>The window <break time="1.5s"/> is shut.</speak>"#,
    )
    .await;
    let gaps: Vec<f64> = gaps_ms(&samples, 400.0);
    eprintln!("natural pauses {natural:?} ms; breaks of 700, 1000, 1500 ms measured {gaps:?} ms");
    assert_eq!(gaps.len(), 3, "gaps over 400 ms: {gaps:?}");
    for (got, want) in gaps.iter().zip([700.0, 1000.0, 1500.0]) {
        assert!(
            near(*got, want, 20.0),
            "a {want} ms break measured {got:.1} ms: {gaps:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_rate_changes_the_duration_as_asked() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let line = "Rain is expected tomorrow afternoon across the whole region.";
    let normal = speech_span(&speak_ssml(&server, &format!("<speak>{line}</speak>")).await);
    for (rate, factor) in [
        ("50%", 2.0),
        ("x-fast", 0.5),
        ("slow", 1.0 / 0.75),
        ("+25%", 0.8),
    ] {
        let doc = format!(r#"<speak><prosody rate="{rate}">{line}</prosody></speak>"#);
        let got = speech_span(&speak_ssml(&server, &doc).await);
        let ratio = got as f64 / normal as f64;
        eprintln!("rate {rate}: {ratio:.3} times the duration, asked {factor:.3}");
        assert!(
            near(ratio, factor, factor * 0.1),
            "rate {rate}: {got} samples against {normal}, {ratio:.3} times, not {factor:.3}"
        );
    }
    // A rate on one sentence leaves the next at the request's own.
    let mixed = format!(
        r#"<speak><prosody rate="50%">{line}</prosody><break time="500ms"/>{line}</speak>"#
    );
    let samples = speak_ssml(&server, &mixed).await;
    let total = speech_span(&samples) as f64;
    let want = 3.0 * normal as f64 + 0.5 * RATE;
    assert!(
        near(total, want, want * 0.1),
        "{total} samples for a slow and a normal sentence, not about {want}"
    );
    // Relative to the request's own length_scale.
    let speak_at = |text: String| {
        json!({"text": text, "voice_model": VOICE, "noise_scale": 0.0,
               "noise_w_scale": 0.0, "length_scale": 2.0})
    };
    let slow = speech_span(&speak(&server, speak_at(format!("<speak>{line}</speak>"))).await);
    let doc = format!(r#"<speak><prosody rate="200%">{line}</prosody></speak>"#);
    let fast = speech_span(&speak(&server, speak_at(doc)).await);
    let ratio = fast as f64 / slow as f64;
    assert!(
        near(ratio, 0.5, 0.05),
        "200% of length_scale 2: {fast} samples against {slow}, {ratio:.3} times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ssml_is_refused_with_its_line_and_column() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let cases = [
        ("<speak>\n  Hello <break time=\"1s\">\n</speak>", 3, 1),
        ("<speak>One\n<break time=\"soon\"/></speak>", 2, 1),
        ("<speak>Tom & Jerry</speak>", 1, 12),
    ];
    for (doc, line, column) in cases {
        let (status, _, body) = post(&server, "/api/tts", json!({"text": doc})).await;
        assert_eq!(status, 400, "{doc}");
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["code"], "invalid_ssml", "{value}");
        assert_eq!(
            (value["line"].as_u64(), value["column"].as_u64()),
            (Some(line), Some(column)),
            "{value}"
        );
        let message = value["error"].as_str().unwrap();
        assert!(
            message.contains(&format!("line {line}, column {column}")),
            "{message}"
        );
    }
    // "ssml": true reads text that does not start with <speak> as SSML too;
    // "ssml": false reads a document as plain text.
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": "<p>Hi</p>", "ssml": true}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "invalid_ssml");
    let (status, _, _) = post(
        &server,
        "/api/tts",
        json!({"text": "<speak>Tom & Jerry", "ssml": false}),
    )
    .await;
    assert_eq!(status, 200);
    // OpenAI's shape on its route.
    let (status, _, body) = post(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "voice": "alloy", "input": "<speak><s>Hi</speak>"}),
    )
    .await;
    assert_eq!(status, 400);
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["error"]["code"], "invalid_ssml", "{value}");
    assert_eq!(value["error"]["type"], "invalid_request_error");
    assert_eq!(value["error"]["param"], "input");
    assert!(value["error"]["message"]
        .as_str()
        .unwrap()
        .contains("line 1, column"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssml_through_openai_and_marytts() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let doc = r#"<speak>Hello <break time="1s"/> world.</speak>"#;
    let (status, _, bytes) = post(
        &server,
        "/v1/audio/speech",
        json!({"model": "tts-1", "voice": "alloy", "input": doc, "response_format": "wav"}),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let gaps = gaps_ms(&parse_streamed_wav(&bytes).samples, 400.0);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(near(gaps[0], 1000.0, 20.0), "{gaps:?}");

    let form = serde_urlencoded::to_string([
        (
            "INPUT_TEXT",
            r#"<speak>Hello <break time="800ms"/> world.</speak>"#,
        ),
        ("INPUT_TYPE", "SSML"),
        ("OUTPUT_TYPE", "AUDIO"),
        ("AUDIO", "WAVE_FILE"),
        ("LOCALE", "en_US"),
    ])
    .unwrap();
    let response = client()
        .post(server.url("/process"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let wav = parse_wav(&response.bytes().await.unwrap());
    let gaps = gaps_ms(&wav.samples, 400.0);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(near(gaps[0], 800.0, 20.0), "{gaps:?}");
    // MaryTTS answers errors as plain text.
    let response = client()
        .get(server.url("/process"))
        .query(&[
            ("INPUT_TEXT", "<speak>\n<s>Hi</speak>"),
            ("INPUT_TYPE", "SSML"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(text.contains("line 2, column"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_name_the_documents_words_and_count_the_breaks() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let doc = r#"<speak>I owe <say-as interpret-as="cardinal">500</say-as> dollars.<break time="2s"/><sub alias="World Wide Web">WWW</sub> is big.</speak>"#;
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": doc, "timestamps": true, "noise_scale": 0.0, "noise_w_scale": 0.0}),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let value: Value = serde_json::from_slice(&body).unwrap();
    let words: Vec<(String, f64, f64)> = value["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["word"].as_str().unwrap_or_default().to_string(),
                w["start"].as_f64().unwrap(),
                w["end"].as_f64().unwrap(),
            )
        })
        .collect();
    let names: Vec<&str> = words.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(
        names,
        ["I", "owe", "500", "dollars", "WWW", "is", "big"],
        "{value}"
    );
    // The second sentence starts after the first and its 2 s of silence.
    let dollars_end = words[3].2;
    let www_start = words[4].1;
    // (A word's end can reach into the quiet edge the break replaces.)
    let gap = www_start - dollars_end;
    assert!((1.9..2.3).contains(&gap), "{gap} s between: {words:?}");
}
