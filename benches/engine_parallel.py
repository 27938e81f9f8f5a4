"""The engine alone, driven over its protocol: one request at a time on every
core against the raw engine's best configurations, first audio of one
sentence, and the engine's peak memory.

    .venv/bin/python benches/engine_parallel.py [--engine DIR] [--cache DIR]
        [--rounds 3] [--window 8] [--repeats 5] [--skip throughput,first,rss,cold]
        [--side-by-side]

No piperd is needed: the engine program (DIR/piper_worker.py, default this
checkout's engine/) is run with PIPER_ENGINE_PARALLEL=2, PIPER_ENGINE_THREADS=1,
as piperd runs it on a 2-core machine (and PIPER_ENGINE_SIDE_BY_SIDE=1 with
--side-by-side).

- throughput: audio seconds per wall second of a concurrency-1 loop: distinct
  1-3 sentence texts (the generator of benches/piperd.rs's throughput section,
  mean about 266 characters), each sent as one request without `threads`
  (every core), the next sent when the last is done. In each round, a window
  of the engine, then of benches/raw_engine.py with 1 process on default
  threads and with 2 processes on 1 intra-op thread each (the best raw
  configuration on 2 cores). Printed: each window, and the engine's ratio to
  each raw configuration over all rounds.
- first: the time from writing a request (alone, every core) to its first
  audio frame, for the 60/110/220/420-character sentences of benches/frames.py
  (median of --repeats), and to its done frame.
- rss: the engine's VmHWM after the first 700-character piece of
  benches/frames.py's 1,260-character sentence (as piperd cuts it), on every
  core and then on one thread, so both sessions are made.
- cold: VmHWM of an engine after its ready frame, started on an empty cache
  (the split of the graph and the calibration happen in that start).

The machine's 1-minute load average is printed beside every number.
"""

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(ROOT, ".venv/bin/python")
MODEL = os.path.join(ROOT, "voices/en_US-joe-medium.onnx")
HEADER = struct.Struct("<2sBBII")
# --side-by-side: the engine decodes a request's chunks side by side.
SIDE_BY_SIDE = False

sys.path.insert(0, os.path.join(ROOT, "benches"))
from frames import SENTENCES, long_sentence, peak_rss_mib  # noqa: E402

# -- the throughput texts of benches/piperd.rs ------------------------------

# The generator is peers.py's (splitmix64, as benches/piperd.rs's `Rng`).
from peers import Rng, prose  # noqa: E402


def throughput_texts(count=2000):
    seen, texts = set(), []
    for i in range(count * 2):
        text = prose(50_000 + i, 150 + Rng(90_000 + i).below(250))
        if text and text not in seen:
            seen.add(text)
            texts.append(text)
        if len(texts) == count:
            break
    return texts


# -- the engine over its protocol --------------------------------------------


def load():
    return os.getloadavg()[0]



class Engine:
    def __init__(self, engine_dir, cache_dir):
        env = dict(os.environ, PIPER_ENGINE_PARALLEL="2", PIPER_ENGINE_THREADS="1",
                   PIPER_ENGINE_CACHE_DIR=cache_dir,
                   PIPER_ENGINE_SIDE_BY_SIDE="1" if SIDE_BY_SIDE else "0")
        self.proc = subprocess.Popen(
            [PYTHON, "-u", os.path.join(engine_dir, "piper_worker.py"), MODEL, MODEL + ".json"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        kind, _, payload = self.frame()
        assert kind == "R", kind
        self.ready = json.loads(payload)
        self.rate = self.ready["sample_rate"]
        self.next_id = 1

    def frame(self):
        header = self.proc.stdout.read(HEADER.size)
        if len(header) < HEADER.size:
            raise RuntimeError("the engine closed its stdout")
        magic, kind, _, request_id, length = HEADER.unpack(header)
        assert magic == b"PD"
        return chr(kind), request_id, self.proc.stdout.read(length)

    def send(self, obj):
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def request(self, text, deadline=None, **fields):
        """(seconds to the first audio, seconds to the end, samples before
        `deadline`, pcm). Past the deadline, the request is cancelled."""
        request_id = self.next_id
        self.next_id += 1
        began = time.perf_counter()
        self.send({"id": request_id, "text": text, **fields})
        first, samples, pcm, cancelled = None, 0, [], False
        while True:
            kind, got_id, payload = self.frame()
            assert got_id == request_id, (got_id, request_id)
            now = time.perf_counter()
            if kind == "A":
                if first is None:
                    first = now - began
                if deadline is None or now <= deadline:
                    samples += len(payload) // 2
                    pcm.append(payload)
                elif not cancelled:
                    self.send({"cancel": request_id})
                    cancelled = True
            elif kind in "DCX":
                if kind == "X":
                    raise RuntimeError(f"engine error: {payload!r}")
                return first, now - began, samples, b"".join(pcm)

    def window(self, texts, start, seconds):
        began = time.perf_counter()
        deadline = began + seconds
        samples, i = 0, start
        while time.perf_counter() < deadline:
            samples += self.request(texts[i % len(texts)], deadline)[2]
            i += 1
        return samples / self.rate / seconds, i

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class Raw:
    """benches/raw_engine.py throughput processes, windows run together."""

    def __init__(self, texts_path, processes, threads):
        self.procs = []
        for p in range(processes):
            proc = subprocess.Popen(
                [PYTHON, os.path.join(ROOT, "benches/raw_engine.py"), "throughput", MODEL,
                 texts_path, str(threads), str(p * 500)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            assert json.loads(proc.stdout.readline())["ready"]
            self.procs.append(proc)

    def window(self, seconds):
        for proc in self.procs:
            proc.stdin.write(f"{seconds}\n")
            proc.stdin.flush()
        audio = sum(json.loads(proc.stdout.readline())["audio_s"] for proc in self.procs)
        return audio / seconds

    def stop(self):
        for proc in self.procs:
            proc.stdin.close()
            proc.wait(timeout=60)


def throughput(args):
    texts = throughput_texts()
    mean = statistics.mean(len(t) for t in texts)
    print(f"throughput: {len(texts)} texts, mean {mean:.0f} characters, "
          f"{args.rounds} rounds of {args.window:.0f} s windows", flush=True)
    with tempfile.TemporaryDirectory(prefix="engine-parallel-") as folder:
        path = os.path.join(folder, "texts.json")
        with open(path, "w") as out:
            json.dump(texts, out)
        engine = Engine(args.engine, args.cache)
        raws = {"raw 1 process, default threads": Raw(path, 1, 0),
                "raw 2 processes x 1 thread": Raw(path, 2, 1)}
        results = {"engine, concurrency 1": []}
        results.update({name: [] for name in raws})
        at = 1000
        try:
            engine.window(texts, 1900, 2.0)  # warm
            for round_no in range(args.rounds):
                rate, at = engine.window(texts, at, args.window)
                results["engine, concurrency 1"].append(rate)
                print(f"  round {round_no + 1}: engine {rate:.2f} audio s/s, load {load():.2f}",
                      flush=True)
                for name, raw in raws.items():
                    rate = raw.window(args.window)
                    results[name].append(rate)
                    print(f"  round {round_no + 1}: {name} {rate:.2f} audio s/s, load {load():.2f}",
                          flush=True)
        finally:
            engine.stop()
            for raw in raws.values():
                raw.stop()
    ours = statistics.mean(results["engine, concurrency 1"])
    for name in raws:
        theirs = statistics.mean(results[name])
        print(f"throughput: engine {ours:.2f} / {name} {theirs:.2f} = {ours / theirs:.2f}x "
              f"(load {load():.2f})", flush=True)


def first_audio(args):
    engine = Engine(args.engine, args.cache)
    try:
        engine.request("Ready.")
        for chars, text in SENTENCES.items():
            engine.request(text)
            firsts, totals = [], []
            for _ in range(args.repeats):
                first, total, _, _ = engine.request(text)
                firsts.append(first)
                totals.append(total)
            print(f"first audio, {len(text)} chars: {statistics.median(firsts) * 1e3:.0f} ms, "
                  f"all {statistics.median(totals) * 1e3:.0f} ms (medians of {args.repeats}), "
                  f"load {load():.2f}", flush=True)
    finally:
        engine.stop()


def first_piece(text, limit=700):
    """The first piece piperd sends of a sentence over its hard limit: cut at
    the last comma before it."""
    cut = text[:limit].rfind(",")
    return text[: cut + 1] if cut > 0 else text[:limit]


def rss(args):
    piece = first_piece(long_sentence(1260))
    engine = Engine(args.engine, args.cache)
    try:
        ready = peak_rss_mib(engine.proc.pid)
        engine.request(piece)
        every = peak_rss_mib(engine.proc.pid)
        engine.request(piece, threads=1)
        both = peak_rss_mib(engine.proc.pid)
        print(f"rss: {len(piece)}-character piece: VmHWM after ready {ready:.0f} MiB, "
              f"on every core {every:.0f} MiB, then on 1 thread {both:.0f} MiB, "
              f"load {load():.2f}", flush=True)
    finally:
        engine.stop()


def cold(args):
    with tempfile.TemporaryDirectory(prefix="engine-cold-") as cache:
        began = time.perf_counter()
        engine = Engine(args.engine, cache)
        took = time.perf_counter() - began
        try:
            peak = peak_rss_mib(engine.proc.pid)
            print(f"cold start (empty cache): ready in {took:.1f} s, VmHWM {peak:.0f} MiB, "
                  f"chunked {engine.ready.get('chunked')}, load {load():.2f}", flush=True)
        finally:
            engine.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default=os.path.join(ROOT, "engine"))
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "engine-parallel-cache"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip", default="")
    parser.add_argument("--side-by-side", action="store_true")
    args = parser.parse_args()
    global SIDE_BY_SIDE
    SIDE_BY_SIDE = args.side_by_side
    skip = set(args.skip.split(",")) - {""}
    print(f"engine {args.engine}, side by side {SIDE_BY_SIDE}, cache {args.cache}, "
          f"{os.cpu_count()} cores, load {load():.2f}",
          flush=True)
    for name, step in (("cold", cold), ("throughput", throughput), ("first", first_audio),
                       ("rss", rss)):
        if name not in skip:
            step(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
