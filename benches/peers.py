#!/usr/bin/env python3
"""piperd against its peers (issue item 8), on this machine, in one run.

Peers:
  * piper-tts's own HTTP server, `python -m piper.http_server` (Flask; the
    `http` extra), route `POST /synthesize`;
  * wyoming-piper, the Wyoming-protocol server Home Assistant uses, with a small
    client built on the `wyoming` package.

Each peer lives in its own venv under benches/.peers/ (created here, once; never
the server's .venv). All three servers load the same voice file from voices/,
bind to 127.0.0.1 on free ports, are warmed with one request, and get the same
texts:

  (a) short sentences (distinct, about 60 characters), 30 requests at
      concurrency 1: latency p50 / p95 (interleaved over the three servers, so
      all see the same machine);
  (b) 40 short sentences at concurrency 8: p50 latency and throughput;
  (c) one 20,000-character text (varied prose in paragraphs, the same generator
      and seed as `make bench`): time to the first audio byte and total time;
      bounded by a timeout per server: at most --long-timeout (120 s), and less
      when that would take the run past --budget (225 s after the installs, so
      the whole run stays under 4 minutes; the remaining time is shared by the
      servers still to go, in order piperd, http_server, wyoming-piper).

Peak RSS of each server's process tree (the server and its children, from /proc)
is sampled during (b) and (c). Then a markdown section is printed (and written
to --out FILE). Everything this script starts is stopped at the end, also on an
error or Ctrl-C.

Usage:  python3 benches/peers.py [--out FILE]        (any python3 >= 3.9)

The script itself uses only the standard library. Its wyoming client runs under
benches/.peers/wyoming/bin/python (`peers.py --wyoming-client`, a helper mode
that reads jobs as JSON lines on stdin).
"""

import argparse
import asyncio
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = ROOT / "benches" / ".peers"
VOICE = "en_US-joe-medium"
VOICES_DIR = ROOT / "voices"
MODEL = VOICES_DIR / (VOICE + ".onnx")
PIPERD = ROOT / "target" / "release" / "piperd"
SERVER_VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

# Peer venvs: name -> pinned requirements (the versions resolved when this
# benchmark was written; the stamp file makes the install idempotent).
VENVS = {
    "piper-http": ["piper-tts[http]==1.8.0"],
    "wyoming": ["wyoming-piper==2.5.2", "wyoming==1.10.2"],
}
VERSION_PACKAGES = {
    "piper-http": ["piper-tts", "onnxruntime", "flask", "werkzeug"],
    "wyoming": ["wyoming-piper", "wyoming", "piper-tts", "onnxruntime"],
}

WAV_HEADER = 44
SAMPLE_RATE = 22050  # en_US-joe-medium; checked against the voice config below

SHORT_C1 = 30
SHORT_C8 = 40
CONCURRENCY = 8
LONG_CHARS = 20_000
START_LIMIT = 90.0  # seconds a server may take to start and answer its warm-up
SHORT_LIMIT = 60.0  # seconds a short request may take

SERVERS = ["piperd", "http_server", "wyoming"]
TITLES = {
    "piperd": "piperd",
    "http_server": "piper http_server",
    "wyoming": "wyoming-piper",
}


# ---------------------------------------------------------------------------
# Texts: a port of benches/piperd.rs (splitmix64 and the same templates), so
# the 20,000-character text is the one `make bench` uses (opener 14, seed 114).
# ---------------------------------------------------------------------------

MASK = (1 << 64) - 1


class Rng:
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
    "name": ["Margaret", "Tomas", "Aisha", "Peter", "Lucia", "Henrik", "Naomi",
             "Oliver", "Grace", "Samuel"],
    "city": ["Lisbon", "Bristol", "Toronto", "Dublin", "Oslo", "Melbourne",
             "Boston", "Edinburgh", "Denver"],
    "thing": ["gate", "window", "cupboard", "garage", "lantern", "boathouse",
              "piano", "wagon", "cabinet"],
    "adj": ["cold", "quiet", "windy", "late", "early", "foggy", "crowded",
            "narrow", "bright"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
            "Sunday"],
    "street": ["Mill", "Church", "Harbour", "Station", "Market", "Bridge", "Elm"],
    "color": ["green", "red", "yellow", "grey", "blue", "white"],
    "plant": ["tomatoes", "roses", "ferns", "herbs", "lemon trees", "tulips"],
}


def fill(template, rng):
    out = []
    rest = template
    while "{" in rest:
        open_at = rest.index("{")
        close = rest.index("}", open_at)
        out.append(rest[:open_at])
        slot = rest[open_at + 1:close]
        if slot in WORDS:
            out.append(rng.pick(WORDS[slot]))
        elif slot == "n":
            out.append(str(2 + rng.below(60)))
        elif slot == "m":
            out.append(str(2 + rng.below(30)))
        elif slot == "k":
            out.append(str(2 + rng.below(12)))
        elif slot == "year":
            out.append(str(1890 + rng.below(130)))
        else:
            raise ValueError("unknown slot " + slot)
        rest = rest[close + 1:]
    out.append(rest)
    return "".join(out)


SHORT_TEMPLATES = [
    "Please remember to water the {plant} on {day} at {k} o'clock.",
    "The {adj} train to {city} leaves from platform {k} today.",
    "{name} counted {n} boxes in the hall and {m} in the kitchen.",
    "Why would anyone leave the {thing} open on such a {adj} night?",
    "The library on {street} Street closes at {k} every {day}.",
    "Our meeting with {name} moved to room {n} on the top floor.",
    "The {color} {thing} by the door has been there since {year}.",
]

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


def short_sentences(count, seed):
    rng = Rng(seed)
    seen = set()
    out = []
    for i in range(count * 50):
        if len(out) == count:
            break
        sentence = fill(SHORT_TEMPLATES[i % len(SHORT_TEMPLATES)], rng)
        if sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    assert len(out) == count, "not enough distinct short sentences"
    return out


def opener(k):
    return "The morning of day %d began with a cold rain over the harbour." % k


def long_sentence(rng):
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
    in_paragraph = 0
    paragraph_len = 3 + rng.below(5)
    misses = 0
    while misses < 20:
        if rng.below(5) == 0:
            sentence = long_sentence(rng)
        else:
            sentence = fill(rng.pick(MEDIUM_TEMPLATES), rng)
        if not out:
            sep = ""
        elif in_paragraph == paragraph_len:
            sep = "\n\n"
        else:
            sep = " "
        if len(out) + len(sep) + len(sentence) > max_chars:
            misses += 1
            continue
        if sep == "\n\n":
            in_paragraph = 0
            paragraph_len = 3 + rng.below(5)
        out += sep + sentence
        in_paragraph += 1
    return out


def long_text(first, seed, chars):
    return first + " " + prose(seed, chars - len(first) - 1)


# ---------------------------------------------------------------------------
# Numbers and formatting
# ---------------------------------------------------------------------------


def percentile(samples, p):
    """Nearest-rank percentile, as benches/piperd.rs."""
    s = sorted(samples)
    rank = max(1, int(-(-p / 100.0 * len(s) // 1)))
    return s[min(rank, len(s)) - 1]


def fmt_ms(seconds):
    if seconds is None:
        return "—"
    ms = seconds * 1000.0
    if ms >= 10_000:
        return "%.1f s" % seconds
    if ms >= 100:
        return "%.0f ms" % ms
    return "%.1f ms" % ms


def fmt_mib(kib):
    return "—" if kib is None else "%.1f MiB" % (kib / 1024.0)


def fmt_ratio(peer, ours):
    if peer is None or ours is None or ours == 0:
        return "—"
    return "%.2f×" % (peer / ours)


# ---------------------------------------------------------------------------
# /proc: process trees, RSS, CPU ticks
# ---------------------------------------------------------------------------


def _stat_fields(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    # the command name is in parentheses and may hold spaces
    return data[data.rindex(")") + 2:].split()


def descendants(pid):
    """pid and every process below it (by parent pid), from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    tree = [pid]
    i = 0
    while i < len(tree):
        tree.extend(children.get(tree[i], []))
        i += 1
    return tree


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid):
    return sum(rss_kib(p) for p in descendants(pid))


def process_ticks(pid, with_children=True):
    fields = _stat_fields(pid)
    if fields is None:
        return 0
    # utime stime cutime cstime are fields 14-17 of stat (11-14 here)
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def tree_ticks(pid):
    return sum(process_ticks(p) for p in descendants(pid))


def machine_ticks():
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, already in user
    return total - idle, total


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


class RssPeak:
    """Samples the summed VmRSS of a process tree every 100 ms in a thread
    (the tree itself is re-read every half second, so restarted children
    count). `parts` is the tree at the peak: the server's own RSS first."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self.parts = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, tree):
        parts = [rss_kib(p) for p in tree]
        if sum(parts) > self.peak:
            self.peak = sum(parts)
            self.parts = parts

    def _run(self):
        tree = descendants(self.pid)
        last_scan = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - last_scan >= 0.5:
                tree = descendants(self.pid)
                last_scan = time.monotonic()
            self._sample(tree)
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(descendants(self.pid))

    def describe(self):
        if len(self.parts) <= 1:
            return fmt_mib(self.peak) + " (one process)"
        return "%s = server %s + %s" % (
            fmt_mib(self.peak), fmt_mib(self.parts[0]),
            " + ".join("child " + fmt_mib(k) for k in self.parts[1:]))


# ---------------------------------------------------------------------------
# Venvs of the peers
# ---------------------------------------------------------------------------


def ensure_venv(name):
    venv = PEERS_DIR / name
    python = venv / "bin" / "python"
    stamp = venv / ".peers-stamp"
    wanted = "\n".join(VENVS[name])
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print("peers: installing %s into %s" % (" ".join(VENVS[name]), venv),
          file=sys.stderr, flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                       timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check"] + VENVS[name],
        check=True, timeout=900)
    stamp.write_text(wanted)
    return python


def venv_versions(python, packages):
    code = (
        "import json, sys, importlib.metadata as m\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except Exception: out[p] = '?'\n"
        "out['python'] = sys.version.split()[0]\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([str(python), "-c", code] + packages, check=True,
                         capture_output=True, text=True, timeout=60)
    return json.loads(res.stdout)


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


try:  # looked up here, in the parent: preexec_fn only calls it
    import ctypes

    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (ImportError, OSError, AttributeError):
    _PRCTL = None


def _die_with_parent():
    """preexec_fn: SIGKILL this child if the benchmark dies without cleaning up
    (PR_SET_PDEATHSIG; every child is started from the main thread, before any
    other thread exists)."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGKILL))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child in its own session, its output in a log file."""

    def __init__(self, name, argv, env=None, cwd=ROOT):
        self.name = name
        self.log_path = PEERS_DIR / "logs" / (name + ".log")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "wb")
        self.argv = argv
        self.popen = subprocess.Popen(
            argv, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent)
        self.pid = self.popen.pid
        self.final_ticks = None

    def alive(self):
        return self.popen.poll() is None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines=15):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self):
        """SIGTERM the tree, SIGKILL what is left after 5 s; returns at once
        when already stopped. Records the tree's CPU ticks first."""
        if self.final_ticks is None:
            self.final_ticks = tree_ticks(self.pid) if self.alive() else 0
        tree = descendants(self.pid) if self.alive() else []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in tree:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                continue
            break
        deadline = time.monotonic() + 5
        for pid in tree:
            # children are reaped by their own parent (or init); just make sure
            # none is left running
            while time.monotonic() < deadline:
                fields = _stat_fields(pid)
                if fields is None or fields[0] == "Z":
                    break
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    break
                time.sleep(0.05)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


class Result:
    __slots__ = ("total", "first", "audio_bytes", "error")

    def __init__(self, total=None, first=None, audio_bytes=0, error=None):
        self.total = total
        self.first = first
        self.audio_bytes = audio_bytes
        self.error = error

    @staticmethod
    def from_dict(d):
        return Result(d.get("total"), d.get("first"), d.get("audio_bytes", 0),
                      d.get("error"))


def http_tts(port, path, body, limit):
    """POST JSON, read the answer to its end (or the limit). total: to the last
    byte; first: to the first byte past the WAV header."""
    payload = json.dumps(body).encode()
    started = time.monotonic()
    deadline = started + limit
    got = 0
    first = None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=limit)
    try:
        conn.request("POST", path, body=payload,
                     headers={"Content-Type": "application/json"})
        sock = conn.sock  # getresponse() may drop conn.sock (Connection: close)
        resp = conn.getresponse()
        if resp.status != 200:
            text = resp.read(2000).decode(errors="replace")
            return Result(error="HTTP %d: %s" % (resp.status, text.strip()))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return Result(first=first, audio_bytes=max(0, got - WAV_HEADER),
                              error="timeout")
            sock.settimeout(left)
            chunk = resp.read1(65536)
            if not chunk:
                break
            got += len(chunk)
            if first is None and got > WAV_HEADER:
                first = time.monotonic() - started
        total = time.monotonic() - started
        return Result(total=total, first=first,
                      audio_bytes=max(0, got - WAV_HEADER))
    except socket.timeout:
        return Result(first=first, audio_bytes=max(0, got - WAV_HEADER),
                      error="timeout")
    except (OSError, http.client.HTTPException) as err:
        return Result(first=first, audio_bytes=max(0, got - WAV_HEADER),
                      error="%s: %s" % (type(err).__name__, err))
    finally:
        conn.close()


class HttpServer:
    """piperd or piper.http_server, seen as a client."""

    def __init__(self, key, port, path, body_of):
        self.key = key
        self.port = port
        self.path = path
        self.body_of = body_of

    def one(self, text, limit, stream=False):
        return http_tts(self.port, self.path, self.body_of(text, stream), limit)

    def many(self, texts, concurrency, limit):
        """Returns (results in text order, wall seconds)."""
        results = [None] * len(texts)
        lock = threading.Lock()
        queue = list(range(len(texts)))

        def worker():
            while True:
                with lock:
                    if not queue:
                        return
                    i = queue.pop(0)
                results[i] = self.one(texts[i], limit)

        started = time.monotonic()
        threads = [threading.Thread(target=worker, daemon=True)
                   for _ in range(concurrency)]
        for t in threads:
            t.start()
        # each request is bounded by `limit`, so every worker is done by then
        rounds = -(-len(texts) // concurrency)
        join_deadline = started + limit * rounds + 10
        for t in threads:
            t.join(timeout=max(0.0, join_deadline - time.monotonic()))
        wall = time.monotonic() - started
        return [r if r is not None else Result(error="not run") for r in results], wall


class WyomingServer:
    """wyoming-piper, seen through the helper client in the wyoming venv."""

    def __init__(self, key, port, helper):
        self.key = key
        self.port = port
        self.helper = helper

    def _job(self, texts, concurrency, limit, retry_connect=0.0):
        job = {"port": self.port, "texts": texts, "concurrency": concurrency,
               "limit": limit, "retry_connect": retry_connect}
        rounds = -(-len(texts) // concurrency)
        return self.helper.run(job, limit * rounds + retry_connect + 30)

    def one(self, text, limit, stream=False, retry_connect=0.0):
        out = self._job([text], 1, limit, retry_connect)
        return Result.from_dict(out["results"][0])

    def many(self, texts, concurrency, limit):
        out = self._job(texts, concurrency, limit)
        return [Result.from_dict(r) for r in out["results"]], out["wall"]


class Helper:
    """`peers.py --wyoming-client` under the wyoming venv's python: one JSON job
    per line on its stdin, one JSON answer per line on its stdout."""

    def __init__(self, python):
        self.popen = subprocess.Popen(
            [str(python), str(Path(__file__).resolve()), "--wyoming-client"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True, preexec_fn=_die_with_parent)
        self.pid = self.popen.pid
        self.final_ticks = None
        self._answers = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.popen.stdout:
            with self._cond:
                self._answers.append(line)
                self._cond.notify_all()
        with self._cond:
            self._answers.append(None)
            self._cond.notify_all()

    def run(self, job, limit):
        self.popen.stdin.write(json.dumps(job) + "\n")
        self.popen.stdin.flush()
        deadline = time.monotonic() + limit
        with self._cond:
            while not self._answers:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("the wyoming client did not answer in %.0f s"
                                       % limit)
                self._cond.wait(left)
            line = self._answers.pop(0)
        if line is None:
            raise RuntimeError("the wyoming client exited")
        answer = json.loads(line)
        if "fatal" in answer:
            raise RuntimeError("the wyoming client failed: " + answer["fatal"])
        return answer

    def stop(self):
        if self.final_ticks is None:
            self.final_ticks = process_ticks(self.pid) if self.popen.poll() is None else 0
        try:
            self.popen.stdin.close()
        except OSError:
            pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)


def wyoming_client_main():
    """Helper mode, run under the wyoming venv: jobs in, results out."""
    from wyoming.audio import AudioChunk, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.error import Error
    from wyoming.tts import Synthesize

    async def one(port, text, limit, retry_connect):
        started = time.monotonic()
        state = {"first": None, "bytes": 0}

        async def talk():
            deadline = time.monotonic() + retry_connect
            while True:
                try:
                    client = AsyncTcpClient("127.0.0.1", port)
                    await client.connect()
                    break
                except OSError:
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(0.2)
            try:
                await client.write_event(Synthesize(text=text).event())
                while True:
                    event = await client.read_event()
                    if event is None:
                        raise ConnectionError("connection closed before audio-stop")
                    if AudioChunk.is_type(event.type):
                        chunk = AudioChunk.from_event(event)
                        if state["first"] is None:
                            state["first"] = time.monotonic() - started
                        state["bytes"] += len(chunk.audio)
                    elif AudioStop.is_type(event.type):
                        return
                    elif Error.is_type(event.type):
                        raise RuntimeError(Error.from_event(event).text)
            finally:
                await client.disconnect()

        try:
            await asyncio.wait_for(talk(), timeout=limit + retry_connect)
        except asyncio.TimeoutError:
            return {"first": state["first"], "audio_bytes": state["bytes"],
                    "error": "timeout"}
        except Exception as err:  # reported, not raised: the run goes on
            return {"first": state["first"], "audio_bytes": state["bytes"],
                    "error": "%s: %s" % (type(err).__name__, err)}
        return {"total": time.monotonic() - started, "first": state["first"],
                "audio_bytes": state["bytes"]}

    async def job(spec):
        texts = spec["texts"]
        results = [None] * len(texts)
        queue = list(range(len(texts)))

        async def worker():
            while queue:
                i = queue.pop(0)
                results[i] = await one(spec["port"], texts[i], spec["limit"],
                                       spec.get("retry_connect", 0.0))

        started = time.monotonic()
        await asyncio.gather(*[worker() for _ in range(spec["concurrency"])])
        return {"results": results, "wall": time.monotonic() - started}

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = asyncio.run(job(json.loads(line)))
        except Exception as err:
            answer = {"fatal": "%s: %s" % (type(err).__name__, err)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------------------
# Starting the servers
# ---------------------------------------------------------------------------


def start_piperd():
    env = dict(os.environ)
    env.update({
        "PIPER_HOST": "127.0.0.1",
        "PIPER_PORT": "0",
        "PIPER_WYOMING_PORT": "0",
        "PIPER_VOICES_DIR": str(VOICES_DIR),
        "PIPER_PYTHON": str(SERVER_VENV_PYTHON),
        # the engine stays warm while the peers are measured
        "PIPER_PROCESS_IDLE_TIMEOUT": "3600",
        "PIPER_SHUTDOWN_GRACE": "2",
    })
    return Proc("piperd", [str(PIPERD)], env=env)


def piperd_port(proc, deadline):
    while time.monotonic() < deadline:
        for line in proc.log_text().splitlines():
            if "listening on http://" in line:
                addr = line.split("listening on http://", 1)[1].split()[0]
                return int(addr.rsplit(":", 1)[1].rstrip("/"))
        if not proc.alive():
            break
        time.sleep(0.05)
    raise RuntimeError("piperd did not start:\n" + proc.log_tail())


def start_http_server(python, port):
    return Proc("http_server", [
        str(python), "-m", "piper.http_server", "--host", "127.0.0.1",
        "--port", str(port), "--model", str(MODEL),
        "--data-dir", str(VOICES_DIR),
    ])


def start_wyoming(python, port):
    download_dir = PEERS_DIR / "wyoming-data"
    download_dir.mkdir(parents=True, exist_ok=True)
    return Proc("wyoming", [
        str(python), "-m", "wyoming_piper", "--uri", "tcp://127.0.0.1:%d" % port,
        "--voice", VOICE, "--data-dir", str(VOICES_DIR),
        "--download-dir", str(download_dir),
    ])


def http_get(port, path, limit=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=limit)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_http(proc, port, path, deadline):
    while time.monotonic() < deadline:
        if not proc.alive():
            break
        try:
            status, body = http_get(port, path)
            if status == 200:
                return body
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    raise RuntimeError("%s did not answer %s:\n%s" % (proc.name, path, proc.log_tail()))


def check(result, what, proc):
    if result.error:
        raise RuntimeError("%s: %s failed: %s\n%s" % (proc.name, what, result.error,
                                                      proc.log_tail()))
    return result


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", metavar="FILE",
                        help="also write the markdown section to FILE")
    parser.add_argument("--budget", type=float, default=225.0,
                        help="seconds the run may take after the installs; the "
                             "20,000-character timeouts shrink to fit (default 225)")
    parser.add_argument("--long-timeout", type=float, default=120.0,
                        help="longest wait for the 20,000-character text, per "
                             "server (default 120 s; less when the budget is short)")
    parser.add_argument("--wyoming-client", action="store_true",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.wyoming_client:
        wyoming_client_main()
        return 0

    for path in (PIPERD, MODEL, Path(str(MODEL) + ".json"), SERVER_VENV_PYTHON):
        if not path.exists():
            print("peers: %s is missing (run `make setup` and "
                  "`cargo build --release`)" % path, file=sys.stderr)
            return 2
    voice_rate = json.loads(Path(str(MODEL) + ".json").read_text())["audio"]["sample_rate"]
    bytes_per_second = 2.0 * voice_rate

    install_started = time.monotonic()
    pythons = {name: ensure_venv(name) for name in VENVS}
    installs_s = time.monotonic() - install_started
    versions = {name: venv_versions(pythons[name], VERSION_PACKAGES[name])
                for name in VENVS}

    # texts: 3 warm-ups, 30 for (a), 40 for (b): all distinct
    shorts = short_sentences(3 + SHORT_C1 + SHORT_C8, 8_000)
    warm_texts = dict(zip(SERVERS, shorts[:3]))
    texts_c1 = shorts[3:3 + SHORT_C1]
    texts_c8 = shorts[3 + SHORT_C1:]
    text_long = long_text(opener(14), 114, LONG_CHARS)

    started = time.monotonic()
    deadline = started + args.budget
    load_start = loadavg()
    busy0, total0 = machine_ticks()
    self_ticks0 = sum(os.times()[:2])

    procs = {}
    helper = None
    clients = {}
    m = {k: {} for k in SERVERS}  # measurements
    raw = {k: {} for k in SERVERS}  # per request, for benches/.peers/last-run.json
    notes = []
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, lambda s, f: sys.exit(128 + s))
    try:
        # -- start the three servers at once, then wait for each
        procs["piperd"] = start_piperd()
        http_port = free_port()
        procs["http_server"] = start_http_server(pythons["piper-http"], http_port)
        wy_port = free_port()
        procs["wyoming"] = start_wyoming(pythons["wyoming"], wy_port)
        helper = Helper(pythons["wyoming"])
        start_deadline = time.monotonic() + START_LIMIT

        port = piperd_port(procs["piperd"], start_deadline)
        clients["piperd"] = HttpServer(
            "piperd", port, "/api/tts",
            lambda text, stream: {"text": text, "voice_model": VOICE, "stream": stream})
        wait_http(procs["piperd"], port, "/health", start_deadline)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=START_LIMIT)
        conn.request("POST", "/api/warmup", body=json.dumps({"voice_model": VOICE}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        warm_answer = resp.read()
        conn.close()
        if resp.status != 200:
            raise RuntimeError("piperd warm-up: %d %s" % (resp.status, warm_answer))
        clients["http_server"] = HttpServer(
            "http_server", http_port, "/synthesize",
            lambda text, stream: {"text": text})
        wait_http(procs["http_server"], http_port, "/info", start_deadline)
        clients["wyoming"] = WyomingServer("wyoming", wy_port, helper)

        for key in SERVERS:
            left = max(1.0, start_deadline - time.monotonic())
            if key == "wyoming":
                r = clients[key].one(warm_texts[key], left, retry_connect=left)
            else:
                r = clients[key].one(warm_texts[key], left)
            check(r, "warm-up request", procs[key])
            m[key]["warm"] = r.total
            m[key]["rss_warm"] = tree_rss_kib(procs[key].pid)
        health = json.loads(http_get(clients["piperd"].port, "/health")[1])
        startup_s = time.monotonic() - started

        # -- (a) concurrency 1, interleaved: request i goes to the three servers
        # in turn, the order rotating so none always goes first
        lat = {k: [] for k in SERVERS}
        audio = {k: 0 for k in SERVERS}
        for i, text in enumerate(texts_c1):
            order = SERVERS[i % 3:] + SERVERS[:i % 3]
            for key in order:
                r = check(clients[key].one(text, SHORT_LIMIT),
                          "short request", procs[key])
                lat[key].append(r.total)
                audio[key] += r.audio_bytes
        for key in SERVERS:
            m[key]["c1_p50"] = percentile(lat[key], 50)
            m[key]["c1_p95"] = percentile(lat[key], 95)
            m[key]["c1_audio"] = audio[key] / bytes_per_second
            raw[key]["c1_latencies"] = lat[key]
        a_done = time.monotonic()

        # -- (b) concurrency 8, one server after the other
        for key in SERVERS:
            with RssPeak(procs[key].pid) as peak:
                results, wall = clients[key].many(texts_c8, CONCURRENCY, SHORT_LIMIT)
            for r in results:
                check(r, "concurrent request", procs[key])
            m[key]["c8_p50"] = percentile([r.total for r in results], 50)
            m[key]["c8_p95"] = percentile([r.total for r in results], 95)
            m[key]["c8_max"] = max(r.total for r in results)
            m[key]["c8_rps"] = len(results) / wall
            m[key]["c8_audio_rate"] = sum(r.audio_bytes for r in results) / bytes_per_second / wall
            m[key]["c8_wall"] = wall
            raw[key]["c8_latencies"] = [r.total for r in results]
            m[key]["rss_c8"] = peak.peak
            m[key]["rss_c8_parts"] = peak.describe()
        b_done = time.monotonic()

        # -- (c) the 20,000-character text, one server after the other; each
        # server is stopped right after its turn, so a peer that goes on
        # synthesizing after the client gave up does not slow the next one
        c_limits = {}
        for n, key in enumerate(SERVERS):
            left = deadline - time.monotonic() - 10.0  # 10 s to stop what is left
            limit = max(10.0, min(args.long_timeout, left / (len(SERVERS) - n)))
            c_limits[key] = limit
            with RssPeak(procs[key].pid) as peak:
                r = clients[key].one(text_long, limit, stream=True)
            m[key]["long"] = r
            raw[key]["long"] = {"first": r.first, "total": r.total, "limit": limit,
                                "audio_s": r.audio_bytes / bytes_per_second,
                                "error": r.error}
            m[key]["long_limit"] = limit
            m[key]["rss_long"] = peak.peak
            m[key]["rss_long_parts"] = peak.describe()
            if key == "piperd":
                try:
                    metrics = http_get(clients[key].port, "/metrics")[1].decode()
                    exits = [line for line in metrics.splitlines()
                             if line.startswith("piperd_process_exits_total")]
                    m[key]["exits"] = exits
                except (OSError, http.client.HTTPException):
                    pass
            if r.error and r.error != "timeout":
                notes.append("%s, 20,000 characters: %s" % (TITLES[key], r.error))
            procs[key].stop()
        c_done = time.monotonic()
    finally:
        for proc in procs.values():
            proc.stop()
        if helper is not None:
            helper.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    ended = time.monotonic()
    run_s = ended - started
    busy1, total1 = machine_ticks()
    ours = sum(p.final_ticks or 0 for p in procs.values())
    ours += (helper.final_ticks or 0) if helper else 0
    ours += sum(os.times()[:2]) * os.sysconf("SC_CLK_TCK") - self_ticks0 * os.sysconf("SC_CLK_TCK")
    machine_busy = max(0, busy1 - busy0)
    machine_total = max(1, total1 - total0)
    other_share = max(0.0, (machine_busy - ours) / machine_total)
    our_share = min(1.0, ours / machine_total)

    section = render(m, {
        "versions": versions,
        "health": health,
        "http_port": http_port,
        "wy_port": wy_port,
        "installs_s": installs_s,
        "run_s": run_s,
        "startup_s": startup_s,
        "a_s": a_done - started - startup_s,
        "b_s": b_done - a_done,
        "c_s": c_done - b_done,
        "load_start": load_start,
        "load_end": loadavg(),
        "other_share": other_share,
        "our_share": our_share,
        "notes": notes,
        "long_chars": len(text_long),
        "long_paragraphs": text_long.count("\n\n") + 1,
        "shorts_mean": sum(map(len, texts_c1 + texts_c8)) / len(texts_c1 + texts_c8),
        "c_limits": c_limits,
        "bytes_per_second": bytes_per_second,
        "budget": args.budget,
    })
    print(section)
    (PEERS_DIR / "last-run.json").write_text(json.dumps(raw, indent=1))
    if args.out:
        Path(args.out).write_text(section)
        print("peers: wrote %s" % args.out, file=sys.stderr)
    return 0


def render(m, info):
    bps = info["bytes_per_second"]
    rows = []

    def row(metric, values, ratio=True):
        cells = [values[k] for k in SERVERS]
        if ratio:
            raw = [v if isinstance(v, (int, float)) else None for v in cells]
            ratios = [fmt_ratio(raw[1], raw[0]), fmt_ratio(raw[2], raw[0])]
        else:
            ratios = ["—", "—"]
        rows.append((metric, cells, ratios))

    def timed(key, field):
        return m[key].get(field)

    row("short sentence latency p50 (concurrency 1, %d requests)" % SHORT_C1,
        {k: timed(k, "c1_p50") for k in SERVERS})
    row("short sentence latency p95 (concurrency 1)",
        {k: timed(k, "c1_p95") for k in SERVERS})
    row("short sentence latency p50 (concurrency %d, %d requests)" % (CONCURRENCY, SHORT_C8),
        {k: timed(k, "c8_p50") for k in SERVERS})
    row("short sentence latency p95 (concurrency %d)" % CONCURRENCY,
        {k: timed(k, "c8_p95") for k in SERVERS})
    row("throughput at concurrency %d: requests/s" % CONCURRENCY,
        {k: ("rate", m[k].get("c8_rps")) for k in SERVERS})
    row("throughput at concurrency %d: audio s per wall s" % CONCURRENCY,
        {k: ("rate", m[k].get("c8_audio_rate")) for k in SERVERS})

    def long_cell(key, which):
        r = m[key].get("long")
        if r is None:
            return None
        value = r.first if which == "first" else r.total
        if value is None:
            return ("timeout", m[key]["long_limit"])
        return value

    row("20,000 characters: time to first audio", {k: long_cell(k, "first") for k in SERVERS})
    row("20,000 characters: total", {k: long_cell(k, "total") for k in SERVERS})

    def long_rate(key):
        r = m[key].get("long")
        if r is None or r.audio_bytes == 0:
            return ("rate", None)
        secs = r.total if r.total is not None else m[key]["long_limit"]
        return ("rate", r.audio_bytes / bps / secs)

    row("20,000 characters: audio s per wall s (received until done or timeout)",
        {k: long_rate(k) for k in SERVERS})
    row("server RSS after warm-up (process tree)",
        {k: ("kib", m[k].get("rss_warm")) for k in SERVERS})
    row("server RSS peak at concurrency %d (process tree)" % CONCURRENCY,
        {k: ("kib", m[k].get("rss_c8")) for k in SERVERS})
    row("server RSS peak during the 20,000 characters (process tree)",
        {k: ("kib", m[k].get("rss_long")) for k in SERVERS})

    def show(v):
        if v is None:
            return "—"
        if isinstance(v, tuple):
            kind, value = v
            if kind == "timeout":
                return "timeout (> %.0f s)" % value
            if value is None:
                return "—"
            if kind == "rate":
                return "%.2f" % value
            if kind == "kib":
                return fmt_mib(value)
        return fmt_ms(v)

    def unwrap(v):
        if isinstance(v, tuple):
            return v[1] if v[0] in ("rate", "kib") else None
        return v

    lines = ["### Against the peers (8)", ""]
    lines.append("| metric | piperd | piper http_server | wyoming-piper "
                 "| http_server / piperd | wyoming / piperd |")
    lines.append("| --- | --- | --- | --- | --- | --- |")
    for metric, cells, _ in rows:
        raw = [unwrap(c) for c in cells]
        ratios = [fmt_ratio(raw[1], raw[0]), fmt_ratio(raw[2], raw[0])]
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            metric, show(cells[0]), show(cells[1]), show(cells[2]), ratios[0], ratios[1]))
    lines.append("")

    v = info["versions"]
    h = info["health"]
    pv = v["piper-http"]
    wv = v["wyoming"]
    audio = ", ".join("%s %.1f s" % (TITLES[k], m[k]["c1_audio"]) for k in SERVERS)
    bullets = [
        "ratios are peer / piperd: above 1× a peer is slower or bigger on latency, "
        "time and memory rows, and faster on the throughput rows",
        "piperd %s (engine: %s), `target/release/piperd` with "
        "PIPER_HOST=127.0.0.1 PIPER_PORT=0 PIPER_VOICES_DIR=voices "
        "PIPER_PYTHON=.venv/bin/python PIPER_PROCESS_IDLE_TIMEOUT=3600, otherwise "
        "defaults; requests `POST /api/tts` with `voice_model`; (a), (b) non-streamed "
        "WAV, (c) `\"stream\": true`" % (h.get("version", "?"), h.get("engine", "?")),
        "piper http_server: piper-tts %s (onnxruntime %s, Flask %s, Werkzeug %s, "
        "Python %s) in `benches/.peers/piper-http`, run as `python -m "
        "piper.http_server --host 127.0.0.1 --port PORT --model "
        "voices/en_US-joe-medium.onnx`; requests `POST /synthesize` `{\"text\"}`; "
        "it answers one complete WAV when the whole text is synthesized (Flask's "
        "threaded development server, one PiperVoice shared by the threads)"
        % (pv.get("piper-tts"), pv.get("onnxruntime"), pv.get("flask"),
           pv.get("werkzeug"), pv.get("python")),
        "wyoming-piper %s (wyoming %s, piper-tts %s, onnxruntime %s, Python %s) in "
        "`benches/.peers/wyoming`, run as `python -m wyoming_piper --uri "
        "tcp://127.0.0.1:PORT --voice en_US-joe-medium --data-dir voices "
        "--download-dir benches/.peers/wyoming-data` (the voice's files are found "
        "in `voices/`, nothing is downloaded); the client (the `wyoming` package, "
        "`peers.py --wyoming-client` in that venv) sends one `synthesize` event "
        "per request on its own connection and reads `audio-chunk` events until "
        "`audio-stop`; the server synthesizes sentence by sentence, one sentence at "
        "a time for all connections (a global lock), and sends each sentence's "
        "audio when it is done"
        % (wv.get("wyoming-piper"), wv.get("wyoming"), wv.get("piper-tts"),
           wv.get("onnxruntime"), wv.get("python")),
        "same voice file (`voices/en_US-joe-medium.onnx`, %d Hz) and default "
        "synthesis settings everywhere; each server warmed with one request "
        "first; every request on a new loopback connection"
        % int(bps / 2),
        "texts: %d distinct short sentences (mean %.0f characters): %d at "
        "concurrency 1, interleaved over the three servers (request i to each "
        "in turn, rotating which goes first), then %d per server at concurrency "
        "%d, one server after the other; latency is the full round trip to the "
        "last audio byte; audio made at concurrency 1: %s"
        % (SHORT_C1 + SHORT_C8, info["shorts_mean"], SHORT_C1, SHORT_C8,
           CONCURRENCY, audio),
        "20,000-character text: %d characters in %d paragraphs, the generator and "
        "seed of `make bench`'s first 20,000-character text; first audio = first "
        "byte past the WAV header (piperd, http_server) or the first "
        "`audio-chunk` (wyoming); total = last byte / `audio-stop`; timeouts "
        "(%s) fitted to the run's %.0f s budget, each server stopped right after "
        "its turn"
        % (info["long_chars"], info["long_paragraphs"],
           ", ".join("%s %.0f s" % (TITLES[k], info["c_limits"].get(k, 0))
                     for k in SERVERS), info["budget"]),
        "20,000 characters, audio received: %s"
        % ", ".join("%s %.0f s%s" % (
            TITLES[k], m[k]["long"].audio_bytes / bps,
            "" if m[k]["long"].total is not None else " (by the timeout)")
            for k in SERVERS if m[k].get("long") is not None),
        "RSS: VmRSS summed over the server process and its descendants "
        "(piperd: the server and its engine process), sampled every 100 ms; at "
        "the peaks: concurrency %d: %s; 20,000 characters: %s"
        % (CONCURRENCY,
           "; ".join("%s %s" % (TITLES[k], m[k].get("rss_c8_parts", "—")) for k in SERVERS),
           "; ".join("%s %s" % (TITLES[k], m[k].get("rss_long_parts", "—")) for k in SERVERS)),
        "piperd engine exits counted by its `/metrics` at the end: %s"
        % ("; ".join(m["piperd"].get("exits") or ["none"])),
        "slowest request at concurrency %d: %s"
        % (CONCURRENCY, ", ".join("%s %s" % (TITLES[k], fmt_ms(m[k].get("c8_max")))
                                  for k in SERVERS)),
        "whole run: %.0f s after the installs (%.0f s of them this time): start "
        "and warm-up %.0f s, (a) %.0f s, (b) %.0f s, (c) %.0f s"
        % (info["run_s"], info["installs_s"], info["startup_s"], info["a_s"],
           info["b_s"], info["c_s"]),
        "machine: %d CPUs, %s; load average at start %s, at end %s; other "
        "processes used %.0f%% of the machine's CPU time during the run (this "
        "benchmark %.0f%%)"
        % (os.cpu_count() or 0, platform.machine(), info["load_start"],
           info["load_end"], 100 * info["other_share"], 100 * info["our_share"]),
    ]
    for note in info["notes"]:
        bullets.append("**note**: " + note)
    lines.extend("- " + b for b in bullets)
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("peers: interrupted", file=sys.stderr)
        sys.exit(130)
