//! One engine child process: spawning, feeding, listening and stopping it.
//!
//! The process is owned by exactly one voice worker. Reading its stdout and
//! stderr happens on small tasks that turn bytes into [`EngineEvent`]s and
//! hand them to the worker, so the worker itself never awaits the process.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::protocol::{read_frame, Frame, ProtocolError};
use super::reaper::{Reaper, TrackedChild};

/// The engine's modules, shipped inside the binary: (module name, source).
/// The last is the program itself; the others are what it imports.
const ENGINE_SOURCES: [(&str, &str); 3] = [
    ("split_graph", include_str!("../../engine/split_graph.py")),
    ("stream_synth", include_str!("../../engine/stream_synth.py")),
    ("__main__", include_str!("../../engine/piper_worker.py")),
];

/// The engine program shipped inside the binary, run with `python -c`, so the
/// server needs no file of its own next to it and leaves none behind: a
/// prelude puts each module of [`ENGINE_SOURCES`] in `sys.modules` from its
/// source (kept as its `__source__`: split_graph runs itself in a child
/// process from it), then the program runs as `__main__`.
pub fn builtin_program() -> &'static str {
    static PROGRAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| {
        let mut program = String::from(
            "import sys, types\n\
             def _piperd_module(name, source):\n\
             \x20   module = types.ModuleType(name)\n\
             \x20   module.__file__ = '<piperd engine: ' + name + '.py>'\n\
             \x20   module.__source__ = source\n\
             \x20   sys.modules[name] = module\n\
             \x20   exec(compile(source, module.__file__, 'exec'), module.__dict__)\n",
        );
        let (main_source, modules) = ENGINE_SOURCES.split_last().expect("sources");
        for (name, source) in modules {
            program.push_str(&format!(
                "_piperd_module('{name}', {})\n",
                python_str(source)
            ));
        }
        program.push_str(&format!(
            "del _piperd_module\nexec(compile({}, '<piperd engine>', 'exec'))\n",
            python_str(main_source.1)
        ));
        program
    })
}

/// `text` as a Python string literal.
fn python_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8 + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\x00"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// How many lines of the engine's stderr are kept for error reports.
const STDERR_LINES: usize = 20;

/// How an engine is started: the same for every voice.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub python: PathBuf,
    /// A program file to run instead of [`builtin_program`].
    pub program: Option<PathBuf>,
    /// Sentences one engine may be given at once.
    pub parallel: usize,
    /// onnxruntime threads asked for by sentences side by side, so that the
    /// engine makes that session ahead of them.
    pub shared_threads: usize,
    /// `PIPER_ENGINE_CACHE_DIR`: where the engine keeps split graphs.
    pub cache_dir: PathBuf,
    /// Where every engine is registered until reaped, so that the server
    /// exits only after its engines are gone.
    pub reaper: Reaper,
}

/// What the stdout reader reports to the process's owner.
#[derive(Debug)]
pub enum EngineEvent {
    Frame(Frame),
    /// Stdout ended: cleanly (`None`) or because it broke the protocol.
    Closed(Option<ProtocolError>),
}

/// The last lines the engine wrote to stderr, shared with its reader task.
#[derive(Debug, Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<String>>>);

impl StderrTail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().expect("stderr tail lock");
        if lines.len() == STDERR_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The most recent non-empty line (Python puts the exception last).
    pub fn last_line(&self) -> Option<String> {
        let lines = self.0.lock().expect("stderr tail lock");
        lines.iter().rev().find(|l| !l.trim().is_empty()).cloned()
    }
}

/// A running engine process. Dropped without [`stop`](Self::stop), it is
/// killed and reaped in the background (see [`super::reaper`]).
#[derive(Debug)]
pub struct EngineProcess {
    child: TrackedChild,
    pid: u32,
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    pub stderr: StderrTail,
}

impl EngineProcess {
    /// Starts the engine for one voice. `on_event` receives every frame and
    /// finally `Closed`; it runs on the reader task and must not block.
    pub fn spawn(
        spec: &EngineSpec,
        model: &Path,
        config: &Path,
        on_event: impl Fn(EngineEvent) + Send + 'static,
    ) -> std::io::Result<EngineProcess> {
        let mut cmd = Command::new(&spec.python);
        cmd.arg("-u");
        match &spec.program {
            Some(program) => cmd.arg(program),
            None => cmd.arg("-c").arg(builtin_program()),
        };
        cmd.arg(model)
            .arg(config)
            .env("PIPER_ENGINE_PARALLEL", spec.parallel.to_string())
            .env("PIPER_ENGINE_THREADS", spec.shared_threads.to_string())
            .env("PIPER_ENGINE_CACHE_DIR", &spec.cache_dir)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C meant for the server must not
            // kill the engines while the server drains its requests.
            .process_group(0)
            .kill_on_drop(true);
        tie_to_parent(&mut cmd);

        let mut child = spec.reaper.spawn(&mut cmd)?;
        let pid = child.id().unwrap_or_default();
        let stdout = child.stdout().expect("stdout is piped");
        let stderr_pipe = child.stderr().expect("stderr is piped");
        let mut stdin_pipe = child.stdin().expect("stdin is piped");

        let stderr = StderrTail::default();
        let tail = stderr.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "piperd::engine", pid, "{line}");
                tail.push(line);
            }
        });

        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(256 << 10, stdout);
            loop {
                match read_frame(&mut reader).await {
                    Ok(Some(frame)) => on_event(EngineEvent::Frame(frame)),
                    Ok(None) => return on_event(EngineEvent::Closed(None)),
                    Err(err) => return on_event(EngineEvent::Closed(Some(err))),
                }
            }
        });

        // Writes go through a task so that a full pipe never blocks the worker.
        let (stdin_tx, mut stdin_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(line) = stdin_rx.recv().await {
                if stdin_pipe.write_all(&line).await.is_err() {
                    break;
                }
            }
            // Dropping the pipe closes the engine's stdin: it exits on EOF.
        });

        Ok(EngineProcess {
            child,
            pid,
            stdin: Some(stdin_tx),
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Queues one request line; false when the process no longer reads.
    pub fn send(&self, line: Vec<u8>) -> bool {
        self.stdin
            .as_ref()
            .map(|tx| tx.send(line).is_ok())
            .unwrap_or(false)
    }

    /// Resident memory of the process, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.pid)
    }

    /// Kills the process at once (a hung or broken engine gets no grace);
    /// it is reaped in the background, and the server waits for that.
    pub fn kill(mut self) {
        self.child.start_kill();
        // Dropping the tracked child hands it to its reaper task.
    }

    /// Stops the process politely: stdin closes and SIGTERM is sent; after
    /// `grace` it is killed. Returns once the process is gone. Run on a
    /// detached task, it is still awaited by the server's exit: the child
    /// stays registered until reaped, and a cancelled stop kills it.
    pub async fn stop(mut self, grace: Duration) {
        self.stdin = None;
        self.child.signal(libc::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await;
        }
    }
}

/// Resident set size of a process, in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

/// Makes the kernel kill the child when the server dies, even by SIGKILL.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits.
/// Children are spawned from runtime worker threads, which live as long as
/// the server, so nothing in the server may call `block_in_place` (it turns
/// the current worker into a blocking-pool thread, which exits when idle and
/// would take the engines it spawned with it); `main` also keeps blocking
/// threads alive for good. The engine exits when its stdin closes, which
/// covers the rest.
fn tie_to_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The server may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
