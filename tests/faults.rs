//! Faults of the engine and what clients see. Crashes mid-utterance, hangs
//! and garbage need the test double (tests/fake_engine.py); everything the
//! real engine can show is tested on it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

fn fake() -> String {
    root().join("tests/fake_engine.py").display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_utterance_is_retried_once_and_succeeds() {
    let dir = voices(&[VOICE]);
    let state = tempfile::tempdir().unwrap();
    let fake = fake();
    let server = Server::start(
        dir.path(),
        &[
            ("PIPER_ENGINE", &fake),
            ("FAKE_STATE_DIR", state.path().to_str().unwrap()),
        ],
    );
    let text = "First sentence here. CRASHONCE:alpha in the second one. And a third.";
    let (status, _, body) = post(&server, "/api/tts", json!({"text": text})).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let wav = parse_wav(&body);
    // Every sentence is there once: 0.02 s of tone per character.
    let expected = 0.02 * text.len() as f64;
    assert!(
        (wav.seconds() - expected).abs() < 0.1,
        "{} s",
        wav.seconds()
    );
    let text = metrics_text(&server).await;
    assert_eq!(
        metric(
            &text,
            "piperd_process_restarts_total{voice=\"en_US-joe-medium\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "piperd_process_exits_total{voice=\"en_US-joe-medium\",reason=\"crash\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "piperd_process_starts_total{voice=\"en_US-joe-medium\"}"
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentence_that_always_crashes_fails_its_request_only() {
    let dir = voices(&[VOICE]);
    let fake = fake();
    let server = Server::start(dir.path(), &[("PIPER_ENGINE", &fake)]);
    let crashing = post(
        &server,
        "/api/tts",
        json!({"text": "This one will CRASH every time."}),
    );
    let fine = post(
        &server,
        "/api/tts",
        json!({"text": "A healthy request alongside."}),
    );
    let ((s1, _, b1), (s2, _, b2)) = tokio::join!(crashing, fine);
    assert_eq!((s1, error_code(&b1).as_str()), (502, "engine_crashed"));
    assert_eq!(s2, 200, "{}", String::from_utf8_lossy(&b2));
    let (status, _, _) = post(&server, "/api/tts", json!({"text": "After the storm."})).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_request_that_fails_midway_is_aborted_not_cut_short() {
    let dir = voices(&[VOICE]);
    let fake = fake();
    let server = Server::start(dir.path(), &[("PIPER_ENGINE", &fake)]);
    let text = "A first sentence that works. Then a CRASH that keeps on crashing.";
    let response = client()
        .post(server.url("/api/tts"))
        .json(&json!({"text": text, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut got = 0;
    let mut broken = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => got += bytes.len(),
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    assert!(got > 44, "the first sentence's audio was streamed");
    assert!(broken, "the transfer must break, not end as if complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_engine_is_killed_and_the_request_gets_504() {
    let dir = voices(&[VOICE]);
    let fake = fake();
    let server = Server::start(
        dir.path(),
        &[("PIPER_ENGINE", &fake), ("PIPER_ENGINE_TIMEOUT", "1")],
    );
    let (status, _, _) = post(&server, "/api/warmup", json!({})).await;
    assert_eq!(status, 200);
    let before = server.engines();
    let started = Instant::now();
    let (status, _, body) = post(&server, "/api/tts", json!({"text": "HANG"})).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (504, "engine_timeout")
    );
    // 1 s base plus 50 ms a character: it cannot answer before the deadline.
    assert!(started.elapsed() >= Duration::from_secs(1));
    let (status, _, _) = post(&server, "/api/tts", json!({"text": "Recovered."})).await;
    assert_eq!(status, 200);
    let after = server.engines();
    assert_eq!(after.len(), 1);
    assert_ne!(before, after, "the hung process was replaced");
    let text = metrics_text(&server).await;
    assert_eq!(
        metric(
            &text,
            "piperd_process_exits_total{voice=\"en_US-joe-medium\",reason=\"hang\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_breaks_the_protocol_gives_502_and_the_worker_recovers() {
    let dir = voices(&[VOICE]);
    let fake = fake();
    let server = Server::start(dir.path(), &[("PIPER_ENGINE", &fake)]);
    for (round, marker) in ["GARBAGE", "TRUNCATE", "ODDAUDIO"].into_iter().enumerate() {
        let (status, _, body) = post(&server, "/api/tts", json!({"text": marker})).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (502, "engine_bad_output"),
            "{marker}"
        );
        // A new text each time, so the audio cache cannot answer for the engine.
        let text = format!("Fine again, round {round}.");
        let (status, headers, _) = post(&server, "/api/tts", json!({"text": text})).await;
        assert_eq!(status, 200, "after {marker}");
        assert_eq!(headers["x-audio-cache"], "miss");
    }
    assert_eq!(server.engines().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_voice_is_failed_and_others_are_untouched() {
    let dir = voices(&["good", "broken"]);
    let fake = fake();
    let server = Server::start(
        dir.path(),
        &[
            ("PIPER_ENGINE", &fake),
            ("FAKE_CRASH_ON_START", "broken"),
            ("PIPER_MAX_RESTARTS", "2"),
        ],
    );
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": "Hello.", "voice_model": "broken"}),
    )
    .await;
    assert_eq!(status, 503);
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["code"], "voice_unavailable");
    let message = value["error"].as_str().unwrap();
    assert!(
        message.contains("fake engine cannot load this voice"),
        "{message}"
    );
    // Still failed during the cool-down, without new attempts.
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": "Again.", "voice_model": "broken"}),
    )
    .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (503, "voice_unavailable")
    );

    let (status, health) = get_json(&server, "/health").await;
    assert_eq!(
        status, 200,
        "one failed voice does not make the server unhealthy"
    );
    let failing = health["failing_voices"].as_array().unwrap();
    assert_eq!(failing.len(), 1, "{health}");
    assert_eq!(failing[0]["voice"], "broken");
    assert!(failing[0]["cause"]
        .as_str()
        .unwrap()
        .contains("cannot load"));

    let (status, _, _) = post(
        &server,
        "/api/tts",
        json!({"text": "Hello.", "voice_model": "good"}),
    )
    .await;
    assert_eq!(status, 200);
    let text = metrics_text(&server).await;
    assert_eq!(metric(&text, "piperd_voice_failed{voice=\"broken\"}"), 1.0);
    assert_eq!(
        metric(&text, "piperd_errors_total{code=\"voice_unavailable\"}"),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_never_gets_ready_is_given_up_on() {
    let dir = voices(&[VOICE]);
    let fake = fake();
    let server = Server::start(
        dir.path(),
        &[
            ("PIPER_ENGINE", &fake),
            ("FAKE_NEVER_READY", "1"),
            ("PIPER_ENGINE_START_TIMEOUT", "0.5"),
            ("PIPER_MAX_RESTARTS", "1"),
        ],
    );
    let (status, _, body) = post(&server, "/api/tts", json!({"text": "Anyone there?"})).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (503, "voice_unavailable")
    );
    assert!(eventually(Duration::from_secs(5), || server.engines().is_empty()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_starting_engine_is_waited_for() {
    let dir = voices(&[VOICE]);
    let fake = fake();
    let server = Server::start(
        dir.path(),
        &[("PIPER_ENGINE", &fake), ("FAKE_SLOW_START", "1.5")],
    );
    let (status, _, body) = post(&server, "/api/warmup", json!({})).await;
    assert_eq!(status, 200);
    let warm: Value = serde_json::from_slice(&body).unwrap();
    assert!(warm["ready_ms"].as_f64().unwrap() >= 1500.0, "{warm}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_engine_leaves_the_server_up_and_saying_why() {
    let dir = voices(&[VOICE]);
    for (python, reason) in [
        ("/nonexistent/python3", "cannot run"),
        // A Python without the piper package.
        ("/usr/bin/python3", "No module named"),
    ] {
        let server = Server::start(dir.path(), &[("PIPER_PYTHON", python)]);
        let ok = eventually(Duration::from_secs(30), || {
            std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(server.url("/health"))
                .output()
                .map(|o| o.stdout == b"503")
                .unwrap_or(false)
        })
        .await;
        assert!(ok, "health never said 503 for {python}");
        let (status, health) = get_json(&server, "/health").await;
        assert_eq!(status, 503);
        assert_eq!(health["ok"], false);
        let error = health["error"].as_str().unwrap();
        assert!(error.contains(reason), "{error}");
        let (status, _, body) = post(&server, "/api/tts", json!({"text": "Hello."})).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (503, "engine_unavailable")
        );
        assert!(server.engines().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_frees_its_place() {
    let dir = voices(&["one", "two"]);
    let server = Server::start(
        dir.path(),
        &[("PIPER_MAX_PROCESSES", "1"), ("PIPER_QUEUE_TIMEOUT", "20")],
    );
    // A long streamed request on voice one, abandoned after its first audio.
    let mut stream = post_stream(
        &server,
        "/api/tts",
        json!({"text": prose(20_000), "voice_model": "one", "stream": true}),
    )
    .await;
    stream.next().await.unwrap().unwrap();
    drop(stream);
    // Voice two needs the only process slot: voice one must let it go.
    let started = Instant::now();
    let (status, _, body) = post(
        &server,
        "/api/tts",
        json!({"text": "My turn.", "voice_model": "two"}),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(started.elapsed() < Duration::from_secs(20));
    let text = metrics_text(&server).await;
    assert_eq!(
        metric(
            &text,
            "piperd_process_exits_total{voice=\"one\",reason=\"evicted\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_cancel_fails_its_request_and_the_worker_still_idles() {
    let dir = voices(&[VOICE]);
    let fake = fake();
    let server = Server::start(
        dir.path(),
        &[("PIPER_ENGINE", &fake), ("PIPER_PROCESS_IDLE_TIMEOUT", "1")],
    );
    // The engine ends the sentence with a cancelled frame nobody asked for:
    // a broken protocol, blamed on that sentence, not a request left waiting.
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        post(&server, "/api/tts", json!({"text": "CANCELUNASKED"})),
    )
    .await;
    let (status, _, body) = answer.expect("the request was left waiting");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (502, "engine_bad_output")
    );
    let (status, _, _) = post(&server, "/api/tts", json!({"text": "Fine again."})).await;
    assert_eq!(status, 200);
    // Nothing is left counted in the engine: the worker idles and stops it.
    let idle = eventually(Duration::from_secs(10), || server.engines().is_empty()).await;
    assert!(idle, "the worker never idled: {:?}", server.engines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangs_fail_their_requests_but_never_the_voice() {
    let dir = voices(&[VOICE]);
    let fake = fake();
    let server = Server::start(
        dir.path(),
        &[
            ("PIPER_ENGINE", &fake),
            ("PIPER_ENGINE_TIMEOUT", "0.5"),
            ("PIPER_MAX_RESTARTS", "1"),
        ],
    );
    // More hangs than PIPER_MAX_RESTARTS allows crashes: each is its own
    // request's fault, and the voice stays up for everyone else.
    for round in 0..3 {
        let text = format!("HANG number {round}.");
        let (status, _, body) = post(&server, "/api/tts", json!({"text": text})).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (504, "engine_timeout"),
            "hang {round}"
        );
    }
    let (status, _, body) = post(&server, "/api/tts", json!({"text": "Still here."})).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (_, health) = get_json(&server, "/health").await;
    assert_eq!(health["failing_voices"], json!([]), "{health}");
    let text = metrics_text(&server).await;
    assert_eq!(
        metric(
            &text,
            "piperd_process_exits_total{voice=\"en_US-joe-medium\",reason=\"hang\"}"
        ),
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_but_valid_requests_are_not_taken_for_hangs() {
    let dir = voices(&[VOICE]);
    let fake = fake();
    let server = Server::start(
        dir.path(),
        &[
            ("PIPER_ENGINE", &fake),
            ("PIPER_ENGINE_TIMEOUT", "0.5"),
            // Half a second of work per second of audio.
            ("FAKE_RTF", "0.5"),
        ],
    );
    let text = "Slow but valid text.";
    // 0.4 s of speech at length_scale 1: 0.5 s plus 50 ms a character is
    // 1.5 s, and these take 2 s and 2.2 s: only a deadline that grows with
    // the audio asked for lets them finish.
    for (body, seconds) in [
        (json!({"text": text, "length_scale": 10.0}), 4.0),
        (json!({"text": text, "sentence_silence": 4.0}), 4.4),
    ] {
        let (status, _, answer) = post(&server, "/api/tts", body.clone()).await;
        assert_eq!(status, 200, "{body}: {}", String::from_utf8_lossy(&answer));
        let wav = parse_wav(&answer);
        assert!(
            (wav.seconds() - seconds).abs() < 0.05,
            "{body}: {} s",
            wav.seconds()
        );
    }
}
