//! The Piper engine as a child process.
//!
//! The stock `piper` command line cannot serve a server: its raw output has
//! no utterance boundaries, it has no ready signal, and some inputs end it.
//! So each voice runs a small program that ships with piperd
//! (`engine/piper_worker.py`) and drives Piper's Python API behind the framed
//! protocol in [`protocol`].

pub mod process;
pub mod protocol;
pub mod reaper;

pub use process::{EngineEvent, EngineProcess, EngineSpec, StderrTail};
pub use protocol::{EngineWord, Frame, ProtocolError, ReadyInfo, SynthOptions};

use std::process::Stdio;
use std::time::Duration;

/// Checks that the configured interpreter can run the engine at all, and
/// returns the engine's version or the reason it cannot run.
pub async fn probe(spec: &EngineSpec) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(&spec.python);
    match &spec.program {
        Some(program) => cmd.arg(program),
        None => cmd.arg("-c").arg(process::builtin_program()),
    };
    cmd.arg("--check")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Registered like an engine, so that a server stopping during the check
    // does not exit before the checking process is gone.
    let child = match spec.reaper.spawn(&mut cmd) {
        Ok(child) => child,
        Err(err) => return Err(format!("cannot run {}: {err}", spec.python.display())),
    };
    let output = match tokio::time::timeout(Duration::from_secs(60), child.output()).await {
        Err(_) => return Err("the engine check did not finish within 60 s".into()),
        Ok(Err(err)) => return Err(format!("cannot run {}: {err}", spec.python.display())),
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        Err(format!(
            "{} cannot run the engine: {last}",
            spec.python.display()
        ))
    }
}
