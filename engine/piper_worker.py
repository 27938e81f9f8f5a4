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


class Sessions:
    """The voice's onnxruntime sessions, one per intra-op thread count, in
    the place of Piper's single session: a run goes to the session the
    calling thread's request asked for, with that request's run options, so
    that `Requests.cancel` can stop a synthesis midway."""

    def __init__(self, model_path):
        import onnxruntime

        self._ort = onnxruntime
        self._model_path = str(model_path)
        self._lock = threading.Lock()
        # Thread counts whose session is being made, outside the lock.
        self._pending = set()
        # One arena for every session: a session per thread count must not
        # mean an arena per thread count, each grown to its own peak.
        onnxruntime.create_and_register_allocator(
            onnxruntime.OrtMemoryInfo(
                "Cpu",
                onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR,
                0,
                onnxruntime.OrtMemType.DEFAULT,
            ),
            onnxruntime.OrtArenaCfg(0, 0, -1, -1),
        )
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
            self._model_path, sess_options=options, providers=["CPUExecutionProvider"]
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
        session = getattr(_local, "session", None) or self._by_threads[0]
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


def load_voice(model_path, config_path):
    from piper import PiperConfig, PiperVoice

    with open(config_path, "r", encoding="utf-8") as config_file:
        config = PiperConfig.from_dict(json.load(config_file))
    return PiperVoice(session=Sessions(model_path), config=config)


def synthesize(voice, request, run_options):
    from piper import SynthesisConfig

    request_id = int(request.get("id", 0))
    if "invalid" in request:
        send_json(ERROR, request_id, {"message": request["invalid"]})
        return
    text = request.get("text")
    if not isinstance(text, str):
        send_json(ERROR, request_id, {"message": "request has no text"})
        return
    if request.get("phonemize"):
        phonemize(voice, request_id, text)
        return
    options = {key: request[key] for key in OPTION_KEYS if request.get(key) is not None}
    silence = float(request.get("sentence_silence") or 0.0)
    silence_bytes = b"\x00\x00" * int(voice.config.sample_rate * silence)
    samples = 0
    if run_options.terminate:
        send(CANCELLED, request_id)
        return
    try:
        threads = min(max(0, int(request.get("threads") or 0)), os.cpu_count() or 1)
        _local.session = voice.session.session(threads)
    except Exception as err:  # a bad count, or a session that cannot be made
        log(f"request {request_id}: no session for {request.get('threads')!r} threads: {err}")
        send_json(ERROR, request_id, {"message": f"{type(err).__name__}: {err}"})
        return
    _local.run_options = run_options
    try:
        for chunk in voice.synthesize(text, syn_config=SynthesisConfig(**options)):
            if run_options.terminate:
                raise Cancelled()
            pcm = chunk.audio_int16_bytes + silence_bytes
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
        _local.session = None
    if samples == 0:
        send_json(ERROR, request_id, {"message": "nothing speakable", "unspeakable": True})
        return
    send_json(DONE, request_id, {"samples": samples})


def phonemize(voice, request_id, text):
    """A phonemize request: the phonemes piper would speak, without synthesis.

    One A frame holds them as UTF-8 JSON (a list with one string per sentence
    piper finds), padded with spaces to an even length, then D.
    """
    try:
        sentences = ["".join(phonemes) for phonemes in voice.phonemize(text)]
    except Exception as err:  # text the phonemizer cannot read must not end the engine
        log(f"request {request_id}: phonemize failed: {type(err).__name__}: {err}")
        send_json(ERROR, request_id, {"message": f"{type(err).__name__}: {err}"})
        return
    payload = json.dumps(sentences, ensure_ascii=False).encode("utf-8")
    payload += b" " * (len(payload) % 2)
    send(AUDIO, request_id, payload)
    send_json(DONE, request_id, {"samples": len(payload) // 2})


def prepare(voice, threads):
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass
    try:
        voice.session.session(threads)
    except Exception as err:  # a request that asks for it reports the error
        log(f"cannot prepare a session on {threads} threads: {err}")


def serve(voice, requests):
    while True:
        request, run_options = requests.inbox.get()
        try:
            synthesize(voice, request, run_options)
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
        voice = load_voice(model_path, config_path)
    except Exception as err:
        log(f"cannot load voice {model_path}: {type(err).__name__}: {err}")
        return 3
    # Warm the session so that the first real request is not the slow one.
    for _ in voice.synthesize("Ready."):
        pass
    load_ms = (time.monotonic() - started) * 1000.0

    from importlib.metadata import version

    send_json(
        READY,
        0,
        {
            "sample_rate": voice.config.sample_rate,
            "num_speakers": voice.config.num_speakers,
            "engine": f"piper-tts {version('piper-tts')}",
            "load_ms": round(load_ms, 1),
            "threads": parallel,
            "cancel": True,
            "pid": os.getpid(),
        },
    )
    log(f"ready in {load_ms:.0f} ms: {model_path}")
    # The session for sentences side by side is made after the ready frame,
    # on a low-priority thread, so it costs neither the cold start nor the
    # first requests; a request that needs it before then waits for it.
    shared = int(os.environ.get("PIPER_ENGINE_THREADS", "0") or 0)
    if shared > 0:
        threading.Thread(target=prepare, args=(voice, shared), daemon=True).start()
    # onnxruntime releases the GIL while it runs, and piper serializes its
    # phonemizer, so the threads share one loaded model.
    for _ in range(parallel - 1):
        threading.Thread(target=serve, args=(voice, requests), daemon=True).start()
    serve(voice, requests)


if __name__ == "__main__":
    sys.exit(main())
