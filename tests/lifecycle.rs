//! Process life on the real engine: idle stop, eviction, the process limit,
//! config changes, and the server's own shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_process_is_stopped_and_restarted_on_demand() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[("PIPER_PROCESS_IDLE_TIMEOUT", "1")]);
    let (status, _, _) = post(&server, "/api/tts", json!({"text": "Wake up."})).await;
    assert_eq!(status, 200);
    let stopped = eventually(Duration::from_secs(10), || server.engines().is_empty()).await;
    assert!(stopped, "the idle engine was not stopped");
    let (_, health) = get_json(&server, "/health").await;
    assert_eq!(health["processes"], 0);
    let (status, _, body) = post(&server, "/api/tts", json!({"text": "Back again."})).await;
    assert_eq!(status, 200);
    assert!(parse_wav(&body).seconds() > 0.3);
    let (_, health) = get_json(&server, "/health").await;
    assert_eq!(health["processes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_voices_share_two_processes_through_idle_eviction() {
    let names = ["v1", "v2", "v3", "v4"];
    let dir = voices(&names);
    let server = Server::start(dir.path(), &[("PIPER_MAX_PROCESSES", "2")]);
    // Concurrently: two voices get processes, the others wait for one to idle.
    let requests = names.iter().map(|name| {
        let server = &server;
        async move {
            post(
                server,
                "/api/tts",
                json!({"text": format!("This is voice {name}."), "voice_model": name}),
            )
            .await
        }
    });
    for (status, _, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    // Then one after another, twice round.
    for name in names.iter().chain(names.iter()) {
        let (status, _, _) = post(
            &server,
            "/api/tts",
            json!({"text": "Again.", "voice_model": name}),
        )
        .await;
        assert_eq!(status, 200);
        assert!(server.engines().len() <= 2, "more processes than the limit");
    }
    let (_, health) = get_json(&server, "/health").await;
    assert_eq!(health["processes"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_process_is_busy_a_request_waits_then_gets_503() {
    let dir = voices(&["busy", "other"]);
    let server = Server::start(
        dir.path(),
        &[("PIPER_MAX_PROCESSES", "1"), ("PIPER_QUEUE_TIMEOUT", "1")],
    );
    let mut stream = post_stream(
        &server,
        "/api/tts",
        json!({"text": prose(6000), "voice_model": "busy", "stream": true}),
    )
    .await;
    stream.next().await.unwrap().unwrap();
    let started = Instant::now();
    let (status, headers, body) = post(
        &server,
        "/api/tts",
        json!({"text": "Me too.", "voice_model": "other"}),
    )
    .await;
    assert_eq!(status, 503);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "did not wait"
    );
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["code"], "process_limit");
    assert!(value["error"]
        .as_str()
        .unwrap()
        .starts_with("Process limit reached"));
    assert!(headers.contains_key("retry-after"));
    // The busy request is unharmed.
    let mut bytes = 0;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.unwrap().len();
    }
    assert!(bytes > 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_voice_config_is_picked_up_without_a_restart() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let (status, _, _) = post(&server, "/api/tts", json!({"text": "Before."})).await;
    assert_eq!(status, 200);
    let before = server.engines();
    assert_eq!(before.len(), 1);

    let path = dir.path().join(format!("{VOICE}.onnx.json"));
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["audio"]["quality"] = json!("high");
    config["dataset"] = json!("edited");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();

    let (_, voices) = get_json(&server, "/api/voices").await;
    assert_eq!(voices["voices"][0]["quality"], "high");
    let (status, _, body) = post(&server, "/api/tts", json!({"text": "After."})).await;
    assert_eq!(status, 200);
    assert!(parse_wav(&body).seconds() > 0.2);
    let after = server.engines();
    assert_eq!(after.len(), 1);
    assert_ne!(
        before, after,
        "the engine was not restarted for the new config"
    );
    let metrics = metrics_text(&server).await;
    assert!(metrics.contains("piperd_config_cache_lookups_total{result=\"reloaded\"}"));
    assert!(metrics.contains("reason=\"config_change\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_long_streaming_request_then_exits_cleanly() {
    let dir = voices(&[VOICE]);
    // A grace that outlasts the request even on a busy machine: what is
    // tested is that it drains, not how fast the engine is.
    let mut server = Server::start(dir.path(), &[("PIPER_SHUTDOWN_GRACE", "300")]);
    let mut stream = post_stream(
        &server,
        "/api/tts",
        json!({"text": prose(3000), "stream": true}),
    )
    .await;
    let mut bytes = stream.next().await.unwrap().unwrap().to_vec();
    server.signal(libc::SIGTERM);
    // New connections are refused while the request goes on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client().get(server.url("/health")).send().await.is_err());
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.expect("the drained request completes"));
    }
    let wav = parse_streamed_wav(&bytes);
    assert!(wav.seconds() > 100.0, "{} s", wav.seconds());
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
    let gone = eventually(Duration::from_secs(2), || server.engines().is_empty()).await;
    assert!(gone, "engine left behind: {:?}", server.engines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    let dir = voices(&[VOICE]);
    let mut server = Server::start(dir.path(), &[]);
    let mut stream = post_stream(
        &server,
        "/api/tts",
        json!({"text": prose(20_000), "stream": true}),
    )
    .await;
    stream.next().await.unwrap().unwrap();
    server.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let gone = eventually(Duration::from_secs(2), || server.engines().is_empty()).await;
    assert!(gone, "engine left behind: {:?}", server.engines());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_server_leaves_no_engine() {
    let dir = voices(&["a", "b"]);
    let mut server = Server::start(dir.path(), &[]);
    for name in ["a", "b"] {
        let (status, _, _) = post(&server, "/api/warmup", json!({"voice_model": name})).await;
        assert_eq!(status, 200);
    }
    // One engine busy mid-utterance, one idle.
    let busy = tokio::spawn({
        let url = server.url("/api/tts");
        async move {
            let _ = client()
                .post(url)
                .json(&json!({"text": prose(5000), "voice_model": "a"}))
                .send()
                .await;
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.engines().len(), 2);
    server.signal(libc::SIGKILL);
    let _ = server.wait_exit(Duration::from_secs(5));
    let gone = eventually(Duration::from_secs(2), || server.engines().is_empty()).await;
    assert!(gone, "engines outlived the server: {:?}", server.engines());
    busy.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_mid_request_is_replaced_and_the_request_succeeds() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let (status, _, _) = post(&server, "/api/warmup", json!({})).await;
    assert_eq!(status, 200);
    let engine = server.engines()[0];
    let text = prose(1500);
    let request = tokio::spawn({
        let url = server.url("/api/tts");
        async move {
            let response = client()
                .post(url)
                .json(&json!({"text": text}))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.bytes().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    // SAFETY: kill(2) on the engine process this test's server started.
    unsafe {
        libc::kill(engine as i32, libc::SIGKILL);
    }
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let wav = parse_wav(&body);
    assert!(wav.seconds() > 60.0, "{} s", wav.seconds());
    let engines = server.engines();
    assert_eq!(engines.len(), 1);
    assert_ne!(engines[0], engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_503_while_draining() {
    let dir = voices(&[VOICE]);
    let mut server = Server::start(dir.path(), &[("PIPER_DRAIN_DELAY", "3")]);
    let (status, _) = get_json(&server, "/health").await;
    assert_eq!(status, 200);
    server.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, health) = get_json(&server, "/health").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["ok"], false);
    assert_eq!(health["error"], "draining");
    // Requests are still served during the delay.
    let (status, _, _) = post(&server, "/api/tts", json!({"text": "One more."})).await;
    assert_eq!(status, 200);
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
}

/// CPU time (user + system, in clock ticks) of a process.
fn cpu_ticks(pid: u32) -> u64 {
    // utime and stime, the 14th and 15th fields of the line.
    stat_fields(pid)
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
}

/// A client that hangs up mid-stream stops the engine at once: the sentence
/// in progress is cancelled, not finished for nobody (a voice assistant's
/// barge-in must free the voice for the next answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_stops_its_sentence_at_once() {
    let dir = voices(&[VOICE]);
    // One long piece: more than a second of synthesis on any machine.
    let server = Server::start(dir.path(), &[("PIPER_ENGINE_MAX_CHARS", "400")]);
    let long = "and the road went on past the mill and the church and the school \
                where the children sang in the morning while the baker opened his \
                shop and the carts came down from the hills with apples and wool \
                and the river ran slow and brown under the old stone bridge that \
                nobody had mended since the great flood of the year the king came \
                to see the new harbour and the ships";
    assert!(long.len() > 350);
    let text = format!("Hello there. And {long}.");
    // Warm, and done making its sessions in the background, so that the
    // engine's CPU time below is the sentence's alone.
    let (status, _, _) = post(&server, "/api/warmup", json!({})).await;
    assert_eq!(status, 200);
    let engine = server.engines()[0];
    let settled = Instant::now();
    let mut last = cpu_ticks(engine);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = cpu_ticks(engine);
        if now == last || settled.elapsed() > Duration::from_secs(20) {
            break;
        }
        last = now;
    }
    let mut stream = post_stream(&server, "/api/tts", json!({"text": text, "stream": true})).await;
    let mut received = 0;
    while received <= 44 {
        received += stream.next().await.unwrap().unwrap().len();
    }
    // The first sentence is here; the long one is being synthesized.
    let busy = cpu_ticks(engine);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(cpu_ticks(engine) > busy, "the engine is not working");
    drop(stream);
    let hung_up = Instant::now();
    // Idle: no CPU time between two readings 150 ms apart.
    let mut last = cpu_ticks(engine);
    let mut idle = false;
    while !idle && hung_up.elapsed() < Duration::from_millis(700) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = cpu_ticks(engine);
        idle = now == last;
        last = now;
    }
    assert!(
        idle,
        "the engine still worked {:?} after the client hung up",
        hung_up.elapsed()
    );
    assert_eq!(server.engines(), vec![engine], "the engine was replaced");
    let (status, _, body) = post(&server, "/api/tts", json!({"text": "Next, please."})).await;
    assert_eq!(status, 200);
    assert!(parse_wav(&body).seconds() > 0.3);
}

/// Whether a process of this pid still exists, even as a zombie nobody
/// reaped: a server that exits before reaping an engine leaves one of these.
fn exists(pid: u32) -> bool {
    !stat_fields(pid).is_empty()
}

/// Every stop reaps every engine before the server exits: idle, with a
/// request in flight cut by the grace, and on the second-signal path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_engine_outlives_the_server_over_ten_stops() {
    for round in 0..10 {
        let dir = voices(&[VOICE]);
        let mut server = Server::start(dir.path(), &[("PIPER_SHUTDOWN_GRACE", "1")]);
        let (status, _, _) = post(&server, "/api/warmup", json!({})).await;
        assert_eq!(status, 200);
        let engines = server.engines();
        assert_eq!(engines.len(), 1, "round {round}");
        let mut stream = None;
        if round % 3 != 0 {
            let mut s = post_stream(
                &server,
                "/api/tts",
                json!({"text": prose(3000), "stream": true}),
            )
            .await;
            s.next().await.unwrap().unwrap();
            stream = Some(s);
        }
        server.signal(libc::SIGTERM);
        if round % 3 == 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            server.signal(libc::SIGINT);
        }
        assert_eq!(
            server.wait_exit(Duration::from_secs(15)),
            Some(0),
            "round {round}"
        );
        let left: Vec<u32> = engines.into_iter().filter(|&pid| exists(pid)).collect();
        assert!(
            left.is_empty() && server.engines().is_empty(),
            "round {round}: engine {left:?} still there when the server had exited"
        );
        drop(stream);
    }
}
