"""piperd engine: one Piper voice served over a framed stdin/stdout protocol.

piperd runs this program once per warm voice, with the interpreter of the
project's virtual environment. It loads the voice with the `piper` package's
Python API, announces that it is ready, then answers synthesis requests. The
protocol is documented in docs/engine-protocol.md; in short:

  stdin   one JSON object per line: {"id": 7, "text": "...", options...}
          to synthesize (optionally on "threads": n onnxruntime threads),
          or {"cancel": 7} to stop request 7 early
  stdout  binary frames only:  b"PD" | kind (1 byte) | 0 | id (u32 LE)
                               | payload length (u32 LE) | payload
          kinds: R ready (JSON), A audio (s16le PCM), D done (JSON),
                 X error (JSON), C cancelled (empty)
  stderr  human-readable logs, kept by piperd for error reports.

Up to PIPER_ENGINE_PARALLEL requests are synthesized at once, on threads
that share the loaded voice. A request runs on onnxruntime's default threads
(every core) unless it names its own count: piperd gives a sentence alone
every core, and sentences side by side one core each, because two syntheses
on every core each fight over the cores. One onnxruntime session exists per
thread count asked for, made on first use, except PIPER_ENGINE_THREADS (the
count piperd asks for when sentences share the cores), made ahead. All of
them share one memory arena, so the engine's memory follows what it
synthesizes at once, not how many sessions it has.

The program ends as soon as stdin closes, even in the middle of an utterance,
so that it can never outlive the server that feeds it.
"""

import json
import os
import queue
import struct
import sys
import threading
import time

HEADER = struct.Struct("<2sBBII")
MAGIC = b"PD"
READY, AUDIO, DONE, ERROR, CANCELLED = (ord(k) for k in "RADXC")
OPTION_KEYS = ("speaker_id", "length_scale", "noise_scale", "noise_w_scale", "volume")

_out = sys.stdout.buffer
_out_lock = threading.Lock()
_local = threading.local()


class Cancelled(Exception):
    """A request piperd took back (`{"cancel": id}`) before it was done."""


def log(message):
    sys.stderr.write(f"engine: {message}\n")
    sys.stderr.flush()


def send(kind, request_id, payload=b""):
    with _out_lock:
        _out.write(HEADER.pack(MAGIC, kind, 0, request_id, len(payload)))
        _out.write(payload)
        _out.flush()


def send_json(kind, request_id, obj):
    send(kind, request_id, json.dumps(obj).encode("utf-8"))


class Requests:
    """Requests read but not answered yet, each with the onnxruntime run
    options that can stop its synthesis from another thread."""

    def __init__(self):
        import onnxruntime

        self._run_options = onnxruntime.RunOptions
        self._lock = threading.Lock()
        self._live = {}
        self.inbox = queue.Queue()

    def add(self, request):
        options = self._run_options()
        with self._lock:
            self._live[int(request.get("id", 0))] = options
        self.inbox.put((request, options))

    def cancel(self, request_id):
        with self._lock:
            options = self._live.get(request_id)
        if options is not None:
            options.terminate = True

    def done(self, request_id):
        with self._lock:
            self._live.pop(request_id, None)


_arena_registered = False


def register_shared_arena(onnxruntime):
    """One memory arena for every session of the engine: a session per
    thread count (and per graph) must not mean an arena each, each grown to
    its own peak."""
    global _arena_registered
    if _arena_registered:
        return
    onnxruntime.create_and_register_allocator(
        onnxruntime.OrtMemoryInfo(
            "Cpu",
            onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR,
            0,
            onnxruntime.OrtMemType.DEFAULT,
        ),
        onnxruntime.OrtArenaCfg(0, 0, -1, -1),
    )
    _arena_registered = True


class Sessions:
    """One graph's onnxruntime sessions, one per intra-op thread count: a
    run goes to the session the calling thread's request asked for
    (`_local.threads`), with that request's run options, so that
    `Requests.cancel` can stop a synthesis midway. Stands in for Piper's
    single session too (the whole-sentence path)."""

    def __init__(self, model):
        import onnxruntime

        self._ort = onnxruntime
        # A path or the serialized graph.
        self._model = model
        self._lock = threading.Lock()
        # Thread counts whose session is being made, outside the lock.
        self._pending = set()
        register_shared_arena(onnxruntime)
        self._by_threads = {0: self._make(0)}

    def _make(self, threads):
        options = self._ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.add_session_config_entry("session.use_env_allocators", "1")
        # Memory patterns are planned per input shape, and every sentence has
        # its own: they only add peaks (measured: two sentences side by side
        # 628 MiB with them, 504 MiB without, at the same speed).
        options.enable_mem_pattern = False
        return self._ort.InferenceSession(
            self._model, sess_options=options, providers=["CPUExecutionProvider"]
        )

    def session(self, threads):
        """The session on `threads` threads. One still being made in the
        background stands in as the default session: a request must never
        wait on the low-priority thread that makes it (on a busy machine that
        thread gets almost no CPU, and the request would wait for seconds)."""
        with self._lock:
            found = self._by_threads.get(threads)
            if found is not None:
                return found
            if threads in self._pending:
                return self._by_threads[0]
            self._pending.add(threads)
        try:
            made = self._make(threads)
        finally:
            with self._lock:
                self._pending.discard(threads)
        with self._lock:
            return self._by_threads.setdefault(threads, made)

    def run(self, output_names, input_feed, run_options=None):
        session = self.session(getattr(_local, "threads", 0) or 0)
        return session.run(output_names, input_feed, getattr(_local, "run_options", None))

    def __getattr__(self, name):
        return getattr(self._by_threads[0], name)


def read_requests(requests):
    """Reads request lines; ends the whole program when stdin closes."""
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except ValueError as err:
            request = {"id": 0, "invalid": f"request is not JSON: {err}"}
        if not isinstance(request, dict):
            request = {"id": 0, "invalid": "request is not a JSON object"}
        if "cancel" in request:
            try:
                requests.cancel(int(request["cancel"]))
            except (TypeError, ValueError):
                log(f"ignored a cancel line without a request id: {line[:80]!r}")
            continue
        requests.add(request)
    # The server closed our stdin (or died): stop at once, mid-utterance or not.
    os._exit(0)


class Engine:
    """The loaded voice: Piper's voice (phonemes, config, and the whole-
    sentence path) and, when its graph splits, the chunked path."""

    def __init__(self, voice, stream, sessions):
        self.voice = voice
        # None: the graph could not be split; sentences are synthesized whole.
        self.stream = stream
        # Every Sessions of the voice, to make a thread count's ahead of use.
        self.sessions = sessions


def load_voice(model_path, config_path):
    from piper import PiperConfig, PiperVoice

    with open(config_path, "r", encoding="utf-8") as config_file:
        config = PiperConfig.from_dict(json.load(config_file))
    try:
        import split_graph
        import stream_synth

        graph, cache = split_graph.load_or_split(model_path, log)
        frontend, decoder = Sessions(graph.frontend), Sessions(graph.decoder)
        # Piper's voice serves for phonemes and config only: no whole graph
        # is loaded, so its memory is not spent.
        voice = PiperVoice(session=frontend, config=config)
        stream = stream_synth.StreamVoice(voice, graph, frontend, decoder, cache, log)
        return Engine(voice, stream, [frontend, decoder])
    except Exception as err:  # any graph piper can run must still speak
        log(
            f"warning: cannot split {model_path} for chunked synthesis "
            f"({type(err).__name__}: {err}); every sentence is synthesized whole"
        )
    whole = Sessions(str(model_path))
    return Engine(PiperVoice(session=whole, config=config), None, [whole])


def synthesize(engine, request, run_options):
    request_id = int(request.get("id", 0))
    if "invalid" in request:
        send_json(ERROR, request_id, {"message": request["invalid"]})
        return
    text = request.get("text")
    if not isinstance(text, str):
        send_json(ERROR, request_id, {"message": "request has no text"})
        return
    options = {key: request[key] for key in OPTION_KEYS if request.get(key) is not None}
    silence = float(request.get("sentence_silence") or 0.0)
    silence_bytes = b"\x00\x00" * int(engine.voice.config.sample_rate * silence)
    if run_options.terminate:
        send(CANCELLED, request_id)
        return
    try:
        threads = min(max(0, int(request.get("threads") or 0)), os.cpu_count() or 1)
        for sessions in engine.sessions:
            sessions.session(threads)
        _local.threads = threads
    except Exception as err:  # a bad count, or a session that cannot be made
        log(f"request {request_id}: no session for {request.get('threads')!r} threads: {err}")
        send_json(ERROR, request_id, {"message": f"{type(err).__name__}: {err}"})
        return
    _local.run_options = run_options
    # Small first chunks only where a listener waits for this audio to start.
    first = request.get("first", True) is not False
    samples = 0
    try:
        if engine.stream is not None:
            pieces = stream_sentences(engine.stream, text, options, first, run_options)
        else:
            pieces = whole_sentences(engine.voice, text, options)
        for pcm, sentence_ends in pieces:
            if run_options.terminate:
                raise Cancelled()
            if sentence_ends:
                pcm += silence_bytes
            if not pcm:
                continue
            samples += len(pcm) // 2
            send(AUDIO, request_id, pcm)
        if run_options.terminate:
            raise Cancelled()
    except Exception as err:  # an utterance the engine cannot speak must not end it
        if run_options.terminate:
            send(CANCELLED, request_id)
            return
        log(f"request {request_id} failed: {type(err).__name__}: {err}")
        send_json(ERROR, request_id, {"message": f"{type(err).__name__}: {err}"})
        return
    finally:
        _local.run_options = None
        _local.threads = 0
    if samples == 0:
        send_json(ERROR, request_id, {"message": "nothing speakable", "unspeakable": True})
        return
    send_json(DONE, request_id, {"samples": samples})


def stream_sentences(stream, text, options, first, run_options):
    """(pcm, ends a sentence) per decoder chunk, sentence by sentence."""

    def check():
        if run_options.terminate:
            raise Cancelled()

    for phonemes in stream.sentences(text):
        for kind, value in stream.synthesize(phonemes, options, first, check):
            if kind == "audio":
                yield value, False
        # Its silence, if any, after its last chunk.
        yield b"", True
        # Only the first sentence of a request is waited on.
        first = False


def whole_sentences(voice, text, options):
    """Piper's own synthesis, one sentence at a time, scaled to full peak."""
    from piper import SynthesisConfig

    for chunk in voice.synthesize(text, syn_config=SynthesisConfig(**options)):
        yield chunk.audio_int16_bytes, True


def prepare(engine, threads):
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass
    try:
        for sessions in engine.sessions:
            sessions.session(threads)
    except Exception as err:  # a request that asks for it reports the error
        log(f"cannot prepare a session on {threads} threads: {err}")


def serve(engine, requests):
    while True:
        request, run_options = requests.inbox.get()
        try:
            synthesize(engine, request, run_options)
        finally:
            requests.done(int(request.get("id", 0)))


def check():
    """`--check`: can this interpreter run the engine at all?"""
    from importlib.metadata import version

    import onnxruntime  # noqa: F401
    import piper  # noqa: F401

    print(f"piper-tts {version('piper-tts')}")
    return 0


def main():
    if sys.argv[1:2] == ["--check"]:
        return check()
    if len(sys.argv) < 3:
        log("usage: piper_worker.py MODEL.onnx MODEL.onnx.json")
        return 2
    model_path, config_path = sys.argv[1], sys.argv[2]
    parallel = max(1, int(os.environ.get("PIPER_ENGINE_PARALLEL", "1") or 1))

    started = time.monotonic()
    try:
        requests = Requests()
        threading.Thread(target=read_requests, args=(requests,), daemon=True).start()
        engine = load_voice(model_path, config_path)
    except Exception as err:
        log(f"cannot load voice {model_path}: {type(err).__name__}: {err}")
        return 3
    # Warm the sessions so that the first real request is not the slow one.
    warm = engine.voice.phonemize("Ready.")
    if engine.stream is not None:
        for phonemes in warm:
            for _ in engine.stream.synthesize(phonemes, {}):
                pass
    else:
        for _ in whole_sentences(engine.voice, "Ready.", {}):
            pass
    load_ms = (time.monotonic() - started) * 1000.0

    from importlib.metadata import version

    send_json(
        READY,
        0,
        {
            "sample_rate": engine.voice.config.sample_rate,
            "num_speakers": engine.voice.config.num_speakers,
            "engine": f"piper-tts {version('piper-tts')}",
            "load_ms": round(load_ms, 1),
            "threads": parallel,
            "cancel": True,
            "pid": os.getpid(),
            "chunked": engine.stream is not None,
            **(engine.stream.describe() if engine.stream is not None else {}),
        },
    )
    log(f"ready in {load_ms:.0f} ms: {model_path}")
    # The session for sentences side by side is made after the ready frame,
    # on a low-priority thread, so it costs neither the cold start nor the
    # first requests; a request that needs it before then waits for it.
    shared = int(os.environ.get("PIPER_ENGINE_THREADS", "0") or 0)
    if shared > 0:
        threading.Thread(target=prepare, args=(engine, shared), daemon=True).start()
    # onnxruntime releases the GIL while it runs, and piper serializes its
    # phonemizer, so the threads share one loaded model.
    for _ in range(parallel - 1):
        threading.Thread(target=serve, args=(engine, requests), daemon=True).start()
    serve(engine, requests)


if __name__ == "__main__":
    sys.exit(main())
