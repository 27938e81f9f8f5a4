//! Every child process a server started, until it has been reaped.
//!
//! A server that returns from `main` while an engine is still running (or
//! dead but not yet waited for) leaves the kernel to finish the job: the
//! parent-death signal kills the engine a moment *after* the server is gone,
//! so a supervisor (systemd, Kubernetes, a test) that sees the server exit
//! may still find its engine alive. Stops happen in many places (the
//! worker's shutdown, idle stops, recycling, a hung engine killed, a worker
//! that panicked and dropped its state), several of them on detached tasks
//! that the end of the runtime would simply cancel. So instead of making
//! every one of those places awaitable, each child is registered here when
//! it is spawned and only leaves the register once `wait` has returned for
//! it; [`Reaper::reap_all`] is what the server awaits before it exits.
//!
//! A child dropped without being waited for (its owner dropped it, or the
//! task stopping it was cancelled) is killed and handed to a small task that
//! waits for it, so no path can lose one.

use std::collections::HashMap;
use std::process::{ExitStatus, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// The register of one server's live children (pid by entry number).
#[derive(Clone, Debug)]
pub struct Reaper(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    live: watch::Sender<HashMap<u64, u32>>,
    next: AtomicU64,
}

impl Default for Reaper {
    fn default() -> Self {
        Reaper(Arc::new(Inner {
            live: watch::Sender::new(HashMap::new()),
            next: AtomicU64::new(0),
        }))
    }
}

/// Children still there after the last resort of [`Reaper::reap_all`].
#[derive(Debug, thiserror::Error)]
#[error("{} child process(es) still running after SIGKILL: pids {pids:?}", pids.len())]
pub struct ReapError {
    pub pids: Vec<u32>,
}

impl Reaper {
    /// Spawns `cmd` and registers the child until it is reaped.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<TrackedChild> {
        let child = cmd.spawn()?;
        let pid = child.id().unwrap_or_default();
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        self.0.live.send_modify(|live| {
            live.insert(id, pid);
        });
        Ok(TrackedChild {
            child: Some(child),
            entry: Some(Entry {
                reaper: self.clone(),
                id,
            }),
        })
    }

    /// Pids of the children not reaped yet.
    pub fn live(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.0.live.borrow().values().copied().collect();
        pids.sort_unstable();
        pids
    }

    /// Waits until every child has been reaped. Those still there after
    /// `grace` get SIGKILL, and are then given `kill_wait` to be reaped by
    /// whoever owns them; any left after that is an error.
    pub async fn reap_all(&self, grace: Duration, kill_wait: Duration) -> Result<(), ReapError> {
        if self.wait_empty(grace).await {
            return Ok(());
        }
        let pids = self.live();
        tracing::warn!(?pids, "child processes still running: killing them");
        for &pid in &pids {
            // SAFETY: kill(2) on a child this server spawned and has not
            // reaped (it is still registered), so the pid is still ours.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        if self.wait_empty(kill_wait).await {
            return Ok(());
        }
        // A killed child whose owner is stuck is a zombie: dead, holding
        // nothing, and reaped by init once the server exits.
        let pids: Vec<u32> = self
            .live()
            .into_iter()
            .filter(|&pid| !is_dead(pid))
            .collect();
        if pids.is_empty() {
            Ok(())
        } else {
            Err(ReapError { pids })
        }
    }

    async fn wait_empty(&self, within: Duration) -> bool {
        let mut live = self.0.live.subscribe();
        let empty = tokio::time::timeout(within, live.wait_for(|live| live.is_empty())).await;
        empty.is_ok()
    }
}

/// Whether a process is gone or a zombie.
fn is_dead(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match stat.rsplit_once(')') {
        Some((_, rest)) => rest.trim_start().starts_with('Z'),
        None => true,
    }
}

/// A registered child: leaves the register when it has been waited for.
#[derive(Debug)]
struct Entry {
    reaper: Reaper,
    id: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.reaper.0.live.send_modify(|live| {
            live.remove(&self.id);
        });
    }
}

/// A child process registered with a [`Reaper`].
///
/// Dropping it unreaped kills it and waits for it on a task of its own.
#[derive(Debug)]
pub struct TrackedChild {
    /// `None` only once handed to the background wait in `drop`.
    child: Option<Child>,
    /// `None` once the child has been reaped.
    entry: Option<Entry>,
}

impl TrackedChild {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("present until dropped")
    }

    /// The pid, while the child has not been reaped.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The child's pipes, to take once after spawning.
    pub fn stdin(&mut self) -> Option<tokio::process::ChildStdin> {
        self.child().stdin.take()
    }

    pub fn stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.child().stdout.take()
    }

    pub fn stderr(&mut self) -> Option<tokio::process::ChildStderr> {
        self.child().stderr.take()
    }

    /// Sends SIGKILL without waiting.
    pub fn start_kill(&mut self) {
        let _ = self.child().start_kill();
    }

    /// Sends `signal` if the child has not been reaped yet.
    pub fn signal(&mut self, signal: libc::c_int) {
        if let Some(pid) = self.id() {
            // SAFETY: kill(2) on our own child's pid, still unreaped.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// Waits for the child to exit and reaps it.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child().wait().await;
        if status.is_ok() {
            self.entry = None;
        }
        status
    }

    /// Kills the child and reaps it.
    pub async fn kill(&mut self) {
        self.start_kill();
        let _ = self.wait().await;
    }

    /// Reads stdout and stderr to their end and reaps the child (what
    /// `Command::output` does, but with the child registered throughout).
    pub async fn output(mut self) -> std::io::Result<Output> {
        async fn read_all<R: AsyncReadExt + Unpin>(pipe: Option<R>) -> std::io::Result<Vec<u8>> {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_end(&mut out).await?;
            }
            Ok(out)
        }
        let (stdout, stderr) = (self.stdout(), self.stderr());
        let (stdout, stderr) = tokio::try_join!(read_all(stdout), read_all(stderr))?;
        let status = self.wait().await?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

impl Drop for TrackedChild {
    fn drop(&mut self) {
        let Some(entry) = self.entry.take() else {
            return; // Reaped already.
        };
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = child.start_kill();
        // The entry stays registered until the wait returns. Without a
        // runtime (the server is gone already) there is nobody to wait.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = child.wait().await;
                drop(entry);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(reaper: &Reaper) -> TrackedChild {
        reaper
            .spawn(Command::new("sleep").arg("30").kill_on_drop(true))
            .unwrap()
    }

    #[tokio::test]
    async fn a_child_is_registered_until_it_is_reaped() {
        let reaper = Reaper::default();
        let mut child = sleeper(&reaper);
        let pid = child.id().unwrap();
        assert_eq!(reaper.live(), vec![pid]);
        child.kill().await;
        assert!(reaper.live().is_empty());
        assert!(is_dead(pid));
    }

    #[tokio::test]
    async fn a_dropped_child_is_killed_and_reaped_in_the_background() {
        let reaper = Reaper::default();
        let child = sleeper(&reaper);
        let pid = child.id().unwrap();
        drop(child);
        reaper
            .reap_all(Duration::from_secs(5), Duration::from_secs(1))
            .await
            .unwrap();
        assert!(is_dead(pid));
    }

    #[tokio::test]
    async fn reap_all_kills_what_is_left_after_the_grace() {
        let reaper = Reaper::default();
        let mut child = sleeper(&reaper);
        let pid = child.id().unwrap();
        // Its owner waits for it, as an engine's stop does.
        let owner = tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let started = std::time::Instant::now();
        reaper
            .reap_all(Duration::from_millis(200), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(is_dead(pid));
        owner.await.unwrap();
    }
}
