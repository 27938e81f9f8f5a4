//! `make bench`: piperd against the raw Piper engine, on this machine, in one run.
//!
//! Starts the real `piperd` binary on a loopback port with the real voice
//! (hard-linked under three names in a temporary voices folder), runs the raw
//! engine (`benches/raw_engine.py`, Piper's own Python API in `.venv`) on the
//! same texts, prints a table per section and writes them all to
//! `BENCHMARKS.md` with the machine and the command. Every number in the
//! output is measured in this run; every loop and wait is bounded.
//!
//! Sections, in the order they run (numbers as in the issue that asked for
//! them): cold start (4), short-sentence latency (1), audio cache, time to
//! first audio (2), fairness (6), throughput (3; with a second server that
//! runs one onnxruntime thread per engine), engine memory (7), and piperd's
//! memory during one long request (5) on a fresh server, then the speed of
//! text normalization, in process.
//! About six and a half minutes on two cores.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

/// The bundled voice, installed by `make setup`.
const VOICE_FILE: &str = "en_US-joe-medium";
/// The names the voice is served under (hard links of one model).
const VOICES: [&str; 3] = ["bench-a", "bench-b", "bench-c"];
/// Bytes of the WAV header before the first sample.
const WAV_HEADER: usize = 44;

const SHORT_WARMUP: usize = 5;
const SHORT_MEASURED: usize = 50;
const CACHE_REPEATS: usize = 50;
const TTFA_LENGTHS: [usize; 3] = [1_000, 20_000, 100_000];
const TTFA_TRIALS: usize = 3;
const FAIRNESS_TRIALS: usize = 5;
/// The second server of the throughput section: one sentence at a time on
/// every core, never side by side, to show what sharing the cores gains.
const ALT_ENGINE_ENV: [(&str, &str); 1] = [("PIPER_ENGINE_CONCURRENCY", "1")];
const ALT_LABEL: &str = " (PIPER_ENGINE_CONCURRENCY=1)";
/// Throughput: every configuration runs one window per round; the rounds
/// interleave piperd and the raw engine so that both see the same machine.
/// (With three rounds of 4 s windows, a row moved by up to 0.07× between runs.)
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(6);
const THROUGHPUT_ROUNDS: usize = 5;
const THROUGHPUT_TEXTS: usize = 2_000;
/// How long the long non-streamed request of the memory section is watched.
const MEMORY_WINDOW: Duration = Duration::from_secs(24);
/// Longest any single request may take before the bench gives up on it.
const REQUEST_LIMIT: Duration = Duration::from_secs(120);
/// Longest wait for the engines to finish sentences left by cancelled requests.
const IDLE_LIMIT: Duration = Duration::from_secs(20);
/// Longest a raw engine run may take.
const RAW_LIMIT: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup` first",
        python.display()
    );
    python
}

fn model() -> PathBuf {
    let model = root().join(format!("voices/{VOICE_FILE}.onnx"));
    assert!(
        model.exists(),
        "{} is missing: run `make setup` first",
        model.display()
    );
    model
}

// ---------------------------------------------------------------------------
// Texts: deterministic, varied, never one sentence repeated.
// ---------------------------------------------------------------------------

/// splitmix64: a tiny deterministic generator, so texts are the same every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x9e37_79b9_7f4a_7c15)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const NAMES: &[&str] = &[
    "Margaret", "Tomas", "Aisha", "Peter", "Lucia", "Henrik", "Naomi", "Oliver", "Grace", "Samuel",
];
const CITIES: &[&str] = &[
    "Lisbon",
    "Bristol",
    "Toronto",
    "Dublin",
    "Oslo",
    "Melbourne",
    "Boston",
    "Edinburgh",
    "Denver",
];
const THINGS: &[&str] = &[
    "gate",
    "window",
    "cupboard",
    "garage",
    "lantern",
    "boathouse",
    "piano",
    "wagon",
    "cabinet",
];
const ADJS: &[&str] = &[
    "cold", "quiet", "windy", "late", "early", "foggy", "crowded", "narrow", "bright",
];
const DAYS: &[&str] = &[
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const STREETS: &[&str] = &[
    "Mill", "Church", "Harbour", "Station", "Market", "Bridge", "Elm",
];
const COLORS: &[&str] = &["green", "red", "yellow", "grey", "blue", "white"];
const PLANTS: &[&str] = &[
    "tomatoes",
    "roses",
    "ferns",
    "herbs",
    "lemon trees",
    "tulips",
];

/// Fills `{slot}`s of a template with words and numbers.
fn fill(template: &str, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = open + rest[open..].find('}').expect("closed slot");
        let word = match &rest[open + 1..close] {
            "name" => rng.pick(NAMES).to_string(),
            "city" => rng.pick(CITIES).to_string(),
            "thing" => rng.pick(THINGS).to_string(),
            "adj" => rng.pick(ADJS).to_string(),
            "day" => rng.pick(DAYS).to_string(),
            "street" => rng.pick(STREETS).to_string(),
            "color" => rng.pick(COLORS).to_string(),
            "plant" => rng.pick(PLANTS).to_string(),
            "n" => (2 + rng.below(60)).to_string(),
            "m" => (2 + rng.below(30)).to_string(),
            "k" => (2 + rng.below(12)).to_string(),
            "year" => (1890 + rng.below(130)).to_string(),
            other => panic!("unknown slot {other}"),
        };
        out.push_str(&word);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Templates of one sentence of about 60 characters.
const SHORT_TEMPLATES: &[&str] = &[
    "Please remember to water the {plant} on {day} at {k} o'clock.",
    "The {adj} train to {city} leaves from platform {k} today.",
    "{name} counted {n} boxes in the hall and {m} in the kitchen.",
    "Why would anyone leave the {thing} open on such a {adj} night?",
    "The library on {street} Street closes at {k} every {day}.",
    "Our meeting with {name} moved to room {n} on the top floor.",
    "The {color} {thing} by the door has been there since {year}.",
];

/// `count` distinct short sentences.
fn short_sentences(count: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(count);
    for i in 0..count * 50 {
        if out.len() == count {
            break;
        }
        let sentence = fill(SHORT_TEMPLATES[i % SHORT_TEMPLATES.len()], &mut rng);
        if seen.insert(sentence.clone()) {
            out.push(sentence);
        }
    }
    assert_eq!(out.len(), count, "not enough distinct short sentences");
    out
}

/// The first sentence of a long text: about 60 characters, distinct per `k`.
fn opener(k: usize) -> String {
    format!("The morning of day {k} began with a cold rain over the harbour.")
}

const MEDIUM_TEMPLATES: &[&str] = &[
    "The {thing} on {street} Street was painted {color} in {year}.",
    "She counted the boxes twice: {n} in the hall, {m} in the kitchen, and {k} more hidden under the stairs.",
    "Rain again!",
    "Why would anyone leave the {thing} open on such a {adj} night?",
    "The library closes at {k}, but the reading room stays open until {m} for members.",
    "{name} said the price of a ticket to {city} had risen to {n} dollars and {m} cents since {day}.",
    "Please remember to water the {plant} on {day}.",
    "According to the report, about {n} percent of the parcels sent to {city} in {year} were never delivered.",
    "Is it true that {name} walked all the way from {city} in {k} days?",
    "Nobody answered.",
    "The {adj} wind from the sea rattled the windows of the {color} house on {street} Street.",
    "{name} and {name} met at the {adj} station in {city} on a {day} in {year}.",
];
const LONG_OPENERS: &[&str] = &[
    "In the spring of {year} the council of {city} decided",
    "Nobody expected the morning train from {city} to arrive so early",
    "After the storm had passed over the hills above {city}",
    "When {name} finally opened the letter from the harbour office",
    "For {n} years the {color} {thing} had stood in the square",
];
const LONG_CLAUSES: &[&str] = &[
    ", after a long and sometimes bitter debate that lasted well past midnight",
    ", least of all the station master, who was still eating breakfast when the whistle blew",
    " and the passengers began to climb down onto the wet platform with their umbrellas and bags",
    ", using the same quarry and the same methods as the builders of {year}",
    ", while {n} children waited outside in the rain for the doors to open",
    " because nobody could remember where the keys to the {thing} had been left",
    ", although the forecast for {day} had promised clear skies and a gentle breeze",
    " so that the old {thing} could be repaired before the winter markets began",
    ", and {name} wrote down every word of it in a small {color} notebook",
];

/// One sentence of 200 to 400 characters, made of clauses.
fn long_sentence(rng: &mut Rng) -> String {
    let target = 200 + rng.below(180);
    let mut out = fill(rng.pick(LONG_OPENERS), rng);
    for _ in 0..40 {
        if out.len() >= target {
            break;
        }
        let clause = fill(rng.pick(LONG_CLAUSES), rng);
        if out.len() + clause.len() + 1 > 400 {
            if out.len() >= 200 {
                break;
            }
            continue;
        }
        out.push_str(&clause);
    }
    out.push('.');
    out
}

/// Varied prose of at most `max_chars` characters (ASCII, so bytes = chars):
/// paragraphs of 3 to 7 sentences, one sentence in five 200 to 400 characters long.
fn prose(seed: u64, max_chars: usize) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(max_chars);
    let mut in_paragraph = 0;
    let mut paragraph_len = 3 + rng.below(5);
    let mut misses = 0;
    while misses < 20 {
        let sentence = if rng.below(5) == 0 {
            long_sentence(&mut rng)
        } else {
            fill(rng.pick(MEDIUM_TEMPLATES), &mut rng)
        };
        let sep = match (out.is_empty(), in_paragraph == paragraph_len) {
            (true, _) => "",
            (false, true) => "\n\n",
            (false, false) => " ",
        };
        if out.len() + sep.len() + sentence.len() > max_chars {
            misses += 1;
            continue;
        }
        if sep == "\n\n" {
            in_paragraph = 0;
            paragraph_len = 3 + rng.below(5);
        }
        out.push_str(sep);
        out.push_str(&sentence);
        in_paragraph += 1;
    }
    out
}

/// A text of about `chars` characters (never more) that starts with `opener`.
fn long_text(opener: &str, seed: u64, chars: usize) -> String {
    format!("{opener} {}", prose(seed, chars - opener.len() - 1))
}

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

/// Nearest-rank percentile of unsorted samples.
fn percentile(samples: &[f64], p: f64) -> f64 {
    assert!(!samples.is_empty());
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}

fn ms(seconds: f64) -> String {
    if seconds < 0.01 {
        format!("{:.2} ms", seconds * 1000.0)
    } else {
        format!("{:.0} ms", seconds * 1000.0)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

/// A `kB` field of /proc/<pid>/status, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:").unwrap_or(0)
}

fn hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:").unwrap_or(0)
}

/// Resets the process's peak RSS (VmHWM) to its current RSS.
fn reset_hwm(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Fields of /proc/<pid>/stat after the command name (state is index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Engine processes of a server: its live children, with the voice each serves.
fn engines(server: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(fields) = stat_fields(pid) else {
            continue;
        };
        if fields.first().map(String::as_str) == Some("Z")
            || fields.get(1).and_then(|p| p.parse::<u32>().ok()) != Some(server)
        {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let voice = cmdline
            .split(|b| *b == 0)
            .map(String::from_utf8_lossy)
            .find(|arg| arg.ends_with(".onnx"))
            .and_then(|arg| {
                Path::new(arg.as_ref())
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
            });
        if let Some(voice) = voice {
            out.push((pid, voice));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// CPU time (user + system, clock ticks) of a server's engines.
fn engine_cpu_ticks(server: u32) -> u64 {
    engines(server)
        .iter()
        .filter_map(|(pid, _)| {
            let f = stat_fields(*pid)?;
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Waits until the engines stop using CPU (sentences of cancelled requests
/// finish), at most [`IDLE_LIMIT`]. Returns how long it waited and whether
/// they went idle.
async fn wait_engines_idle(server: u32) -> (Duration, bool) {
    let started = Instant::now();
    let mut last = engine_cpu_ticks(server);
    let mut quiet = 0;
    while started.elapsed() < IDLE_LIMIT {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = engine_cpu_ticks(server);
        // Under 3 ticks (30 ms of CPU) in 200 ms, twice in a row: idle.
        quiet = if now.saturating_sub(last) < 3 {
            quiet + 1
        } else {
            0
        };
        last = now;
        if quiet >= 2 {
            return (started.elapsed(), true);
        }
    }
    (started.elapsed(), false)
}

/// Polls one process's RSS in the background; keeps the highest since `reset`.
struct RssSampler {
    max_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let max_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (max, halt) = (max_kib.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                max.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler { max_kib, stop }
    }

    fn reset(&self) {
        self.max_kib.store(0, Ordering::Relaxed);
    }

    fn max(&self) -> u64 {
        self.max_kib.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// CPU ticks of the whole machine: (busy, all).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy, busy + get(3) + get(4))
}

/// CPU ticks of a process, with those of its children it has reaped.
fn process_ticks(pid: u32) -> u64 {
    stat_fields(pid)
        .map(|f| {
            (11..=14)
                .filter_map(|i| f.get(i)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// The child gets SIGKILL if the benchmark dies, so no server or raw engine
/// outlives an interrupted run.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

struct Server {
    child: Child,
    base: String,
    pid: u32,
    log: Arc<Mutex<VecDeque<String>>>,
    /// Its warnings and errors (the first 100), for the report.
    warnings: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(voices_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_piperd"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PIPER_HOST", "127.0.0.1")
            .env("PIPER_PORT", "0")
            .env("PIPER_WYOMING_PORT", "0")
            .env("PIPER_VOICES_DIR", voices_dir)
            .env("PIPER_PYTHON", python())
            .env("PIPER_MAX_PROCESSES", "3")
            // Engines stay warm for the whole run.
            .env("PIPER_PROCESS_IDLE_TIMEOUT", "3600")
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("piperd starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        let warn_sink = warnings.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                const MARK: &str = "listening on http://";
                if let Some(at) = line.find(MARK) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line[at + MARK.len()..].trim().to_string());
                    }
                }
                // Dropped connections are this benchmark cancelling requests.
                let cancelled = line.contains("server connection error");
                if (line.contains(" WARN ") || line.contains(" ERROR ")) && !cancelled {
                    let mut warnings = warn_sink.lock().unwrap();
                    if warnings.len() < 100 {
                        warnings.push(line.clone());
                    }
                }
                let mut log = sink.lock().unwrap();
                if log.len() == 200 {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        let pid = child.id();
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("piperd did not start: {:?}", log.lock().unwrap());
        };
        Server {
            child,
            base: format!("http://{addr}"),
            pid,
            log,
            warnings,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter()
            .skip(log.len().saturating_sub(20))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A log line without its terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The samples of `server`'s `/metrics` whose line starts with `prefix`
/// (none if it cannot be read).
async fn metric_lines(client: &reqwest::Client, server: &Server, prefix: &str) -> Vec<String> {
    let Ok(response) = client.get(server.url("/metrics")).send().await else {
        return Vec::new();
    };
    let metrics = response.text().await.unwrap_or_default();
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Engine exits of `server` that piperd did not ask for (crash, hang, bad
/// output), and the warnings it logged since the last call.
async fn incidents_of(client: &reqwest::Client, server: &Server) -> (Vec<String>, Vec<String>) {
    let incidents = metric_lines(client, server, "piperd_process_exits_total")
        .await
        .into_iter()
        .filter(|line| {
            ["crash", "hang", "bad_output"]
                .iter()
                .any(|r| line.contains(&format!("reason=\"{r}\"")))
        })
        .map(|line| format!("server pid {}: {line}", server.pid))
        .collect();
    let warnings = std::mem::take(&mut *server.warnings.lock().unwrap());
    (incidents, warnings)
}

/// A voices folder with the real voice under each of [`VOICES`].
fn voices_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("piperd-bench-voices")
        .tempdir()
        .expect("temp dir");
    let source = model();
    for name in VOICES {
        let onnx = dir.path().join(format!("{name}.onnx"));
        if std::fs::hard_link(&source, &onnx).is_err() {
            std::fs::copy(&source, &onnx).expect("copy the model");
        }
        std::fs::copy(
            source.with_extension("onnx.json"),
            dir.path().join(format!("{name}.onnx.json")),
        )
        .expect("copy the config");
    }
    dir
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(600))
        .build()
        .expect("HTTP client")
}

/// Fails loudly with the server's answer and log when a status is not 200.
async fn check(server: &Server, response: reqwest::Response) -> reqwest::Response {
    if response.status().is_success() {
        return response;
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    panic!(
        "piperd answered {status}: {body}\nlast log lines:\n{}",
        server.log_tail()
    );
}

fn tts_body(voice: &str, text: &str, stream: bool) -> Value {
    json!({"text": text, "voice_model": voice, "stream": stream})
}

/// A complete (non-streamed) answer: wall time and audio seconds.
async fn tts_complete(
    server: &Server,
    client: &reqwest::Client,
    voice: &str,
    text: &str,
) -> (f64, f64) {
    let started = Instant::now();
    let request = async {
        let response = client
            .post(server.url("/api/tts"))
            .json(&tts_body(voice, text, false))
            .send()
            .await
            .expect("request sent");
        check(server, response)
            .await
            .bytes()
            .await
            .expect("body read")
    };
    let bytes = tokio::time::timeout(REQUEST_LIMIT, request)
        .await
        .expect("request within the limit");
    let wall = started.elapsed().as_secs_f64();
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a WAV answer");
    let audio = reader.duration() as f64 / reader.spec().sample_rate as f64;
    (wall, audio)
}

/// Time to the first audio of a streamed answer. The rest of the answer is
/// read to its end when `finish`, else dropped (which cancels the request).
async fn tts_first_audio(
    server: &Server,
    client: &reqwest::Client,
    voice: &str,
    text: &str,
    finish: bool,
) -> f64 {
    let started = Instant::now();
    let request = async {
        let response = client
            .post(server.url("/api/tts"))
            .json(&tts_body(voice, text, true))
            .send()
            .await
            .expect("request sent");
        let mut body = check(server, response).await.bytes_stream();
        let mut got = 0;
        let mut first = None;
        while let Some(chunk) = body.next().await {
            got += chunk.expect("body read").len();
            if got > WAV_HEADER && first.is_none() {
                first = Some(started.elapsed().as_secs_f64());
                if !finish {
                    break;
                }
            }
        }
        first.expect("the stream carried audio")
    };
    tokio::time::timeout(REQUEST_LIMIT, request)
        .await
        .expect("first audio within the limit")
}

// ---------------------------------------------------------------------------
// The raw engine
// ---------------------------------------------------------------------------

struct RawEngine {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<(String, Instant)>,
    stderr: Arc<Mutex<String>>,
    started: Instant,
}

impl RawEngine {
    fn spawn(args: &[&str]) -> RawEngine {
        let mut cmd = Command::new(python());
        cmd.arg(root().join("benches/raw_engine.py"))
            .args(args)
            .current_dir(root())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("raw engine {args:?} starts: {e}"));
        let started = Instant::now();
        let stdout = child.stdout.take().expect("piped");
        let stderr_pipe = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((line, Instant::now())).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                if s.len() < 20_000 {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        RawEngine {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
            started,
        }
    }

    /// The next JSON line and the time it arrived, within `limit`.
    fn next_json(&mut self, limit: Duration) -> (Value, Instant) {
        match self.lines.recv_timeout(limit) {
            Ok((line, at)) => (
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("raw engine printed {line:?}: {e}")),
                at,
            ),
            Err(_) => {
                let _ = self.child.kill();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "raw engine gave no result within {limit:?}; stderr:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("raw engine reads stdin");
        stdin.flush().expect("flush");
    }

    /// A `serve` engine, loaded and warm.
    fn serve() -> RawEngine {
        let model = model().to_string_lossy().to_string();
        let mut raw = RawEngine::spawn(&["serve", &model]);
        let (ready, _) = raw.next_json(RAW_LIMIT);
        assert_eq!(ready["ready"], json!(true), "raw engine not ready: {ready}");
        raw
    }

    /// One timed synthesis by a `serve` engine: the whole text, or its first chunk.
    fn synthesize(&mut self, text: &str, first: bool) -> Value {
        self.send_line(&json!({"text": text, "first": first}).to_string());
        self.next_json(RAW_LIMIT).0
    }
}

impl Drop for RawEngine {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one raw engine mode to its result.
fn raw_run(args: &[&str]) -> (Value, Duration) {
    let mut raw = RawEngine::spawn(args);
    let (value, at) = raw.next_json(RAW_LIMIT);
    (value, at - raw.started)
}

fn write_texts(dir: &Path, name: &str, texts: &[String]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(texts).unwrap()).expect("write texts");
    path.to_string_lossy().to_string()
}

fn num(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("raw engine result has no {key}: {value}"))
}

/// One piperd throughput window: `conc` clients stream distinct texts over
/// `voices` voices; audio seconds, wall seconds and requests completed.
async fn piperd_window(
    server: &Server,
    client: &reqwest::Client,
    texts: &Arc<Vec<String>>,
    next: &Arc<AtomicUsize>,
    voices: usize,
    conc: usize,
) -> (f64, f64, usize) {
    let bytes = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + THROUGHPUT_WINDOW;
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (texts, next, bytes, completed) = (
            texts.clone(),
            next.clone(),
            bytes.clone(),
            completed.clone(),
        );
        let client = client.clone();
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let voice = VOICES[i % voices];
                let text = &texts[i % texts.len()];
                if stream_until_url(&base, &client, voice, text, deadline, &bytes).await {
                    completed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("throughput task");
    }
    let wall = started
        .elapsed()
        .as_secs_f64()
        .max(THROUGHPUT_WINDOW.as_secs_f64());
    let audio = bytes.load(Ordering::Relaxed) as f64 / 2.0 / 22050.0;
    (audio, wall, completed.load(Ordering::Relaxed))
}

/// One raw throughput window run by every process of a group at once: audio
/// seconds (summed) and wall seconds.
fn raw_window(group: &mut [RawEngine], max_rss_mb: &mut f64) -> (f64, f64) {
    let window = THROUGHPUT_WINDOW.as_secs_f64().to_string();
    for engine in group.iter_mut() {
        engine.send_line(&window);
    }
    let mut audio = 0.0;
    let mut wall: f64 = 0.0;
    for engine in group.iter_mut() {
        let (result, _) = engine.next_json(THROUGHPUT_WINDOW + RAW_LIMIT);
        audio += num(&result, "audio_s");
        wall = wall.max(num(&result, "wall_s"));
        *max_rss_mb = max_rss_mb.max(num(&result, "max_rss_mb"));
    }
    (audio, wall)
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

struct Row {
    metric: String,
    piperd: String,
    raw: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

fn row(metric: &str, piperd: String, raw: String, ratio: String) -> Row {
    Row {
        metric: metric.into(),
        piperd,
        raw,
        ratio,
        target: String::new(),
        met: None,
    }
}

impl Row {
    fn target(mut self, target: &str, met: bool) -> Row {
        self.target = target.into();
        self.met = Some(met);
        self
    }
}

struct Section {
    title: String,
    rows: Vec<Row>,
    notes: Vec<String>,
}

#[derive(Default)]
struct Report {
    sections: Vec<Section>,
}

impl Report {
    fn add(&mut self, title: &str, rows: Vec<Row>, notes: Vec<String>) {
        let section = Section {
            title: title.into(),
            rows,
            notes,
        };
        print!("{}", render_section(&section));
        self.sections.push(section);
    }
}

fn cell(s: &str) -> String {
    if s.is_empty() {
        "—".into()
    } else {
        s.replace('|', "\\|")
    }
}

fn render_section(section: &Section) -> String {
    let mut out = format!(
        "\n### {}\n\n| metric | piperd | raw engine | ratio | target | met? |\n| --- | --- | --- | --- | --- | --- |\n",
        section.title
    );
    for r in &section.rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {met} |",
            cell(&r.metric),
            cell(&r.piperd),
            cell(&r.raw),
            cell(&r.ratio),
            cell(&r.target)
        );
    }
    if !section.notes.is_empty() {
        out.push('\n');
        for note in &section.notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

fn machine() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    vec![
        format!("CPUs (nproc): {cpus}"),
        format!("CPU: {cpu}"),
        format!("memory: {:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0),
        format!("kernel: Linux {}", kernel.trim()),
    ]
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

struct Bench {
    server: Server,
    client: reqwest::Client,
    texts_dir: tempfile::TempDir,
    report: Report,
    sampler: RssSampler,
    /// Raw engine's median time for one short sentence: the yardstick of
    /// time to first audio and fairness.
    raw_short_p50: f64,
    /// Raw engine's speed on the short sentences: audio seconds and
    /// characters per second of synthesis.
    raw_audio_per_s: f64,
    raw_chars_per_s: f64,
    piperd_idle_kib: u64,
    piperd_idle_warm_kib: u64,
    engine_pids_at_start: BTreeMap<String, u32>,
    raw_max_rss_mb: f64,
    /// Distinct short sentences, each used once in the whole run (an audio
    /// cache must not answer a request that is meant to be synthesized).
    shorts: Vec<String>,
    /// Distinct texts of the throughput runs, handed out in order.
    throughput_texts: Arc<Vec<String>>,
    next_text: Arc<AtomicUsize>,
    voices_dir: PathBuf,
    piperd_after_traffic_kib: u64,
    /// Engine exits nobody asked for (crash, hang, bad output), per server,
    /// and the servers' warnings.
    incidents: Vec<String>,
    server_warnings: Vec<String>,
    /// CPU ticks of the engines of servers already replaced.
    retired_ticks: u64,
    /// A second server running alongside `server`, if any.
    other_server: Option<u32>,
}

fn main() {
    let run_started = Instant::now();
    let load_at_start = loadavg();
    let ticks_at_start = machine_ticks();
    let own_ticks_at_start = process_ticks(std::process::id());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let voices = voices_dir();
    let server = Server::start(voices.path(), &[]);
    println!(
        "piperd {} (pid {}), voices {:?}",
        server.base, server.pid, VOICES
    );
    let sampler = RssSampler::start(server.pid);
    let mut bench = Bench {
        client: client(),
        texts_dir: tempfile::Builder::new()
            .prefix("piperd-bench-texts")
            .tempdir()
            .expect("temp dir"),
        report: Report::default(),
        sampler,
        raw_short_p50: 0.0,
        raw_audio_per_s: 0.0,
        raw_chars_per_s: 0.0,
        piperd_idle_kib: 0,
        piperd_idle_warm_kib: 0,
        engine_pids_at_start: BTreeMap::new(),
        raw_max_rss_mb: 0.0,
        shorts: short_sentences(SHORT_WARMUP + SHORT_MEASURED + FAIRNESS_TRIALS, 1),
        throughput_texts: Arc::new(Vec::new()),
        next_text: Arc::new(AtomicUsize::new(0)),
        voices_dir: voices.path().to_path_buf(),
        piperd_after_traffic_kib: 0,
        incidents: Vec::new(),
        server_warnings: Vec::new(),
        retired_ticks: 0,
        other_server: None,
        server,
    };
    runtime.block_on(bench.wait_healthy());
    bench.piperd_idle_kib = rss_kib(bench.server.pid);

    let mut timings = Vec::new();
    macro_rules! timed {
        ($name:expr, $e:expr) => {{
            let t = Instant::now();
            let (machine0, ours0) = (machine_ticks(), bench.own_ticks());
            $e;
            let (machine1, ours1) = (machine_ticks(), bench.own_ticks());
            let all = (machine1.1 - machine0.1).max(1) as f64;
            let others = (machine1.0 - machine0.0).saturating_sub(ours1.saturating_sub(ours0));
            timings.push(($name, t.elapsed(), 100.0 * others as f64 / all));
            eprintln!(
                "[{:>5.1} s] {} done",
                run_started.elapsed().as_secs_f64(),
                $name
            );
        }};
    }
    timed!("cold start", runtime.block_on(bench.cold_start()));
    timed!("short latency", runtime.block_on(bench.short_latency()));
    timed!("audio cache", runtime.block_on(bench.audio_cache()));
    timed!(
        "time to first audio",
        runtime.block_on(bench.time_to_first_audio())
    );
    timed!("fairness", runtime.block_on(bench.fairness()));
    timed!("throughput", runtime.block_on(bench.throughput()));
    timed!("engine memory", runtime.block_on(bench.engine_memory()));
    timed!("memory", runtime.block_on(bench.long_request_memory()));
    timed!("normalization", bench.normalization());

    let total = run_started.elapsed();
    runtime.block_on(bench.record_incidents());
    // CPU the machine spent outside this benchmark (its server, engines and
    // raw engines included) while it ran: other work skews the numbers.
    let (busy, all) = machine_ticks();
    let ours = bench.own_ticks() - own_ticks_at_start;
    let busy = busy - ticks_at_start.0;
    let all = (all - ticks_at_start.1).max(1);
    let others = busy.saturating_sub(ours);
    let mut notes = vec![format!(
        "whole run: {:.0} s (sections: {})",
        total.as_secs_f64(),
        timings
            .iter()
            .map(|(n, d, _)| format!("{n} {:.0} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    )];
    notes.push(format!(
        "other processes used {:.0}% of the machine's CPU time during the run \
         (this benchmark {:.0}%); load average at start {load_at_start}, at end {}",
        100.0 * others as f64 / all as f64,
        100.0 * ours as f64 / all as f64,
        loadavg()
    ));
    notes.push(format!(
        "share of the machine's CPU used by other processes, per section: {}",
        timings
            .iter()
            .filter(|(_, d, _)| d.as_secs() >= 2)
            .map(|(n, _, others)| format!("{n} {others:.0}%"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if !bench.incidents.is_empty() {
        notes.push(format!(
            "**warning**: engine processes ended without piperd stopping them ({}); piperd restarted them, \
             and the restarts fall inside the measurements of the sections they happened in",
            bench.incidents.join("; ")
        ));
    }
    if !bench.server_warnings.is_empty() {
        notes.push(format!(
            "piperd logged {} warnings or errors{}: {}",
            bench.server_warnings.len(),
            if bench.server_warnings.len() > 8 {
                ", the first 8"
            } else {
                ""
            },
            bench
                .server_warnings
                .iter()
                .take(8)
                .map(|w| format!("`{}`", w.replace('`', "'")))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    notes.push(
        "every number above was measured in this run; nothing is carried over from earlier runs"
            .into(),
    );
    println!("\n{}", notes.join("\n"));
    bench.write_markdown(&notes);
    drop(bench);
    drop(voices);
}

impl Bench {
    async fn wait_healthy(&self) {
        self.wait_healthy_of(&self.server).await;
    }

    async fn wait_healthy_of(&self, server: &Server) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.client.get(server.url("/health")).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["ok"] == json!(true) && v["engine"].as_str() != Some("checking") {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "piperd never became healthy:\n{}",
                server.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The next `n` short sentences of the pool, never handed out before.
    fn fresh_shorts(&mut self, n: usize) -> Vec<String> {
        assert!(
            n <= self.shorts.len(),
            "the short sentence pool is too small"
        );
        self.shorts.drain(..n).collect()
    }

    fn texts_file(&self, name: &str, texts: &[String]) -> String {
        write_texts(self.texts_dir.path(), name, texts)
    }

    /// Text normalization (English rules), in this process: the time to
    /// read everyday text dense with numbers, money, dates and abbreviations,
    /// sentence by sentence as the server does, per 1,000 characters.
    fn normalization(&mut self) {
        use piperd::text::normalize::{spoken_line, Rules};
        let sentence = "Dr. Smith paid $5.3 billion on Jan. 5, 2025 at 2:30 PM; call 555-1234 \
                        or visit example.com. In the 1990s it was 72°F, e.g. 50% of 1,234 people \
                        drove 60 km/h down Main St. with Henry VIII. ";
        let text = sentence.repeat(100_000 / sentence.chars().count());
        let chars = text.chars().count();
        let units = piperd::text::split_units(&text, 150);
        let mut per_thousand_us = Vec::new();
        for round in 0..23 {
            let started = Instant::now();
            let mut spoken = 0;
            for unit in &units {
                spoken += spoken_line(unit, 0, Rules::English).0.len();
            }
            let elapsed = started.elapsed().as_secs_f64();
            assert!(spoken > text.len(), "the text was not written out");
            // The first rounds warm the caches.
            if round >= 3 {
                per_thousand_us.push(elapsed / chars as f64 * 1_000.0 * 1e6);
            }
        }
        let p50 = median(&per_thousand_us);
        let p95 = percentile(&per_thousand_us, 95.0);
        let rows = vec![row(
            "normalization per 1,000 chars, p50 / p95",
            format!("{p50:.0} µs / {p95:.0} µs"),
            String::new(),
            String::new(),
        )
        .target("< 1 ms", p95 < 1_000.0)];
        let notes = vec![format!(
            "{} chars in {} sentences, 20 rounds after 3 warm-up rounds, in the bench's own \
             process (one core), while the server idles",
            chars,
            units.len()
        )];
        self.report.add("Text normalization", rows, notes);
    }

    /// Section 4: `/api/warmup` of a cold voice vs the raw engine's load + first synthesis.
    async fn cold_start(&mut self) {
        let model = model().to_string_lossy().to_string();
        let mut walls = Vec::new();
        let mut ready = Vec::new();
        let mut raw_walls = Vec::new();
        let mut raw_inside = Vec::new();
        let mut raw_import = Vec::new();
        // Taking turns: a cold voice of piperd, then a fresh raw process.
        for voice in VOICES {
            let started = Instant::now();
            let response = self
                .client
                .post(self.server.url("/api/warmup"))
                .json(&json!({ "voice_model": voice }))
                .send()
                .await
                .expect("warmup sent");
            let answer: Value = check(&self.server, response)
                .await
                .json()
                .await
                .expect("warmup JSON");
            walls.push(started.elapsed().as_secs_f64());
            ready.push(answer["ready_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0);

            let (value, to_result) = raw_run(&["load", &model]);
            raw_walls.push(to_result.as_secs_f64());
            raw_inside.push(num(&value, "load_and_first_synth_s"));
            raw_import.push(num(&value, "import_s"));
        }
        self.piperd_idle_warm_kib = rss_kib(self.server.pid);
        self.engine_pids_at_start = engines(self.server.pid)
            .into_iter()
            .map(|(pid, voice)| (voice, pid))
            .collect();
        let (p, r) = (median(&walls), median(&raw_walls));
        let rows = vec![
            row(
                "cold start: piperd `/api/warmup` wall vs raw process spawn → loaded + first synthesis (median of 3)",
                ms(p),
                ms(r),
                ratio(p, r),
            ),
            row(
                "  raw: PiperVoice load + first synthesis only, no interpreter start or imports (median)",
                String::new(),
                ms(median(&raw_inside)),
                ratio(p, median(&raw_inside)),
            ),
        ];
        let notes = vec![
            format!(
                "piperd warmup walls: {} (its `ready_ms`: {}); each cold voice starts a new engine process",
                walls.iter().map(|w| ms(*w)).collect::<Vec<_>>().join(", "),
                ready.iter().map(|w| ms(*w)).collect::<Vec<_>>().join(", ")
            ),
            format!(
                "raw walls (spawn to result, includes Python start and imports of {}): {}",
                ms(median(&raw_import)),
                raw_walls.iter().map(|w| ms(*w)).collect::<Vec<_>>().join(", ")
            ),
        ];
        self.report.add("Cold start (4)", rows, notes);
    }

    /// Section 1: Warm short sentences, one at a time, non-streamed.
    async fn short_latency(&mut self) {
        let texts = self.fresh_shorts(SHORT_WARMUP + SHORT_MEASURED);
        let mut raw_engine = RawEngine::serve();
        let mut walls = Vec::new();
        let mut audio = Vec::new();
        let mut raw_secs = Vec::new();
        let mut raw_audio = Vec::new();
        // Taking turns on each sentence, so both see the same machine.
        for (i, text) in texts.iter().enumerate() {
            let (wall, secs) = tts_complete(&self.server, &self.client, VOICES[0], text).await;
            let raw = raw_engine.synthesize(text, false);
            if i >= SHORT_WARMUP {
                walls.push(wall);
                audio.push(secs);
                raw_secs.push(num(&raw, "seconds"));
                raw_audio.push(num(&raw, "audio_s"));
            }
        }
        drop(raw_engine);
        self.raw_short_p50 = median(&raw_secs);
        let raw_total: f64 = raw_secs.iter().sum();
        self.raw_audio_per_s = raw_audio.iter().sum::<f64>() / raw_total;
        self.raw_chars_per_s =
            texts[SHORT_WARMUP..].iter().map(|t| t.len()).sum::<usize>() as f64 / raw_total;
        let mean_chars = texts[SHORT_WARMUP..]
            .iter()
            .map(|t| t.len() as f64)
            .sum::<f64>()
            / SHORT_MEASURED as f64;
        let mut rows = Vec::new();
        for p in [50.0, 95.0, 99.0] {
            let (a, b) = (percentile(&walls, p), percentile(&raw_secs, p));
            let r = row(
                &format!("short sentence latency p{p:.0} (concurrency 1)"),
                ms(a),
                ms(b),
                ratio(a, b),
            );
            rows.push(if p == 50.0 {
                r.target("p50 ≤ 1.05× raw", a <= 1.05 * b)
            } else {
                r
            });
        }
        rows.push(row(
            "  piperd overhead at p50 (piperd − raw)",
            ms(median(&walls) - median(&raw_secs)),
            String::new(),
            String::new(),
        ));
        let notes = vec![format!(
            "{SHORT_MEASURED} distinct sentences (mean {mean_chars:.0} characters) after {SHORT_WARMUP} unmeasured; \
             piperd: full HTTP round trip of a non-streamed WAV; raw: `PiperVoice.synthesize` + int16 bytes in one warm process; \
             audio made: piperd {:.1} s, raw {:.1} s",
            audio.iter().sum::<f64>(),
            raw_audio.iter().sum::<f64>()
        )];
        self.report.add("Warm short sentence (1)", rows, notes);
    }

    /// The same request repeated: shows whether an audio cache answers it.
    async fn audio_cache(&mut self) {
        let text = "This identical sentence is requested fifty times in a row.";
        let mut walls = Vec::new();
        for _ in 0..CACHE_REPEATS {
            let (wall, _) = tts_complete(&self.server, &self.client, VOICES[0], text).await;
            walls.push(wall);
        }
        let first = walls[0];
        let rest = &walls[1..];
        let (p50, p99) = (percentile(rest, 50.0), percentile(rest, 99.0));
        let lookups = metric_lines(
            &self.client,
            &self.server,
            "piperd_audio_cache_lookups_total",
        )
        .await;
        let rows = vec![
            row(
                "identical request ×50: first",
                ms(first),
                ms(self.raw_short_p50),
                ratio(first, self.raw_short_p50),
            ),
            row(
                "identical request: p50 of repeats 2–50",
                ms(p50),
                ms(self.raw_short_p50),
                ratio(p50, self.raw_short_p50),
            ),
            row(
                "identical request: p99 of repeats 2–50",
                ms(p99),
                ms(self.raw_short_p50),
                ratio(p99, self.raw_short_p50),
            ),
        ];
        let cached = p50 < 0.5 * self.raw_short_p50;
        let notes = vec![
            format!(
                "raw column: the raw engine's short-sentence p50 (it has no cache); repeats answered {} \
                 (p50 {} the synthesis time)",
                if cached { "from a cache" } else { "by synthesis (no cache seen)" },
                if cached { "far below" } else { "near" }
            ),
            format!(
                "`/metrics` audio cache lookups: {}",
                if lookups.is_empty() {
                    "not exported".to_string()
                } else {
                    lookups.join("; ")
                }
            ),
        ];
        self.report
            .add("Audio cache (repeat one request)", rows, notes);
    }

    /// Section 2: Time to first audio of long streamed texts.
    async fn time_to_first_audio(&mut self) {
        let mut texts = Vec::new();
        for (li, &len) in TTFA_LENGTHS.iter().enumerate() {
            for trial in 0..TTFA_TRIALS {
                let k = 11 + li * TTFA_TRIALS + trial;
                texts.push(long_text(&opener(k), 100 + k as u64, len));
            }
        }
        let mut raw_engine = RawEngine::serve();
        let mut piperd = vec![0.0; texts.len()];
        let mut raw_secs = vec![0.0; texts.len()];
        let mut raw_phon = vec![0.0; texts.len()];
        let mut waits = Vec::new();
        // Lengths in turn (1k, 20k, 100k, 1k, ...), piperd then the raw engine on each text.
        for trial in 0..TTFA_TRIALS {
            for li in 0..TTFA_LENGTHS.len() {
                let i = li * TTFA_TRIALS + trial;
                piperd[i] =
                    tts_first_audio(&self.server, &self.client, VOICES[0], &texts[i], false).await;
                waits.push(wait_engines_idle(self.server.pid).await);
                let raw = raw_engine.synthesize(&texts[i], true);
                raw_secs[i] = num(&raw, "seconds");
                raw_phon[i] = num(&raw, "phonemize_s");
            }
        }
        drop(raw_engine);
        let short = self.raw_short_p50;
        let mut rows = Vec::new();
        let mut medians = Vec::new();
        for (li, &len) in TTFA_LENGTHS.iter().enumerate() {
            let range = li * TTFA_TRIALS..(li + 1) * TTFA_TRIALS;
            let p = median(&piperd[range.clone()]);
            let r = median(&raw_secs[range.clone()]);
            medians.push(p);
            rows.push(
                row(
                    &format!(
                        "time to first audio, {} characters, `stream: true` (median of {TTFA_TRIALS}); raw = whole text to `synthesize`",
                        len
                    ),
                    ms(p),
                    ms(r),
                    ratio(p, r),
                )
                .target(&format!("≤ 1.5× raw short sentence ({})", ms(1.5 * short)), p <= 1.5 * short),
            );
            rows.push(row(
                &format!("  raw: phonemizing the whole {len}-character text"),
                String::new(),
                ms(median(&raw_phon[range])),
                String::new(),
            ));
        }
        let flat = medians.iter().cloned().fold(f64::MIN, f64::max)
            / medians.iter().cloned().fold(f64::MAX, f64::min);
        rows.push(
            row(
                "flatness: slowest / fastest of the three medians",
                format!("{flat:.2}×"),
                format!(
                    "{:.2}×",
                    median(&raw_secs[2 * TTFA_TRIALS..]) / median(&raw_secs[..TTFA_TRIALS])
                ),
                String::new(),
            )
            .target("≤ 1.25× (flat)", flat <= 1.25),
        );
        let stuck = waits.iter().filter(|(_, idle)| !idle).count();
        let notes = vec![
            format!(
                "each text starts with a distinct ~{}-character sentence, then varied prose in paragraphs \
                 (one sentence in five 200–400 characters); lengths: {}",
                opener(11).len(),
                texts
                    .iter()
                    .map(|t| t.len().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "piperd per trial: {}; the request is dropped after its first audio, and the next starts once the engine is idle \
                 (waited {} on average{})",
                piperd.iter().map(|s| ms(*s)).collect::<Vec<_>>().join(", "),
                ms(waits.iter().map(|(d, _)| d.as_secs_f64()).sum::<f64>() / waits.len() as f64),
                if stuck > 0 {
                    format!("; {stuck} times the engine was still busy after {IDLE_LIMIT:?}")
                } else {
                    String::new()
                }
            ),
            format!("yardstick: raw engine short-sentence p50 = {}", ms(short)),
        ];
        self.report
            .add("Time to first audio, streamed (2)", rows, notes);
    }

    /// Section 6: A short sentence while a 100,000-character stream is synthesized on the same voice.
    async fn fairness(&mut self) {
        let long = long_text(&opener(60), 600, 100_000);
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let long_bytes = Arc::new(AtomicU64::new(0));
        let reader = {
            let client = self.client.clone();
            let url = self.server.url("/api/tts");
            let body = tts_body(VOICES[0], &long, true);
            let long_bytes = long_bytes.clone();
            tokio::spawn(async move {
                let response = client.post(url).json(&body).send().await.expect("sent");
                assert!(
                    response.status().is_success(),
                    "long stream: {}",
                    response.status()
                );
                let mut stream = response.bytes_stream();
                let mut first_tx = Some(first_tx);
                while let Some(chunk) = stream.next().await {
                    let n = chunk.map(|c| c.len()).unwrap_or(0);
                    if long_bytes.fetch_add(n as u64, Ordering::Relaxed) + n as u64
                        > WAV_HEADER as u64
                    {
                        if let Some(tx) = first_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                }
            })
        };
        tokio::time::timeout(REQUEST_LIMIT, first_rx)
            .await
            .expect("long stream's first audio within the limit")
            .expect("long stream started");
        let shorts = self.fresh_shorts(FAIRNESS_TRIALS);
        let mut firsts = Vec::new();
        for text in &shorts {
            tokio::time::sleep(Duration::from_millis(700)).await;
            firsts.push(tts_first_audio(&self.server, &self.client, VOICES[0], text, true).await);
        }
        let long_audio = long_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(WAV_HEADER as u64) as f64
            / 2.0
            / 22050.0;
        reader.abort();
        let _ = reader.await;
        let (_, idle) = wait_engines_idle(self.server.pid).await;
        let (p, worst) = (median(&firsts), percentile(&firsts, 100.0));
        let limit = 2.0 * self.raw_short_p50;
        let rows = vec![
            row(
                &format!("short sentence's first audio during a 100,000-character stream, same voice (median of {FAIRNESS_TRIALS})"),
                ms(p),
                ms(self.raw_short_p50),
                ratio(p, self.raw_short_p50),
            )
            .target(&format!("≤ 2× raw short sentence ({})", ms(limit)), p <= limit),
            row(
                "  worst of the trials",
                ms(worst),
                ms(self.raw_short_p50),
                ratio(worst, self.raw_short_p50),
            )
            .target(&format!("≤ {}", ms(limit)), worst <= limit),
        ];
        let notes = vec![
            format!(
                "trials: {}; raw column: the raw engine's short-sentence p50; the long stream was read continuously \
                 ({long_audio:.0} s of its audio arrived meanwhile) and then cancelled{}",
                firsts.iter().map(|s| ms(*s)).collect::<Vec<_>>().join(", "),
                if idle { "" } else { "; its engine was still busy afterwards" }
            ),
        ];
        self.report.add("Fairness (6)", rows, notes);
    }

    /// Section 3: Audio seconds per wall second, piperd and raw, in
    /// interleaved rounds. A second piperd with the throughput setting runs
    /// alongside, idle except in its own windows.
    async fn throughput(&mut self) {
        let mut seen = HashSet::new();
        let texts: Vec<String> = (0..THROUGHPUT_TEXTS * 2)
            .map(|i| {
                prose(
                    50_000 + i as u64,
                    150 + Rng::new(90_000 + i as u64).below(250),
                )
            })
            .filter(|t| !t.is_empty() && seen.insert(t.clone()))
            .take(THROUGHPUT_TEXTS)
            .collect();
        let mean_chars = texts.iter().map(|t| t.len()).sum::<usize>() as f64 / texts.len() as f64;
        let file = self.texts_file("throughput.json", &texts);
        self.throughput_texts = Arc::new(texts);

        let alt = Server::start(&self.voices_dir, &ALT_ENGINE_ENV);
        self.other_server = Some(alt.pid);
        self.wait_healthy_of(&alt).await;
        self.warm(&alt, &VOICES[..1]).await;
        let model = model().to_string_lossy().to_string();
        let raw_setups = [
            ("raw: 1 process, default threads", 1, "0"),
            ("raw: 2 processes, 1 intra-op thread each", 2, "1"),
            ("raw: 2 processes, default threads", 2, "0"),
        ];
        let mut raw_groups: Vec<Vec<RawEngine>> = raw_setups
            .iter()
            .enumerate()
            .map(|(g, (_, procs, threads))| {
                (0..*procs)
                    .map(|p| {
                        // Each raw process starts far from the others and from piperd's texts.
                        let offset = ((1 + g * 2 + p) * THROUGHPUT_TEXTS / 7).to_string();
                        RawEngine::spawn(&["throughput", &model, &file, threads, &offset])
                    })
                    .collect()
            })
            .collect();
        for engine in raw_groups.iter_mut().flatten() {
            let (ready, _) = engine.next_json(RAW_LIMIT);
            assert_eq!(ready["ready"], json!(true), "raw engine not ready: {ready}");
        }

        #[derive(Clone, Copy)]
        enum Config {
            Raw(usize),
            /// Server (0: defaults, 1: [`ALT_ENGINE_ENV`]), voices, concurrency.
            Piperd(usize, usize, usize),
        }
        let configs = [
            Config::Raw(0),
            Config::Piperd(0, 1, 1),
            Config::Piperd(0, 1, 4),
            Config::Raw(1),
            Config::Piperd(0, 1, 16),
            Config::Piperd(0, 3, 1),
            Config::Raw(2),
            Config::Piperd(0, 3, 4),
            Config::Piperd(0, 3, 16),
            Config::Piperd(1, 1, 16),
        ];
        // Per configuration: audio s, wall s, requests completed, rate per round.
        let mut totals = vec![(0.0, 0.0, 0usize, Vec::new()); configs.len()];
        let mut idle_waits = Vec::new();
        reset_hwm(self.server.pid);
        self.sampler.reset();
        for round in 0..THROUGHPUT_ROUNDS {
            // Each round in its own order (a rotation would keep every
            // configuration behind the same one in every round).
            let mut order: Vec<usize> = (0..configs.len()).collect();
            let mut rng = Rng::new(7_000 + round as u64);
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            for c in order {
                let (audio, wall, completed) = match configs[c] {
                    Config::Raw(g) => {
                        let (audio, wall) =
                            raw_window(&mut raw_groups[g], &mut self.raw_max_rss_mb);
                        (audio, wall, 0)
                    }
                    Config::Piperd(which, voices, conc) => {
                        let server = if which == 0 { &self.server } else { &alt };
                        let result = piperd_window(
                            server,
                            &self.client,
                            &self.throughput_texts,
                            &self.next_text,
                            voices,
                            conc,
                        )
                        .await;
                        idle_waits.push(wait_engines_idle(server.pid).await.0);
                        result
                    }
                };
                let t = &mut totals[c];
                t.0 += audio;
                t.1 += wall;
                t.2 += completed;
                t.3.push(audio / wall);
            }
        }
        let load_peak = hwm_kib(self.server.pid).max(self.sampler.max());
        let used = self.next_text.load(Ordering::Relaxed);
        drop(raw_groups);
        self.retire(alt).await;

        let rate = |c: usize| totals[c].0 / totals[c].1;
        let rounds = |c: usize| {
            totals[c]
                .3
                .iter()
                .map(|r| format!("{r:.1}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let mut best_raw = (String::new(), 0.0);
        let mut rows = Vec::new();
        for (c, config) in configs.iter().enumerate() {
            if let Config::Raw(g) = config {
                let label = raw_setups[*g].0;
                if rate(c) > best_raw.1 {
                    best_raw = (label.trim_start_matches("raw: ").to_string(), rate(c));
                }
                rows.push(row(
                    &format!("{label}: audio s per wall s (rounds: {})", rounds(c)),
                    String::new(),
                    format!("{:.2}", rate(c)),
                    String::new(),
                ));
            }
        }
        let same_setup_raw = rate(0);
        let mut best_piperd = (String::new(), 0.0);
        for (c, config) in configs.iter().enumerate() {
            if let Config::Piperd(which, voices, conc) = *config {
                if rate(c) > best_piperd.1 {
                    best_piperd = (
                        format!(
                            "{voices} voice{}, concurrency {conc}{}",
                            if voices == 1 { "" } else { "s" },
                            if which == 1 { ALT_LABEL } else { "" }
                        ),
                        rate(c),
                    );
                }
                rows.push(
                    row(
                        &format!(
                            "piperd{}: {voices} voice{}, concurrency {conc}: audio s per wall s \
                             ({} requests completed; rounds: {})",
                            if which == 1 { ALT_LABEL } else { "" },
                            if voices == 1 { "" } else { "s" },
                            totals[c].2,
                            rounds(c)
                        ),
                        format!("{:.2}", rate(c)),
                        format!("{:.2}", best_raw.1),
                        ratio(rate(c), best_raw.1),
                    )
                    .target("≥ 1.0× best raw", rate(c) >= best_raw.1),
                );
            }
        }
        rows.push(
            row(
                "best piperd vs best raw",
                format!("{:.2} ({})", best_piperd.1, best_piperd.0),
                format!("{:.2} ({})", best_raw.1, best_raw.0),
                ratio(best_piperd.1, best_raw.1),
            )
            .target("≥ 1.0×", best_piperd.1 >= best_raw.1),
        );
        rows.push(row(
            "piperd RSS under load (peak over its runs above, default server)",
            mib(load_peak),
            String::new(),
            String::new(),
        ));
        let notes = vec![
            format!(
                "{THROUGHPUT_ROUNDS} rounds; in each, in an order of its own, every configuration gets a {:.0} s window, piperd's and the raw \
                 engine's interleaved; streamed requests of distinct 1–3 sentence texts (mean {mean_chars:.0} characters), \
                 audio counted as its bytes arrive and cut at the window's end; the raw engine synthesizes the same kind \
                 of texts one after another and counts the sentences finished in its window",
                THROUGHPUT_WINDOW.as_secs_f64()
            ),
            format!(
                "piperd: its defaults (this benchmark sets no engine variable) unless marked; the marked row comes \
                 from a second piperd started with{ALT_LABEL} (every sentence alone on every core), running alongside with one \
                 voice warm; 3 voices: requests round-robin over {} \
                 (3 engine processes); {used} of {THROUGHPUT_TEXTS} texts used{}",
                VOICES.join(", "),
                if used > THROUGHPUT_TEXTS {
                    " (wrapped: some repeated)"
                } else {
                    ""
                }
            ),
            format!(
                "piperd with 1 voice (one engine process) vs raw 1 process, default threads: {}",
                configs
                    .iter()
                    .enumerate()
                    .filter_map(|(c, config)| match config {
                        Config::Piperd(0, 1, conc) => Some(format!(
                            "concurrency {conc} {}",
                            ratio(rate(c), same_setup_raw)
                        )),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "after each piperd window its engines finished the sentences of cancelled requests in {} on average",
                ms(idle_waits.iter().map(Duration::as_secs_f64).sum::<f64>()
                    / idle_waits.len().max(1) as f64)
            ),
        ];
        self.report.add("Throughput (3)", rows, notes);
    }

    /// Warms `voices` of a server.
    async fn warm(&self, server: &Server, voices: &[&str]) {
        for voice in voices {
            let response = self
                .client
                .post(server.url("/api/warmup"))
                .json(&json!({ "voice_model": voice }))
                .send()
                .await
                .expect("warmup sent");
            check(server, response).await;
        }
    }

    /// Stops a server other than `self.server`, keeping its incidents and CPU time.
    async fn retire(&mut self, server: Server) {
        self.other_server = None;
        let (incidents, warnings) = incidents_of(&self.client, &server).await;
        self.incidents.extend(incidents);
        self.server_warnings.extend(warnings);
        self.retired_ticks += engines(server.pid)
            .iter()
            .map(|(pid, _)| process_ticks(*pid))
            .sum::<u64>();
        drop(server);
    }

    /// CPU ticks of this benchmark: itself, the raw engines it reaped, the
    /// server, the engines the server reaped and its live engines.
    fn own_ticks(&self) -> u64 {
        let server = |pid: u32| {
            process_ticks(pid)
                + engines(pid)
                    .iter()
                    .map(|(pid, _)| process_ticks(*pid))
                    .sum::<u64>()
        };
        self.retired_ticks
            + process_ticks(std::process::id())
            + server(self.server.pid)
            + self.other_server.map(server).unwrap_or(0)
    }

    /// Notes engine exits of the current server that piperd did not ask for.
    async fn record_incidents(&mut self) {
        let (incidents, warnings) = incidents_of(&self.client, &self.server).await;
        self.incidents.extend(incidents);
        self.server_warnings.extend(warnings);
    }

    /// Replaces the server with a fresh one (the old one is killed) and warms `voices` of it.
    async fn restart_server(&mut self, env: &[(&str, &str)], voices: &[&str]) {
        self.record_incidents().await;
        self.retired_ticks += engines(self.server.pid)
            .iter()
            .map(|(pid, _)| process_ticks(*pid))
            .sum::<u64>();
        self.server = Server::start(&self.voices_dir, env);
        self.sampler = RssSampler::start(self.server.pid);
        println!(
            "piperd {} (pid {}) with {env:?}",
            self.server.base, self.server.pid
        );
        self.wait_healthy().await;
        self.warm(&self.server, voices).await;
    }

    /// Section 5: piperd's own memory during one non-streamed 100,000-character
    /// request, on a fresh server so that nothing earlier counts.
    async fn long_request_memory(&mut self) {
        self.restart_server(&[], &VOICES[..1]).await;
        let text = long_text(&opener(70), 700, 100_000);
        let chars = text.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = rss_kib(self.server.pid);
        let hwm_reset = reset_hwm(self.server.pid);
        self.sampler.reset();
        let started = Instant::now();
        let request = {
            let client = self.client.clone();
            let url = self.server.url("/api/tts");
            let body = tts_body(VOICES[0], &text, false);
            tokio::spawn(async move {
                let response = client.post(url).json(&body).send().await;
                match response {
                    Ok(r) => r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            })
        };
        let mut trajectory = Vec::new();
        let step = MEMORY_WINDOW / 8;
        while started.elapsed() < MEMORY_WINDOW && !request.is_finished() {
            tokio::time::sleep(step.min(MEMORY_WINDOW.saturating_sub(started.elapsed()))).await;
            trajectory.push((started.elapsed().as_secs_f64(), rss_kib(self.server.pid)));
        }
        let watched = started.elapsed().as_secs_f64();
        let during = if hwm_reset {
            hwm_kib(self.server.pid).max(self.sampler.max())
        } else {
            self.sampler.max()
        };
        let finished = request.is_finished();
        request.abort();
        let _ = request.await;
        let engine = engines(self.server.pid).into_iter().next();
        let engine_rss = engine
            .as_ref()
            .map(|(pid, _)| (rss_kib(*pid), hwm_kib(*pid)));
        let (cancel_wait, went_idle) = wait_engines_idle(self.server.pid).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = rss_kib(self.server.pid);
        let grow = during.saturating_sub(idle);
        let expected_s = chars as f64 / self.raw_chars_per_s.max(1.0);
        let window_audio = watched * self.raw_audio_per_s;
        let window_pcm_kib = (window_audio * 22050.0 * 2.0 / 1024.0) as u64;
        let empty = String::new;
        let mut rows = vec![
            row("piperd RSS idle: first server, started, no engine", mib(self.piperd_idle_kib), empty(), empty()),
            row("piperd RSS idle: first server, 3 warm engines", mib(self.piperd_idle_warm_kib), empty(), empty()),
            row(
                "piperd RSS idle: first server after all the traffic above (audio cache filled)",
                mib(self.piperd_after_traffic_kib),
                empty(),
                empty(),
            ),
            row("piperd RSS idle: fresh server, 1 warm engine", mib(idle), empty(), empty()),
            row(
                &format!("piperd RSS peak during one non-streamed {chars}-character request (fresh server)"),
                mib(during),
                empty(),
                empty(),
            )
            .target(
                &format!("≤ idle + 64 MiB ({})", mib(idle + 64 * 1024)),
                during <= idle + 64 * 1024,
            ),
            row("  growth over idle", mib(grow), empty(), empty()),
            row("piperd RSS after the request was cancelled", mib(after), empty(), empty()),
        ];
        if let (Some((pid, voice)), Some((rss, hwm))) = (&engine, engine_rss) {
            rows.push(
                row(
                    &format!("its engine `{voice}` (pid {pid}) after {watched:.0} s of the long text: RSS / peak"),
                    format!("{} / {}", mib(rss), mib(hwm)),
                    format!("{:.1} MiB (peak)", self.raw_max_rss_mb),
                    ratio(hwm as f64, self.raw_max_rss_mb * 1024.0),
                )
                .target("peak ≤ 400 MiB", hwm <= 400 * 1024),
            );
        }
        let notes = vec![
            format!(
                "the request was {} after {watched:.0} s: at this machine's speed (raw engine, short sentences) the whole text \
                 needs about {expected_s:.0} s of synthesis, more than this benchmark's time budget, so the peak covers its first \
                 {watched:.0} s: about {window_audio:.0} s of audio, {} of PCM (the spool threshold is 8 MiB)",
                if finished { "answered" } else { "cancelled" },
                mib(window_pcm_kib),
            ),
            format!(
                "piperd RSS during the request: {}",
                trajectory
                    .iter()
                    .map(|(t, kib)| format!("{t:.0} s {}", mib(*kib)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "peak from {}; the engine finished its in-flight sentences {} after the client left{}",
                if hwm_reset {
                    "VmHWM (reset through /proc/<pid>/clear_refs before the request) and 10 ms polling of VmRSS"
                } else {
                    "10 ms polling of VmRSS"
                },
                ms(cancel_wait.as_secs_f64()),
                if went_idle {
                    String::new()
                } else {
                    format!(" — still busy after {IDLE_LIMIT:?}: the cancelled request kept being synthesized")
                }
            ),
        ];
        self.report.add("piperd memory (5)", rows, notes);
    }

    /// Section 7: Engine processes' memory after the long texts.
    async fn engine_memory(&mut self) {
        self.piperd_after_traffic_kib = rss_kib(self.server.pid);
        let now = engines(self.server.pid);
        let mut rows = Vec::new();
        for (pid, voice) in &now {
            let (rss, hwm) = (rss_kib(*pid), hwm_kib(*pid));
            let restarted = self
                .engine_pids_at_start
                .get(voice)
                .is_some_and(|p| p != pid);
            rows.push(
                row(
                    &format!(
                        "engine `{voice}` (pid {pid}{}): RSS now / peak",
                        if restarted {
                            ", replaced during the run"
                        } else {
                            ""
                        }
                    ),
                    format!("{} / {}", mib(rss), mib(hwm)),
                    format!("{:.1} MiB (peak)", self.raw_max_rss_mb),
                    ratio(hwm as f64, self.raw_max_rss_mb * 1024.0),
                )
                .target("peak ≤ 400 MiB", hwm <= 400 * 1024),
            );
        }
        let exits = metric_lines(&self.client, &self.server, "piperd_process_exits_total").await;
        let notes = vec![
            "after the 1,000–100,000-character texts, the fairness stream and the throughput runs; \
             raw column: the highest peak RSS of the raw engine processes in the throughput runs (same texts); \
             the target is frame-streamed synthesis's engine bound (400 MiB on any text and load), \
             below PIPER_ENGINE_MAX_RSS_MB (600 MiB), past which an engine is recycled"
                .to_string(),
            format!(
                "engine pids after warm-up: {:?}; now: {:?}; `/metrics` engine exits: {}",
                self.engine_pids_at_start,
                now.iter().map(|(p, v)| (v.clone(), *p)).collect::<BTreeMap<_, _>>(),
                if exits.is_empty() { "none".to_string() } else { exits.join("; ") }
            ),
        ];
        self.report.add("Engine memory (7)", rows, notes);
    }

    fn write_markdown(&self, run_notes: &[String]) {
        let help = command_output(env!("CARGO_BIN_EXE_piperd"), &["--help"]).unwrap_or_default();
        let engine_defaults: Vec<String> = help
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("PIPER_ENGINE_") || l.starts_with("PIPER_MAX_PROCESSES"))
            .map(|l| format!("`{}`", l.split_whitespace().collect::<Vec<_>>().join(" ")))
            .collect();
        let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
        let revision = command_output("git", &["describe", "--always", "--dirty"])
            .unwrap_or_else(|| "unknown".into());
        let versions = command_output(
            &python().to_string_lossy(),
            &[
                "-c",
                "from importlib.metadata import version as v; print('piper-tts', v('piper-tts'), '/ onnxruntime', v('onnxruntime'))",
            ],
        )
        .unwrap_or_default();
        let mut out = String::from("# Benchmarks\n\n");
        out.push_str(
            "Written by `make bench` (`cargo bench --bench piperd`, source in `benches/`). It starts the real \
             `piperd` binary on a loopback port with the bundled voice and runs the raw engine \
             (`benches/raw_engine.py`: Piper's Python API in `.venv`, no server) on the same texts in the same \
             run. Ratios are piperd / raw engine. Every number is from the run below; rerun `make bench` to \
             replace them.\n\n",
        );
        let _ = writeln!(out, "- date: {date}");
        let _ = writeln!(out, "- command: `make bench`");
        let _ = writeln!(out, "- revision: {revision}");
        let _ = writeln!(out, "- engine: {versions}, voice {VOICE_FILE} (22,050 Hz)");
        for line in machine() {
            let _ = writeln!(out, "- {line}");
        }
        if !engine_defaults.is_empty() {
            let _ = writeln!(
                out,
                "- piperd's engine settings, as `piperd --help` documents them: {}",
                engine_defaults.join("; ")
            );
        }
        for note in run_notes {
            let _ = writeln!(out, "- {note}");
        }
        let _ = writeln!(
            out,
            "- piperd settings: defaults, except PIPER_MAX_PROCESSES=3 and PIPER_PROCESS_IDLE_TIMEOUT=3600 \
             (engines stay warm between sections); voices `{}` are hard links of the one model",
            VOICES.join("`, `")
        );
        out.push_str("\n## Targets\n\n| target | met? |\n| --- | --- |\n");
        for section in &self.report.sections {
            for r in section.rows.iter().filter(|r| r.met.is_some()) {
                let _ = writeln!(
                    out,
                    "| {}: {} — {} |{}|",
                    section.title,
                    cell(r.metric.trim()),
                    cell(&r.target),
                    if r.met == Some(true) {
                        " yes "
                    } else {
                        " **no** "
                    }
                );
            }
        }
        out.push_str("\n## Results\n");
        for section in &self.report.sections {
            out.push_str(&render_section(section));
        }
        let path = root().join("BENCHMARKS.md");
        std::fs::write(&path, out).expect("write BENCHMARKS.md");
        println!("wrote {}", path.display());
    }
}

/// Streams one request until it ends or `deadline`, adding the audio bytes
/// received to `bytes_out`; whether it ended before the deadline.
async fn stream_until_url(
    base: &str,
    client: &reqwest::Client,
    voice: &str,
    text: &str,
    deadline: tokio::time::Instant,
    bytes_out: &AtomicU64,
) -> bool {
    let send = client
        .post(format!("{base}/api/tts"))
        .json(&tts_body(voice, text, true))
        .send();
    let response = match tokio::time::timeout_at(deadline, send).await {
        Err(_) => return false,
        Ok(response) => response.expect("request sent"),
    };
    assert!(
        response.status().is_success(),
        "piperd answered {} during the throughput run",
        response.status()
    );
    let mut body = response.bytes_stream();
    let mut header_left = WAV_HEADER;
    loop {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => return false,
            Ok(None) => return true,
            Ok(Some(chunk)) => {
                let len = chunk.expect("body read").len();
                let skip = header_left.min(len);
                header_left -= skip;
                bytes_out.fetch_add((len - skip) as u64, Ordering::Relaxed);
            }
        }
    }
}
