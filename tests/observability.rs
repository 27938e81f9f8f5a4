//! Observability: `/metrics` after known traffic, the JSON logs, and the
//! files of `dashboards/` (Grafana dashboard, Prometheus config and alert
//! rules) checked by `promtool` and run against a real Prometheus that
//! scrapes a real server.
//!
//! Prometheus comes from Debian's `prometheus` package; the tests install it
//! with apt-get when it is missing (CI runs as root).

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use piperd::metrics as m;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// The Prometheus text format, as far as `/metrics` needs it.

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// One `/metrics` answer, parsed.
struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

fn parse_value(raw: &str) -> f64 {
    match raw {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("not a sample value: {other:?}")),
    }
}

/// `a="x",b="y"` (the inside of the braces), with the format's escapes.
fn parse_labels(mut rest: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels: {rest:?}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape in {after:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {after:?}"),
            }
        };
        labels.push((name.trim().to_string(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

impl Metrics {
    fn parse(text: String) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (series, value) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("bad sample line {line:?}"));
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (
                        name,
                        parse_labels(labels.strip_suffix('}').expect("closing brace")),
                    ),
                    None => (series, Vec::new()),
                };
                Sample {
                    name: name.to_string(),
                    labels,
                    value: parse_value(value),
                }
            })
            .collect();
        Metrics { text, samples }
    }

    /// Samples named `name` that carry every label of `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .collect()
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.find(name, labels);
        assert!(found.len() <= 1, "{name}{labels:?} is ambiguous: {found:?}");
        found.first().map(|s| s.value)
    }

    /// The value of one series; panics, showing `/metrics`, when it is absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} is not in /metrics:\n{}", self.text))
    }

    /// The `# TYPE` of a family.
    fn kind(&self, family: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            let rest = l.strip_prefix("# TYPE ")?;
            let (name, kind) = rest.split_once(' ')?;
            (name == family).then_some(kind.trim())
        })
    }
}

/// Fetches `/metrics`, counting the fetches (each is itself counted by the
/// server once it has rendered the answer).
async fn scrape(server: &Server, scrapes: &mut u32) -> Metrics {
    let response = client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    *scrapes += 1;
    Metrics::parse(response.text().await.unwrap())
}

/// Scrapes until `check` holds, or fails with `what` and the last `/metrics`.
async fn scrape_until(
    server: &Server,
    scrapes: &mut u32,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Metrics) -> bool,
) -> Metrics {
    let deadline = Instant::now() + timeout;
    loop {
        let metrics = scrape(server, scrapes).await;
        if check(&metrics) {
            return metrics;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not seen within {timeout:?}\n{}\n--- log ---\n{}",
                metrics.text,
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The live engine process of `voice`, found by its model path.
fn engine_of(server: &Server, voice: &str) -> Option<u32> {
    let model = server.voices_dir.join(format!("{voice}.onnx"));
    let model = model.to_string_lossy().to_string();
    server.engines().into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&model))
            .unwrap_or(false)
    })
}

/// Kills a voice's engine and waits until a new one is up, its cold start
/// counted as the `cold_starts`-th.
async fn kill_and_await_restart(server: &Server, scrapes: &mut u32, voice: &str, cold_starts: f64) {
    let killed = kill_engine(server, voice);
    scrape_until(
        server,
        scrapes,
        Duration::from_secs(30),
        &format!("the killed engine of {voice} restarted"),
        |m| {
            m.get(&count(m::COLD_START), &[("voice", voice)]) == Some(cold_starts)
                && engine_of(server, voice).is_some_and(|p| p != killed)
        },
    )
    .await;
}

fn kill_engine(server: &Server, voice: &str) -> u32 {
    let pid = engine_of(server, voice).unwrap_or_else(|| panic!("no engine for {voice}"));
    // SAFETY: kill(2) on an engine this test's server started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    pid
}

async fn tts(server: &Server, body: Value) -> (u16, bytes::Bytes) {
    let (status, _, bytes) = post(server, "/api/tts", body).await;
    (status, bytes)
}

// ---------------------------------------------------------------------------
// /metrics after known traffic.

/// Every family of src/metrics.rs with its Prometheus type.
const FAMILIES: &[(&str, &str)] = &[
    (m::HTTP_REQUESTS, "counter"),
    (m::HTTP_DURATION, "histogram"),
    (m::TIME_TO_FIRST_AUDIO, "histogram"),
    (m::SYNTHESIS_DURATION, "histogram"),
    (m::AUDIO_DURATION, "histogram"),
    (m::REAL_TIME_FACTOR, "histogram"),
    (m::REQUEST_CHARACTERS, "histogram"),
    (m::REQUEST_CHUNKS, "histogram"),
    (m::PROCESSES, "gauge"),
    (m::PROCESSES_MAX, "gauge"),
    (m::PROCESS_STARTS, "counter"),
    (m::PROCESS_RESTARTS, "counter"),
    (m::PROCESS_EXITS, "counter"),
    (m::COLD_START, "histogram"),
    (m::PROCESS_MEMORY, "gauge"),
    (m::SERVER_MEMORY, "gauge"),
    (m::VOICE_FAILED, "gauge"),
    (m::QUEUE_DEPTH, "gauge"),
    (m::QUEUE_WAIT, "histogram"),
    (m::QUEUE_WAITING, "gauge"),
    (m::ADMISSION_REFUSED, "counter"),
    (m::PREEMPTIONS, "counter"),
    (m::SENTENCES, "counter"),
    (m::CONFIG_CACHE_LOOKUPS, "counter"),
    (m::AUDIO_CACHE_LOOKUPS, "counter"),
    (m::AUDIO_CACHE_BYTES, "gauge"),
    (m::ERRORS, "counter"),
    (m::BUILD_INFO, "gauge"),
];

fn count(family: &str) -> String {
    format!("{family}_count")
}

fn sum(family: &str) -> String {
    format!("{family}_sum")
}

/// Drives a known sequence through two voices, with one process slot: a
/// warm-up, synthesis (plain and streamed), bad requests, an engine killed
/// once (restart), an eviction, an engine killed twice (the voice fails),
/// a request to the failed voice and an idle stop; then checks every family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic() {
    const CRASHY: &str = "crashy";
    let dir = voices(&[VOICE, CRASHY]);
    let server = Server::start(
        dir.path(),
        &[
            ("PIPER_MAX_PROCESSES", "1"),
            // One crash is restarted, a second within the window fails the voice.
            ("PIPER_MAX_RESTARTS", "1"),
            // Long enough for the 5 s memory sampling to see the engine.
            ("PIPER_PROCESS_IDLE_TIMEOUT", "6"),
        ],
    );
    let mut scrapes = 0;
    let started = Instant::now();

    let first = scrape(&server, &mut scrapes).await;
    assert_eq!(first.value(m::PROCESSES, &[]), 0.0);
    assert_eq!(first.value(m::PROCESSES_MAX, &[]), 1.0);
    assert_eq!(
        first.value(m::BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );

    // Warm-up, three plain requests, one streamed request.
    let (status, _, body) = post(&server, "/api/warmup", json!({"voice_model": VOICE})).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let texts = [
        "Hello there.",
        "This is the second request.",
        "And a third one, to finish.",
    ];
    let mut chars: Vec<usize> = Vec::new();
    let mut audio_seconds = 0.0;
    for text in texts {
        let (status, body) = tts(&server, json!({"text": text, "voice_model": VOICE})).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        audio_seconds += parse_wav(&body).seconds();
        chars.push(text.chars().count());
    }
    let streamed = "A streamed answer, sent while it is made.";
    let (status, body) = tts(
        &server,
        json!({"text": streamed, "voice_model": VOICE, "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    audio_seconds += parse_streamed_wav(&body).seconds();
    chars.push(streamed.chars().count());

    // Refused before any synthesis.
    let (status, _) = tts(&server, json!({"text": ""})).await;
    assert_eq!(status, 400);
    let (status, _) = tts(&server, json!({"text": "Hi.", "voice_model": "nope"})).await;
    assert_eq!(status, 404);
    assert_eq!(get_json(&server, "/health").await.0, 200);
    assert_eq!(get_json(&server, "/api/voices").await.0, 200);

    // A crash: restarted at once.
    kill_and_await_restart(&server, &mut scrapes, VOICE, 2.0).await;

    // The other voice takes the only slot: the idle first voice is evicted.
    let (status, _, body) = post(&server, "/api/warmup", json!({"voice_model": CRASHY})).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // Two crashes in the window: the voice fails.
    kill_and_await_restart(&server, &mut scrapes, CRASHY, 2.0).await;
    kill_engine(&server, CRASHY);
    scrape_until(
        &server,
        &mut scrapes,
        Duration::from_secs(30),
        "the second voice failed",
        |m| m.get(m::VOICE_FAILED, &[("voice", CRASHY)]) == Some(1.0),
    )
    .await;
    let failed_text = "Nobody will hear this.";
    let (status, _) = tts(&server, json!({"text": failed_text, "voice_model": CRASHY})).await;
    assert_eq!(status, 503);
    chars.push(failed_text.chars().count());

    // The first voice again: a third start, then sampled, then stopped idle.
    let last = "One more, after all that.";
    let (status, body) = tts(&server, json!({"text": last, "voice_model": VOICE})).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    audio_seconds += parse_wav(&body).seconds();
    chars.push(last.chars().count());
    scrape_until(
        &server,
        &mut scrapes,
        Duration::from_secs(15),
        "the engine's memory sampled",
        |m| m.get(m::PROCESS_MEMORY, &[("voice", VOICE)]).unwrap_or(0.0) > 50e6,
    )
    .await;
    let end = scrape_until(
        &server,
        &mut scrapes,
        Duration::from_secs(20),
        "the idle engine stopped",
        |m| m.get(m::PROCESS_EXITS, &[("voice", VOICE), ("reason", "idle")]) == Some(1.0),
    )
    .await;

    // Every family is there, with its type.
    for (family, kind) in FAMILIES {
        assert_eq!(end.kind(family), Some(*kind), "# TYPE of {family}");
        let sample = if *kind == "histogram" {
            count(family)
        } else {
            family.to_string()
        };
        assert!(
            !end.find(&sample, &[]).is_empty(),
            "{family} has no sample:\n{}",
            end.text
        );
    }

    // HTTP: 8 synthesis requests (5 answered 200), 2 warm-ups, 1 each of
    // /health and /api/voices, and the scrapes before this one.
    let http = |route: &str, method: &str, status: &str| {
        end.value(
            m::HTTP_REQUESTS,
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(http("/api/tts", "POST", "200"), 5.0);
    assert_eq!(http("/api/tts", "POST", "400"), 1.0);
    assert_eq!(http("/api/tts", "POST", "404"), 1.0);
    assert_eq!(http("/api/tts", "POST", "503"), 1.0);
    assert_eq!(http("/api/warmup", "POST", "200"), 2.0);
    assert_eq!(http("/health", "GET", "200"), 1.0);
    assert_eq!(http("/api/voices", "GET", "200"), 1.0);
    assert_eq!(http("/metrics", "GET", "200"), (scrapes - 1) as f64);
    let duration = |route: &str| end.value(&count(m::HTTP_DURATION), &[("route", route)]);
    assert_eq!(duration("/api/tts"), 8.0);
    assert_eq!(duration("/api/warmup"), 2.0);
    assert_eq!(duration("/metrics"), (scrapes - 1) as f64);

    for (code, n) in [
        ("empty_text", 1.0),
        ("voice_not_found", 1.0),
        ("voice_unavailable", 1.0),
    ] {
        assert_eq!(end.value(m::ERRORS, &[("code", code)]), n, "errors {code}");
    }

    // Synthesis: the 5 answered requests of the first voice, none of the other.
    let voice = [("voice", VOICE)];
    for family in [
        m::TIME_TO_FIRST_AUDIO,
        m::SYNTHESIS_DURATION,
        m::AUDIO_DURATION,
        m::REAL_TIME_FACTOR,
    ] {
        assert_eq!(end.value(&count(family), &voice), 5.0, "{family}");
        assert!(end.value(&sum(family), &voice) > 0.0, "{family}");
        assert_eq!(
            end.get(&count(family), &[("voice", CRASHY)]),
            None,
            "{family}"
        );
    }
    // The audio length sum is the audio actually sent.
    let produced = end.value(&sum(m::AUDIO_DURATION), &voice);
    assert!(
        (produced - audio_seconds).abs() < 1e-3,
        "{produced} s counted, {audio_seconds} s received"
    );
    // Characters and chunks are counted once a request is valid and its voice
    // known, so the request refused by the failed voice counts too.
    assert_eq!(end.value(&count(m::REQUEST_CHARACTERS), &[]), 6.0);
    assert_eq!(
        end.value(&sum(m::REQUEST_CHARACTERS), &[]),
        chars.iter().sum::<usize>() as f64
    );
    assert_eq!(end.value(&count(m::REQUEST_CHUNKS), &[]), 6.0);
    assert_eq!(end.value(&sum(m::REQUEST_CHUNKS), &[]), 6.0);

    // Processes: starts, restarts, exits by reason, cold starts, failure.
    let crashy = [("voice", CRASHY)];
    assert_eq!(end.value(m::PROCESS_STARTS, &voice), 3.0);
    assert_eq!(end.value(m::PROCESS_STARTS, &crashy), 2.0);
    assert_eq!(end.value(m::PROCESS_RESTARTS, &voice), 1.0);
    assert_eq!(end.value(m::PROCESS_RESTARTS, &crashy), 2.0);
    let exits = |voice: &str, reason: &str| {
        end.get(m::PROCESS_EXITS, &[("voice", voice), ("reason", reason)])
            .unwrap_or(0.0)
    };
    assert_eq!(exits(VOICE, "crash"), 1.0);
    assert_eq!(exits(VOICE, "evicted"), 1.0);
    assert_eq!(exits(VOICE, "idle"), 1.0);
    assert_eq!(exits(CRASHY, "crash"), 2.0);
    let all_exits: f64 = end
        .find(m::PROCESS_EXITS, &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(
        all_exits,
        5.0,
        "exits: {:?}",
        end.find(m::PROCESS_EXITS, &[])
    );
    assert_eq!(end.value(&count(m::COLD_START), &voice), 3.0);
    assert_eq!(end.value(&count(m::COLD_START), &crashy), 2.0);
    assert_eq!(end.value(m::VOICE_FAILED, &crashy), 1.0);
    assert_ne!(end.get(m::VOICE_FAILED, &voice), Some(1.0));
    assert_eq!(end.value(m::PROCESSES, &[]), 0.0);
    assert_eq!(end.value(m::PROCESSES_MAX, &[]), 1.0);
    // Sampled above while running, back to 0 once the engine stopped.
    assert_eq!(end.value(m::PROCESS_MEMORY, &voice), 0.0);
    assert!(end.value(m::SERVER_MEMORY, &[]) > 1e6);

    // Queue: nothing held any more; every answered request of the first
    // voice waited once (the wait for a process slot is one more sample).
    assert_eq!(end.value(m::QUEUE_DEPTH, &voice), 0.0);
    assert_eq!(end.value(m::QUEUE_DEPTH, &crashy), 0.0);
    assert!(end.value(&count(m::QUEUE_WAIT), &voice) >= 5.0);
    // Short requests one at a time: nothing long to interrupt, and every
    // sentence alone on every core (one per answered request at least).
    assert_eq!(end.value(m::PREEMPTIONS, &voice), 0.0);
    assert_eq!(end.value(m::PREEMPTIONS, &crashy), 0.0);
    let sentences = |cores: &str| end.value(m::SENTENCES, &[("voice", VOICE), ("cores", cores)]);
    assert!(sentences("all") >= 5.0, "{}", sentences("all"));
    assert_eq!(sentences("shared"), 0.0);

    // Config cache: a miss per voice (the first voice's warm-up, the second
    // one's listing in /api/voices), then hits: the first voice's 4 requests,
    // its listing and its last request, the second voice's warm-up and its
    // refused request.
    let cache = |result: &str| end.value(m::CONFIG_CACHE_LOOKUPS, &[("result", result)]);
    assert_eq!(cache("miss"), 2.0);
    assert_eq!(cache("hit"), 8.0);
    assert_eq!(
        end.get(m::CONFIG_CACHE_LOOKUPS, &[("result", "reloaded")]),
        None
    );

    eprintln!("metrics test took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// Logs.

/// A field of a JSON log line (tracing-subscriber puts event fields under
/// `fields`; span fields, if any, under `span`).
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line.get("fields")
        .and_then(|f| f.get(name))
        .or_else(|| line.get(name))
        .or_else(|| line.get("span").and_then(|s| s.get(name)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_fields_and_never_the_text() {
    let dir = voices(&[VOICE]);
    let server = Server::start(
        dir.path(),
        &[("PIPER_LOG_FORMAT", "json"), ("PIPER_LOG", "info")],
    );

    let secret = "Marmalade zeppelin quartz forty-seven.";
    let send = |body: Value, id: Option<&str>| {
        let mut request = client().post(server.url("/api/tts")).json(&body);
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };

    // A plain request with the caller's id, a streamed one with a server-made
    // id, and a refused one.
    let plain_id = "obs-plain-0001";
    let response = send(json!({"text": secret}), Some(plain_id)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], plain_id);
    response.bytes().await.unwrap();

    // Another text, so that the audio cache does not answer it.
    let streamed = format!("{secret} Once more.");
    let response = send(json!({"text": streamed, "stream": true}), None)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stream_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!stream_id.is_empty());
    response.bytes().await.unwrap();

    let refused_id = "obs-refused-0002";
    let response = send(json!({"text": ""}), Some(refused_id)).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-request-id"], refused_id);

    // The streamed request is logged when its body ends; give the log
    // reader a moment.
    let found = eventually(Duration::from_secs(10), || {
        let log = server.log();
        log.contains(plain_id) && log.contains(&stream_id) && log.contains(refused_id)
    })
    .await;
    assert!(found, "request ids missing from the log:\n{}", server.log());
    // Anything still on its way (the engine's stop at exit is not awaited).
    tokio::time::sleep(Duration::from_millis(200)).await;

    let log = server.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
            assert!(value.is_object(), "not a JSON object: {line}");
            assert!(value.get("timestamp").is_some(), "no timestamp: {line}");
            let level = value["level"].as_str().unwrap_or_default();
            assert!(
                ["INFO", "WARN", "ERROR"].contains(&level),
                "level {level:?} at PIPER_LOG=info: {line}"
            );
            value
        })
        .collect();

    // The text is never logged, whole or in part.
    for word in ["Marmalade", "zeppelin", "quartz"] {
        assert!(
            !log.to_lowercase().contains(&word.to_lowercase()),
            "the request text ({word}) is in the log:\n{log}"
        );
    }

    let of = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| field(l, "request_id").and_then(Value::as_str) == Some(id))
            .collect()
    };
    let complete = |id: &str, status: u64, text: &str| {
        let mine = of(id);
        let line = mine
            .iter()
            .find(|l| {
                ["voice", "chars", "chunks", "status", "ms"]
                    .iter()
                    .all(|f| field(l, f).is_some())
            })
            .unwrap_or_else(|| {
                panic!(
                    "no log line of request {id} has all of voice, chars, chunks, status, ms; \
                     its lines: {mine:#?}"
                )
            });
        assert_eq!(field(line, "voice"), Some(&json!(VOICE)), "{line}");
        assert_eq!(
            field(line, "chars"),
            Some(&json!(text.chars().count())),
            "{line}"
        );
        assert_eq!(field(line, "chunks"), Some(&json!(1)), "{line}");
        assert_eq!(field(line, "status"), Some(&json!(status)), "{line}");
        assert!(field(line, "ms").unwrap().is_u64(), "{line}");
    };
    complete(&stream_id, 200, &streamed);
    complete(plain_id, 200, secret);

    // A refused request: its id, status and time, though no voice was chosen.
    let refused = of(refused_id);
    assert!(
        refused
            .iter()
            .any(|l| field(l, "status") == Some(&json!(400))
                && field(l, "ms").is_some_and(Value::is_u64)),
        "no status/ms log line for the refused request: {refused:#?}"
    );
}

// ---------------------------------------------------------------------------
// The shipped files.

fn dashboards_dir() -> PathBuf {
    root().join("dashboards")
}

const DASHBOARD: &str = "dashboards/piperd.json";
const RULES: &str = "piperd-alerts.yml";
const PROMETHEUS_CONFIG: &str = "prometheus.yml";
/// The scrape job of prometheus.yml (the PiperdDown alert selects it).
const JOB: &str = "piperd";

fn dashboard() -> Value {
    let path = dashboards_dir().join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (panel title, expression) of every query of the dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| {
                    (
                        title.clone(),
                        t["expr"].as_str().unwrap_or_default().to_string(),
                    )
                })
        })
        .collect()
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no ${name} variable"))
}

/// The query of a Grafana query variable (a string, or an object since 9).
fn variable_query(variable: &Value) -> String {
    match &variable["query"] {
        Value::String(s) => s.clone(),
        other => other["query"].as_str().unwrap_or_default().to_string(),
    }
}

/// Metric names (`piperd_...`) used by an expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("piperd_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// A metric name without a histogram's series suffix.
fn family_of(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(family) = name.strip_suffix(suffix) {
            if FAMILIES.iter().any(|(f, _)| *f == family) {
                return family;
            }
        }
    }
    name
}

#[test]
fn the_dashboard_is_importable_and_covers_the_issue() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "piperd");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        dashboard["id"].is_null(),
        "an importable dashboard has no database id"
    );

    // The data source is a variable, and every query uses it.
    let datasource = variable(&dashboard, "datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let uses_variable = |ds: &Value| ds["uid"] == "${datasource}" && ds["type"] == "prometheus";
    let voice = variable(&dashboard, "voice");
    assert_eq!(voice["type"], "query");
    assert!(uses_variable(&voice["datasource"]), "{voice}");
    assert_eq!(voice["multi"], true);
    assert_eq!(voice["includeAll"], true);
    assert!(
        variable_query(voice).starts_with("label_values("),
        "{voice}"
    );

    let mut ids = HashSet::new();
    let mut used = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "{title}: panel id {id} used twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && grid["h"].as_u64().unwrap() > 0,
            "{title}: {grid}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert!(uses_variable(&panel["datasource"]), "{title}: {panel}");
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = HashSet::new();
        for target in targets {
            assert!(uses_variable(&target["datasource"]), "{title}: {target}");
            assert!(
                refs.insert(target["refId"].as_str().unwrap()),
                "{title}: refIds"
            );
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: an empty query");
            for name in metric_names(expr) {
                let family = family_of(&name).to_string();
                assert!(
                    FAMILIES.iter().any(|(f, _)| *f == family),
                    "{title}: {name} is not a metric piperd exports ({expr})"
                );
                used.insert(family);
            }
        }
    }

    // What the issue asks to see: traffic and errors, latency by route, time
    // to first audio, real-time factor, processes vs maximum with restarts,
    // queue depth and wait, cache hit ratio, memory per voice.
    for family in [
        m::HTTP_REQUESTS,
        m::HTTP_DURATION,
        m::TIME_TO_FIRST_AUDIO,
        m::REAL_TIME_FACTOR,
        m::PROCESSES,
        m::PROCESSES_MAX,
        m::PROCESS_RESTARTS,
        m::QUEUE_DEPTH,
        m::QUEUE_WAIT,
        m::CONFIG_CACHE_LOOKUPS,
        m::PROCESS_MEMORY,
        m::ERRORS,
    ] {
        assert!(
            used.contains(family),
            "the dashboard does not show {family}"
        );
    }
    let latency = dashboard_queries(&dashboard)
        .into_iter()
        .filter(|(_, e)| e.contains(m::HTTP_DURATION))
        .map(|(_, e)| e)
        .collect::<Vec<_>>();
    for q in ["0.5", "0.95", "0.99"] {
        assert!(
            latency
                .iter()
                .any(|e| e.contains(&format!("histogram_quantile({q},")) && e.contains("route")),
            "no p{q} latency by route: {latency:?}"
        );
    }
}

#[test]
fn grafana_provisioning_points_at_the_dashboard() {
    let dir = dashboards_dir();
    assert!(dir.join("README.md").exists());
    // dashboards/ is mounted as /etc/grafana/provisioning.
    let datasource = std::fs::read_to_string(dir.join("datasources/prometheus.yml")).unwrap();
    assert!(datasource.contains("apiVersion: 1"), "{datasource}");
    assert!(datasource.contains("type: prometheus"), "{datasource}");
    let provider = std::fs::read_to_string(dir.join("dashboards/piperd.yml")).unwrap();
    assert!(provider.contains("apiVersion: 1"), "{provider}");
    assert!(provider.contains("type: file"), "{provider}");
    assert!(
        provider.contains("path: /etc/grafana/provisioning/dashboards"),
        "{provider}"
    );
    assert!(dir.join(DASHBOARD).exists());
    // The Prometheus config loads the rules next to it and scrapes the job
    // the alerts name.
    let config = std::fs::read_to_string(dir.join(PROMETHEUS_CONFIG)).unwrap();
    assert!(config.contains(&format!("- {RULES}")), "{config}");
    assert!(config.contains(&format!("job_name: {JOB}")), "{config}");
}

// ---------------------------------------------------------------------------
// Prometheus and promtool.

struct Tools {
    prometheus: PathBuf,
    promtool: PathBuf,
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .chain(["/usr/bin", "/usr/local/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn find_tools() -> Option<Tools> {
    Some(Tools {
        prometheus: find_program("prometheus")?,
        promtool: find_program("promtool")?,
    })
}

fn apt_get(args: &[&str]) -> Result<(), String> {
    let output = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<_> = stderr.lines().rev().take(15).collect();
        Err(format!(
            "apt-get {} failed ({}): {}",
            args.join(" "),
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

/// `prometheus` and `promtool`, installed from Debian's `prometheus`
/// package when missing (once per test run).
fn prometheus_tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        if let Some(tools) = find_tools() {
            return tools;
        }
        // SAFETY: geteuid(2) has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "Prometheus (prometheus, promtool) is not installed and the tests do not run \
             as root: install Debian's `prometheus` package (apt-get install prometheus)"
        );
        let install = ["install", "-y", "--no-install-recommends", "prometheus"];
        if let Err(first) = apt_get(&install) {
            eprintln!("{first}\nupdating the package lists and trying again");
            if let Err(err) = apt_get(&["update"]).and_then(|()| apt_get(&install)) {
                panic!(
                    "Prometheus is not installed and installing Debian's `prometheus` \
                     package failed: {err}"
                );
            }
        }
        find_tools().expect("prometheus and promtool are on the PATH after installing them")
    })
}

#[test]
fn promtool_accepts_the_shipped_config_and_rules() {
    let tools = prometheus_tools();
    let dir = dashboards_dir();
    for args in [
        ["check", "config", PROMETHEUS_CONFIG],
        ["check", "rules", RULES],
    ] {
        let output = Command::new(&tools.promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "promtool {args:?}:\n{text}");
        assert!(text.contains("SUCCESS"), "promtool {args:?}:\n{text}");
    }
}

/// A Prometheus of this test, killed when dropped (also on a panic).
struct Prometheus {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `target` every
    /// second and evaluating the shipped rules every second.
    async fn start(tools: &Tools, target: &str) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("piperd-test-prometheus")
            .tempdir()
            .unwrap();
        let rules = dashboards_dir().join(RULES);
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [{target:?}]\n",
            rules = rules.to_string_lossy(),
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let port = free_port();
        let child = Command::new(&tools.prometheus)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let mut prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = prom_client()
                .get(format!("{}/-/ready", prometheus.base))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return prometheus;
            }
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within 30 s:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = prom_client()
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap()
    }

    /// Runs an instant query: the samples (labels, value), or Prometheus's
    /// error.
    async fn query(&self, expr: &str) -> Result<Vec<(Value, f64)>, String> {
        let answer = self.api("/api/v1/query", &[("query", expr)]).await;
        if answer["status"] != "success" {
            return Err(format!("{}: {}", answer["errorType"], answer["error"]));
        }
        let data = &answer["data"];
        let value = |pair: &Value| parse_value(pair[1].as_str().unwrap_or("NaN"));
        Ok(match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["metric"].clone(), value(&s["value"])))
                .collect(),
            Some("scalar") => vec![(Value::Null, value(&data["result"]))],
            other => return Err(format!("unexpected result type {other:?}")),
        })
    }

    /// Checks that `expr` is accepted and has at least one finite sample.
    async fn has_data(&self, expr: &str) -> Result<(), String> {
        let samples = self.query(expr).await?;
        if samples.iter().any(|(_, v)| v.is_finite()) {
            Ok(())
        } else if samples.is_empty() {
            Err("no data".into())
        } else {
            Err(format!("no finite value: {samples:?}"))
        }
    }

    /// `/api/v1/rules` once every rule has been evaluated at least once.
    async fn evaluated_rules(&self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rules = self.api("/api/v1/rules", &[]).await;
            let all: Vec<&Value> = rules["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            if !all.is_empty() && all.iter().all(|r| r["health"] != "unknown") {
                return rules;
            }
            assert!(
                Instant::now() < deadline,
                "rules not evaluated within 20 s: {rules:#}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_for(&self, expr: &str, timeout: Duration, check: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let samples = self.query(expr).await.unwrap_or_default();
            if samples.iter().any(|(_, v)| check(*v)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus: {expr} not as expected within {timeout:?}: {samples:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn prom_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A dashboard query as Grafana would send it: `$voice` becomes a regex
/// matching the test's voice, the interval variables a minute (longer than
/// the test's traffic, so every rate spans all of it).
fn grafana_to_promql(expr: &str) -> String {
    let out = expr
        .replace("${voice:regex}", VOICE)
        .replace("${voice}", VOICE)
        .replace("$voice", VOICE)
        .replace("${__rate_interval}", "1m")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1m");
    assert!(
        !out.contains('$'),
        "a Grafana variable the test does not know in {expr}"
    );
    out
}

/// Splits a PromQL expression at the binary operators `ops` that stand at its
/// top level (outside parentheses, brackets, braces and strings). Keyword
/// operators (`and`, `or`, `unless`) only match whole words.
fn split_top_level<'a>(expr: &'a str, ops: &[&str]) -> Vec<&'a str> {
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start, mut i) = (0i32, None::<u8>, 0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 1;
            } else if b == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match b {
            b'"' | b'\'' | b'`' => quote = Some(b),
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ if depth == 0 => {
                let hit = ops.iter().find(|op| {
                    expr[i..].starts_with(**op)
                        && (!op.as_bytes()[0].is_ascii_alphabetic()
                            || ((i == 0 || !ident(bytes[i - 1]))
                                && bytes.get(i + op.len()).is_none_or(|&n| !ident(n))))
                });
                if let Some(op) = hit {
                    parts.push(&expr[start..i]);
                    i += op.len();
                    start = i;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&expr[start..]);
    parts
}

/// Drops the modifiers that follow a binary operator: `bool`, `on(...)`,
/// `ignoring(...)`, `group_left(...)`, `group_right(...)`.
fn strip_modifiers(mut part: &str) -> &str {
    'again: loop {
        part = part.trim();
        for word in ["bool", "on", "ignoring", "group_left", "group_right"] {
            if let Some(rest) = part.strip_prefix(word) {
                if rest.starts_with(|c: char| c.is_whitespace() || c == '(') {
                    part = rest.trim_start();
                    if part.starts_with('(') {
                        let close = part.find(')').expect("closing parenthesis");
                        part = &part[close + 1..];
                    }
                    continue 'again;
                }
            }
        }
        return part;
    }
}

/// The operands of an alert condition that must have data on a healthy
/// server: the sides of every comparison, in every branch of a top-level
/// `and` / `or` / `unless`, without the number literals (thresholds).
fn signals(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for branch in split_top_level(expr, &["and", "or", "unless"]) {
        for side in split_top_level(strip_modifiers(branch), &["==", "!=", ">=", "<=", ">", "<"]) {
            let side = strip_modifiers(side);
            if !side.is_empty() && side.parse::<f64>().is_err() {
                out.push(side.to_string());
            }
        }
    }
    out
}

#[test]
fn alert_conditions_split_into_their_signals() {
    assert_eq!(
        signals("sum by (a) (rate(x{s=~\"5..\"}[5m])) / sum(y) > 0.001"),
        ["sum by (a) (rate(x{s=~\"5..\"}[5m])) / sum(y)"]
    );
    assert_eq!(
        signals("q(0.9, r) > 1 unless on (job, voice) increase(s[10m]) > 0"),
        ["q(0.9, r)", "increase(s[10m])"]
    );
    assert_eq!(
        signals("(a or b * 0) > 3 or (c or d) > 0"),
        ["(a or b * 0)", "(c or d)"]
    );
    assert_eq!(
        signals("max by (i) (p) >= max by (i) (pm) and on(i) h > 0.5"),
        ["max by (i) (p)", "max by (i) (pm)", "h"]
    );
    assert_eq!(signals("up{job=\"x\"} == 0"), ["up{job=\"x\"}"]);
    assert_eq!(
        signals("piperd_errors_total > bool 1"),
        ["piperd_errors_total"]
    );
}

/// The shipped files on a real Prometheus: it scrapes a real server under
/// known traffic and evaluates the shipped rules; every query of the
/// dashboard and every alert condition is accepted and has data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answers_every_dashboard_and_alert_query() {
    let started = Instant::now();
    let tools = prometheus_tools();
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let target = server.base.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(tools, &target).await;
    let up = format!("up{{job=\"{JOB}\"}}");
    prometheus
        .wait_for(&up, Duration::from_secs(20), |v| v == 1.0)
        .await;

    // Known traffic: a warm-up, plain and streamed requests, a refused one;
    // the engine killed once (a crash and a restart); more requests.
    let mut scrapes = 0;
    let (status, _, _) = post(&server, "/api/warmup", json!({})).await;
    assert_eq!(status, 200);
    let mut answered = 0;
    let traffic = |round: usize| {
        let server = &server;
        async move {
            let mut n = 0;
            for text in ["Hello there.", "A second, short request."] {
                let (status, body) = tts(server, json!({"text": format!("{text} {round}")})).await;
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                n += 1;
            }
            let streamed = format!("Streamed, this time. {round}");
            let (status, _) = tts(server, json!({"text": streamed, "stream": true})).await;
            assert_eq!(status, 200);
            let (status, _) = tts(server, json!({"text": "   "})).await;
            assert_eq!(status, 400);
            assert_eq!(get_json(server, "/api/voices").await.0, 200);
            n + 1
        }
    };
    answered += traffic(1).await;
    // The engine's memory is sampled every 5 s: wait for a sample.
    scrape_until(
        &server,
        &mut scrapes,
        Duration::from_secs(15),
        "the engine's memory sampled",
        |m| m.get(m::PROCESS_MEMORY, &[("voice", VOICE)]).unwrap_or(0.0) > 0.0,
    )
    .await;
    kill_and_await_restart(&server, &mut scrapes, VOICE, 2.0).await;
    answered += traffic(2).await;

    // Prometheus has seen all of it, and scraped a few times more.
    let answered_expr = format!(
        "sum({}{{route=\"/api/tts\", status=\"200\"}})",
        m::HTTP_REQUESTS
    );
    prometheus
        .wait_for(&answered_expr, Duration::from_secs(20), |v| {
            v == answered as f64
        })
        .await;
    prometheus
        .wait_for(
            &format!("sum({})", m::PROCESS_RESTARTS),
            Duration::from_secs(20),
            |v| v == 1.0,
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut failures = Vec::new();

    // The dashboard: its voice variable finds the voice, and every query
    // has data.
    let dashboard = dashboard();
    let voice_query = variable_query(variable(&dashboard, "voice"));
    let inner = voice_query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected voice variable query {voice_query}"));
    let (selector, label) = inner.rsplit_once(',').unwrap();
    let values: Vec<String> = prometheus
        .query(selector.trim())
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|(metric, _)| metric[label.trim()].as_str().map(str::to_string))
        .collect();
    if !values.iter().any(|v| v == VOICE) {
        failures.push(format!("$voice: {voice_query} gives {values:?}"));
    }
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 20, "only {} queries", queries.len());
    for (title, expr) in &queries {
        let promql = grafana_to_promql(expr);
        if let Err(err) = prometheus.has_data(&promql).await {
            failures.push(format!("panel {title:?}: {promql}\n    {err}"));
        }
    }

    // The rules: loaded, evaluated without error; every alert condition is
    // accepted, and what it compares has data. The conditions themselves are
    // false on this healthy server (so their full expressions return
    // nothing): instead each side of each comparison is queried, in every
    // branch of a top-level and/or/unless, thresholds aside. Series that only
    // exist after a failure are made to have data by the expressions
    // themselves (`or ... * 0`).
    let rules = prometheus.evaluated_rules().await;
    let mut alerts = BTreeSet::new();
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["name"].as_str().unwrap().to_string();
            let expr = rule["query"].as_str().unwrap();
            if rule["health"] != "ok" {
                failures.push(format!(
                    "rule {name}: health {} ({})",
                    rule["health"], rule["lastError"]
                ));
            }
            if let Err(err) = prometheus.query(expr).await {
                failures.push(format!("rule {name}: {expr}\n    {err}"));
            }
            for signal in signals(expr) {
                if let Err(err) = prometheus.has_data(&signal).await {
                    failures.push(format!("rule {name}: {signal}\n    {err}"));
                }
            }
            if rule["type"] == "alerting" {
                alerts.insert(name);
            }
        }
    }
    let expected: BTreeSet<String> = [
        "PiperdDown",
        "PiperdHighErrorRate",
        "PiperdSlowFirstAudio",
        "PiperdVoiceCrashLooping",
        "PiperdProcessesSaturated",
    ]
    .map(String::from)
    .into();
    assert_eq!(alerts, expected, "the alerting rules loaded");

    // A healthy server under light traffic alerts nothing, not even pending.
    let active = prometheus.api("/api/v1/alerts", &[]).await;
    let active = active["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !active.is_empty() {
        failures.push(format!("alerts on a healthy server: {active:#?}"));
    }

    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}\n--- prometheus log ---\n{}",
        failures.len(),
        failures.join("\n"),
        prometheus.log()
    );
    eprintln!(
        "checked {} dashboard queries and {} alerts in {:?}",
        queries.len(),
        alerts.len(),
        started.elapsed()
    );
    drop(prometheus);
    assert!(server.engines().len() <= 1);
}

/// Requests refused before a handler runs (no key, no route, wrong method)
/// are counted under their route, with the time they took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_count_under_their_route() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[("PIPER_API_KEYS", "secret")]);
    let (status, _, _) = post(&server, "/api/tts", json!({"text": "Hi."})).await;
    assert_eq!(status, 401);
    let response = client().get(server.url("/no/such")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = client()
        .get(server.url("/v1/audio/speech"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let text = metrics_text(&server).await;
    for (route, method, status) in [
        ("/api/tts", "POST", "401"),
        ("other", "GET", "404"),
        ("/v1/audio/speech", "GET", "405"),
    ] {
        let labels = [
            format!("route=\"{route}\""),
            format!("method=\"{method}\""),
            format!("status=\"{status}\""),
        ];
        let found = text.lines().any(|l| {
            l.starts_with(&format!("{}{{", m::HTTP_REQUESTS))
                && labels.iter().all(|label| l.contains(label.as_str()))
                && l.ends_with(" 1")
        });
        assert!(found, "no {route} {method} {status} in\n{text}");
    }
    let count = format!("{}_count{{route=\"/api/tts\"}}", m::HTTP_DURATION);
    assert_eq!(metric(&text, &count), 1.0, "{text}");
}
