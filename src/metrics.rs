//! Prometheus metrics: names, buckets and the exporter handle.
//!
//! All names live here so that the dashboards in `dashboards/` and the code
//! agree on one list. Units are base units (seconds, bytes) and counters end
//! in `_total`. Label values are bounded: voices come from the voices folder,
//! routes from the route table, codes from the error enum, never raw input.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "piperd_http_requests_total";
pub const HTTP_DURATION: &str = "piperd_http_request_duration_seconds";
pub const TIME_TO_FIRST_AUDIO: &str = "piperd_time_to_first_audio_seconds";
pub const SYNTHESIS_DURATION: &str = "piperd_synthesis_duration_seconds";
/// Audio length per request; its `_sum` is the audio time produced.
pub const AUDIO_DURATION: &str = "piperd_audio_duration_seconds";
pub const REAL_TIME_FACTOR: &str = "piperd_real_time_factor";
pub const REQUEST_CHARACTERS: &str = "piperd_request_characters";
pub const REQUEST_CHUNKS: &str = "piperd_request_chunks";
pub const PROCESSES: &str = "piperd_processes";
pub const PROCESSES_MAX: &str = "piperd_processes_max";
pub const PROCESS_STARTS: &str = "piperd_process_starts_total";
pub const PROCESS_RESTARTS: &str = "piperd_process_restarts_total";
pub const PROCESS_EXITS: &str = "piperd_process_exits_total";
pub const COLD_START: &str = "piperd_process_cold_start_seconds";
pub const PROCESS_MEMORY: &str = "piperd_process_resident_memory_bytes";
pub const SERVER_MEMORY: &str = "piperd_server_resident_memory_bytes";
pub const VOICE_FAILED: &str = "piperd_voice_failed";
pub const QUEUE_DEPTH: &str = "piperd_queue_depth";
pub const QUEUE_WAIT: &str = "piperd_queue_wait_seconds";
/// Requests admitted and not yet given their first audio, over the server.
pub const QUEUE_WAITING: &str = "piperd_requests_waiting";
/// Requests refused because `PIPER_MAX_QUEUE` were waiting.
pub const ADMISSION_REFUSED: &str = "piperd_admission_refused_total";
pub const PREEMPTIONS: &str = "piperd_preemptions_total";
/// Sentences sent to engines, by voice and `cores`: `all` (alone on every
/// core) or `shared` (beside others, on a share of the cores).
pub const SENTENCES: &str = "piperd_engine_sentences_total";
pub const CONFIG_CACHE_LOOKUPS: &str = "piperd_config_cache_lookups_total";
pub const AUDIO_CACHE_LOOKUPS: &str = "piperd_audio_cache_lookups_total";
pub const AUDIO_CACHE_BYTES: &str = "piperd_audio_cache_bytes";
pub const ERRORS: &str = "piperd_errors_total";
pub const BUILD_INFO: &str = "piperd_build_info";
/// Wyoming connections accepted (and served), and refused at the cap.
pub const WYOMING_CONNECTIONS: &str = "piperd_wyoming_connections_total";
pub const WYOMING_REFUSED: &str = "piperd_wyoming_connections_refused_total";
pub const WYOMING_OPEN: &str = "piperd_wyoming_connections_open";
/// Events received from Wyoming clients, by `type` (known types, else `other`).
pub const WYOMING_EVENTS: &str = "piperd_wyoming_events_total";
/// Wyoming requests by `mode` (`synthesize`, `stream`) and `outcome`
/// (`done`, `failed`, `abandoned`: the client left first).
pub const WYOMING_REQUESTS: &str = "piperd_wyoming_requests_total";
/// From a request's first event to its last audio, by `mode`.
pub const WYOMING_DURATION: &str = "piperd_wyoming_request_duration_seconds";

/// ElevenLabs WebSockets open now.
pub const ELEVENLABS_SOCKETS_OPEN: &str = "piperd_elevenlabs_sockets_open";
/// ElevenLabs contexts (a stream-input socket is one) by `outcome`: `done`
/// (all its audio sent), `closed` (closed first: an interruption or the
/// socket's end), `failed`.
pub const ELEVENLABS_CONTEXTS: &str = "piperd_elevenlabs_contexts_total";

/// Buckets for durations: a few milliseconds (a cache hit) to a minute (a
/// long non-streamed text).
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Real-time factor: far below 1 when healthy, above 1 when overloaded.
const RTF_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0,
];
const CHARACTER_BUCKETS: &[f64] = &[
    10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0, 50000.0, 100000.0,
];
const CHUNK_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0];
/// Audio length per request: half a second (a word) to two hours (the
/// longest text accepted), not the latency buckets its `_seconds` suffix
/// would otherwise pick.
const AUDIO_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// Why an engine process ended: the `reason` label of [`PROCESS_EXITS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Idle,
    Crash,
    Hang,
    BadOutput,
    Evicted,
    ConfigChange,
    Memory,
    Shutdown,
}

impl ExitReason {
    pub fn label(self) -> &'static str {
        match self {
            ExitReason::Idle => "idle",
            ExitReason::Crash => "crash",
            ExitReason::Hang => "hang",
            ExitReason::BadOutput => "bad_output",
            ExitReason::Evicted => "evicted",
            ExitReason::ConfigChange => "config_change",
            ExitReason::Memory => "memory",
            ExitReason::Shutdown => "shutdown",
        }
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once and returns the handle `/metrics` renders.
pub fn install(max_processes: usize) -> PrometheusHandle {
    let handle = HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                // A full-name matcher wins over the suffix one.
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(AUDIO_DURATION.into()), AUDIO_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(REAL_TIME_FACTOR.into()), RTF_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(REQUEST_CHARACTERS.into()),
                        CHARACTER_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(REQUEST_CHUNKS.into()), CHUNK_BUCKETS)
                })
                .expect("bucket lists are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // In unit tests another recorder may already be installed: then
            // this handle simply renders nothing, which those tests accept.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone();
    gauge!(PROCESSES_MAX).set(max_processes as f64);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    handle
}

fn describe() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status.");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request duration by route (to the last byte)."
    );
    describe_histogram!(
        TIME_TO_FIRST_AUDIO,
        Unit::Seconds,
        "Time from request to the first audio of a synthesis, by voice."
    );
    describe_histogram!(
        SYNTHESIS_DURATION,
        Unit::Seconds,
        "Time from request to the last audio of a synthesis, by voice."
    );
    describe_histogram!(
        AUDIO_DURATION,
        Unit::Seconds,
        "Audio length per request, by voice; the sum is the audio produced."
    );
    describe_histogram!(
        REAL_TIME_FACTOR,
        "Synthesis time divided by audio time, by voice."
    );
    describe_histogram!(REQUEST_CHARACTERS, "Characters per synthesis request.");
    describe_histogram!(REQUEST_CHUNKS, "Chunks per synthesis request.");
    describe_gauge!(PROCESSES, "Engine processes running.");
    describe_gauge!(
        PROCESSES_MAX,
        "Configured maximum of engine processes (PIPER_MAX_PROCESSES)."
    );
    describe_counter!(PROCESS_STARTS, "Engine process starts by voice.");
    describe_counter!(
        PROCESS_RESTARTS,
        "Engine process restarts after a failure, by voice."
    );
    describe_counter!(PROCESS_EXITS, "Engine process exits by voice and reason.");
    describe_histogram!(
        COLD_START,
        Unit::Seconds,
        "Time from spawning an engine to its ready signal, by voice."
    );
    describe_gauge!(
        PROCESS_MEMORY,
        Unit::Bytes,
        "Resident memory of each voice's engine process."
    );
    describe_gauge!(
        SERVER_MEMORY,
        Unit::Bytes,
        "Resident memory of the server process itself."
    );
    describe_gauge!(
        VOICE_FAILED,
        "1 while a voice is failed after crash-looping."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Requests held by a voice's worker, waiting or in progress."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time a request waited for an engine process, by voice."
    );
    describe_gauge!(
        QUEUE_WAITING,
        "Requests admitted and not yet given their first audio, over the server."
    );
    describe_counter!(
        ADMISSION_REFUSED,
        "Requests refused at once because PIPER_MAX_QUEUE requests were waiting."
    );
    describe_counter!(
        PREEMPTIONS,
        "Times a request's first sentence took the cores of a long request's sentences, by voice."
    );
    describe_counter!(
        SENTENCES,
        "Sentences sent to engines, by voice and cores: all (alone on every core) or shared (beside others)."
    );
    describe_counter!(
        CONFIG_CACHE_LOOKUPS,
        "Voice config lookups by result (hit, miss, reloaded)."
    );
    describe_counter!(
        AUDIO_CACHE_LOOKUPS,
        "Audio cache lookups by result (hit, miss)."
    );
    describe_gauge!(
        AUDIO_CACHE_BYTES,
        Unit::Bytes,
        "Bytes of audio held by the audio cache."
    );
    describe_counter!(ERRORS, "Errors answered, by code.");
    describe_gauge!(BUILD_INFO, "Build information; always 1.");
    describe_counter!(WYOMING_CONNECTIONS, "Wyoming connections accepted.");
    describe_counter!(
        WYOMING_REFUSED,
        "Wyoming connections refused because PIPER_WYOMING_MAX_CONNECTIONS were open."
    );
    describe_gauge!(WYOMING_OPEN, "Wyoming connections open now.");
    describe_counter!(
        WYOMING_EVENTS,
        "Events received from Wyoming clients, by type (unknown types count as other)."
    );
    describe_counter!(
        WYOMING_REQUESTS,
        "Wyoming requests by mode (synthesize, stream) and outcome (done, failed, abandoned)."
    );
    describe_histogram!(
        WYOMING_DURATION,
        Unit::Seconds,
        "Wyoming request duration by mode, from its first event to its last audio."
    );
    describe_gauge!(
        ELEVENLABS_SOCKETS_OPEN,
        "ElevenLabs-compatible WebSockets open now."
    );
    describe_counter!(
        ELEVENLABS_CONTEXTS,
        "ElevenLabs contexts by outcome (done, closed, failed)."
    );
}
