//! Running the server, and shutting it down in order.
//!
//! The front-ends share one speech core: HTTP (warp) with MaryTTS's routes
//! beside it, unless `PIPER_WYOMING_PORT` is 0 Wyoming, and with
//! `PIPER_MARYTTS_PORT` MaryTTS alone on a port of its own. HTTP connections are accepted and
//! served by [`crate::listener`], within the connection cap and deadlines;
//! this module wires the parts together.
//!
//! Shutdown is explicit: the first SIGTERM or SIGINT marks the server as
//! draining (`/health` answers 503), stops accepting connections on both
//! listeners (after `PIPER_DRAIN_DELAY`, for load balancers that poll
//! `/health`), closes the connections that carry no request and gives the
//! requests in flight, streaming ones, WebSockets and Wyoming streams included,
//! `PIPER_SHUTDOWN_GRACE` to finish; then the
//! connections left are cut. Then every engine is stopped (SIGTERM, SIGKILL
//! after 2 s), the actors end, and the server returns only once every
//! engine has been reaped. A second signal skips the waits. If the
//! supervisor, the config cache or the accept loop ends by itself, the
//! server shuts down the same way and returns an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use hyper_util::service::TowerToHyperService;
use ractor::Actor;
use tokio::net::TcpListener;
use warp::Filter as _;

use crate::config::Config;
use crate::engine::reaper::{ReapError, Reaper};
use crate::http::{self, AppState};
use crate::listener::{self, http::HttpServer, idle::Deadlines, ConnectionCap};
use crate::scheduler::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use crate::speech::catalog::{CacheArgs, ConfigCache};
use crate::speech::Speech;

/// How long engines still stopping at the end get before SIGKILL, and then
/// to be reaped: a polite stop takes at most `STOP_GRACE` already.
const REAP_GRACE: Duration = Duration::from_secs(3);

/// Why the server stopped other than by a signal, or could not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start the actors: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    #[error("cannot read the listening address: {0}")]
    Listener(#[source] std::io::Error),
    /// A part the server cannot run without ended by itself (a panic in
    /// the supervisor, say): exiting non-zero lets systemd or Kubernetes
    /// start a fresh server instead of leaving one that cannot synthesize.
    #[error("the {0} stopped by itself: the server shut down")]
    Failed(&'static str),
    #[error(transparent)]
    Engines(#[from] ReapError),
}

/// A task the server cannot run without, watched until it ends.
struct Vital {
    name: &'static str,
    task: tokio::task::JoinHandle<()>,
    ended: bool,
}

impl Vital {
    fn new(name: &'static str, task: tokio::task::JoinHandle<()>) -> Vital {
        Vital {
            name,
            task,
            ended: false,
        }
    }

    /// Completes when the task ends; never again once it has (so it can sit
    /// in every `select!`).
    async fn ended(&mut self) -> &'static str {
        if self.ended {
            return std::future::pending().await;
        }
        let _ = (&mut self.task).await;
        self.ended = true;
        self.name
    }

    /// Waits for the end of a task that was asked to stop.
    async fn join(mut self) {
        if !self.ended {
            let _ = (&mut self.task).await;
        }
    }
}

/// Serves HTTP on `listener` and Wyoming on `wyoming` (when given) until
/// `signals` yields twice or the drain completes.
/// An error if a vital part (supervisor, config cache, HTTP server) ended by
/// itself, after shutting down the rest and reaping every engine.
pub async fn run(
    config: Config,
    listener: TcpListener,
    wyoming: Option<TcpListener>,
    marytts: Option<TcpListener>,
    signals: impl Stream<Item = i32> + Unpin,
) -> Result<(), ServerError> {
    run_with(config, listener, wyoming, marytts, signals, |_| {}).await
}

/// [`run`], handing the supervisor to `started` once it runs (tests reach
/// into the server through it).
async fn run_with(
    config: Config,
    listener: TcpListener,
    wyoming: Option<TcpListener>,
    marytts: Option<TcpListener>,
    mut signals: impl Stream<Item = i32> + Unpin,
    started: impl FnOnce(&ractor::ActorRef<SupervisorMsg>),
) -> Result<(), ServerError> {
    let config = Arc::new(config);
    let metrics = crate::metrics::install(config.max_processes);

    let reaper = Reaper::default();
    let (supervisor, supervisor_task) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config: config.clone(),
            reaper: reaper.clone(),
        },
    )
    .await?;
    let mut supervisor_task = Vital::new("supervisor", supervisor_task);
    let (configs, configs_task) = Actor::spawn(
        None,
        ConfigCache,
        CacheArgs {
            voices_dir: config.voices_dir.clone(),
            ttl: config.config_cache_ttl,
        },
    )
    .await?;
    let mut configs_task = Vital::new("config cache", configs_task);

    started(&supervisor);

    let draining = Arc::new(AtomicBool::new(false));
    let speech = Speech::new(config.clone(), supervisor.clone(), configs.clone());
    let (stop_wyoming, wyoming_stopping) = tokio::sync::watch::channel(false);
    let wyoming = match wyoming {
        Some(listener) => {
            let addr = listener.local_addr().map_err(ServerError::Listener)?;
            let serving = crate::wyoming::serve(
                listener,
                speech.clone(),
                crate::wyoming::Settings::from_config(&config),
                config.wyoming_max_connections,
                wyoming_stopping,
            );
            tracing::info!("Wyoming protocol listening on tcp://{addr}");
            Some((tokio::spawn(serving), addr))
        }
        None => None,
    };
    let announcement = match (&wyoming, &config.wyoming_zeroconf) {
        (Some((_, addr)), Some(name)) => announce(name.clone(), config.host, addr.port()).await,
        _ => None,
    };
    let mut wyoming = wyoming.map(|(task, _)| task);
    let sockets = http::elevenlabs::Sockets::default();
    let mary_routes = crate::marytts::routes(speech.clone());
    let mary_alone = crate::marytts::standalone(speech.clone());
    let state = AppState {
        speech,
        metrics,
        draining: draining.clone(),
        started: Instant::now(),
        sockets: sockets.clone(),
    };

    let addr = listener.local_addr().map_err(ServerError::Listener)?;
    let cap = ConnectionCap::new(listener::fit_fd_limit(config.max_connections));
    let deadlines = Deadlines {
        message: Some(config.header_timeout).filter(|d| !d.is_zero()),
        idle: Some(config.keepalive_timeout).filter(|d| !d.is_zero()),
    };
    // MaryTTS's paths (`/process`, `/voices`, `/locales`, `/version`) first:
    // the API's routes answer every other path, unknown ones with a 404.
    let routes = mary_routes.or(http::routes(state)).unify();
    let service = TowerToHyperService::new(warp::service(routes));
    let (server, accept_task) = HttpServer::start(listener, cap.clone(), deadlines, service);
    let mut accepting = Vital::new("HTTP server", accept_task);
    // MaryTTS alone on its own port, under the same connection cap.
    let mut mary_server = None;
    if let Some(listener) = marytts {
        let mary_addr = listener.local_addr().map_err(ServerError::Listener)?;
        let service = TowerToHyperService::new(warp::service(mary_alone));
        let (mary, task) = HttpServer::start(listener, cap, deadlines, service);
        tracing::info!("MaryTTS API listening on http://{mary_addr}");
        mary_server = Some((mary, task));
    }
    tracing::info!(
        "piperd {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );

    // Serving, until a signal or the end of a vital part.
    let mut failed = tokio::select! {
        signal = signals.next() => {
            tracing::info!(signal, "shutting down: draining requests for up to {:?}", config.shutdown_grace);
            None
        }
        name = accepting.ended() => Some(name),
        name = supervisor_task.ended() => Some(name),
        name = configs_task.ended() => Some(name),
    };
    if let Some(name) = failed {
        tracing::error!("the {name} stopped by itself: shutting down");
    }
    draining.store(true, Ordering::SeqCst);
    // Optionally keep accepting for a moment while `/health` says 503, so
    // that load balancers polling it take the replica out before it closes.
    // A failing server has nothing to offer them: it skips the delay (but
    // lets the requests in flight end, which they do at once without it).
    let mut hurry = false;
    if !config.drain_delay.is_zero() && failed.is_none() {
        tokio::select! {
            _ = tokio::time::sleep(config.drain_delay) => {}
            signal = signals.next() => {
                tracing::warn!(signal, "second signal during the drain delay: shutting down at once");
                hurry = true;
            }
            name = supervisor_task.ended() => failed = Some(name),
            name = configs_task.ended() => failed = Some(name),
        }
    }
    server.stop_accepting();
    sockets.stop();
    if let Some((mary, _)) = &mary_server {
        mary.stop_accepting();
    }
    let _ = stop_wyoming.send(true);
    if let Some(announcement) = announcement {
        // Home Assistant forgets the service at once instead of at its TTL.
        let _ = tokio::task::spawn_blocking(move || announcement.stop()).await;
    }
    if !hurry {
        let all_finished = async {
            server.drained().await;
            sockets.drained().await;
            if let Some((mary, _)) = &mary_server {
                mary.drained().await;
            }
            if let Some(wyoming) = wyoming.as_mut() {
                let _ = wyoming.await;
            }
        };
        tokio::select! {
            _ = all_finished => tracing::info!("all requests finished"),
            _ = tokio::time::sleep(config.shutdown_grace) => {
                tracing::warn!("grace period over: closing the remaining requests");
            }
            signal = signals.next() => tracing::warn!(signal, "second signal: shutting down at once"),
            name = supervisor_task.ended() => failed = Some(name),
            name = configs_task.ended() => failed = Some(name),
        }
    }
    server.close_all().await;
    sockets.close_all().await;
    accepting.task.abort();
    accepting.join().await;
    if let Some((mary, task)) = mary_server {
        mary.close_all().await;
        task.abort();
        let _ = task.await;
    }
    // Aborting the Wyoming task drops its connections and so their sessions.
    // (Not awaited again once it ended: a join handle is polled to its end once.)
    if let Some(wyoming) = wyoming.filter(|task| !task.is_finished()) {
        wyoming.abort();
        let _ = wyoming.await;
    }

    // Engines next: each gets SIGTERM, then SIGKILL after 2 s.
    let _ = supervisor
        .call(SupervisorMsg::StopWorkers, Some(Duration::from_secs(10)))
        .await;
    supervisor.stop(None);
    configs.stop(None);
    supervisor_task.join().await;
    configs_task.join().await;
    // Last, every engine must be gone (reaped, not merely signalled), on
    // every path: whoever watches this process exit may check for them.
    reaper.reap_all(REAP_GRACE, REAP_GRACE).await?;
    match failed {
        Some(name) => Err(ServerError::Failed(name)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Starts the mDNS announcement of the Wyoming listener. A failure is
/// logged, not fatal: clients that are given the host and port still work.
async fn announce(
    name: String,
    host: std::net::IpAddr,
    port: u16,
) -> Option<crate::wyoming::zeroconf::Announcement> {
    let started = tokio::task::spawn_blocking(move || {
        crate::wyoming::zeroconf::Announcement::start(&name, host, port)
    })
    .await;
    match started {
        Ok(Ok(announcement)) => {
            tracing::info!("Wyoming announced over mDNS as {}", announcement.fullname());
            Some(announcement)
        }
        Ok(Err(err)) => {
            tracing::warn!("{err}: Home Assistant will not discover this server");
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    /// A config on a voices folder of one voice spoken by the test double.
    fn fake_engine_config(dir: &std::path::Path) -> Config {
        std::fs::write(dir.join("v.onnx"), b"not read by the double").unwrap();
        std::fs::write(
            dir.join("v.onnx.json"),
            br#"{"audio":{"sample_rate":22050}}"#,
        )
        .unwrap();
        let engine = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fake_engine.py");
        let vars: HashMap<String, String> = [
            ("PIPER_VOICES_DIR", dir.to_str().unwrap()),
            ("PIPER_PYTHON", "python3"),
            ("PIPER_ENGINE", engine.to_str().unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Config::from_vars(&vars).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_supervisor_ends_the_server_with_an_error_and_no_engine() {
        let dir = tempfile::tempdir().unwrap();
        let config = fake_engine_config(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(run_with(
            config,
            listener,
            None,
            None,
            futures::stream::pending(),
            move |supervisor| {
                let _ = tx.send(supervisor.clone());
            },
        ));
        let supervisor = rx.await.unwrap();

        // A warm engine, which the failing server must still reap.
        let (files, fingerprint) = crate::voices::resolve(dir.path(), "v").unwrap();
        let voice = Arc::new(crate::voices::load(files, fingerprint).unwrap());
        ractor::call!(supervisor, SupervisorMsg::Warmup, voice)
            .unwrap()
            .unwrap();
        let health = ractor::call!(supervisor, SupervisorMsg::Health).unwrap();
        let pid = health.workers[0].pid.expect("engine running");

        supervisor.send_message(SupervisorMsg::Panic).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server ends within 10 s of its supervisor failing")
            .unwrap();
        let err = result.expect_err("a failed supervisor is an error");
        assert!(err.to_string().contains("supervisor"), "{err}");
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "engine {pid} outlived the server"
        );
    }
}
