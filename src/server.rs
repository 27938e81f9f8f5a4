//! Running the server, and shutting it down in order.
//!
//! Two front-ends share one speech core: HTTP (warp) and, unless
//! `PIPER_WYOMING_PORT` is 0, Wyoming.
//!
//! Shutdown is explicit: the first SIGTERM or SIGINT marks the server as
//! draining (`/health` answers 503), stops accepting connections on both
//! listeners (after `PIPER_DRAIN_DELAY`, for load balancers that poll
//! `/health`) and gives the requests in flight, streaming ones and Wyoming
//! streams included, `PIPER_SHUTDOWN_GRACE` to finish. Then every engine is stopped (SIGTERM, SIGKILL after 2 s) and
//! the actors end. A second signal skips the wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use ractor::Actor;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::scheduler::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use crate::speech::catalog::{CacheArgs, ConfigCache};
use crate::speech::Speech;

/// Serves HTTP on `listener` and Wyoming on `wyoming` (when given) until
/// `signals` yields twice or the drain completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    wyoming: Option<TcpListener>,
    signals: impl Stream<Item = i32> + Unpin,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = Arc::new(config);
    let metrics = crate::metrics::install(config.max_processes);

    let (supervisor, supervisor_task) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            config: config.clone(),
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
    let speech = Speech::new(config.clone(), supervisor.clone(), configs.clone());
    let (stop_wyoming, wyoming_stopping) = tokio::sync::watch::channel(false);
    let mut wyoming = match wyoming {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let serving = crate::wyoming::serve(
                listener,
                speech.clone(),
                crate::wyoming::Settings::from_config(&config),
                config.wyoming_max_connections,
                wyoming_stopping,
            );
            tracing::info!("Wyoming protocol listening on tcp://{addr}");
            Some(tokio::spawn(serving))
        }
        None => None,
    };
    let state = AppState {
        speech,
        metrics,
        draining: draining.clone(),
        started: Instant::now(),
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
    let _ = stop_wyoming.send(true);
    let all_finished = async {
        let _ = (&mut server).await;
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
    }
    server.abort();
    // Aborting the Wyoming task drops its connections and so their sessions.
    if let Some(wyoming) = wyoming {
        wyoming.abort();
    }

    // Engines next: each gets SIGTERM, then SIGKILL after 2 s.
    let _ = supervisor
        .call(SupervisorMsg::StopWorkers, Some(Duration::from_secs(10)))
        .await;
    supervisor.stop(None);
    configs.stop(None);
    let _ = supervisor_task.await;
    let _ = configs_task.await;
    tracing::info!("stopped");
    Ok(())
}
