"""The raw engine side of `make bench`: Piper's own Python API, no server.

Run by benches/piperd.rs with the project's interpreter (.venv/bin/python):

  raw_engine.py load MODEL        time to import, load and say one word
  raw_engine.py serve MODEL       one timed synthesis per stdin line:
                                  {"text": ..., "first": false} the whole text,
                                  {"text": ..., "first": true} its first audio chunk
  raw_engine.py throughput MODEL TEXTS THREADS OFFSET
                                  audio seconds made in windows: each stdin line
                                  is a window length in seconds

TEXTS is a JSON file holding a list of strings. THREADS is onnxruntime's intra-op
thread count (0: its default), set the way engine/piper_worker.py sets it.
`serve` and `throughput` print {"ready": true} once the voice is loaded and warm,
then answer stdin lines; two `throughput` copies given their lines together run
their windows together. Every answer is one JSON object on one stdout line.
Timings cover what piperd's engine does per sentence too: synthesis and the
conversion to 16-bit PCM bytes.
"""

import json
import resource
import sys
import time

STARTED = time.monotonic()


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def max_rss_mb():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_voice(model_path, threads=0):
    import onnxruntime
    from piper import PiperConfig, PiperVoice

    with open(model_path + ".json", "r", encoding="utf-8") as config_file:
        config = PiperConfig.from_dict(json.load(config_file))
    options = onnxruntime.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    # The session option piperd's engine adds, so that it is no advantage
    # of piperd's over the raw engine.
    options.enable_mem_pattern = False
    session = onnxruntime.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=config)


def read_texts(path):
    with open(path, "r", encoding="utf-8") as texts_file:
        texts = json.load(texts_file)
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise SystemExit(f"{path}: expected a JSON list of strings")
    return texts


def warm(voice):
    for chunk in voice.synthesize("Ready."):
        chunk.audio_int16_bytes


def synthesize_all(voice, text):
    """Seconds of audio made for `text`."""
    samples = 0
    for chunk in voice.synthesize(text):
        samples += len(chunk.audio_int16_bytes) // 2
    return samples / voice.config.sample_rate


def mode_load(model_path):
    # Same steps as the engine before its ready frame: import, load, one word.
    began = time.monotonic()
    import onnxruntime  # noqa: F401
    import piper  # noqa: F401

    imported = time.monotonic()
    voice = load_voice(model_path)
    loaded = time.monotonic()
    warm(voice)
    done = time.monotonic()
    emit(
        {
            "since_interpreter_start_s": done - STARTED,
            "import_s": imported - began,
            "load_s": loaded - imported,
            "first_synth_s": done - loaded,
            "load_and_first_synth_s": done - imported,
            "max_rss_mb": max_rss_mb(),
        }
    )


def mode_serve(model_path):
    # One request per stdin line, so that piperd and the raw engine can take
    # turns on the same texts: {"text": ..., "first": false} times the whole
    # text, {"first": true} the first audio chunk of the whole text given to
    # `synthesize` (which phonemizes all of it first), then stops.
    voice = load_voice(model_path)
    warm(voice)
    emit({"ready": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        text = request["text"]
        if request.get("first"):
            began = time.monotonic()
            voice.phonemize(text)
            phonemize = time.monotonic() - began
            began = time.monotonic()
            chunks = iter(voice.synthesize(text))
            pcm = next(chunks).audio_int16_bytes
            seconds = time.monotonic() - began
            chunks.close()
            emit(
                {
                    "seconds": seconds,
                    "phonemize_s": phonemize,
                    "audio_s": len(pcm) / 2 / voice.config.sample_rate,
                    "max_rss_mb": max_rss_mb(),
                }
            )
        else:
            began = time.monotonic()
            audio = synthesize_all(voice, text)
            emit(
                {
                    "seconds": time.monotonic() - began,
                    "audio_s": audio,
                    "max_rss_mb": max_rss_mb(),
                }
            )


def mode_throughput(model_path, texts_path, threads, offset):
    # Windows on demand: each stdin line is a window length in seconds; the
    # texts continue where the previous window stopped.
    texts = read_texts(texts_path)
    voice = load_voice(model_path, threads)
    warm(voice)
    emit({"ready": True})
    i = offset
    for line in sys.stdin:
        if not line.strip():
            continue
        window_s = float(line)
        began = time.monotonic()
        deadline = began + window_s
        samples = 0
        texts_done = 0
        # Bounded: stops at the first sentence that ends after the deadline.
        while time.monotonic() < deadline:
            for chunk in voice.synthesize(texts[i % len(texts)]):
                pcm = chunk.audio_int16_bytes
                if time.monotonic() > deadline:
                    break
                samples += len(pcm) // 2
            else:
                texts_done += 1
                i += 1
        emit(
            {
                "audio_s": samples / voice.config.sample_rate,
                "wall_s": window_s,
                "texts_done": texts_done,
                "max_rss_mb": max_rss_mb(),
            }
        )


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "load":
        mode_load(args[1])
    elif len(args) == 2 and args[0] == "serve":
        mode_serve(args[1])
    elif len(args) == 5 and args[0] == "throughput":
        mode_throughput(args[1], args[2], int(args[3]), int(args[4]))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
