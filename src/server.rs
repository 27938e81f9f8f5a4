//! Running the server, and shutting it down in order.
//!
//! Shutdown is explicit: the first SIGTERM or SIGINT marks the server as
//! draining (`/health` answers 503), stops accepting connections (after
//! `PIPER_DRAIN_DELAY`, for load balancers that poll `/health`) and gives
//! the requests in flight, streaming ones included, `PIPER_SHUTDOWN_GRACE`
//! to finish. Then every engine is stopped (SIGTERM, SIGKILL after 2 s) and
//! the actors end. A second signal skips the wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use ractor::Actor;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::engine::reaper::Reaper;
use crate::http::{self, AppState};
use crate::scheduler::config_cache::{CacheArgs, ConfigCache};
use crate::scheduler::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};

/// How long engines still stopping at the end get before SIGKILL, and then
/// to be reaped: a polite stop takes at most `STOP_GRACE` already.
const REAP_GRACE: Duration = Duration::from_secs(3);

/// Serves on `listener` until `signals` yields twice or the drain completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    signals: impl Stream<Item = i32> + Unpin,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
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
    let (configs, configs_task) = Actor::spawn(
        None,
        ConfigCache,
        CacheArgs {
            voices_dir: config.voices_dir.clone(),
            ttl: config.config_cache_ttl,
        },
    )
    .await?;

    let draining = Arc::new(AtomicBool::new(false));
    let state = AppState {
        config: config.clone(),
        supervisor: supervisor.clone(),
        configs: configs.clone(),
        metrics,
        draining: draining.clone(),
        started: Instant::now(),
        audio_cache: Arc::new(crate::speech::cache::AudioCache::new(
            (config.audio_cache_mb << 20) as usize,
        )),
    };

    let addr = listener.local_addr()?;
    let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = warp::serve(http::routes(state))
        .incoming(listener)
        .graceful(async {
            let _ = accepting_stopped.await;
        })
        .run();
    let mut server = tokio::spawn(server);
    tracing::info!(
        "piperd {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );

    let mut signals = signals;
    tokio::select! {
        signal = signals.next() => {
            tracing::info!(signal, "shutting down: draining requests for up to {:?}", config.shutdown_grace);
        }
        _ = &mut server => {
            tracing::error!("the HTTP server stopped by itself");
        }
    }
    draining.store(true, Ordering::SeqCst);
    // Optionally keep accepting for a moment while `/health` says 503, so
    // that load balancers polling it take the replica out before it closes.
    if !config.drain_delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(config.drain_delay) => {}
            signal = signals.next() => tracing::warn!(signal, "second signal during the drain delay"),
        }
    }
    let _ = stop_accepting.send(());
    tokio::select! {
        _ = &mut server => tracing::info!("all requests finished"),
        _ = tokio::time::sleep(config.shutdown_grace) => {
            tracing::warn!("grace period over: closing the remaining requests");
        }
        signal = signals.next() => tracing::warn!(signal, "second signal: shutting down at once"),
    }
    server.abort();

    // Engines next: each gets SIGTERM, then SIGKILL after 2 s.
    let _ = supervisor
        .call(SupervisorMsg::StopWorkers, Some(Duration::from_secs(10)))
        .await;
    supervisor.stop(None);
    configs.stop(None);
    let _ = supervisor_task.await;
    let _ = configs_task.await;
    // Last, every engine must be gone (reaped, not merely signalled), on
    // every path: whoever watches this process exit may check for them.
    reaper.reap_all(REAP_GRACE, REAP_GRACE).await?;
    tracing::info!("stopped");
    Ok(())
}
