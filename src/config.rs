//! Server configuration, read once from the environment at start-up.
//!
//! Every knob is an environment variable so that the same binary runs under
//! `make run`, systemd and Kubernetes without a config file. A value that does
//! not parse stops start-up with a message naming the variable: a server that
//! silently fell back to a default would hide an operator's typo.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while reading the environment.
#[derive(Debug, thiserror::Error)]
#[error("invalid value {value:?} for {name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole configuration of one server.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub voices_dir: PathBuf,
    /// Interpreter that runs the engine program.
    pub python: PathBuf,
    /// Engine program to run instead of the one built into the binary.
    pub engine_program: Option<PathBuf>,
    /// onnxruntime intra-op threads of a sentence that shares the cores with
    /// others (a sentence alone always gets onnxruntime's default, every core).
    pub engine_threads: usize,
    /// Sentences synthesized at once, over all voices, when several wait.
    pub engine_concurrency: usize,
    /// Most characters one engine synthesizes at once: sentences go side by
    /// side only while their sum stays within it (the frontend's memory grows
    /// with whole sentences).
    pub engine_chars_at_once: usize,
    pub chunk_size: usize,
    /// Longest sentence handed to the engine whole (the hard limit).
    pub unit_max_chars: usize,
    pub idle_timeout: Duration,
    pub max_processes: usize,
    pub config_cache_ttl: Duration,
    pub queue_timeout: Duration,
    pub max_restarts: usize,
    pub restart_window: Duration,
    /// How long a crash-looping voice stays failed before it may start again.
    pub failed_cooldown: Duration,
    /// Base of a sentence's hang deadline, to which each sentence in the
    /// engine adds 50 ms per character (times its length scale when above
    /// 1) and its sentence silence.
    pub engine_timeout: Duration,
    /// How long an engine may take to load its voice and announce readiness.
    pub engine_start_timeout: Duration,
    pub engine_max_rss_mb: u64,
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long to keep accepting while `/health` says 503.
    pub drain_delay: Duration,
    /// Audio of a non-streamed answer above this size goes to a temp file.
    pub spool_threshold_bytes: usize,
    pub temp_dir: PathBuf,
    /// Where engines keep each voice's split graph and calibration, by the
    /// model file's hash (never in the voices folder, which may be read-only).
    pub engine_cache_dir: PathBuf,
    pub audio_cache_mb: u64,
    /// Requests admitted and waiting for their first audio, over the
    /// server, beyond which new ones are refused at once (0: no bound).
    pub max_queue: usize,
    /// Most audio one complete (not streamed) answer may hold, in seconds.
    pub max_audio_seconds: u64,
    pub log_format: LogFormat,
    /// Bearer keys; empty: the API is open.
    pub api_keys: Vec<String>,
    /// Origins allowed by CORS; empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Serve the demo page at `/`.
    pub web_ui: bool,
    /// OpenAI voice names mapped to installed voices (others: the first voice).
    pub openai_voices: HashMap<String, String>,
    /// ElevenLabs voice ids (lowercase) mapped to installed voices; other
    /// ids are taken as voice names.
    pub elevenlabs_voices: HashMap<String, String>,
    /// A connection must have sent a whole request header within this of
    /// its start (or of the first byte of a later request); zero: no limit.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in flight is closed after
    /// this long without a new one; zero: no limit.
    pub keepalive_timeout: Duration,
    /// Connections open at once; beyond, new ones are answered 503 and closed.
    pub max_connections: usize,
    /// Port of the Wyoming listener, on `host`; `None` turns it off.
    pub wyoming_port: Option<u16>,
    /// A port of its own for the MaryTTS API, on `host` (it is on the main
    /// port anyway); `None` when unset or 0.
    pub marytts_port: Option<u16>,
    /// Samples in each `audio-chunk` event sent to Wyoming clients.
    pub wyoming_samples_per_chunk: usize,
    /// Wyoming connections served at once; one more is refused at once.
    pub wyoming_max_connections: usize,
    /// How long a Wyoming connection may stay silent while piperd waits for
    /// it (for its next event, or for the rest of one it started).
    pub wyoming_idle_timeout: Duration,
    /// Instance name announced over mDNS for the Wyoming listener
    /// (`NAME._wyoming._tcp.local.`); `None`: no announcement.
    pub wyoming_zeroconf: Option<String>,
}

/// The user's cache folder (XDG), else one in the system temp folder:
/// where engines keep split graphs unless `PIPER_ENGINE_CACHE_DIR` says.
pub fn default_engine_cache_dir() -> PathBuf {
    let nonempty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(xdg) = nonempty("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("piperd");
    }
    if let Some(home) = nonempty("HOME") {
        return PathBuf::from(home).join(".cache").join("piperd");
    }
    std::env::temp_dir().join("piperd-cache")
}

/// Most samples in one Wyoming `audio-chunk`: its payload (2 bytes a
/// sample) stays well under the 1 MiB a Wyoming peer accepts in one event.
pub const MAX_SAMPLES_PER_CHUNK: usize = 256 * 1024;

/// Name, default and meaning of every variable, for `--help` and the README.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    ("PIPER_HOST", "127.0.0.1", "address to listen on"),
    ("PIPER_PORT", "5050", "port to listen on"),
    (
        "PIPER_VOICES_DIR",
        "./voices",
        "folder of NAME.onnx + NAME.onnx.json voices",
    ),
    (
        "PIPER_PYTHON",
        ".venv/bin/python if present, else python3",
        "interpreter that runs the engine",
    ),
    (
        "PIPER_ENGINE",
        "(built in)",
        "engine program to run instead of the built-in one",
    ),
    (
        "PIPER_ENGINE_CONCURRENCY",
        "2, at most the cores",
        "sentences synthesized at once, over all voices, when several wait (a sentence alone gets every core)",
    ),
    (
        "PIPER_ENGINE_THREADS",
        "0",
        "onnxruntime threads of a sentence synthesized beside others (0: cores / concurrency, at least 1)",
    ),
    (
        "PIPER_ENGINE_CHARS_AT_ONCE",
        "700",
        "most characters one engine synthesizes at once, over sentences side by side (bounds the frontend's memory, which grows with a whole sentence; a sentence at the hard limit runs alone)",
    ),
    (
        "PIPER_CHUNK_SIZE",
        "5000",
        "longest chunk of text, in characters",
    ),
    (
        "PIPER_ENGINE_MAX_CHARS",
        "700",
        "hard limit of a sentence sent to the engine whole; a longer one is cut at clause marks, then whitespace",
    ),
    (
        "PIPER_PROCESS_IDLE_TIMEOUT",
        "120",
        "seconds before an idle engine process is stopped",
    ),
    (
        "PIPER_MAX_PROCESSES",
        "3",
        "engine processes running at once, over all voices",
    ),
    (
        "PIPER_CONFIG_CACHE_TTL",
        "300",
        "seconds a voice config is kept",
    ),
    (
        "PIPER_QUEUE_TIMEOUT",
        "30",
        "seconds a request waits for a process before 503",
    ),
    (
        "PIPER_MAX_RESTARTS",
        "5",
        "crashes within the window before a voice is marked failed",
    ),
    (
        "PIPER_RESTART_WINDOW",
        "60",
        "seconds over which crashes are counted",
    ),
    (
        "PIPER_FAILED_COOLDOWN",
        "30",
        "seconds a failed voice refuses requests",
    ),
    (
        "PIPER_ENGINE_TIMEOUT",
        "10",
        "seconds a sentence may take, plus 50 ms per character (times length_scale when above 1) and its sentence_silence; a hang fails its request only, and restarts the engine without counting toward PIPER_MAX_RESTARTS",
    ),
    (
        "PIPER_ENGINE_START_TIMEOUT",
        "60",
        "seconds an engine may take to load its voice",
    ),
    (
        "PIPER_ENGINE_MAX_RSS_MB",
        "600",
        "engine processes above this resident size are recycled",
    ),
    (
        "PIPER_SHUTDOWN_GRACE",
        "30",
        "seconds in-flight requests get to finish on SIGTERM",
    ),
    (
        "PIPER_DRAIN_DELAY",
        "0",
        "seconds to keep accepting after SIGTERM while /health answers 503",
    ),
    (
        "PIPER_HEADER_TIMEOUT",
        "10",
        "seconds a connection gets to send a whole request header (0: no limit)",
    ),
    (
        "PIPER_KEEPALIVE_TIMEOUT",
        "75",
        "seconds an idle kept-alive connection stays open; keep it above the idle timeout of a proxy in front (0: no limit)",
    ),
    (
        "PIPER_MAX_CONNECTIONS",
        "1024",
        "connections open at once; beyond, new ones get 503 with Retry-After and are closed",
    ),
    (
        "PIPER_SPOOL_THRESHOLD_MB",
        "8",
        "audio above this size is spooled to a temp file",
    ),
    (
        "PIPER_TEMP_DIR",
        "the system temp folder",
        "where spooled audio goes",
    ),
    (
        "PIPER_ENGINE_CACHE_DIR",
        "$XDG_CACHE_HOME/piperd, else ~/.cache/piperd",
        "where engines keep each voice's split graph and calibration, by the model's hash (made on first use; unwritable: split again at each start)",
    ),
    (
        "PIPER_AUDIO_CACHE_MB",
        "64",
        "memory for cached audio (0 disables the cache)",
    ),
    (
        "PIPER_MAX_QUEUE",
        "16",
        "requests waiting for their first audio, over the server, beyond which new ones get 503 overloaded at once (0: no bound)",
    ),
    (
        "PIPER_MAX_AUDIO_SECONDS",
        "7200",
        "most seconds of audio in one complete (not streamed) answer, checked from the text and while it is made",
    ),
    ("PIPER_LOG_FORMAT", "text", "text or json"),
    (
        "PIPER_API_KEYS",
        "(none: open)",
        "comma-separated keys required as 'Authorization: Bearer KEY'",
    ),
    (
        "PIPER_API_KEYS_FILE",
        "(none)",
        "file with one API key per line",
    ),
    (
        "PIPER_CORS_ORIGINS",
        "(none)",
        "comma-separated origins allowed by CORS, or *",
    ),
    (
        "PIPER_OPENAI_VOICES",
        "(none: the first voice)",
        "OpenAI voice names mapped to installed voices, e.g. alloy=en_US-joe-medium,echo=NAME",
    ),
    (
        "PIPER_ELEVENLABS_VOICES",
        "(none: ids are voice names)",
        "ElevenLabs voice ids mapped to installed voices, e.g. 21m00Tcm4TlvDq8ikWAM=en_US-joe-medium",
    ),
    (
        "PIPER_WEB_UI",
        "1",
        "serve the demo page at / (0 to turn off)",
    ),
    (
        "PIPER_LOG",
        "info",
        "log filter, in tracing's EnvFilter syntax (e.g. info,piperd=debug)",
    ),
    (
        "PIPER_WYOMING_PORT",
        "10200",
        "port of the Wyoming protocol listener (Home Assistant), on PIPER_HOST (0 turns it off)",
    ),
    (
        "PIPER_MARYTTS_PORT",
        "0",
        "a port of its own for the MaryTTS API (59125 is MaryTTS's), on PIPER_HOST; 0 serves it on PIPER_PORT only",
    ),
    (
        "PIPER_WYOMING_SAMPLES_PER_CHUNK",
        "1024",
        "samples in each Wyoming audio-chunk event",
    ),
    (
        "PIPER_WYOMING_MAX_CONNECTIONS",
        "64",
        "Wyoming connections served at once; one more gets an error event and is closed",
    ),
    (
        "PIPER_WYOMING_IDLE_TIMEOUT",
        "60",
        "seconds a Wyoming connection may stay silent while piperd waits for its next event or the rest of one",
    ),
    (
        "PIPER_WYOMING_ZEROCONF",
        "unset",
        "announce the Wyoming listener over mDNS as NAME._wyoming._tcp.local. for Home Assistant's discovery, where PIPER_HOST listens",
    ),
];

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(&std::env::vars().collect())
    }

    /// Reads the configuration from a map of variables (tests pass their own).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let env = Env(vars);
        let python = match env.get("PIPER_PYTHON") {
            Some(p) => PathBuf::from(p),
            // Absolute but not canonical: the venv's python is a symlink, and
            // resolving it would leave the venv behind.
            None if std::path::Path::new(".venv/bin/python").exists() => std::env::current_dir()
                .map(|d| d.join(".venv/bin/python"))
                .unwrap_or_else(|_| PathBuf::from(".venv/bin/python")),
            None => PathBuf::from("python3"),
        };
        // Measured on 2 cores (BENCHMARKS.md): a sentence alone answers in the
        // raw engine's time only on every core, while sentences side by side
        // make the most audio per second on one core each (two on every core
        // fight over the cores and make less than one). So the worker gives a
        // sentence every core when it is alone and one core each when
        // several wait, over all voices.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let engine_concurrency = env.positive("PIPER_ENGINE_CONCURRENCY", cores.min(2))?;
        let engine_threads = match env.parse("PIPER_ENGINE_THREADS", 0)? {
            0 => (cores / engine_concurrency).max(1),
            n => n,
        };
        let log_format = match env.get("PIPER_LOG_FORMAT").unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(env.invalid("PIPER_LOG_FORMAT", other, "expected text or json")),
        };
        Ok(Config {
            host: env.parse("PIPER_HOST", "127.0.0.1".parse().expect("valid address"))?,
            port: env.parse("PIPER_PORT", 5050)?,
            voices_dir: PathBuf::from(env.get("PIPER_VOICES_DIR").unwrap_or("./voices")),
            python,
            engine_program: env.get("PIPER_ENGINE").map(PathBuf::from),
            engine_concurrency,
            engine_threads,
            // Sentences are synthesized in decoder chunks, so the decoder's
            // memory no longer grows with a sentence; the frontend's still
            // does (quadratically), and this bounds it for sentences side
            // by side: two whole sentences at the hard limit always fit.
            engine_chars_at_once: env.positive("PIPER_ENGINE_CHARS_AT_ONCE", 700)?,
            chunk_size: env.positive("PIPER_CHUNK_SIZE", 5000)?,
            // The hard limit: the frontend sees a whole sentence, and its
            // work and memory grow with the square of its phoneme ids. 700
            // characters of English prose are about 1,500 ids (2.2 per
            // character, measured), about 45 s of speech.
            unit_max_chars: env.positive("PIPER_ENGINE_MAX_CHARS", 700)?,
            idle_timeout: env.seconds("PIPER_PROCESS_IDLE_TIMEOUT", 120.0)?,
            max_processes: env.positive("PIPER_MAX_PROCESSES", 3)?,
            config_cache_ttl: env.seconds("PIPER_CONFIG_CACHE_TTL", 300.0)?,
            queue_timeout: env.seconds("PIPER_QUEUE_TIMEOUT", 30.0)?,
            max_restarts: env.parse("PIPER_MAX_RESTARTS", 5)?,
            restart_window: env.seconds("PIPER_RESTART_WINDOW", 60.0)?,
            failed_cooldown: env.seconds("PIPER_FAILED_COOLDOWN", 30.0)?,
            engine_timeout: env.seconds("PIPER_ENGINE_TIMEOUT", 10.0)?,
            engine_start_timeout: env.seconds("PIPER_ENGINE_START_TIMEOUT", 60.0)?,
            engine_max_rss_mb: env.parse("PIPER_ENGINE_MAX_RSS_MB", 600)?,
            shutdown_grace: env.seconds("PIPER_SHUTDOWN_GRACE", 30.0)?,
            drain_delay: env.seconds("PIPER_DRAIN_DELAY", 0.0)?,
            spool_threshold_bytes: env.parse::<usize>("PIPER_SPOOL_THRESHOLD_MB", 8)? << 20,
            temp_dir: env
                .get("PIPER_TEMP_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            engine_cache_dir: env
                .get("PIPER_ENGINE_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(default_engine_cache_dir),
            audio_cache_mb: env.parse("PIPER_AUDIO_CACHE_MB", 64)?,
            // Each waiting request costs the ones behind it about 0.2 s of
            // first-sentence work on 2 cores: 16 keep the last one's first
            // audio near 3 s (BENCHMARKS.md, "Admission"); beyond that a
            // client is better served by another replica.
            max_queue: env.parse("PIPER_MAX_QUEUE", 16)?,
            // The longest text (100,000 characters) at an ordinary pace is
            // about two hours; a complete answer past that would only fill
            // the spool folder.
            max_audio_seconds: env.positive("PIPER_MAX_AUDIO_SECONDS", 7200)? as u64,
            log_format,
            api_keys: env.api_keys()?,
            cors_origins: env.list("PIPER_CORS_ORIGINS"),
            web_ui: env.parse::<u8>("PIPER_WEB_UI", 1)? != 0,
            openai_voices: env.pairs("PIPER_OPENAI_VOICES")?,
            elevenlabs_voices: env.pairs("PIPER_ELEVENLABS_VOICES")?,
            // A real client sends its header in one packet, well within a
            // second even on a slow link; 10 s leaves room for a lossy one
            // and bounds how long a slowloris socket holds a connection.
            header_timeout: env.seconds("PIPER_HEADER_TIMEOUT", 10.0)?,
            // Above the 60 s idle timeout of common proxies and balancers
            // (AWS ALB, nginx upstream keepalive): the server must not close
            // a connection the proxy still counts as open, or the request
            // the proxy sends on it at that moment fails (a 502). nginx
            // uses 75 s for the same reason.
            keepalive_timeout: env.seconds("PIPER_KEEPALIVE_TIMEOUT", 75.0)?,
            // One file descriptor each: 1024 is far more than two cores
            // synthesize for at once, yet small beside the limits piperd
            // raises its own descriptor limit to (see `listener::fit_fd_limit`).
            max_connections: env.positive("PIPER_MAX_CONNECTIONS", 1024)?,
            // 10200 is the port Home Assistant suggests for a Wyoming TTS
            // service (wyoming-piper's), so that a user only types the host.
            wyoming_port: match env.parse::<u16>("PIPER_WYOMING_PORT", 10200)? {
                0 => None,
                port => Some(port),
            },
            marytts_port: match env.parse::<u16>("PIPER_MARYTTS_PORT", 0)? {
                0 => None,
                port => Some(port),
            },
            // wyoming-piper's default: clients are used to chunks of this size.
            wyoming_samples_per_chunk: match env
                .positive("PIPER_WYOMING_SAMPLES_PER_CHUNK", 1024)?
            {
                n if n > MAX_SAMPLES_PER_CHUNK => {
                    return Err(env.invalid(
                        "PIPER_WYOMING_SAMPLES_PER_CHUNK",
                        &n.to_string(),
                        &format!("must be at most {MAX_SAMPLES_PER_CHUNK}"),
                    ))
                }
                n => n,
            },
            wyoming_max_connections: env.positive("PIPER_WYOMING_MAX_CONNECTIONS", 64)?,
            // Home Assistant opens the connection when the reply starts and
            // may pause while its language model calls tools: a minute
            // covers that, and still frees a forgotten connection.
            wyoming_idle_timeout: match env.seconds("PIPER_WYOMING_IDLE_TIMEOUT", 60.0)? {
                d if d.is_zero() => {
                    return Err(env.invalid("PIPER_WYOMING_IDLE_TIMEOUT", "0", "must be above 0"))
                }
                d => d,
            },
            wyoming_zeroconf: match env.get("PIPER_WYOMING_ZEROCONF").map(str::trim) {
                None | Some("") => None,
                Some(name) => {
                    zeroconf_name(name)
                        .map_err(|why| env.invalid("PIPER_WYOMING_ZEROCONF", name, why))?;
                    Some(name.to_string())
                }
            },
        })
    }

    /// Text of `piperd --help`.
    pub fn help() -> String {
        let mut out = String::from(
            "piperd: a supervised HTTP server for Piper text-to-speech\n\n\
             Usage: piperd [--help]\n       piperd say [OPTIONS] [FILE...]   (speak text to a file; piperd say --help)\n\nConfigured by environment variables:\n",
        );
        for (name, default, meaning) in VARIABLES {
            out.push_str(&format!("  {name:<28} {meaning} (default: {default})\n"));
        }
        out
    }
}

struct Env<'a>(&'a HashMap<String, String>);

impl Env<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn invalid(&self, name: &'static str, value: &str, reason: &str) -> ConfigError {
        ConfigError {
            name,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    fn parse<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e: T::Err| self.invalid(name, raw, &e.to_string())),
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn pairs(&self, name: &'static str) -> Result<HashMap<String, String>, ConfigError> {
        self.list(name)
            .into_iter()
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => Ok((
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_end_matches(".onnx").to_string(),
                )),
                _ => Err(self.invalid(name, &pair, "expected name=voice")),
            })
            .collect()
    }

    fn api_keys(&self) -> Result<Vec<String>, ConfigError> {
        let mut keys = self.list("PIPER_API_KEYS");
        if let Some(path) = self.get("PIPER_API_KEYS_FILE") {
            let text = std::fs::read_to_string(path)
                .map_err(|e| self.invalid("PIPER_API_KEYS_FILE", path, &e.to_string()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        Ok(keys)
    }

    fn positive(&self, name: &'static str, default: usize) -> Result<usize, ConfigError> {
        let value = self.parse(name, default)?;
        if value == 0 {
            return Err(self.invalid(name, "0", "must be at least 1"));
        }
        Ok(value)
    }

    fn seconds(&self, name: &'static str, default: f64) -> Result<Duration, ConfigError> {
        let value: f64 = self.parse(name, default)?;
        if !value.is_finite() || value < 0.0 {
            let raw = self.get(name).unwrap_or_default();
            return Err(self.invalid(name, raw, "must be a number of seconds, 0 or more"));
        }
        Ok(Duration::from_secs_f64(value))
    }
}

/// Checks a name given in `PIPER_WYOMING_ZEROCONF`: one DNS label (at most
/// 63 bytes), without dots, which would change the service it names.
fn zeroconf_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("must not be empty")
    } else if name.len() > 63 {
        Err("must be at most 63 bytes (one DNS label)")
    } else if name.contains('.') || name.chars().any(char::is_control) {
        Err("must not hold dots or control characters")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroconf_names_are_one_label() {
        assert!(zeroconf_name("piperd").is_ok());
        assert!(zeroconf_name("Living room TTS").is_ok());
        assert!(zeroconf_name("").is_err());
        assert!(zeroconf_name("a.b").is_err());
        assert!(zeroconf_name(&"x".repeat(64)).is_err());
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(config.port, 5050);
        assert_eq!(config.host.to_string(), "127.0.0.1");
        assert_eq!(config.chunk_size, 5000);
        assert_eq!(config.max_processes, 3);
        assert_eq!(config.idle_timeout, Duration::from_secs(120));
        assert_eq!(config.config_cache_ttl, Duration::from_secs(300));
        assert_eq!(config.queue_timeout, Duration::from_secs(30));
        assert_eq!(config.header_timeout, Duration::from_secs(10));
        assert_eq!(config.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.wyoming_port, Some(10200));
        assert_eq!(config.wyoming_samples_per_chunk, 1024);
        assert_eq!(config.wyoming_idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn wyoming_port_zero_turns_the_listener_off() {
        let config = Config::from_vars(&vars(&[("PIPER_WYOMING_PORT", "0")])).unwrap();
        assert_eq!(config.wyoming_port, None);
    }

    #[test]
    fn an_invalid_value_names_its_variable() {
        for (name, value) in [
            ("PIPER_PORT", "70000"),
            ("PIPER_CHUNK_SIZE", "0"),
            ("PIPER_MAX_PROCESSES", "many"),
            ("PIPER_PROCESS_IDLE_TIMEOUT", "-1"),
            ("PIPER_HOST", "not-an-address"),
            ("PIPER_LOG_FORMAT", "xml"),
            ("PIPER_WYOMING_PORT", "65536"),
            ("PIPER_MARYTTS_PORT", "-1"),
            ("PIPER_WYOMING_SAMPLES_PER_CHUNK", "0"),
            ("PIPER_WYOMING_SAMPLES_PER_CHUNK", "1000000"),
            ("PIPER_WYOMING_IDLE_TIMEOUT", "0"),
        ] {
            let err = Config::from_vars(&vars(&[(name, value)])).unwrap_err();
            assert_eq!(err.name, name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn fractional_seconds_are_accepted() {
        let config = Config::from_vars(&vars(&[("PIPER_PROCESS_IDLE_TIMEOUT", "0.5")])).unwrap();
        assert_eq!(config.idle_timeout, Duration::from_millis(500));
    }

    /// The `"PIPER_..."` literals of a source text, up to its tests.
    fn names_read_in(source: &str) -> Vec<String> {
        let code = source.split("#[cfg(test)]").next().unwrap();
        code.split("\"PIPER_")
            .skip(1)
            .map(|rest| {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                format!("PIPER_{name}")
            })
            .collect()
    }

    #[test]
    fn every_variable_read_is_listed_for_help() {
        let read: Vec<String> = [include_str!("config.rs"), include_str!("main.rs")]
            .iter()
            .flat_map(|source| names_read_in(source))
            .collect();
        assert!(read.len() > 30, "the scan found too few names: {read:?}");
        for name in &read {
            assert!(
                VARIABLES.iter().any(|(listed, _, _)| listed == name),
                "{name} is read but missing from VARIABLES (and so from --help)"
            );
        }
    }

    #[test]
    fn help_lists_every_variable() {
        let help = Config::help();
        for (name, _, _) in VARIABLES {
            assert!(help.contains(name), "{name} missing from --help");
        }
    }
}
