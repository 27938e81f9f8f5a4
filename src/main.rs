//! The `piperd` binary: configuration, logging, signals, then the server.

use std::net::SocketAddr;

use futures::StreamExt;
use piperd::config::{Config, LogFormat};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("say") {
        return say(&args[1..]);
    }
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{}", Config::help());
        return std::process::ExitCode::SUCCESS;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("piperd: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.log_format);

    match runtime().block_on(serve(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A thread that exits takes the engines it spawned with it (their
        // parent-death signal is per thread): blocking threads never retire.
        .thread_keep_alive(std::time::Duration::from_secs(u32::MAX as u64))
        .build()
        .expect("the async runtime starts")
}

/// `piperd say`: speaks text into a file or standard output, no server.
fn say(args: &[String]) -> std::process::ExitCode {
    use piperd::say::{self, SayError};
    let fail = |err: SayError| {
        let mut message = err.to_string();
        if let SayError::Speech(piperd::speech::SpeechError::Voice(
            piperd::voices::VoiceError::NotFound { available, .. },
        )) = &err
        {
            message = format!("{message}; installed voices: {}", available.join(", "));
        }
        eprintln!("piperd say: {message}");
        std::process::ExitCode::from(err.exit_code())
    };
    let args = match say::Args::parse(args) {
        Ok(args) => args,
        Err(err) => return fail(err),
    };
    if args.help {
        print!("{}", say::USAGE);
        return std::process::ExitCode::SUCCESS;
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => return fail(SayError::Config(err.to_string())),
    };
    // Quiet unless asked: standard error is the progress bar's.
    let filter = EnvFilter::try_from_env("PIPER_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = runtime().block_on(async {
        let interrupted = say::interrupted()
            .map_err(|e| SayError::Config(format!("cannot watch for Ctrl-C: {e}")))?;
        say::run(config, args, interrupted).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => fail(err),
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Signals first, so that a SIGTERM during start-up is not lost.
    let signals = Signals::new([SIGTERM, SIGINT])?;
    let handle = signals.handle();
    let addr = SocketAddr::new(config.host, config.port);
    // Bound here rather than by warp, which panics when the port is taken.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    if !config.host.is_loopback() && config.api_keys.is_empty() {
        tracing::warn!(
            "listening on {addr}, beyond this machine, with no API keys: set PIPER_API_KEYS"
        );
    }
    let wyoming = match config.wyoming_port {
        Some(port) => {
            let addr = SocketAddr::new(config.host, port);
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                format!(
                    "cannot listen on {addr} for Wyoming (PIPER_WYOMING_PORT; 0 turns it off): {e}"
                )
            })?;
            // The protocol has no authentication: API keys do not cover it.
            if !config.host.is_loopback() {
                tracing::warn!(
                    "Wyoming listens on {addr}, beyond this machine, and the protocol has no \
                     authentication: anyone who reaches the port can use the engine; keep it on a \
                     trusted network or set PIPER_WYOMING_PORT=0"
                );
            }
            Some(listener)
        }
        None => None,
    };
    let marytts = match config.marytts_port {
        Some(port) => {
            let addr = SocketAddr::new(config.host, port);
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                format!("cannot listen on {addr} for MaryTTS (PIPER_MARYTTS_PORT): {e}")
            })?;
            Some(listener)
        }
        None => None,
    };
    let result = piperd::server::run(config, listener, wyoming, marytts, signals.boxed()).await;
    handle.close();
    // Logged by `main` and turned into a non-zero exit status, so that
    // systemd or Kubernetes restart a server that failed.
    Ok(result?)
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("PIPER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
