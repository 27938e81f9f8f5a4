//! Voices added to and removed from `PIPER_VOICES_DIR` while the server
//! runs, as every front-end sees them, with the real engine.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const NEW: &str = "en_US-new-medium";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `voice` is listed by each front-end: `/api/voices`,
/// `/v1/audio/voices`, MaryTTS `/voices` and Wyoming `info` (when
/// `wyoming_port` is given; else as the first three).
async fn listed(server: &Server, wyoming_port: Option<u16>, voice: &str) -> [bool; 4] {
    let (_, api) = get_json(server, "/api/voices").await;
    let api = api["voices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == voice);
    let (_, openai) = get_json(server, "/v1/audio/voices").await;
    let openai = openai["voices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["id"] == voice);
    let mary = client()
        .get(server.url("/voices"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .any(|line| line.split(' ').next() == Some(voice));
    let Some(wyoming_port) = wyoming_port else {
        return [api, openai, mary, api && openai && mary];
    };
    let output = std::process::Command::new(python())
        .arg(root().join("tests/wyoming_client.py"))
        .arg(wyoming_port.to_string())
        .arg("info")
        .arg("{}")
        .output()
        .unwrap();
    assert!(output.status.success());
    let info: Value = serde_json::from_slice(&output.stdout).unwrap();
    let wyoming = info["tts"][0]["voices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == voice);
    [api, openai, mary, wyoming]
}

/// Polls until every front-end agrees that `voice` is (or is not) listed;
/// returns how long that took.
async fn until_listed(server: &Server, port: u16, voice: &str, wanted: bool) -> Duration {
    let started = Instant::now();
    loop {
        let now = listed(server, Some(port), voice).await;
        if now == [wanted; 4] {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{voice} listed: {now:?}, wanted {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voices_come_and_go_on_every_front_end_and_half_copies_are_not_loaded() {
    let dir = voices(&[VOICE]);
    let port = free_port();
    let server = Server::start(dir.path(), &[("PIPER_WYOMING_PORT", &port.to_string())]);
    assert_eq!(listed(&server, Some(port), VOICE).await, [true; 4]);
    let source = root().join("voices");

    // A voice copied slowly: its config first (one file alone is no voice),
    // then its model in pieces over about 2 s (each piece touches the file
    // again well within the settling second).
    std::fs::copy(
        source.join(format!("{VOICE}.onnx.json")),
        dir.path().join(format!("{NEW}.onnx.json")),
    )
    .unwrap();
    let model = std::fs::read(source.join(format!("{VOICE}.onnx"))).unwrap();
    let mut file = std::fs::File::create(dir.path().join(format!("{NEW}.onnx"))).unwrap();
    for piece in model.chunks(model.len() / 8 + 1) {
        file.write_all(piece).unwrap();
        file.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Half there: listed nowhere, and not usable by name.
        assert_eq!(listed(&server, None, NEW).await, [false; 4]);
        let (status, _, body) = post(
            &server,
            "/api/tts",
            json!({"text": "Too early.", "voice_model": NEW}),
        )
        .await;
        assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    }
    drop(file);
    let shown = until_listed(&server, port, NEW, true).await;
    eprintln!("the new voice showed on every front-end {shown:?} after its last byte");

    // It speaks, with an engine of its own.
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": "A new voice.", "voice_model": NEW}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(parse_wav(&body).seconds() > 0.3);
    let model_path = dir.path().join(format!("{NEW}.onnx"));
    let engine_of_new = || {
        server.engines().into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&*model_path.to_string_lossy()))
                .unwrap_or(false)
        })
    };
    let pid = engine_of_new().expect("the new voice's engine runs");

    // Removed during a long streamed answer: the answer is whole, then the
    // engine stops.
    let text = prose(1_500);
    let mut stream = post_stream(
        &server,
        "/api/tts",
        json!({"text": text, "voice_model": NEW, "stream": true}),
    )
    .await;
    let mut audio = Vec::new();
    let first = futures::StreamExt::next(&mut stream)
        .await
        .unwrap()
        .unwrap();
    audio.extend_from_slice(&first);
    std::fs::remove_file(dir.path().join(format!("{NEW}.onnx"))).unwrap();
    std::fs::remove_file(dir.path().join(format!("{NEW}.onnx.json"))).unwrap();
    let gone = until_listed(&server, port, NEW, false).await;
    eprintln!("the removed voice left every front-end within {gone:?}");
    assert_eq!(
        engine_of_new(),
        Some(pid),
        "the engine stopped before its request was done"
    );
    while let Some(piece) = futures::StreamExt::next(&mut stream).await {
        audio.extend_from_slice(&piece.expect("the answer is not cut"));
    }
    let wav = parse_streamed_wav(&audio);
    assert!(wav.seconds() > 30.0, "{} s", wav.seconds());
    let stopped = eventually(Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || engine_of_new().is_none()
    })
    .await;
    assert!(stopped, "the removed voice's engine still runs");
    // The other voice is untouched, and the removed one is not found.
    assert_eq!(listed(&server, Some(port), VOICE).await, [true; 4]);
    let (status, _, _) = post(
        &server,
        "/api/tts",
        json!({"text": "Gone.", "voice_model": NEW}),
    )
    .await;
    assert_eq!(status, 404);
}
