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
from frames import SENTENCES, long_sentence  # noqa: E402

# -- the throughput texts of benches/piperd.rs ------------------------------

MASK = (1 << 64) - 1


class Rng:
    """splitmix64, as benches/piperd.rs's `Rng`."""

    def __init__(self, seed):
        self.state = ((seed * 0x2545F4914F6CDD1D) & MASK) ^ 0x9E3779B97F4A7C15

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n

    def pick(self, items):
        return items[self.below(len(items))]


WORDS = {
    "name": ["Margaret", "Tomas", "Aisha", "Peter", "Lucia", "Henrik", "Naomi", "Oliver",
             "Grace", "Samuel"],
    "city": ["Lisbon", "Bristol", "Toronto", "Dublin", "Oslo", "Melbourne", "Boston",
             "Edinburgh", "Denver"],
    "thing": ["gate", "window", "cupboard", "garage", "lantern", "boathouse", "piano", "wagon",
              "cabinet"],
    "adj": ["cold", "quiet", "windy", "late", "early", "foggy", "crowded", "narrow", "bright"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "street": ["Mill", "Church", "Harbour", "Station", "Market", "Bridge", "Elm"],
    "color": ["green", "red", "yellow", "grey", "blue", "white"],
    "plant": ["tomatoes", "roses", "ferns", "herbs", "lemon trees", "tulips"],
}
MEDIUM_TEMPLATES = [
    "The {thing} on {street} Street was painted {color} in {year}.",
    "She counted the boxes twice: {n} in the hall, {m} in the kitchen, and {k} more hidden under the stairs.",
    "Rain again!",
    "Why would anyone leave the {thing} open on such a {adj} night?",
    "The library closes at {k}, but the reading room stays open until {m} for members.",
    "{name} said the price of a ticket to {city} had risen to {n} dollars and {m} cents since {day}.",
    "Please remember to water the {plant} on {day}.",
    "According to the report, about {n} percent of the parcels sent to {city} in {year} were never delivered.",
    "Is it true that {name} walked all the way from {city} in {k} days?",
    "Nobody answered.",
    "The {adj} wind from the sea rattled the windows of the {color} house on {street} Street.",
    "{name} and {name} met at the {adj} station in {city} on a {day} in {year}.",
]
LONG_OPENERS = [
    "In the spring of {year} the council of {city} decided",
    "Nobody expected the morning train from {city} to arrive so early",
    "After the storm had passed over the hills above {city}",
    "When {name} finally opened the letter from the harbour office",
    "For {n} years the {color} {thing} had stood in the square",
]
LONG_CLAUSES = [
    ", after a long and sometimes bitter debate that lasted well past midnight",
    ", least of all the station master, who was still eating breakfast when the whistle blew",
    " and the passengers began to climb down onto the wet platform with their umbrellas and bags",
    ", using the same quarry and the same methods as the builders of {year}",
    ", while {n} children waited outside in the rain for the doors to open",
    " because nobody could remember where the keys to the {thing} had been left",
    ", although the forecast for {day} had promised clear skies and a gentle breeze",
    " so that the old {thing} could be repaired before the winter markets began",
    ", and {name} wrote down every word of it in a small {color} notebook",
]


def fill(template, rng):
    out, rest = "", template
    while "{" in rest:
        open_at = rest.index("{")
        close = rest.index("}", open_at)
        out += rest[:open_at]
        slot = rest[open_at + 1 : close]
        if slot in WORDS:
            word = rng.pick(WORDS[slot])
        else:
            word = str({"n": lambda: 2 + rng.below(60), "m": lambda: 2 + rng.below(30),
                        "k": lambda: 2 + rng.below(12), "year": lambda: 1890 + rng.below(130)}[slot]())
        out += word
        rest = rest[close + 1 :]
    return out + rest


def long_prose_sentence(rng):
    target = 200 + rng.below(180)
    out = fill(rng.pick(LONG_OPENERS), rng)
    for _ in range(40):
        if len(out) >= target:
            break
        clause = fill(rng.pick(LONG_CLAUSES), rng)
        if len(out) + len(clause) + 1 > 400:
            if len(out) >= 200:
                break
            continue
        out += clause
    return out + "."


def prose(seed, max_chars):
    rng = Rng(seed)
    out = ""
    in_paragraph, paragraph_len, misses = 0, 3 + rng.below(5), 0
    while misses < 20:
        if rng.below(5) == 0:
            sentence = long_prose_sentence(rng)
        else:
            sentence = fill(rng.pick(MEDIUM_TEMPLATES), rng)
        sep = "" if not out else ("\n\n" if in_paragraph == paragraph_len else " ")
        if len(out) + len(sep) + len(sentence) > max_chars:
            misses += 1
            continue
        if sep == "\n\n":
            in_paragraph, paragraph_len = 0, 3 + rng.below(5)
        out += sep + sentence
        in_paragraph += 1
    return out


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


def vm_hwm_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


class Engine:
    def __init__(self, engine_dir, cache_dir):
        env = dict(os.environ, PIPER_ENGINE_PARALLEL="2", PIPER_ENGINE_THREADS="1",
                   PIPER_ENGINE_CACHE_DIR=cache_dir,
                   PIPER_ENGINE_SIDE_BY_SIDE="1" if SIDE_BY_SIDE else "")
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
        ready = vm_hwm_mib(engine.proc.pid)
        engine.request(piece)
        every = vm_hwm_mib(engine.proc.pid)
        engine.request(piece, threads=1)
        both = vm_hwm_mib(engine.proc.pid)
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
            peak = vm_hwm_mib(engine.proc.pid)
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
