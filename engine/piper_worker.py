"""piperd engine: one Piper voice served over a framed stdin/stdout protocol.

piperd runs this program once per warm voice, with the interpreter of the
project's virtual environment. It loads the voice with the `piper` package's
Python API, announces that it is ready, then answers synthesis requests one
at a time. The protocol is documented in docs/engine-protocol.md; in short:

  stdin   one JSON object per line: {"id": 7, "text": "...", options...};
          PIPER_ENGINE_PARALLEL requests are synthesized at once
  stdout  binary frames only:  b"PD" | kind (1 byte) | 0 | id (u32 LE)
                               | payload length (u32 LE) | payload
          kinds: R ready (JSON), A audio (s16le PCM), D done (JSON), X error (JSON)
  stderr  human-readable logs, kept by piperd for error reports.

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
READY, AUDIO, DONE, ERROR = b"R"[0], b"A"[0], b"D"[0], b"X"[0]
OPTION_KEYS = ("speaker_id", "length_scale", "noise_scale", "noise_w_scale", "volume")

_out = sys.stdout.buffer
_out_lock = threading.Lock()


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


def read_requests(inbox):
    """Reads request lines; ends the whole program when stdin closes."""
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if not line:
            continue
        try:
            inbox.put(json.loads(line))
        except ValueError as err:
            inbox.put({"id": 0, "invalid": f"request is not JSON: {err}"})
    # The server closed our stdin (or died): stop at once, mid-utterance or not.
    os._exit(0)


def load_voice(model_path, config_path, threads):
    import onnxruntime
    from piper import PiperConfig, PiperVoice

    with open(config_path, "r", encoding="utf-8") as config_file:
        config = PiperConfig.from_dict(json.load(config_file))
    options = onnxruntime.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=config)


def synthesize(voice, request):
    from piper import SynthesisConfig

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
    silence_bytes = b"\x00\x00" * int(voice.config.sample_rate * silence)
    samples = 0
    try:
        for chunk in voice.synthesize(text, syn_config=SynthesisConfig(**options)):
            pcm = chunk.audio_int16_bytes + silence_bytes
            samples += len(pcm) // 2
            send(AUDIO, request_id, pcm)
    except Exception as err:  # an utterance the engine cannot speak must not end it
        log(f"request {request_id} failed: {type(err).__name__}: {err}")
        send_json(ERROR, request_id, {"message": f"{type(err).__name__}: {err}"})
        return
    if samples == 0:
        send_json(ERROR, request_id, {"message": "nothing speakable", "unspeakable": True})
        return
    send_json(DONE, request_id, {"samples": samples})


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
    threads = int(os.environ.get("PIPER_ENGINE_THREADS", "0") or 0)
    parallel = max(1, int(os.environ.get("PIPER_ENGINE_PARALLEL", "1") or 1))

    inbox = queue.Queue()
    threading.Thread(target=read_requests, args=(inbox,), daemon=True).start()

    started = time.monotonic()
    try:
        voice = load_voice(model_path, config_path, threads)
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
            "pid": os.getpid(),
        },
    )
    log(f"ready in {load_ms:.0f} ms: {model_path}")
    # Several sentences at once: onnxruntime releases the GIL while it runs,
    # and piper serializes its phonemizer, so threads share one loaded model.
    for _ in range(parallel - 1):
        threading.Thread(target=serve, args=(voice, inbox), daemon=True).start()
    serve(voice, inbox)


def serve(voice, inbox):
    while True:
        synthesize(voice, inbox.get())


if __name__ == "__main__":
    sys.exit(main())
