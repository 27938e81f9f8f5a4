//! Test harness: runs the real `piperd` binary on a loopback port.
//!
//! Every test starts its own server with its own voices folder, so tests do
//! not share processes, and the engines of a test can be found (and counted
//! as leaked) by that folder's path in their command lines.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const VOICE: &str = "en_US-joe-medium";

/// The project's root folder.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project's Python, set up by `make setup`.
pub fn python() -> PathBuf {
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup` first",
        python.display()
    );
    python
}

/// A fresh voices folder holding the real voice under each of `names`
/// (the model hard-linked, so no copies of it are made; the small config
/// copied, so a test may edit it).
pub fn voices(names: &[&str]) -> tempfile::TempDir {
    let source = root().join("voices");
    assert!(
        source.join(format!("{VOICE}.onnx")).exists(),
        "voices/{VOICE}.onnx is missing: run `make setup` first"
    );
    let dir = tempfile::Builder::new()
        .prefix("piperd-test-voices")
        .tempdir()
        .unwrap();
    for name in names {
        for ext in ["onnx", "onnx.json"] {
            let from = source.join(format!("{VOICE}.{ext}"));
            let to = dir.path().join(format!("{name}.{ext}"));
            if ext == "onnx.json" || std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).unwrap();
            }
        }
    }
    dir
}

/// Lines of a server's log that a failing test prints.
const SHOWN_LOG_LINES: usize = 60;

/// A running server.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub voices_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server on the given voices folder with extra variables.
    pub fn start(voices_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_piperd"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PIPER_HOST", "127.0.0.1")
            .env("PIPER_PORT", "0")
            // Wyoming's default port is fixed (10200): tests that run side by
            // side would fight over it, so only tests that ask get it.
            .env("PIPER_WYOMING_PORT", "0")
            .env("PIPER_VOICES_DIR", voices_dir)
            .env("PIPER_PYTHON", python())
            .env("PIPER_LOG", "info,piperd=debug")
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("piperd starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let addr: String = line[at + "listening on http://".len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("piperd did not start: {:?}", log.lock().unwrap()));
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            voices_dir: voices_dir.to_path_buf(),
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.pid() as i32, signal);
        }
    }

    /// Waits for the server to exit and returns its exit code. Polls often,
    /// so that a check made right after it sees the moment of the exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Engine processes started for this server's voices folder.
    pub fn engines(&self) -> Vec<u32> {
        engines_for(&self.voices_dir)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing test shows what the server said before it failed.
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            let tail = &log[log.len().saturating_sub(SHOWN_LOG_LINES)..];
            eprintln!("--- the server's last {} log lines ---", tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Live (non-zombie) processes whose command line mentions `dir`.
pub fn engines_for(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains(&needle) {
            continue;
        }
        let zombie = stat_fields(pid).first().is_some_and(|s| s == "Z");
        if !zombie && pid != std::process::id() {
            pids.push(pid);
        }
    }
    pids
}

/// The fields of `/proc/PID/stat` after the command name (state first),
/// empty if the process is gone.
pub fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// POSTs JSON and returns status, headers and body.
pub async fn post(
    server: &Server,
    path: &str,
    body: serde_json::Value,
) -> (u16, reqwest::header::HeaderMap, bytes::Bytes) {
    let response = send_json(server, path, &body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap())
}

pub async fn get_json(server: &Server, path: &str) -> (u16, serde_json::Value) {
    let response = client().get(server.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A parsed WAV answer.
pub struct Wav {
    pub spec: hound::WavSpec,
    pub samples: Vec<i16>,
}

impl Wav {
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / self.spec.sample_rate as f64
    }
}

/// Parses a complete WAV and checks that its header sizes match its bytes.
pub fn parse_wav(bytes: &[u8]) -> Wav {
    assert!(
        bytes.len() >= 44,
        "too short for a WAV: {} bytes",
        bytes.len()
    );
    assert_eq!(&bytes[0..4], b"RIFF");
    let riff = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    assert_eq!(
        riff,
        bytes.len() - 8,
        "RIFF size does not match the bytes sent"
    );
    let data = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize;
    assert_eq!(&bytes[36..40], b"data");
    assert_eq!(
        data,
        bytes.len() - 44,
        "data size does not match the bytes sent"
    );
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let spec = reader.spec();
    let samples = reader.into_samples::<i16>().map(|s| s.unwrap()).collect();
    Wav { spec, samples }
}

/// Parses a streamed WAV (sizes 0xFFFFFFFF): format from the header, samples after it.
pub fn parse_streamed_wav(bytes: &[u8]) -> Wav {
    assert!(bytes.len() >= 44);
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[4..8], &[0xff; 4]);
    assert_eq!(&bytes[40..44], &[0xff; 4]);
    let sample_rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    let channels = u16::from_le_bytes(bytes[22..24].try_into().unwrap());
    let bits = u16::from_le_bytes(bytes[34..36].try_into().unwrap());
    assert_eq!((bytes.len() - 44) % 2, 0);
    let samples = bytes[44..]
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect();
    Wav {
        spec: hound::WavSpec {
            channels,
            sample_rate,
            bits_per_sample: bits,
            sample_format: hound::SampleFormat::Int,
        },
        samples,
    }
}

/// Root-mean-square level of the samples (silence is near 0).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| (s as f64) * (s as f64)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// Varied English prose of about `chars` characters, with some long
/// sentences (not one sentence repeated).
pub fn prose(chars: usize) -> String {
    const SENTENCES: &[&str] = &[
        "The quick brown fox jumps over the lazy dog near the quiet river bank.",
        "Nobody expected the morning train to arrive so early, least of all the station master, who was still eating breakfast when the whistle blew and the passengers began to climb down onto the wet platform with their umbrellas and bags.",
        "Why would anyone leave the door open on such a cold night?",
        "She counted the boxes twice: forty-two in the hall, eleven in the kitchen, and three more hidden under the stairs.",
        "Rain again!",
        "In the spring of that year the village council decided, after a long and sometimes bitter debate that lasted well past midnight, to rebuild the old stone bridge exactly as it had been, using the same quarry and the same methods.",
        "Please remember to water the plants on Tuesday.",
        "The library closes at six, but the reading room stays open until eight for members.",
    ];
    let mut out = String::new();
    let mut i = 0;
    while out.chars().count() < chars {
        out.push_str(SENTENCES[i % SENTENCES.len()]);
        i += 1;
        out.push_str(if i % 5 == 0 { "\n\n" } else { " " });
    }
    out.chars().take(chars).collect()
}

/// The `code` of a JSON error body, checking that `error` is a sentence.
pub fn error_code(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not a JSON error: {}", String::from_utf8_lossy(body)));
    assert!(
        value["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{value}"
    );
    value["code"].as_str().unwrap_or_default().to_string()
}

/// The server's `/metrics` text.
pub async fn metrics_text(server: &Server) -> String {
    client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the first sample whose line starts with `prefix` (0 if none).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// POSTs JSON, checks for 200 and returns the body as a stream of chunks.
pub async fn post_stream(
    server: &Server,
    path: &str,
    body: serde_json::Value,
) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin {
    let response = send_json(server, path, &body).await;
    assert_eq!(response.status(), 200);
    response.bytes_stream()
}

/// Asserts that a request is still being synthesized (in its worker's queue):
/// called right after the first audio, it proves audio streams before the end.
pub async fn assert_still_synthesizing(server: &Server) {
    let text = metrics_text(server).await;
    let depth = text
        .lines()
        .find(|l| l.starts_with("piperd_queue_depth{"))
        .unwrap_or_else(|| panic!("no queue depth in {text}"));
    assert!(
        depth.ends_with(" 1"),
        "synthesis already over at first audio: {depth}"
    );
}

async fn send_json(server: &Server, path: &str, body: &serde_json::Value) -> reqwest::Response {
    client()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}
