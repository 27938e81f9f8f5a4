"""Frame-streamed synthesis in `make bench`: piperd's first audio of one whole
sentence against the raw engine's full synthesis of it, in the same run, and
the engine's peak memory on a 1,260-character sentence.

    .venv/bin/python benches/frames.py [--out target/frames.md] [--repeats 3]

Runs target/release/piperd (build it first: `cargo build --release --bins`) on
a loopback port with the bundled voice, the server otherwise idle. First audio
is the time from sending a streamed /api/tts request to the first PCM byte
after the WAV header; the raw engine is piper's PiperVoice.synthesize on every
core, whole sentence, timed to its int16 bytes. Medians of --repeats runs,
after one warm-up each. The machine's load average is printed with each row:
on a shared machine the numbers are noisy.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(ROOT, ".venv/bin/python")
VOICE = "en_US-joe-medium"

SENTENCES = {
    60: "The old lighthouse keeper climbed the stairs every evening.",
    110: "The old lighthouse keeper climbed the narrow stairs every evening, "
    "lit the lamp, and watched the ships go by.",
    220: "When the morning train finally pulled into the station, the passengers, "
    "who had waited for hours in the cold, gathered their bags, checked their "
    "tickets once more, and stepped onto the platform, relieved it was over.",
}
SENTENCES[420] = SENTENCES[220][:-1] + ", while the porters, who had seen it all " + (
    "before, loaded the carts with trunks and boxes, called out the names of the "
    "hotels across the town, and the conductor walked slowly back to the carriages."
)
CLAUSES = [
    "the river ran slow and brown under the old stone bridge",
    "the baker opened his shop before the sun came up",
    "the carts came down from the hills with apples and wool",
    "the children sang in the school by the church",
    "the ships waited in the harbour for the evening tide",
    "nobody had mended the road since the great flood",
]

RAW = r"""
import json, sys, time
from piper import PiperVoice, SynthesisConfig
voice = PiperVoice.load(sys.argv[1])
for _ in voice.synthesize("Ready."):
    pass
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    text = json.loads(line)["text"]
    t0 = time.perf_counter()
    for chunk in voice.synthesize(text):
        chunk.audio_int16_bytes
    print(json.dumps({"s": time.perf_counter() - t0}), flush=True)
"""


def long_sentence(chars):
    out, i = "", 0
    while len(out) < chars:
        out += ("" if not out else ", and ") + CLAUSES[i % len(CLAUSES)]
        i += 1
    return out[:chars].rsplit(" ", 1)[0] + "."


def load():
    return os.getloadavg()[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Piperd:
    def __init__(self):
        self.port = free_port()
        env = dict(
            os.environ,
            PIPER_HOST="127.0.0.1",
            PIPER_PORT=str(self.port),
            PIPER_WYOMING_PORT="0",
            PIPER_VOICES_DIR=os.path.join(ROOT, "voices"),
            PIPER_PYTHON=PYTHON,
            PIPER_AUDIO_CACHE_MB="0",
            PIPER_ENGINE_START_TIMEOUT="300",
            PIPER_LOG="warn",
        )
        binary = os.path.join(ROOT, "target/release/piperd")
        self.proc = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL)
        for _ in range(300):
            try:
                urllib.request.urlopen(self.url("/health"), timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("piperd did not start")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def post(self, body, first_only=False):
        request = urllib.request.Request(
            self.url("/api/tts"),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        t0 = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as response:
            got = 0
            first = None
            while True:
                data = response.read1(65536)
                if not data:
                    break
                got += len(data)
                if first is None and got > 44:
                    first = time.perf_counter() - t0
            return first, time.perf_counter() - t0

    def engine_pids(self):
        pids = []
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            with open(f"/proc/{self.proc.pid}/task/{task}/children") as children:
                pids += [int(p) for p in children.read().split()]
        return pids

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="target/frames.md")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = os.path.join(ROOT, "voices", f"{VOICE}.onnx")

    raw = subprocess.Popen(
        [PYTHON, "-c", RAW, model], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert json.loads(raw.stdout.readline())["ready"]

    def raw_full(text):
        raw.stdin.write(json.dumps({"text": text}) + "\n")
        raw.stdin.flush()
        return json.loads(raw.stdout.readline())["s"]

    server = Piperd()
    rows = []
    try:
        server.post({"text": "Ready.", "stream": True})
        for chars, text in SENTENCES.items():
            raw_full(text)
            server.post({"text": text, "stream": True})
            fulls, firsts, loads = [], [], []
            for _ in range(args.repeats):
                fulls.append(raw_full(text))
                firsts.append(server.post({"text": text, "stream": True})[0])
                loads.append(load())
            full, first = statistics.median(fulls), statistics.median(firsts)
            rows.append((len(text), full, first, first / full, statistics.mean(loads)))
            print(f"{len(text)} chars: raw full {full * 1e3:.0f} ms, piperd first audio "
                  f"{first * 1e3:.0f} ms ({first / full:.2f}x), load {loads[-1]:.2f}",
                  flush=True)
        longest = long_sentence(1260)
        first, total = server.post({"text": longest, "stream": True})
        rss = max(peak_rss_mib(pid) for pid in server.engine_pids())
        rss_load = load()
        print(f"{len(longest)} chars: first audio {first * 1e3:.0f} ms, all {total:.1f} s, "
              f"engine peak RSS {rss:.0f} MiB, load {rss_load:.2f}", flush=True)
    finally:
        server.stop()
        raw.stdin.close()
        raw.wait(timeout=60)

    targets = {60: 0.6, 110: 0.35, 220: 0.3, 420: 0.25}
    lines = [
        "",
        "## Frame-streamed synthesis: first audio of one whole sentence",
        "",
        f"`.venv/bin/python benches/frames.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} cores, medians of {args.repeats}; a shared machine: see the load).",
        "",
        "| sentence | raw engine, full synthesis | piperd, first audio (streamed) | ratio | target | load avg |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (n, full, first, ratio, avg), target in zip(rows, targets.values()):
        lines.append(
            f"| {n} chars | {full * 1e3:.0f} ms | {first * 1e3:.0f} ms | {ratio:.2f}x | "
            f"<= {target}x | {avg:.2f} |"
        )
    lines += [
        "",
        f"Engine peak RSS (VmHWM) after a {len(longest)}-character sentence (cut once, at a "
        f"comma, over the 700-character hard limit): {rss:.0f} MiB (target <= 400 MiB), "
        f"load {rss_load:.2f}.",
        "",
    ]
    os.makedirs(os.path.dirname(os.path.join(ROOT, args.out)), exist_ok=True)
    with open(os.path.join(ROOT, args.out), "w") as out:
        out.write("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
