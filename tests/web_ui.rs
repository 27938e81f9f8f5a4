//! The demo page in a real browser: headless Chromium loads `/`, the page
//! speaks a sentence through the OpenAI-compatible route, and the browser's
//! audio element ends up holding the whole stream.
//!
//! Chromium (the Debian package `chromium`) is installed with apt-get when
//! missing. The test drives it over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: NUL-terminated JSON on file descriptors 3
//! and 4), so it needs neither Node nor a websocket client.

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long the page may take, from loading to the end of the stream.
const PAGE_TIMEOUT: Duration = Duration::from_secs(90);

/// An executable called `name` on the PATH (or in /usr/bin).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The Chromium binary, installed from the Debian package when missing.
fn chromium() -> PathBuf {
    if let Some(found) = which("chromium") {
        return found;
    }
    eprintln!("chromium is missing: installing the Debian package `chromium`");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .map(|status| status.success())
            .unwrap_or(false)
    };
    let install = ["install", "-y", "chromium"];
    if !apt(&install) {
        // A fresh machine may not have package lists yet.
        let _ = apt(&["update"]);
        apt(&install);
    }
    which("chromium").unwrap_or_else(|| {
        panic!(
            "chromium is missing and `apt-get install -y chromium` did not install it \
             (this needs root and a Debian or Ubuntu package source): install it by hand"
        )
    })
}

/// A pipe whose two ends are closed on exec.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) fills `fds` with two new descriptors that we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Headless Chromium, spoken to over the DevTools protocol on a pipe.
struct Browser {
    child: Child,
    to_browser: File,
    from_browser: Receiver<Value>,
    next_id: u64,
    log: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Browser {
        let binary = chromium();
        let profile = tempfile::Builder::new()
            .prefix("piperd-test-chromium")
            .tempdir()
            .unwrap();
        let log = profile.path().join("stderr.log");
        // The browser reads commands on fd 3 and writes answers on fd 4.
        let (commands_read, commands_write) = pipe();
        let (answers_read, answers_write) = pipe();
        let (child_in, child_out) = (commands_read.as_raw_fd(), answers_write.as_raw_fd());
        let mut cmd = Command::new(&binary);
        cmd.args([
            "--headless",
            "--no-sandbox", // tests run as root in CI
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        // Its own process group, so that the renderers die with it.
        .process_group(0);
        // SAFETY: between fork and exec the closure only calls fcntl(2) and
        // dup2(2), which are async-signal-safe. It first moves both ends out
        // of the way (fd >= 10) so that placing one on 3 or 4 cannot clobber
        // the other; dup2 clears close-on-exec on the copies it makes.
        unsafe {
            cmd.pre_exec(move || {
                let high_in = libc::fcntl(child_in, libc::F_DUPFD_CLOEXEC, 10);
                let high_out = libc::fcntl(child_out, libc::F_DUPFD_CLOEXEC, 10);
                if high_in < 0
                    || high_out < 0
                    || libc::dup2(high_in, 3) < 0
                    || libc::dup2(high_out, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", binary.display()));
        drop((commands_read, answers_write));

        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(File::from(answers_read));
            let mut message = Vec::new();
            loop {
                message.clear();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                let Ok(value) = serde_json::from_slice::<Value>(&message) else {
                    continue;
                };
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Browser {
            child,
            to_browser: File::from(commands_write),
            from_browser: rx,
            next_id: 1,
            log,
            profile,
        }
    }

    /// The browser's own profile folder (in its command line).
    fn profile(&self) -> &Path {
        self.profile.path()
    }

    /// The end of what the browser logged, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|line| !line.contains("dbus")).collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Sends one command (to a page when `session` is set) and waits for
    /// its answer; events in between are skipped.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        if let Err(e) = self.to_browser.write_all(&bytes) {
            panic!("cannot send {method} to chromium: {e}\n{}", self.log_tail());
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_browser.recv_timeout(left) {
                Ok(answer) if answer["id"] == json!(id) => {
                    if let Some(error) = answer.get("error") {
                        panic!("{method} failed: {error}");
                    }
                    return answer["result"].clone();
                }
                Ok(_event) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("chromium did not answer {method}\n{}", self.log_tail())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("chromium closed its pipe\n{}", self.log_tail())
                }
            }
        }
    }

    /// Opens `url` in a new tab and returns the session that drives it.
    fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({"url": url}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        attached["sessionId"].as_str().unwrap().to_string()
    }

    /// Evaluates `expression` in the page and returns its value.
    fn evaluate(&mut self, session: &str, expression: &str) -> Value {
        let result = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let mut close = serde_json::to_vec(&json!({"id": 0, "method": "Browser.close"})).unwrap();
        close.push(0);
        let _ = self.to_browser.write_all(&close);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left of its process group (renderers, zygote).
        // SAFETY: kill(2) on the process group of our own child.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Live processes started with `profile` in their command line.
fn chromium_processes(profile: &Path) -> Vec<u32> {
    engines_for(profile)
}

/// Percent-encodes `text` for a URL's query.
fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What the page shows and what its audio element holds, as the browser sees it.
const PAGE_STATE: &str = r#"(() => {
  const player = document.getElementById("player");
  if (!player || document.readyState === "loading") return { data: {}, loading: true };
  const ranges = player.buffered;
  return {
    data: { ...document.body.dataset },
    status: document.getElementById("status").textContent,
    voices: document.getElementById("voice").options.length,
    duration: Number.isFinite(player.duration) ? player.duration : null,
    buffered: ranges.length ? ranges.end(ranges.length - 1) - ranges.start(0) : 0,
    mediaError: player.error ? player.error.code : null,
  };
})()"#;

#[test]
fn the_web_page_speaks_a_sentence_in_headless_chromium() {
    let dir = voices(&[VOICE]);
    let server = Server::start(dir.path(), &[]);
    let text = "Hello from a headless browser. This sentence should arrive as audio.";
    let mut browser = Browser::launch();
    let session = browser.open(&server.url(&format!("/?autospeak=1&text={}", query_escape(text))));

    let started = Instant::now();
    let state = loop {
        let state = browser.evaluate(&session, PAGE_STATE);
        if state["data"]["done"] == "1" || state["data"]["error"].is_string() {
            break state;
        }
        assert!(
            started.elapsed() < PAGE_TIMEOUT,
            "the page did not finish speaking in {PAGE_TIMEOUT:?}: {state}\nserver log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    eprintln!("page state after {elapsed:?}: {state}");

    let data = &state["data"];
    assert!(
        data["error"].is_null(),
        "the page shows an error: {state}\nserver log:\n{}",
        server.log()
    );
    assert_eq!(data["done"], "1", "{state}");
    assert_eq!(
        state["mediaError"],
        Value::Null,
        "the audio element failed: {state}"
    );
    let bytes: u64 = data["bytes"].as_str().unwrap_or("0").parse().unwrap();
    assert!(bytes > 5_000, "only {bytes} bytes of MP3 arrived: {state}");
    let first_audio_ms: f64 = data["firstAudioMs"]
        .as_str()
        .unwrap_or("-1")
        .parse()
        .unwrap();
    assert!(first_audio_ms >= 0.0, "no first-audio time: {state}");
    // The duration of the Media Source after endOfStream(), as recorded by
    // the page and as the audio element reports it now.
    let recorded: f64 = data["duration"].as_str().unwrap_or("NaN").parse().unwrap();
    let duration = state["duration"].as_f64().unwrap_or(f64::NAN);
    assert!(
        recorded > 1.0 && duration > 1.0,
        "the audio element holds too little: {state}"
    );
    assert!(
        state["buffered"].as_f64().unwrap_or(0.0) > 1.0,
        "too little audio buffered: {state}"
    );

    // The browser decoded the whole sentence: its duration matches the
    // server's own rendering (from the audio cache, the same samples),
    // give or take MP3 framing.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, _, wav) = runtime.block_on(post(&server, "/api/tts", json!({"text": text})));
    assert_eq!(status, 200);
    let reference = parse_wav(&wav).seconds();
    eprintln!("browser: {duration} s of audio; server: {reference} s");
    assert!(
        (duration - reference).abs() < 0.15,
        "the browser holds {duration} s of audio, the server made {reference} s"
    );

    // Closing the browser leaves none of its processes behind.
    let profile = browser.profile().to_path_buf();
    drop(browser);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = chromium_processes(&profile);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = chromium_processes(&profile);
    }
    assert!(left.is_empty(), "chromium processes left: {left:?}");
}
