//! Admission control and the audio cap, against the real engine.

mod common;

use common::*;
use serde_json::json;

/// Requests that arrive together while the engine is still loading all
/// wait for their first audio: beyond `PIPER_MAX_QUEUE` they are refused at
/// once with `Retry-After`, `/health` stays 200 and shows the queue, and the
/// admitted ones are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_queue_bound_requests_are_refused_at_once() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[("PIPER_MAX_QUEUE", "2")]);
    let text = prose(400);
    // Sent one after another but all before the cold engine's first audio
    // (it takes most of a second to load): two are admitted, the rest wait
    // for nothing.
    let mut requests = Vec::new();
    for _ in 0..2 {
        let body = json!({"text": text, "stream": true});
        let server_url = server.url("/api/tts");
        requests.push(tokio::spawn(async move {
            let response = client().post(server_url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.bytes().await.unwrap().len())
        }));
    }
    let mut waited_together = false;
    for _ in 0..100 {
        let (_, health) = get_json(&server, "/health").await;
        if health["queue"]["waiting"] == 2 {
            waited_together = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(waited_together, "two requests never waited at once");
    let (status, health) = get_json(&server, "/health").await;
    assert_eq!(status, 200, "busy is not unhealthy: {health}");
    assert_eq!(health["queue"]["max"], 2);

    let started = std::time::Instant::now();
    let (status, headers, body) = post(&server, "/api/tts", json!({"text": "Hello."})).await;
    assert_eq!(status, 503);
    assert_eq!(error_code(&body), "overloaded");
    assert!(headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the refusal waited {:?}",
        started.elapsed()
    );
    for request in requests {
        let (status, len) = request.await.unwrap();
        assert_eq!(status, 200);
        assert!(len > 44 + 22050, "{len} bytes of audio");
    }
    // Once they spoke, the queue is empty and requests are admitted again.
    let (status, _, _) = post(&server, "/api/tts", json!({"text": "Hello."})).await;
    assert_eq!(status, 200);
    let metrics = metrics_text(&server).await;
    assert_eq!(metric(&metrics, "piperd_admission_refused_total"), 1.0);
    assert_eq!(metric(&metrics, "piperd_requests_waiting"), 0.0);
}

/// A complete answer is bounded in audio: refused from its text when it
/// surely exceeds `PIPER_MAX_AUDIO_SECONDS`, failed while it runs when it
/// turns out to; the same text streamed is not bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_answers_are_bounded_in_audio() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[("PIPER_MAX_AUDIO_SECONDS", "2")]);
    // 500 characters are at least 20 s of speech: refused before synthesis.
    let started = std::time::Instant::now();
    let (status, _, body) = post(&server, "/api/tts", json!({"text": prose(500)})).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (413, "audio_too_long")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(server.engines().is_empty(), "the engine was started for it");

    // 45 characters pass the estimate (1.8 s at the fastest) but take about
    // 3 s to say: stopped while it runs.
    let text = "The quick brown fox jumps over the lazy dogs.";
    let (status, _, body) = post(&server, "/api/tts", json!({"text": text})).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (413, "audio_too_long")
    );
    let (status, _, body) = post(&server, "/api/tts", json!({"text": text, "stream": true})).await;
    assert_eq!(status, 200);
    assert!(parse_streamed_wav(&body).seconds() > 2.0);
}
