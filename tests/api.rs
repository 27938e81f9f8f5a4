//! The HTTP contract of `/api/*`, `/health` and `/metrics`, on the real engine.

mod common;

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

fn error_code(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not a JSON error: {}", String::from_utf8_lossy(body)));
    assert!(
        value["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{value}"
    );
    value["code"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_text_gives_a_valid_wav_with_exact_sizes() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let text = "Hello there. This is a short test of the speech server.";
    for name in [format!("{VOICE}.onnx"), VOICE.to_string()] {
        let (status, headers, body) = post(
            &server,
            "/api/tts",
            json!({"text": text, "voice_model": name}),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(headers["content-type"], "audio/wav");
        assert_eq!(
            headers["content-length"].to_str().unwrap(),
            body.len().to_string()
        );
        assert!(headers.contains_key("x-request-id"));
        let wav = parse_wav(&body);
        assert_eq!(wav.spec.sample_rate, 22050);
        assert_eq!(wav.spec.channels, 1);
        assert_eq!(wav.spec.bits_per_sample, 16);
        // About 55 characters: speech runs 8 to 25 characters a second.
        let secs = wav.seconds();
        assert!((2.0..7.0).contains(&secs), "{secs} s of audio");
        assert!(rms(&wav.samples) > 300.0, "audio is silent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longer_text_gives_proportionally_longer_audio() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[("PIPER_CHUNK_SIZE", "300")]);
    let short = prose(100);
    let long = prose(1200);
    let (s1, _, b1) = post(&server, "/api/tts", json!({"text": short})).await;
    let (s2, _, b2) = post(&server, "/api/tts", json!({"text": long})).await;
    assert_eq!((s1, s2), (200, 200));
    let ratio = parse_wav(&b2).seconds() / parse_wav(&b1).seconds();
    assert!(
        (7.0..17.0).contains(&ratio),
        "12x the text gave {ratio}x the audio"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sends_audio_while_synthesis_goes_on() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let text = prose(2500);
    let response = client()
        .post(server.url("/api/tts"))
        .json(&json!({"text": text, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "audio/wav");
    assert!(response.headers().get("content-length").is_none());
    let mut body = response.bytes_stream();
    let mut bytes = Vec::new();
    while bytes.len() <= 44 {
        bytes.extend_from_slice(&body.next().await.unwrap().unwrap());
    }
    // The first audio is here: the request must still be in the worker.
    assert_still_synthesizing(&server).await;
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let wav = parse_streamed_wav(&bytes);
    assert_eq!(wav.spec.sample_rate, 22050);
    assert!(wav.seconds() > 60.0, "{} s", wav.seconds());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_error_and_disturbs_nothing() {
    let dir = voices(&[VOICE]);
    // A voice whose files live outside the folder, reached by symlinks.
    let outside = voices(&["elsewhere"]);
    for ext in ["onnx", "onnx.json"] {
        std::os::unix::fs::symlink(
            outside.path().join(format!("elsewhere.{ext}")),
            dir.path().join(format!("linked.{ext}")),
        )
        .unwrap();
    }
    let server = Server::start(dir.path(), &[]);
    let (status, _, _) = post(&server, "/api/warmup", json!({"voice_model": VOICE})).await;
    assert_eq!(status, 200);
    let engines = server.engines();
    assert_eq!(engines.len(), 1);

    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"text": ""}), 400, "empty_text"),
        (json!({"text": "  \n\t "}), 400, "empty_text"),
        (json!({"text": "a".repeat(100_001)}), 413, "text_too_long"),
        (json!({"voice_model": VOICE}), 400, "invalid_request"),
        (json!({"text": 42}), 400, "invalid_request"),
        (
            json!({"text": "hi", "length_scale": "slow"}),
            400,
            "invalid_request",
        ),
        (
            json!({"text": "hi", "voice_model": "nope"}),
            404,
            "voice_not_found",
        ),
        (
            json!({"text": "hi", "voice_model": "../voices/x"}),
            400,
            "invalid_voice_name",
        ),
        (
            json!({"text": "hi", "voice_model": "a/b.onnx"}),
            400,
            "invalid_voice_name",
        ),
        (
            json!({"text": "hi", "voice_model": "/etc/passwd"}),
            400,
            "invalid_voice_name",
        ),
        (
            json!({"text": "hi", "voice_model": ".."}),
            400,
            "invalid_voice_name",
        ),
        (
            json!({"text": "hi", "voice_model": "linked"}),
            400,
            "invalid_voice_name",
        ),
        (
            json!({"text": "hi", "length_scale": 0.0}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"text": "hi", "noise_scale": 5}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"text": "hi", "volume": -1}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"text": "hi", "sentence_silence": 100}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"text": "hi", "speaker": 3}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"text": "hi", "speaker": "nobody"}),
            400,
            "invalid_parameter",
        ),
        (
            json!({"text": "hi", "response_format": "ogg-vorbis"}),
            400,
            "unsupported_format",
        ),
        (json!({"text": "... !!! ???"}), 422, "no_speakable_text"),
        (json!({"text": "♪ ♫ 😀 — …"}), 422, "no_speakable_text"),
    ];
    for (body, want_status, want_code) in cases {
        let (status, headers, answer) = post(&server, "/api/tts", body.clone()).await;
        assert_eq!(
            status,
            want_status,
            "{body:.80}: {}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(error_code(&answer), want_code, "{body:.80}");
    }

    // The unknown voice's error lists what there is.
    let (_, _, answer) = post(
        &server,
        "/api/tts",
        json!({"text": "hi", "voice_model": "nope"}),
    )
    .await;
    let value: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(value["available"], json!(["en_US-joe-medium", "linked"]));

    let raw = |body: &'static str| {
        let server = &server;
        async move {
            let response = client()
                .post(server.url("/api/tts"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.bytes().await.unwrap())
        }
    };
    let (status, body) = raw("{\"text\": \"unterminated").await;
    assert_eq!((status, error_code(&body).as_str()), (400, "invalid_json"));
    let (status, body) = raw("not json at all").await;
    assert_eq!((status, error_code(&body).as_str()), (400, "invalid_json"));

    let huge = format!("{{\"text\": \"{}\"}}", "a".repeat(1_100_000));
    let response = client()
        .post(server.url("/api/tts"))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        error_code(&response.bytes().await.unwrap()),
        "body_too_large"
    );

    let response = client().get(server.url("/api/tts")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        error_code(&response.bytes().await.unwrap()),
        "method_not_allowed"
    );
    let response = client()
        .get(server.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(&response.bytes().await.unwrap()), "not_found");

    // The engine was never disturbed: same process, still speaking.
    assert_eq!(server.engines(), engines);
    let (status, _, body) = post(&server, "/api/tts", json!({"text": "Still here."})).await;
    assert_eq!(status, 200);
    assert!(parse_wav(&body).seconds() > 0.3);
    assert_eq!(server.engines(), engines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_the_engine_finds_hard_never_crash_it() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let (status, _, _) = post(&server, "/api/warmup", json!({})).await;
    assert_eq!(status, 200);
    let long_word = "x".repeat(3000);
    let texts = [
        "Hello 😀 world!",
        "\u{0}\u{7}null and bell\u{1b}[31m",
        long_word.as_str(),
        "<speak>tags are not SSML here</speak>",
        "123456789012345678901234567890",
        "?!?!?! Wait... what?!",
        "日本語のテキスト。",
        "مرحبا بالعالم",
        "a",
        "\n\n\nText after blank lines\r\n\r\nand carriage returns.",
        "Mr. Smith paid $3.50 (plus 20% tip) at 10:30 p.m. on 2026-11-25.",
        "- - - a - - -",
        "[[[ ]]] {{{ hello }}}",
    ];
    for text in texts {
        let (status, _, body) = post(&server, "/api/tts", json!({"text": text})).await;
        match status {
            200 => assert!(parse_wav(&body).seconds() > 0.0),
            422 => assert_eq!(error_code(&body), "no_speakable_text"),
            other => panic!("{text:?} gave {other}: {}", String::from_utf8_lossy(&body)),
        }
        // The engine may be recycled for memory after a long piece; what
        // must never happen is a crash, a hang or broken output.
        let metrics = metrics_text(&server).await;
        for reason in ["crash", "hang", "bad_output"] {
            let exits = metric(
                &metrics,
                &format!("piperd_process_exits_total{{voice=\"{VOICE}\",reason=\"{reason}\"}}"),
            );
            assert_eq!(exits, 0.0, "{text:?} ended the engine by {reason}");
        }
        assert_eq!(
            metric(&metrics, "piperd_process_restarts_total{"),
            0.0,
            "{text:?} made the engine restart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_requests_on_one_voice_all_succeed() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let requests = (0..8).map(|i| {
        let text = format!("Request number {i}. {}", prose(80 + i * 40));
        let server = &server;
        async move { post(server, "/api/tts", json!({"text": text})).await }
    });
    let answers = futures::future::join_all(requests).await;
    for (status, _, body) in answers {
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(parse_wav(&body).seconds() > 3.0);
    }
    assert_eq!(server.engines().len(), 1);
}

/// A request's first sentence does not wait for a long request's sentences:
/// it takes their cores, the engine drops them, and they are said again
/// later. The long request must lose nothing and repeat nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_request_takes_the_cores_of_a_long_one_which_loses_nothing() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[("PIPER_AUDIO_CACHE_MB", "0")]);
    // Without noise the same text gives (nearly) the same length each time.
    let long = json!({
        "text": prose(1500),
        "stream": true,
        "noise_scale": 0.0,
        "noise_w_scale": 0.0,
    });
    let mut alone = Vec::new();
    let mut body = post_stream(&server, "/api/tts", long.clone()).await;
    while let Some(chunk) = body.next().await {
        alone.extend_from_slice(&chunk.unwrap());
    }
    let alone = parse_streamed_wav(&alone);

    let mut shared = Vec::new();
    let mut body = post_stream(&server, "/api/tts", long).await;
    while shared.len() <= 44 {
        shared.extend_from_slice(&body.next().await.unwrap().unwrap());
    }
    let (status, _, short) = post(
        &server,
        "/api/tts",
        json!({"text": "A short request arrives in the middle."}),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&short));
    let short = parse_wav(&short);
    assert!(short.seconds() > 1.0 && rms(&short.samples) > 300.0);
    let before_short = shared.len();
    while let Some(chunk) = body.next().await {
        shared.extend_from_slice(&chunk.unwrap());
    }
    let shared = parse_streamed_wav(&shared);

    // The short request was answered while the long one still had most of
    // its audio to come: it took its turn at the next sentence (or took
    // back one of the long job's not yet heard), not after the whole job.
    let heard = before_short as f64 / (shared.samples.len() * 2 + 44) as f64;
    assert!(
        heard < 0.5,
        "the short request waited until {heard:.2} of the long one"
    );
    // A sentence lost or said twice would change the length by 1% or more
    // (the shortest, "Rain again!", is about 1% of it).
    assert_same_speech(("alone", &alone), ("when interrupted", &shared));
}

/// The same text said two ways: lengths within 0.5% of each other (noise
/// off), and the second is speech, not silence.
fn assert_same_speech(first: (&str, &Wav), second: (&str, &Wav)) {
    let ratio = second.1.seconds() / first.1.seconds();
    assert!(
        (0.995..1.005).contains(&ratio),
        "{} s {}, {} s {}",
        first.1.seconds(),
        first.0,
        second.1.seconds(),
        second.0
    );
    assert!(rms(&second.1.samples) > 300.0);
}

/// Sentences sent to engines so far that ran with `cores` (all or shared).
fn sentences(metrics: &str, cores: &str) -> f64 {
    let label = format!("cores=\"{cores}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("piperd_engine_sentences_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// 113 characters, with a comma near the middle.
const LONG_WITH_COMMA: &str = "When the long meeting finally ended late in the evening, \
                               everyone walked out into the cold rain and hurried home.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentences_share_the_cores_when_several_wait_and_say_the_same() {
    let dir = voices(&[VOICE]);
    let env = [
        ("PIPER_AUDIO_CACHE_MB", "0"),
        ("PIPER_ENGINE_CONCURRENCY", "2"),
    ];
    // Eight sentences of 30 to 70 characters, without noise so that the
    // same text gives (nearly) the same length however it was synthesized.
    let text = "The quick brown fox jumps over the lazy dog. Why leave the door open? \
                Please water the plants on Tuesday. Rain again! The library closes at six. \
                The train arrived early. She counted the boxes twice. Everyone went home.";
    let body = json!({"text": text, "noise_scale": 0.0, "noise_w_scale": 0.0});
    async fn say(server: &Server, body: &Value) -> Wav {
        let (status, _, wav) = post(server, "/api/tts", body.clone()).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&wav));
        parse_wav(&wav)
    }

    let server = Server::start(dir.path(), &env);
    let (status, _, one) = post(&server, "/api/tts", json!({"text": "Just one sentence."})).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&one));
    let after_one = metrics_text(&server).await;
    assert_eq!(
        sentences(&after_one, "all"),
        1.0,
        "a sentence alone gets every core"
    );
    assert_eq!(sentences(&after_one, "shared"), 0.0);
    // One request's sentences go one after the other, each on every core:
    // the engine makes each next one's frontend in the tail of the one
    // before (it says `ahead`), where two side by side end apart.
    let one_job = say(&server, &body).await;
    let after = metrics_text(&server).await;
    assert_eq!(sentences(&after, "shared"), 0.0, "one job's sentences");
    assert_eq!(sentences(&after, "all"), 9.0);
    // Two requests at once: after their first sentences (time to first
    // audio), their sentences wait with a partner and share the cores.
    let (side_by_side, other) = tokio::join!(say(&server, &body), say(&server, &body));
    let after = metrics_text(&server).await;
    let shared = sentences(&after, "shared");
    assert!(shared >= 4.0, "{shared} of 16 sentences shared the cores");
    let all = sentences(&after, "all") - 9.0;
    assert!(
        all >= 1.0,
        "{all} of 16 ran alone: the first one's first at least"
    );
    // A long sentence with a comma goes to the engine whole: it is
    // synthesized in decoder chunks, never cut for speed or memory.
    let long = json!({"text": LONG_WITH_COMMA});
    let before = sentences(&after, "all") + sentences(&after, "shared");
    let (status, _, wav) = post(&server, "/api/tts", long.clone()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&wav));
    let after_long = metrics_text(&server).await;
    let pieces = sentences(&after_long, "all") + sentences(&after_long, "shared") - before;
    assert_eq!(
        pieces,
        1.0,
        "a {}-character sentence",
        LONG_WITH_COMMA.len()
    );
    drop(server);

    // No two sentences fit in 10 characters: even two requests at once run
    // every sentence alone, on every core, one after the other.
    let mut alone_env = env.to_vec();
    alone_env.push(("PIPER_ENGINE_CHARS_AT_ONCE", "10"));
    let server = Server::start(dir.path(), &alone_env);
    let (one_by_one, _) = tokio::join!(say(&server, &body), say(&server, &body));
    let after = metrics_text(&server).await;
    assert_eq!(sentences(&after, "shared"), 0.0);
    assert_eq!(sentences(&after, "all"), 16.0);

    assert_same_speech(("one by one", &one_by_one), ("side by side", &side_by_side));
    assert_same_speech(("one job", &one_job), ("side by side", &side_by_side));
    assert_same_speech(("side by side", &side_by_side), ("beside it", &other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_health_and_voices_report_the_process() {
    let dir = voices(&[VOICE, "second"]);
    let server = Server::start(dir.path(), &[("PIPER_MAX_PROCESSES", "4")]);
    let (status, health) = get_json(&server, "/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["ok"], true);
    assert_eq!(health["processes"], 0);
    assert_eq!(health["max_processes"], 4);
    assert_eq!(health["voices"], 2);
    assert!(health["uptime_s"].is_u64());
    assert!(health["version"].is_string());

    let (status, _, body) = post(
        &server,
        "/api/warmup",
        json!({"voice_model": "second.onnx"}),
    )
    .await;
    assert_eq!(status, 200);
    let warm: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(warm["ok"], true);
    assert_eq!(warm["voice"], "second");
    assert!(warm["ready_ms"].as_f64().unwrap() > 0.0, "{warm}");

    let (_, health) = get_json(&server, "/health").await;
    assert_eq!(health["processes"], 1);
    let (status, voices) = get_json(&server, "/api/voices").await;
    assert_eq!(status, 200);
    let list = voices["voices"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let second = list.iter().find(|v| v["name"] == "second").unwrap();
    assert_eq!(second["warm"], true);
    assert_eq!(second["sample_rate"], 22050);
    assert_eq!(second["language"], "en_US");
    assert_eq!(second["quality"], "medium");
    assert_eq!(second["num_speakers"], 1);
    let first = list.iter().find(|v| v["name"] == VOICE).unwrap();
    assert_eq!(first["warm"], false);

    // Warm-up of a warm voice answers at once.
    let (status, _, body) = post(&server, "/api/warmup", json!({"voice_model": "second"})).await;
    assert_eq!(status, 200);
    let again: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(again["ready_ms"], 0.0);
    let (status, _, body) = post(&server, "/api/warmup", json!({"voice_model": "missing"})).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "voice_not_found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    for _ in 0..3 {
        let (status, _, _) = post(&server, "/api/tts", json!({"text": "Count me."})).await;
        assert_eq!(status, 200);
    }
    let (status, _, _) = post(&server, "/api/tts", json!({"text": ""})).await;
    assert_eq!(status, 400);
    let response = client().get(server.url("/metrics")).send().await.unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("piperd_http_requests_total{route=\"/api/tts\",method=\"POST\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        value("piperd_http_requests_total{route=\"/api/tts\",method=\"POST\",status=\"400\"}"),
        1.0
    );
    assert_eq!(value("piperd_errors_total{code=\"empty_text\"}"), 1.0);
    assert_eq!(value("piperd_processes "), 1.0);
    assert_eq!(
        value("piperd_process_starts_total{voice=\"en_US-joe-medium\"}"),
        1.0
    );
    assert!(value("piperd_http_request_duration_seconds_count{route=\"/api/tts\"}") >= 4.0);
}
