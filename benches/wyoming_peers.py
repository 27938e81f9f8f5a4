#!/usr/bin/env python3
"""piperd's Wyoming port against wyoming-piper, on this machine, in one run.

Two measurements, the same voice file (voices/en_US-joe-medium.onnx) and texts
for both servers:

  (w1) wyoming-bench (PyPI `wyoming-bench`, in benches/.peers/wyoming-bench):
       `wyoming-bench tts SERVER SERVER --mode both -v` with the voice named
       in --config; its default texts (1 to 4 sentences), made unique per
       request (its default, so no cache answers), --rounds rounds after one
       warm-up per mode. TTFT (to the first audio byte) and RTF (total time /
       audio time) for `non_streaming` (one `synthesize`) and `streaming`
       (synthesize-start, a chunk per sentence, synthesize, synthesize-stop).
       wyoming-bench measures one server after the other, so it runs
       --passes times, the servers' order swapped each pass, and every
       request it reports (-v) is pooled: a shared machine's slow minute
       then falls on both servers alike. Its summary rounds RTF to two
       digits, so the RTF here is the mean of its per-request total / audio.
  (w2) short requests, each on its own connection: three alone, then three while
       another connection is answered a 20,000-character text (one
       `synthesize`, the audio streaming back): the time to each one's first
       audio chunk (a minute at most), against the raw engine's time to the
       first audio of the same sentences (benches/raw_engine.py, Piper's Python
       API, no server), measured just before.

piperd runs as `target/release/piperd` with PIPER_WYOMING_PORT on a free port;
wyoming-piper 2.5.2 from benches/.peers/wyoming (the venv benches/peers.py
makes). A markdown section goes to stdout (and --out FILE), wyoming-bench's own
report to benches/.peers/logs/wyoming-bench.txt. Everything started here is
stopped at the end.

Usage:  python3 benches/wyoming_peers.py [--rounds 2] [--passes 4] [--out FILE]
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (the helpers of the peers benchmark)

BENCH_VENV = "wyoming-bench"
BENCH_REQUIREMENTS = ["wyoming-bench==2026.10.0"]
SHORT = "Turn on the kitchen lights, please."
B_REQUESTS = 3
SHORT_LIMIT = 60.0  # seconds a short request may wait for its first audio


def client_main():
    """Helper mode, under the wyoming venv: (w2) for one port, JSON out."""
    import asyncio

    from wyoming.audio import AudioChunk, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize, SynthesizeVoice

    spec = json.loads(sys.argv[2])
    voice = SynthesizeVoice(name=spec["voice"])

    async def first_chunk(client, started, limit):
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout=limit)
            if event is None:
                raise ConnectionError("closed before audio")
            if AudioChunk.is_type(event.type):
                return time.monotonic() - started

    async def short_first(text):
        """A short request on its own connection: its first audio, or None
        after `short_limit` seconds."""
        client = AsyncTcpClient("127.0.0.1", spec["port"])
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(client.connect(), spec["short_limit"])
            await client.write_event(Synthesize(text=text, voice=voice).event())
            first = await first_chunk(client, t0, spec["short_limit"])
            while True:  # to its end, then the next
                event = await asyncio.wait_for(client.read_event(), spec["short_limit"])
                if event is None or AudioStop.is_type(event.type):
                    break
            return first
        except asyncio.TimeoutError:
            return None
        finally:
            try:
                await client.disconnect()
            except Exception:
                pass

    async def run():
        out = {"alone": [], "shorts": []}
        for i in range(spec["requests"]):
            out["alone"].append(await short_first("%s Alone %d." % (spec["short"], i + 1)))
        if not spec.get("long"):
            return out
        long_client = AsyncTcpClient("127.0.0.1", spec["port"])
        await long_client.connect()
        started = time.monotonic()
        await long_client.write_event(Synthesize(text=spec["long"], voice=voice).event())
        try:
            out["long_first"] = await first_chunk(long_client, started, spec["limit"])
        except asyncio.TimeoutError:
            out["long_first"] = None
        received = {"bytes": 0}

        async def drain():
            # Keep reading the long answer, as a client would.
            while True:
                event = await long_client.read_event()
                if event is None or AudioStop.is_type(event.type):
                    return
                if AudioChunk.is_type(event.type):
                    received["bytes"] += len(event.payload or b"")

        draining = asyncio.create_task(drain())
        out["beside"] = []
        for i in range(spec["requests"]):
            # Whether the long answer was still coming when this one was sent:
            # only those were served beside it.
            out["beside"].append(not draining.done())
            out["shorts"].append(await short_first("%s Request %d." % (spec["short"], i + 1)))
            if out["shorts"][-1] is None:
                break  # the server is stuck behind the long text: once is enough
        out["long_still_running"] = not draining.done()
        draining.cancel()
        await long_client.disconnect()
        out["long_audio_s"] = received["bytes"] / 2 / spec["rate"]
        return out

    try:
        print(json.dumps(asyncio.run(run())))
    except Exception as err:
        print(json.dumps({"error": "%s: %s" % (type(err).__name__, err)}))


def raw_engine_first_audio(text, times=5):
    """The raw engine's time to the first audio of `text` (median of `times`)."""
    proc = subprocess.Popen(
        [str(peers.SERVER_VENV_PYTHON), str(peers.ROOT / "benches" / "raw_engine.py"),
         "serve", str(peers.MODEL)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        preexec_fn=peers._die_with_parent)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready.get("ready"), ready
        took = []
        for i in range(times):
            proc.stdin.write(json.dumps({"text": "%s Request %d." % (text, i + 1),
                                         "first": True}) + "\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
            took.append(answer.get("first") or answer.get("seconds") or answer.get("s"))
            if took[-1] is None:
                raise RuntimeError("raw engine answered %r" % answer)
        return statistics.median(took), took
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def wait_wyoming(python, port, deadline):
    """Waits until a `describe` is answered on `port`."""
    code = (
        "import asyncio, sys\n"
        "from wyoming.client import AsyncTcpClient\n"
        "from wyoming.info import Describe\n"
        "async def main():\n"
        "    async with AsyncTcpClient('127.0.0.1', int(sys.argv[1])) as c:\n"
        "        await c.write_event(Describe().event())\n"
        "        e = await asyncio.wait_for(c.read_event(), 10)\n"
        "        assert e is not None and e.type == 'info'\n"
        "asyncio.run(main())\n"
    )
    while time.monotonic() < deadline:
        if subprocess.run([str(python), "-c", code, str(port)],
                          capture_output=True, timeout=30).returncode == 0:
            return
        time.sleep(0.3)
    raise RuntimeError("nothing answers describe on port %d" % port)


VERBOSE_LINE = re.compile(
    r"^\[(non_streaming|streaming)\] r\d+ sent=\d+ ttft=(\d+)ms total=(\d+)ms audio=([\d.]+)s")
SERVER_LINE = re.compile(r"^=== [\w.]+:(\d+)")


def parse_requests(text, ports, out):
    """Adds every request wyoming-bench -v printed to `out`: {mode: {port:
    [(ttft s, total s, audio s)]}} (a failed request prints no such line)."""
    port = None
    for line in text.splitlines():
        found = SERVER_LINE.match(line)
        if found:
            port = int(found.group(1)) if int(found.group(1)) in ports else None
            continue
        found = VERBOSE_LINE.match(line.strip())
        if found and port is not None:
            mode, ttft, total, audio = found.groups()
            out.setdefault(mode, {}).setdefault(port, []).append(
                (int(ttft) / 1000.0, int(total) / 1000.0, float(audio)))


def pooled(requests):
    """{ok, ttft, ttft_p95, total, rtf_act, audio} over pooled requests."""
    if not requests:
        return {}
    ttfts = sorted(r[0] for r in requests)
    return {
        "ok": len(requests),
        "ttft": statistics.mean(ttfts),
        "ttft_p95": ttfts[min(len(ttfts) - 1, int(round(0.95 * (len(ttfts) - 1))))],
        "total": statistics.mean(r[1] for r in requests),
        "rtf_act": statistics.mean(r[1] / r[2] for r in requests if r[2] > 0),
        "audio": statistics.mean(r[2] for r in requests),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--out", metavar="FILE")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main()
        return 0
    args = parser.parse_args()
    for path in (peers.PIPERD, peers.MODEL, peers.SERVER_VENV_PYTHON):
        if not path.exists():
            print("wyoming_peers: %s is missing (make setup; cargo build --release)" % path,
                  file=sys.stderr)
            return 2
    rate = json.loads(Path(str(peers.MODEL) + ".json").read_text())["audio"]["sample_rate"]

    install_started = time.monotonic()
    peers.VENVS[BENCH_VENV] = BENCH_REQUIREMENTS
    wy_python = peers.ensure_venv("wyoming")
    bench_python = peers.ensure_venv(BENCH_VENV)
    installs_s = time.monotonic() - install_started
    versions = peers.venv_versions(wy_python, ["wyoming-piper", "wyoming", "piper-tts",
                                               "onnxruntime"])
    bench_versions = peers.venv_versions(bench_python, ["wyoming-bench", "wyoming",
                                                        "sentence-stream"])
    bench_cli = bench_python.parent / "wyoming-bench"

    started = time.monotonic()
    load_start = peers.loadavg()
    busy0, total0 = peers.machine_ticks()
    procs = {}
    result = {}
    try:
        piperd_wy = peers.free_port()
        env = dict(os.environ)
        env.update({
            "PIPER_HOST": "127.0.0.1", "PIPER_PORT": "0",
            "PIPER_WYOMING_PORT": str(piperd_wy),
            "PIPER_VOICES_DIR": str(peers.VOICES_DIR),
            "PIPER_PYTHON": str(peers.SERVER_VENV_PYTHON),
            "PIPER_PROCESS_IDLE_TIMEOUT": "3600", "PIPER_SHUTDOWN_GRACE": "2",
        })
        procs["piperd"] = peers.Proc("piperd-wyoming", [str(peers.PIPERD)], env=env)
        peer_wy = peers.free_port()
        procs["wyoming"] = peers.start_wyoming(wy_python, peer_wy)
        deadline = time.monotonic() + peers.START_LIMIT
        for port in (piperd_wy, peer_wy):
            wait_wyoming(wy_python, port, deadline)

        # (w1) wyoming-bench, both servers in each pass, their order swapped
        config = json.dumps({"voice": {"name": peers.VOICE}})
        t0 = time.monotonic()
        reports = []
        requests = {}
        for number in range(args.passes):
            order = [piperd_wy, peer_wy] if number % 2 == 0 else [peer_wy, piperd_wy]
            argv = [str(bench_cli), "tts"] + ["127.0.0.1:%d" % port for port in order] + [
                "--mode", "both", "--rounds", str(args.rounds), "--warmup", "1",
                "--config", config, "--timeout", "120", "-v"]
            bench = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            reports.append("$ %s\n\n%s\n%s" % (" ".join(argv), bench.stdout, bench.stderr))
            if bench.returncode != 0:
                raise RuntimeError("wyoming-bench failed (%d):\n%s\n%s"
                                   % (bench.returncode, bench.stdout[-2000:],
                                      bench.stderr[-2000:]))
            parse_requests(bench.stdout, order, requests)
        w1_s = time.monotonic() - t0
        report = peers.PEERS_DIR / "logs" / "wyoming-bench.txt"
        report.write_text("\n\n".join(reports))
        result["w1"] = {mode: {port: pooled(found) for port, found in by_port.items()}
                        for mode, by_port in requests.items()}

        # (w2) the raw engine's first audio of the short sentences, then each
        # server: the same sentences alone, then beside a 20,000-character
        # request; each server is stopped right after its turn (wyoming-piper
        # goes on with the long text after its client left)
        t0 = time.monotonic()
        raw_first, raw_all = raw_engine_first_audio(SHORT, B_REQUESTS)
        text_long = peers.long_text(peers.opener(14), 114, peers.LONG_CHARS)
        for key, port in (("piperd", piperd_wy), ("wyoming", peer_wy)):
            spec = {"port": port, "voice": peers.VOICE, "long": text_long, "short": SHORT,
                    "requests": B_REQUESTS, "limit": 60, "short_limit": SHORT_LIMIT,
                    "rate": rate}
            out = subprocess.run([str(wy_python), str(Path(__file__).resolve()), "--client",
                                  json.dumps(spec)], capture_output=True, text=True,
                                 timeout=600)
            result[key] = json.loads(out.stdout or '{"error": %s}' % json.dumps(out.stderr[-500:]))
            procs[key].stop()
        w2_s = time.monotonic() - t0
    finally:
        for proc in procs.values():
            proc.stop()
    busy1, total1 = peers.machine_ticks()
    run_s = time.monotonic() - started

    lines = ["### Wyoming: piperd against wyoming-piper", ""]
    lines.append("| metric | piperd (Wyoming) | wyoming-piper | wyoming-piper / piperd |")
    lines.append("| --- | --- | --- | --- |")
    w1 = result["w1"]
    for mode in ("non_streaming", "streaming"):
        ours = w1.get(mode, {}).get(piperd_wy, {})
        theirs = w1.get(mode, {}).get(peer_wy, {})
        for field, name, unit in (("ttft", "TTFT mean", "ms"), ("ttft_p95", "TTFT p95", "ms"),
                                  ("total", "total mean", "ms"), ("rtf_act", "RTF mean", "")):
            a, b = ours.get(field), theirs.get(field)
            show = (lambda v: peers.fmt_ms(v) if unit else ("—" if v is None else "%.4f" % v))
            lines.append("| wyoming-bench %s: %s | %s | %s | %s |" % (
                mode, name, show(a), show(b), peers.fmt_ratio(b, a)))
    for key in ("piperd", "wyoming"):
        r = result.get(key, {})
        if "error" in r:
            lines.append("| (%s failed) | %s | | |" % (key, r["error"]))

    def med(key, field):
        xs = result.get(key, {}).get(field) or []
        if not xs:
            return None
        if any(x is None for x in xs):
            return ("timeout", SHORT_LIMIT)
        return statistics.median(xs)

    def cell(v):
        if isinstance(v, tuple):
            return "timeout (> %.0f s)" % v[1]
        return peers.fmt_ms(v)

    def ratio(b, a):
        if isinstance(b, tuple) and a is not None:
            return "> %.0f×" % (b[1] / a)
        return peers.fmt_ratio(b, a)

    def slowest_beside(key):
        r = result.get(key, {})
        xs = [x for x, beside in zip(r.get("shorts") or [], r.get("beside") or []) if beside]
        if not xs:
            return None
        if any(x is None for x in xs):
            return ("timeout", SHORT_LIMIT)
        return max(xs)

    for field, name in (("alone", "a short request's first audio, alone"),
                        ("shorts", "a short request's first audio, beside a "
                                   "20,000-character request")):
        a, b = med("piperd", field), med("wyoming", field)
        lines.append("| %s (median of %d) | %s | %s | %s |"
                     % (name, B_REQUESTS, cell(a), cell(b), ratio(b, a)))
    # The median hides the one that waited: a server that finishes the long
    # text first serves the later short requests alone.
    a, b = slowest_beside("piperd"), slowest_beside("wyoming")
    lines.append("| a short request's first audio, beside a 20,000-character request: the "
                 "slowest of those sent while the long one was still answered | %s | %s | %s |"
                 % (cell(a), cell(b), ratio(b, a)))
    lines.append("| the same sentences' first audio on the raw engine, alone "
                 "(median of %d) | %s | | |" % (B_REQUESTS, peers.fmt_ms(raw_first)))
    lines.append("")
    busy = max(0.0, (busy1 - busy0) / max(1, total1 - total0))
    bullets = [
        "command: `python3 benches/wyoming_peers.py --rounds %d --passes %d`; wyoming-bench's "
        "own reports: `benches/.peers/logs/wyoming-bench.txt`" % (args.rounds, args.passes),
        "wyoming-bench %s (wyoming %s, sentence-stream %s), %d passes, the servers' order "
        "swapped each pass, every request pooled (TTFT, total and RTF are means over the "
        "requests, RTF of each request its total / audio time, as wyoming-bench's RTF_act): `%s`" % (
            bench_versions.get("wyoming-bench"), bench_versions.get("wyoming"),
            bench_versions.get("sentence-stream"), args.passes,
            " ".join(["wyoming-bench"] + argv[1:]).replace(config, "'%s'" % config)),
        "requests that succeeded (of %d per mode and server): %s" % (
            4 * args.rounds * args.passes,
            json.dumps({m: {("piperd" if p == piperd_wy else "wyoming-piper"):
                                             v.get("ok") for p, v in w1[m].items()} for m in w1})),
        "wyoming-piper %s (wyoming %s, piper-tts %s, onnxruntime %s), as in the peers "
        "benchmark; piperd `target/release/piperd` with PIPER_WYOMING_PORT, "
        "PIPER_PROCESS_IDLE_TIMEOUT=3600, otherwise defaults" % (
            versions.get("wyoming-piper"), versions.get("wyoming"),
            versions.get("piper-tts"), versions.get("onnxruntime")),
        "short requests (\"%s Alone N.\" / \"Request N.\") one after the other on new "
        "connections, %d alone, then %d while one connection is answered the 20,000-character "
        "text as one `synthesize` (from its first audio chunk on); every time (s, None: "
        "no audio within %.0f s): %s; the long request's first audio: piperd %s, "
        "wyoming-piper %s; still running when the last short one ended: piperd %s, "
        "wyoming-piper %s" % (
            SHORT, B_REQUESTS, B_REQUESTS, SHORT_LIMIT,
            json.dumps({k: {f: [None if x is None else round(x, 3) for x in
                                result.get(k, {}).get(f) or []] for f in ("alone", "shorts")}
                        for k in ("piperd", "wyoming")}) + "; sent while the long one was "
            "still answered: %s" % json.dumps({k: result.get(k, {}).get("beside")
                                               for k in ("piperd", "wyoming")}),
            peers.fmt_ms(result.get("piperd", {}).get("long_first")),
            peers.fmt_ms(result.get("wyoming", {}).get("long_first")),
            result.get("piperd", {}).get("long_still_running"),
            result.get("wyoming", {}).get("long_still_running")),
        "raw engine: `benches/raw_engine.py serve` (Piper's Python API in .venv, every core), "
        "time to the first audio chunk of \"%s Request N.\": %s" % (
            SHORT, [round(x, 3) for x in raw_all]),
        "run: %.0f s after the installs (%.0f s): wyoming-bench %.0f s, beside-a-long-text "
        "%.0f s" % (run_s, installs_s, w1_s, w2_s),
        "machine: %d CPUs, %s; load average at start %s, at end %s; the machine was "
        "%.0f%% busy during the run (both servers, their clients and wyoming-bench "
        "included); the ratios compare servers measured in the same minutes"
        % (os.cpu_count() or 0, platform.machine(), load_start, peers.loadavg(), 100 * busy),
    ]
    lines.extend("- " + b for b in bullets)
    lines.append("")
    section = "\n".join(lines)
    print(section)
    (peers.PEERS_DIR / "wyoming-last-run.json").write_text(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
