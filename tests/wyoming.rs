//! The Wyoming front-end on the real engine: the official `wyoming` Python
//! package as the client (tests/wyoming_client.py), Home Assistant's exact
//! sequences, and raw bytes for what no well-behaved client sends.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A port nothing listens on now (Wyoming's port cannot be 0: 0 turns it off).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server with Wyoming on, and its Wyoming port.
fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> (Server, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let mut all = vec![("PIPER_WYOMING_PORT", port_text.as_str())];
    all.extend_from_slice(env);
    let server = Server::start(dir, &all);
    assert!(
        server.log().contains(&format!("tcp://127.0.0.1:{port}")),
        "{}",
        server.log()
    );
    (server, port)
}

/// Runs tests/wyoming_client.py and returns what it printed.
fn wyoming(port: u16, mode: &str, args: Value) -> Value {
    let output = std::process::Command::new(python())
        .arg(root().join("tests/wyoming_client.py"))
        .arg(port.to_string())
        .arg(mode)
        .arg(args.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{mode}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&output.stdout));
    })
}

/// A Wyoming event read back raw.
#[derive(Debug)]
struct Raw {
    kind: String,
    data: Value,
    payload: Vec<u8>,
}

/// A raw connection: bytes out, frames in.
struct Wire {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Wire {
    fn open(port: u16) -> Wire {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Wire {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Writes, ignoring a server that already closed (it may refuse early).
    fn send(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes);
    }

    fn event(&mut self, kind: &str, data: Value) {
        let data = data.to_string();
        let header = json!({"type": kind, "data_length": data.len()}).to_string();
        self.send(format!("{header}\n{data}").as_bytes());
    }

    /// The next frame, or `None` at the end of the stream.
    fn read(&mut self) -> Option<Raw> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let header: Value = serde_json::from_str(&line).unwrap();
        let mut data = header.get("data").cloned().unwrap_or(json!({}));
        let data_len = header["data_length"].as_u64().unwrap_or(0) as usize;
        if data_len > 0 {
            let mut block = vec![0; data_len];
            self.reader.read_exact(&mut block).unwrap();
            let more: Value = serde_json::from_slice(&block).unwrap();
            for (k, v) in more.as_object().unwrap() {
                data[k] = v.clone();
            }
        }
        let mut payload = vec![0; header["payload_length"].as_u64().unwrap_or(0) as usize];
        self.reader.read_exact(&mut payload).unwrap();
        Some(Raw {
            kind: header["type"].as_str().unwrap().to_string(),
            data,
            payload,
        })
    }

    /// Expects an `error` event with `code`, then the connection's end.
    fn expect_error(&mut self, code: &str, case: &str) -> String {
        let event = self
            .read()
            .unwrap_or_else(|| panic!("{case}: closed with no error event"));
        assert_eq!(event.kind, "error", "{case}: {event:?}");
        assert_eq!(event.data["code"], code, "{case}: {event:?}");
        let text = event.data["text"].as_str().unwrap().to_string();
        assert!(!text.is_empty(), "{case}");
        assert!(self.read().is_none(), "{case}: the connection stayed open");
        text
    }
}

/// Seconds of `piperd_queue_depth` above 0, polled until it drops.
async fn queue_empties_within(server: &Server, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let text = metrics_text(server).await;
        if metric(&text, "piperd_queue_depth{") == 0.0 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

const TEXT: &str = "Home Assistant asked piperd for this. It answers over the Wyoming protocol, \
     sentence by sentence. The third sentence is here so that there is more to say. \
     And a fourth one closes the reply.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_synthesize_and_home_assistants_stream_through_the_official_package() {
    let dir = voices(&[VOICE, "en_GB-multi-medium"]);
    // A second voice that lists two speakers (only its info is used).
    let config = dir.path().join("en_GB-multi-medium.onnx.json");
    let mut multi: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    multi["num_speakers"] = json!(2);
    multi["speaker_id_map"] = json!({"bob": 1, "alice": 0});
    multi["language"]["code"] = json!("en_GB");
    std::fs::write(&config, multi.to_string()).unwrap();
    let (server, port) = start(dir.path(), &[("PIPER_WYOMING_SAMPLES_PER_CHUNK", "512")]);

    // describe → info, parsed by the package; events it does not know come
    // first and are ignored.
    let info = wyoming(
        port,
        "info",
        json!({"before": [
            {"type": "not-a-wyoming-event", "data": {"x": 1}},
            {"type": "select-program", "data": {"name": "piperd"}},
            {"type": "transcribe"},
        ]}),
    );
    assert!(info["ms"].as_f64().unwrap() < 1000.0, "{info}");
    assert_eq!(info["asr"], 0);
    let program = &info["tts"][0];
    assert_eq!(program["name"], "piperd", "{info}");
    assert_eq!(program["installed"], true);
    assert_eq!(program["streaming"], true);
    assert_eq!(program["version"], env!("CARGO_PKG_VERSION"));
    let voices = program["voices"].as_array().unwrap();
    let names: Vec<&str> = voices.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["en_GB-multi-medium", VOICE]);
    assert_eq!(voices[1]["languages"], json!(["en_US"]));
    assert_eq!(voices[1]["installed"], true);
    assert_eq!(voices[1]["speakers"], Value::Null);
    assert_eq!(voices[0]["speakers"], json!(["alice", "bob"]));
    // Described again, at once (the voice configs are cached).
    assert!(wyoming(port, "info", json!({}))["ms"].as_f64().unwrap() < 1000.0);

    // One-shot, read the way Home Assistant reads it: one audio-start, the
    // chunks, one audio-stop; chunks of PIPER_WYOMING_SAMPLES_PER_CHUNK.
    let said = wyoming(
        port,
        "synthesize",
        json!({"text": TEXT, "voice": {"name": VOICE}, "before": [{"type": "ping-unknown"}]}),
    );
    assert_eq!(
        said["types"],
        json!(["audio-start", "audio-chunk", "audio-stop"]),
        "{said}"
    );
    assert_eq!(said["format"], json!([22050, 2, 1]));
    assert_eq!(said["chunk_formats"], json!([[22050, 2, 1]]));
    assert_eq!(said["largest_chunk"], 512);
    assert!(said["chunks"].as_u64().unwrap() > 20);
    assert!(said["peak"].as_u64().unwrap() > 1000, "silence: {said}");
    let reference = said["seconds"].as_f64().unwrap();
    assert!(
        (6.0..30.0).contains(&reference),
        "{reference} s for {} characters",
        TEXT.len()
    );

    // By language (any English is the first voice whose language matches),
    // and with the one speaker of a single-speaker voice by id.
    let by_language = wyoming(
        port,
        "synthesize",
        json!({"text": "Spoken in English.", "voice": {"language": "en_US", "speaker": "0"}}),
    );
    assert_eq!(by_language["audio_starts"], 1, "{by_language}");
    assert!(by_language["seconds"].as_f64().unwrap() > 0.5);

    // Home Assistant's stream: start, chunks cut mid-word, the whole text
    // again as `synthesize`, stop. Spoken once, in one audio format, ended
    // by synthesize-stopped with nothing after it.
    let streamed = wyoming(
        port,
        "stream",
        json!({"text": TEXT, "cut": 7, "delay": 0.01, "voice": {"name": VOICE}}),
    );
    assert_eq!(streamed["stopped"], true, "{streamed}");
    assert_eq!(
        streamed["types"],
        json!([
            "audio-start",
            "audio-chunk",
            "audio-stop",
            "synthesize-stopped"
        ]),
        "{streamed}"
    );
    assert_eq!(streamed["audio_starts"], 1);
    assert_eq!(streamed["chunk_formats"], json!([[22050, 2, 1]]));
    assert_eq!(streamed["after_stopped"], Value::Null);
    let seconds = streamed["seconds"].as_f64().unwrap();
    assert!(
        (seconds - reference).abs() < reference * 0.15,
        "the stream said {seconds} s, the text once is {reference} s"
    );

    // A stream with nothing speakable still ends properly, as does a
    // one-shot request with nothing to say.
    let empty = wyoming(
        port,
        "stream",
        json!({"text": "... !!", "cut": 2, "delay": 0.0}),
    );
    assert_eq!(empty["stopped"], true, "{empty}");
    assert_eq!(empty["samples"], 0);
    let nothing = wyoming(port, "synthesize", json!({"text": "..."}));
    assert_eq!(
        nothing["types"],
        json!(["audio-start", "audio-stop"]),
        "{nothing}"
    );

    let metrics = metrics_text(&server).await;
    assert!(
        metric(&metrics, "piperd_wyoming_connections_total") >= 7.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "piperd_wyoming_events_total{type=\"synthesize-start\"}"
        ),
        2.0
    );
    assert!(metric(&metrics, "piperd_wyoming_events_total{type=\"other\"}") >= 4.0);
    assert!(
        metric(
            &metrics,
            "piperd_wyoming_requests_total{mode=\"stream\",outcome=\"done\"}"
        ) >= 2.0,
        "{metrics}"
    );
    assert!(server.log().contains("speech streamed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_speaks_its_first_sentence_before_the_text_has_all_arrived() {
    let dir = voices(&[VOICE]);
    let (_server, port) = start(dir.path(), &[]);
    // Warm the engine, so that the first sentence's time is synthesis only.
    let warm = wyoming(port, "synthesize", json!({"text": "Warming up."}));
    assert_eq!(warm["audio_starts"], 1, "{warm}");
    // Written slowly, as a language model would: 7 characters every 80 ms,
    // about 2.4 s for the whole text; its first sentence is complete after
    // 0.4 s.
    let streamed = wyoming(
        port,
        "stream",
        json!({"text": TEXT, "cut": 7, "delay": 0.08}),
    );
    assert_eq!(streamed["stopped"], true, "{streamed}");
    let first = streamed["first_audio"].as_f64().unwrap();
    let last_chunk = streamed["last_chunk_written"].as_f64().unwrap();
    assert!(
        first < last_chunk,
        "first audio at {first:.2} s, after the last chunk was written at {last_chunk:.2} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_event_with_a_stable_code_then_a_close() {
    let dir = voices(&[VOICE]);
    let (server, port) = start(dir.path(), &[("PIPER_WYOMING_IDLE_TIMEOUT", "1")]);
    let mib = 1 << 20;
    let huge_line = vec![b'x'; mib + 100];
    let long_text = "a".repeat(100_001);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "header not JSON",
            b"hello there\n".to_vec(),
            "invalid_event",
        ),
        (
            "header not an object",
            b"[1, 2]\n".to_vec(),
            "invalid_event",
        ),
        ("no type", b"{\"data\": {}}\n".to_vec(), "invalid_event"),
        (
            "data_length over 1 MiB",
            format!("{{\"type\":\"synthesize\",\"data_length\":{}}}\n", mib + 1).into_bytes(),
            "event_too_large",
        ),
        (
            "payload_length over 1 MiB",
            format!(
                "{{\"type\":\"audio-chunk\",\"payload_length\":{}}}\n",
                2 * mib
            )
            .into_bytes(),
            "event_too_large",
        ),
        ("header line over 1 MiB", huge_line, "event_too_large"),
        (
            "data_length shorter than the data",
            b"{\"type\":\"synthesize\",\"data_length\":5}\n{\"text\":\"hello\"}\n".to_vec(),
            "invalid_event",
        ),
        (
            "data_length longer than what is sent",
            b"{\"type\":\"synthesize\",\"data_length\":100}\n{\"text\":\"hi\"}".to_vec(),
            "incomplete_event",
        ),
        (
            "payload_length longer than what is sent",
            b"{\"type\":\"audio-chunk\",\"payload_length\":50}\n1234".to_vec(),
            "incomplete_event",
        ),
        (
            "synthesize without text",
            b"{\"type\":\"synthesize\",\"data\":{\"voice\":{}}}\n".to_vec(),
            "invalid_event",
        ),
        (
            "a chunk outside a stream",
            b"{\"type\":\"synthesize-chunk\",\"data\":{\"text\":\"Hi\"}}\n".to_vec(),
            "unexpected_event",
        ),
    ];
    for (case, bytes, code) in &cases {
        let started = Instant::now();
        let mut wire = Wire::open(port);
        wire.send(bytes);
        wire.expect_error(code, case);
        // A lying length waits for the idle timeout (1 s here), never more.
        assert!(started.elapsed() < Duration::from_secs(5), "{case}");
    }

    // The speech core's refusals, with the HTTP API's codes for the same
    // request.
    let semantic = [
        (
            "text over 100,000 characters",
            json!({"text": long_text}),
            "text_too_long",
        ),
        (
            "unknown voice",
            json!({"text": "Hello.", "voice": {"name": "no-such-voice"}}),
            "voice_not_found",
        ),
        (
            "unknown speaker id",
            json!({"text": "Hello.", "voice": {"name": VOICE, "speaker": "7"}}),
            "invalid_parameter",
        ),
        (
            "unknown speaker name",
            json!({"text": "Hello.", "voice": {"name": VOICE, "speaker": "bob"}}),
            "invalid_parameter",
        ),
    ];
    for (case, data, code) in &semantic {
        let mut wire = Wire::open(port);
        wire.event("synthesize", data.clone());
        let text = wire.expect_error(code, case);
        if *code == "voice_not_found" {
            assert!(
                text.contains(VOICE),
                "the error names the voices there are: {text}"
            );
        }
        let mut http = json!({"text": data["text"], "voice_model": data["voice"]["name"]});
        if let Some(speaker) = data["voice"]["speaker"].as_str() {
            http["speaker"] = speaker
                .parse::<u32>()
                .map(Value::from)
                .unwrap_or(json!(speaker));
        }
        let (_, _, body) = post(&server, "/api/tts", http).await;
        assert_eq!(&error_code(&body), code, "{case}: HTTP and Wyoming differ");
    }

    // Too much text over a stream: refused once the total passes the limit.
    let mut wire = Wire::open(port);
    wire.event("synthesize-start", json!({}));
    for _ in 0..11 {
        wire.event("synthesize-chunk", json!({"text": "a".repeat(10_000)}));
    }
    wire.expect_error("text_too_long", "a stream over 100,000 characters");

    // Through the package too: an unknown voice is an error event and a close.
    let refused = wyoming(
        port,
        "synthesize",
        json!({"text": "Hello.", "voice": {"name": "nope"}}),
    );
    assert_eq!(refused["error"]["code"], "voice_not_found", "{refused}");
    assert_eq!(refused["closed"], true);

    // Nothing else was disturbed: the engine serves the next request.
    let fine = wyoming(port, "synthesize", json!({"text": "Still here."}));
    assert_eq!(
        fine["types"],
        json!(["audio-start", "audio-chunk", "audio-stop"]),
        "{fine}"
    );
    let metrics = metrics_text(&server).await;
    assert_eq!(
        metric(&metrics, "piperd_errors_total{code=\"incomplete_event\"}"),
        2.0
    );
    assert_eq!(metric(&metrics, "piperd_process_restarts_total{"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_frees_the_engine_at_once() {
    let dir = voices(&[VOICE]);
    let (server, port) = start(dir.path(), &[]);
    let warm = wyoming(port, "synthesize", json!({"text": "Warming up."}));
    assert_eq!(warm["audio_starts"], 1, "{warm}");
    let short = "A short request after that.";
    // Minutes of speech; the client leaves at its first audio chunk.
    for (round, stream) in [false, true].into_iter().enumerate() {
        let long = format!("Round {round}. {}", prose(3000));
        let left = wyoming(port, "hangup", json!({"text": long, "stream": stream}));
        assert!(left["first_audio"].as_f64().is_some(), "{left}");
        let freed = queue_empties_within(&server, Duration::from_secs(3)).await;
        assert!(
            freed.is_some(),
            "stream={stream}: the engine still holds the request 3 s after the client left"
        );
        // The next request gets its first audio as fast as on an idle engine.
        let next = wyoming(
            port,
            "synthesize",
            json!({"text": format!("{short} {round}")}),
        );
        let first = next["first_audio"].as_f64().unwrap();
        assert!(first < 3.0, "stream={stream}: first audio after {first} s");
    }
    let metrics = metrics_text(&server).await;
    for mode in ["synthesize", "stream"] {
        assert_eq!(
            metric(
                &metrics,
                &format!("piperd_wyoming_requests_total{{mode=\"{mode}\",outcome=\"abandoned\"}}")
            ),
            1.0,
            "{metrics}"
        );
    }
    assert_eq!(metric(&metrics, "piperd_requests_waiting"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_and_a_stream_finishes_through_the_drain() {
    let dir = voices(&[VOICE]);
    let (mut server, port) = start(
        dir.path(),
        &[
            ("PIPER_WYOMING_MAX_CONNECTIONS", "1"),
            ("PIPER_SHUTDOWN_GRACE", "60"),
        ],
    );
    let mut first = Wire::open(port);
    std::thread::sleep(Duration::from_millis(200));
    let mut second = Wire::open(port);
    second.expect_error("too_many_connections", "a second connection");
    // The first is served as usual.
    first.event("describe", json!({}));
    assert_eq!(first.read().unwrap().kind, "info");
    drop(first);
    std::thread::sleep(Duration::from_millis(200));

    // A stream in flight when SIGTERM comes is answered to its end; then
    // the server exits and takes no new connection.
    let mut wire = Wire::open(port);
    wire.event("synthesize-start", json!({}));
    wire.event(
        "synthesize-chunk",
        json!({"text": "Still speaking while the server "}),
    );
    wire.event(
        "synthesize-chunk",
        json!({"text": "drains. And one more sentence."}),
    );
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    wire.event("synthesize-stop", json!({}));
    let mut kinds = Vec::new();
    let mut bytes = 0;
    while let Some(event) = wire.read() {
        if kinds.last() != Some(&event.kind) {
            kinds.push(event.kind.clone());
        }
        bytes += event.payload.len();
        if event.kind == "synthesize-stopped" {
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            "audio-start",
            "audio-chunk",
            "audio-stop",
            "synthesize-stopped"
        ],
        "{}",
        server.log()
    );
    assert!(bytes > 22050, "{bytes} bytes of audio");
    // Closed once the request in hand is answered.
    assert!(wire.read().is_none());
    assert_eq!(
        server.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        server.log()
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
