"""The soak: every front-end at once, through the real clients, with faults.

Run by tests/soak.rs (which starts piperd through tests/common's `Server`),
for `SOAK_SECONDS` (60 in `make test`, 600 in `make soak`):

    driver.py --base URL --wyoming-port P --pid PID --voices-dir D
              --temp-dir T --voices a,b,c --decoder target/release/examples/soak-decode
              --seconds S

Clients loop over the front-ends at random: the seed API (complete and
streamed, with timestamps and captions), OpenAI (mp3, opus and SSE, through
the `openai` SDK), ElevenLabs multi-stream-input contexts with interruptions
(`websockets`), Wyoming streaming sessions (`wyoming`), MaryTTS
(`speak2mary`). Some hang up on purpose after their first audio. Every
~20 s a random engine process gets SIGKILL, and once a voice's model file is
replaced.

Every answer is checked: it decodes (tests/soak/decode.rs), its length is
plausible for its text (seconds per character within a broad band measured
from the voice first), its word timestamps are ordered. A documented error
(the error table's engine, busy and voice codes; a Wyoming `error` event; a
WebSocket error message; a streamed answer cut off while an engine was being
killed, which is how a stream reports a failure after its first audio) is an
outcome. Anything else is lost (no answer within the bound, a dropped
connection, a 500, an undocumented error) or malformed (an answer that does
not decode, is implausibly long or short, or has disordered timestamps).

The server's RSS and open descriptors are read from /proc at the start
(after a warm-up), the middle and the end, each time with the load paused
and both engines warm, so the numbers compare. At the end the server gets
SIGTERM; engines and temp files left after it exits are leaks. The last line
is `soak: N requests, L lost, M malformed, K leaked`; the exit status is 0
only when L, M and K are 0 and RSS and descriptors stayed flat.
"""

import argparse
import asyncio
import base64
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

try:
    # The openai SDK sends its requests with httpx2, a fork of httpx whose
    # errors are not httpx's: a stream it reads that is cut raises
    # httpx2.RemoteProtocolError, not an APIConnectionError.
    import httpx2

    TRANSPORT_ERRORS = (httpx.HTTPError, httpx2.HTTPError)
except ImportError:  # an SDK on httpx itself
    TRANSPORT_ERRORS = (httpx.HTTPError,)

# Every wait of a request is bounded by this: past it, the request is lost.
BOUND = 120.0
socket.setdefaulttimeout(BOUND)  # speak2mary's http.client has no timeout of its own

RSS_FLAT_MIB = 20
FDS_FLAT = 10

# Codes of the README's error table a request may end with under faults and
# load: engine failures, busy, a voice that crash-looped. A client mistake
# (invalid_request, voice_not_found, ...) would be the driver's bug: lost.
DOCUMENTED = {
    "engine_crashed",
    "engine_bad_output",
    "engine_timeout",
    "voice_unavailable",
    "process_limit",
    "overloaded",
    "engine_unavailable",
}

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Why would anyone leave the door open on such a cold night?",
    "Rain again!",
    "Please remember to water the plants on Tuesday.",
    "The library closes at six, but the reading room stays open until eight for members.",
    "She counted the boxes twice, once in the hall and once in the kitchen.",
    "Nobody expected the morning train to arrive so early, least of all the station master.",
    "The garage door is open. Shall I close it?",
    "A gentle breeze carried the smell of fresh bread down the narrow street.",
    "Turn left at the old mill, then follow the river until you see the bridge.",
    "Good morning, the weather today is mild with a light wind from the west.",
    "He paused, looked at the map again, and decided to wait for the others.",
]

FRONTENDS = [
    "seed-complete",
    "seed-stream",
    "timestamps",
    "timestamps-ndjson",
    "openai-mp3",
    "openai-opus",
    "openai-sse",
    "elevenlabs",
    "wyoming",
    "marytts",
]


def text_of(rng):
    return " ".join(rng.sample(SENTENCES, rng.randint(1, 3)))


REQUEST_IDS = itertools.count(1)


class Outcome:
    def __init__(self, frontend, voice, text):
        self.frontend = frontend
        self.voice = voice
        self.text = text
        self.started = time.monotonic()
        self.ended = None
        self.first_audio = None
        self.kind = None  # ok, hangup, documented, lost, malformed
        self.detail = ""
        # Sent as X-Request-Id where the front-end takes it, so a loss can
        # be found in the server's log (target/soak-server.log).
        self.rid = f"soak-{next(REQUEST_IDS)}"

    def audio(self):
        if self.first_audio is None:
            self.first_audio = time.monotonic() - self.started

    def end(self, kind, detail=""):
        if self.kind is None:
            self.kind = kind
            self.detail = detail
            self.ended = time.monotonic()
        return self


class Decoder:
    """The soak-decode process, one answer at a time."""

    def __init__(self, path):
        self.proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lock = threading.Lock()

    def _decode(self, fmt, rate, data):
        with self.lock:
            self.proc.stdin.write(f"{fmt} {rate} {len(data)}\n".encode() + data)
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    async def decode(self, fmt, data, rate=0):
        return await asyncio.to_thread(self._decode, fmt, rate, bytes(data))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


class Soak:
    def __init__(self, args):
        self.args = args
        self.frontends = [f for f in args.frontends.split(",") if f]
        unknown = set(self.frontends) - set(FRONTENDS)
        if unknown or not self.frontends:
            raise SystemExit(f"--frontends: unknown {sorted(unknown)}; choose from {FRONTENDS}")
        self.base = args.base
        self.port = int(args.base.rsplit(":", 1)[1])
        self.voices = args.voices.split(",")
        self.rng = random.Random(args.seed)
        self.decoder = Decoder(args.decoder)
        self.outcomes = []
        self.kills = []  # (monotonic time, pid)
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = 0
        self.samples = []  # (label, rss_kib, fds, engines)
        self.spc = {}  # voice -> seconds per character
        self.replaced = None  # (voice, monotonic time)
        self.after_replace = []
        self.notes = []
        self.deadline = None

    # -- checks -----------------------------------------------------------

    def plausible(self, outcome, seconds):
        """Is `seconds` of audio plausible for the outcome's text?"""
        spc = self.spc[outcome.voice]
        chars = len(outcome.text)
        low, high = 0.4 * spc * chars, 2.5 * spc * chars + 1.0
        if low <= seconds <= high:
            return None
        return f"{seconds:.2f} s for {chars} characters (band {low:.2f}-{high:.2f} s)"

    async def check_audio(self, outcome, fmt, data, rate=0, want_rate=None):
        decoded = await self.decoder.decode(fmt, data, rate)
        if not decoded["ok"]:
            return outcome.end("malformed", decoded["error"])
        if want_rate is not None and decoded["rate"] != want_rate:
            return outcome.end("malformed", f"rate {decoded['rate']}, not {want_rate}")
        if decoded["rms"] < 50:
            return outcome.end("malformed", f"silence (rms {decoded['rms']:.0f})")
        wrong = self.plausible(outcome, decoded["seconds"])
        if wrong:
            return outcome.end("malformed", wrong)
        return outcome.end("ok")

    def killed_during(self, outcome):
        end = outcome.ended or time.monotonic()
        return any(outcome.started - 1.0 <= t <= end + 1.0 for t, _ in self.kills)

    def http_error(self, outcome, status, body):
        """An HTTP error answer: documented, or lost."""
        try:
            value = json.loads(body)
        except ValueError:
            return outcome.end("lost", f"{status} without a JSON error: {body[:100]!r}")
        error = value.get("error")
        code = error.get("code") if isinstance(error, dict) else value.get("code")
        if code in DOCUMENTED and status in (502, 503, 504):
            return outcome.end("documented", code)
        return outcome.end("lost", f"{status} {code}: {body[:200]!r}")

    def cut(self, outcome, err):
        """A transfer that ended early: documented only beside a kill."""
        if self.killed_during(outcome):
            return outcome.end("documented", "stream_aborted")
        return outcome.end("lost", f"cut off with no engine killed: {err!r}")

    def hangup(self):
        return self.rng.random() < 0.12

    # -- front-ends -------------------------------------------------------

    async def seed(self, outcome, stream):
        body = {"text": outcome.text, "voice_model": outcome.voice}
        fmt = "wav"
        if stream:
            body["stream"] = True
            fmt = "wav-stream"
        elif self.rng.random() < 0.3:
            body["response_format"] = "pcm"
            fmt = "pcm"
        hangup = self.hangup()
        data = bytearray()

        async def fetch():
            async with httpx.AsyncClient(timeout=BOUND) as client:
                headers = {"X-Request-Id": outcome.rid}
                async with client.stream("POST", f"{self.base}/api/tts", json=body, headers=headers) as r:
                    if r.status_code != 200:
                        return self.http_error(outcome, r.status_code, await r.aread())
                    async for chunk in r.aiter_bytes():
                        outcome.audio()
                        data.extend(chunk)
                        if hangup and stream:
                            return outcome.end("hangup")
            return None

        try:
            if hangup and not stream:
                # A complete answer's client gives up before it comes.
                try:
                    ended = await asyncio.wait_for(fetch(), self.rng.uniform(0.1, 1.5))
                except asyncio.TimeoutError:
                    return outcome.end("hangup")
            else:
                ended = await fetch()
        except httpx.HTTPError as err:
            return self.cut(outcome, err)
        if ended is not None:
            return ended
        return await self.check_audio(outcome, fmt, data, rate=22050, want_rate=22050)

    async def timestamps(self, outcome, stream):
        body = {"text": outcome.text, "voice_model": outcome.voice, "timestamps": True}
        if stream:
            body["stream"] = True
        else:
            body["captions"] = self.rng.choice(["vtt", "srt"])
        async with httpx.AsyncClient(timeout=BOUND) as client:
            try:
                headers = {"X-Request-Id": outcome.rid}
                async with client.stream("POST", f"{self.base}/api/tts", json=body, headers=headers) as r:
                    if r.status_code != 200:
                        return self.http_error(outcome, r.status_code, await r.aread())
                    lines = []
                    async for line in r.aiter_lines():
                        outcome.audio()
                        if line.strip():
                            lines.append(json.loads(line) if stream else line)
            except httpx.HTTPError as err:
                return self.cut(outcome, err)
        if not stream:
            answer = json.loads("\n".join(lines))
            words = answer["words"]
            audio = base64.b64decode(answer["audio"])
            wrong = self.captions(body["captions"], answer.get("captions", ""))
            if wrong:
                return outcome.end("malformed", wrong)
            fmt = "wav"
        else:
            last = lines[-1] if lines else {}
            if "error" in last:
                code = last.get("code")
                if code in DOCUMENTED:
                    return outcome.end("documented", code)
                return outcome.end("lost", f"NDJSON error {last}")
            if not last.get("done"):
                return outcome.end("lost", "NDJSON without its done line")
            words = [w for piece in lines for w in piece.get("words", [])]
            audio = b"".join(base64.b64decode(piece["audio"]) for piece in lines)
            fmt = "wav-stream"
        wrong = self.ordered(outcome.text, words)
        if wrong:
            return outcome.end("malformed", wrong)
        return await self.check_audio(outcome, fmt, audio, want_rate=22050)

    @staticmethod
    def ordered(text, words):
        if not words:
            return "no words"
        previous_start, previous_char = -1.0, -1
        for w in words:
            if not (w["start"] <= w["end"]):
                return f"word ends before it starts: {w}"
            if w["start"] < previous_start or w["char_start"] < previous_char:
                return f"words out of order at {w}"
            if text[w["char_start"]:w["char_end"]] != w["word"]:
                return f"word {w['word']!r} is not at {w['char_start']}..{w['char_end']}"
            previous_start, previous_char = w["start"], w["char_start"]
        return None

    @staticmethod
    def captions(kind, text):
        try:
            if kind == "srt":
                import srt

                cues = list(srt.parse(text))
                times = [(c.start.total_seconds(), c.end.total_seconds()) for c in cues]
            else:
                import webvtt

                cues = webvtt.from_string(text).captions
                times = [(c.start_in_seconds, c.end_in_seconds) for c in cues]
        except Exception as err:  # the parsers raise their own types
            return f"{kind} captions do not parse: {err}"
        if not times:
            return f"no {kind} cues"
        for (s0, e0), (s1, _) in zip(times, times[1:]):
            if s1 < s0 or e0 < s0:
                return f"{kind} cues out of order"
        return None

    async def openai(self, outcome, kind):
        from openai import APIConnectionError, APIStatusError, AsyncOpenAI

        client = AsyncOpenAI(base_url=f"{self.base}/v1", api_key="unused", timeout=BOUND, max_retries=0)
        fmt = {"openai-mp3": "mp3", "openai-opus": "opus", "openai-sse": "pcm"}[kind]
        extra = {"stream_format": "sse"} if kind == "openai-sse" else {}
        hangup = self.hangup()
        data = bytearray()
        done = None
        try:
            async with client.audio.speech.with_streaming_response.create(
                model="tts-1",
                voice=outcome.voice,
                input=outcome.text,
                response_format=fmt,
                extra_headers={"X-Request-Id": outcome.rid},
                **extra,
            ) as response:
                if kind == "openai-sse":
                    async for line in response.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        event = json.loads(line[6:])
                        if event["type"] == "speech.audio.delta":
                            outcome.audio()
                            data.extend(base64.b64decode(event["audio"]))
                            if hangup:
                                return outcome.end("hangup")
                        elif event["type"] == "speech.audio.done":
                            done = event
                else:
                    async for chunk in response.iter_bytes():
                        outcome.audio()
                        data.extend(chunk)
                        if hangup:
                            return outcome.end("hangup")
        except APIStatusError as err:
            return self.http_error(outcome, err.status_code, err.response.content)
        except (APIConnectionError, *TRANSPORT_ERRORS) as err:
            return self.cut(outcome, err)
        finally:
            await client.close()
        if kind == "openai-sse" and done is None:
            return self.cut(outcome, "SSE without speech.audio.done")
        want = 48000 if fmt == "opus" else 22050
        return await self.check_audio(outcome, fmt, data, rate=22050, want_rate=want)

    async def elevenlabs(self, outcome):
        """Two contexts on one multi-stream-input socket: the outcome's text
        spoken whole in one, the other interrupted (close_context) after its
        first audio, as an agent does when the user barges in."""
        import websockets
        from websockets.asyncio.client import connect

        url = (
            f"ws://127.0.0.1:{self.port}/v1/text-to-speech/{outcome.voice}/multi-stream-input"
            "?output_format=pcm_22050&model_id=eleven_flash_v2_5"
        )
        hangup = self.hangup()
        audio = {"main": bytearray(), "barge": bytearray()}
        finals = set()
        error = None
        try:
            async with connect(url, max_size=16 * 1024 * 1024, open_timeout=BOUND) as ws:
                await ws.send(json.dumps({"text": " ", "context_id": "main"}))
                await ws.send(json.dumps({"text": " ", "context_id": "barge"}))
                await ws.send(json.dumps({"text": text_of(self.rng) + " ", "context_id": "barge", "flush": True}))
                # The text arrives as a language model's tokens would.
                words = outcome.text.split(" ")
                for i in range(0, len(words), 3):
                    await ws.send(json.dumps({"text": " ".join(words[i : i + 3]) + " ", "context_id": "main"}))
                await ws.send(json.dumps({"context_id": "main", "flush": True}))
                # Barge in on the other context at its first audio; once it
                # is over, close_socket: the rest of main is spoken, then
                # main's isFinal and the close (1000).
                interrupted = closing = False
                while True:
                    try:
                        message = await asyncio.wait_for(ws.recv(), BOUND)
                    except websockets.ConnectionClosedOK:
                        break
                    msg = json.loads(message)
                    context = msg.get("contextId")
                    if "error" in msg:
                        error = msg
                        break
                    if msg.get("isFinal") is True:
                        finals.add(context)
                    elif msg.get("audio"):
                        outcome.audio()
                        audio[context].extend(base64.b64decode(msg["audio"]))
                        if hangup:
                            ws.transport.abort()
                            return outcome.end("hangup")
                        if context == "barge" and not interrupted:
                            interrupted = True
                            await ws.send(json.dumps({"context_id": "barge", "close_context": True}))
                    if "barge" in finals and not closing:
                        closing = True
                        await ws.send(json.dumps({"close_socket": True}))
                if error is not None:
                    try:
                        await asyncio.wait_for(ws.wait_closed(), BOUND)
                    except asyncio.TimeoutError:
                        pass
                elif ws.close_code != 1000 or finals != {"main", "barge"}:
                    return outcome.end("lost", f"closed {ws.close_code} with finals {sorted(finals)}")
        except asyncio.TimeoutError:
            return outcome.end("lost", "no message within the bound")
        except (websockets.WebSocketException, OSError) as err:
            return outcome.end("lost", f"socket dropped: {err!r}")
        if error is not None:
            if error.get("error") in DOCUMENTED:
                return outcome.end("documented", error["error"])
            return outcome.end("lost", f"WebSocket error {error}")
        return await self.check_audio(outcome, "pcm", audio["main"], rate=22050)

    async def wyoming(self, outcome):
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.client import AsyncTcpClient
        from wyoming.error import Error
        from wyoming.tts import (
            Synthesize,
            SynthesizeChunk,
            SynthesizeStart,
            SynthesizeStop,
            SynthesizeStopped,
            SynthesizeVoice,
        )

        voice = SynthesizeVoice(name=outcome.voice)
        hangup = self.hangup()
        streaming = self.rng.random() < 0.75
        pcm = bytearray()
        rate = None
        try:
            async with AsyncTcpClient("127.0.0.1", self.args.wyoming_port) as client:
                if streaming:
                    await client.write_event(SynthesizeStart(voice=voice).event())
                    text = outcome.text
                    for i in range(0, len(text), 7):  # cut anywhere, even mid-word
                        await client.write_event(SynthesizeChunk(text=text[i : i + 7]).event())
                    await client.write_event(Synthesize(text=text, voice=voice).event())
                    await client.write_event(SynthesizeStop().event())
                else:
                    await client.write_event(Synthesize(text=outcome.text, voice=voice).event())
                stopped = False
                while True:
                    event = await asyncio.wait_for(client.read_event(), BOUND)
                    if event is None:
                        if stopped or not streaming:
                            break
                        return outcome.end("lost", "connection closed without synthesize-stopped")
                    if AudioStart.is_type(event.type):
                        rate = AudioStart.from_event(event).rate
                    elif AudioChunk.is_type(event.type):
                        outcome.audio()
                        pcm.extend(AudioChunk.from_event(event).audio)
                        if hangup:
                            return outcome.end("hangup")
                    elif Error.is_type(event.type):
                        code = Error.from_event(event).code
                        if code in DOCUMENTED:
                            return outcome.end("documented", code)
                        return outcome.end("lost", f"Wyoming error {code}")
                    elif AudioStop.is_type(event.type) and not streaming:
                        break
                    elif SynthesizeStopped.is_type(event.type):
                        stopped = True
                        break
        except asyncio.TimeoutError:
            return outcome.end("lost", "no event within the bound")
        except OSError as err:
            return outcome.end("lost", f"connection dropped: {err!r}")
        return await self.check_audio(outcome, "pcm", pcm, rate=rate or 0, want_rate=22050)

    async def marytts(self, outcome):
        from speak2mary import MaryTTS

        def speak():
            tts = MaryTTS("127.0.0.1", self.port, "WAVE_FILE", "en_US", outcome.voice)
            return tts.speak(outcome.text)

        try:
            wav = await asyncio.wait_for(asyncio.to_thread(speak), BOUND)
        except asyncio.TimeoutError:
            return outcome.end("lost", "no answer within the bound")
        except OSError as err:
            return outcome.end("lost", f"connection dropped: {err!r}")
        except Exception as err:  # speak2mary raises a bare Exception("STATUS - ...")
            status = str(err).split(" ", 1)[0]
            # MaryTTS errors are a line of text: a busy or failed engine is 5xx.
            if status in ("502", "503", "504"):
                return outcome.end("documented", f"marytts {status}")
            return outcome.end("lost", str(err)[:200])
        outcome.audio()
        return await self.check_audio(outcome, "wav", wav, want_rate=22050)

    # -- the run ----------------------------------------------------------

    async def one(self, frontend):
        voice = self.rng.choice(self.voices)
        outcome = Outcome(frontend, voice, text_of(self.rng))
        replaced = self.replaced
        try:
            if frontend in ("seed-complete", "seed-stream"):
                coro = self.seed(outcome, frontend == "seed-stream")
            elif frontend in ("timestamps", "timestamps-ndjson"):
                coro = self.timestamps(outcome, frontend == "timestamps-ndjson")
            elif frontend.startswith("openai"):
                coro = self.openai(outcome, frontend)
            elif frontend == "elevenlabs":
                coro = self.elevenlabs(outcome)
            elif frontend == "wyoming":
                coro = self.wyoming(outcome)
            else:
                coro = self.marytts(outcome)
            await asyncio.wait_for(coro, BOUND + 10)
        except asyncio.TimeoutError:
            outcome.end("lost", "past the bound")
        except Exception as err:  # anything unforeseen is a finding, not a crash
            outcome.end("lost", f"{type(err).__name__}: {err}")
        if outcome.kind in ("lost", "malformed"):
            at = outcome.started - self.t0
            print(
                f"  {outcome.kind}: {frontend} {voice} at {at:.1f} s ({outcome.rid}): {outcome.detail}",
                flush=True,
            )
        self.outcomes.append(outcome)
        if replaced and outcome.voice == replaced[0] and outcome.started > replaced[1]:
            self.after_replace.append(outcome.kind)

    async def client(self):
        while time.monotonic() < self.deadline:
            await self.gate.wait()
            if time.monotonic() >= self.deadline:
                break
            self.in_flight += 1
            try:
                await self.one(self.rng.choice(self.frontends))
            finally:
                self.in_flight -= 1

    def engines(self, children_only=False):
        """Live engine processes of this server (by the voices folder; with
        `children_only`, only those whose parent is the server)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().decode(errors="replace")
                with open(f"/proc/{entry}/stat") as f:
                    state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            except OSError:
                continue
            if children_only and int(ppid) != self.args.pid:
                continue
            if self.args.voices_dir in cmdline and state != "Z":
                found.append(int(entry))
        return found

    async def killer(self):
        # Every ~20 s; a short run (60 s in `make test`) gets a few as well.
        period = min(20.0, self.args.seconds / 4)
        while True:
            await asyncio.sleep(self.rng.uniform(0.75, 1.25) * period)
            await self.gate.wait()
            if time.monotonic() >= self.deadline:
                return
            engines = self.engines(children_only=True)
            if engines:
                pid = self.rng.choice(engines)
                os.kill(pid, signal.SIGKILL)
                self.kills.append((time.monotonic(), pid))

    async def replacer(self, at):
        await asyncio.sleep(at)
        voice = self.voices[-1]
        model = os.path.join(self.args.voices_dir, f"{voice}.onnx")
        swap = os.path.join(self.args.voices_dir, f".{voice}.swap")
        await asyncio.to_thread(shutil.copyfile, model, swap)
        os.replace(swap, model)  # whole at once, as rsync does
        self.replaced = (voice, time.monotonic())

    def proc_sample(self, label):
        pid = self.args.pid
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        self.samples.append((label, rss, fds, len(self.engines())))

    async def sample(self, label):
        """Pauses the load, warms the last two voices (so both processes
        are up, whatever was killed), then reads RSS and descriptors."""
        self.gate.clear()
        try:
            until = time.monotonic() + BOUND + 20
            while self.in_flight and time.monotonic() < until:
                await asyncio.sleep(0.1)
            async with httpx.AsyncClient(timeout=BOUND) as client:
                for voice in self.voices[-2:]:
                    r = await client.post(f"{self.base}/api/warmup", json={"voice_model": voice})
                    if r.status_code != 200:
                        self.notes.append(f"warmup of {voice} at {label}: {r.status_code} {r.text[:100]}")
            await asyncio.sleep(1.0)
            self.proc_sample(label)
        finally:
            self.gate.set()

    async def calibrate(self):
        """Seconds per character of each voice, from a whole text."""
        text = " ".join(SENTENCES[:6])
        async with httpx.AsyncClient(timeout=BOUND) as client:
            for voice in self.voices:
                for attempt in range(5):
                    r = await client.post(
                        f"{self.base}/api/tts", json={"text": text, "voice_model": voice, "response_format": "pcm"}
                    )
                    if r.status_code == 200:
                        break
                    # A busy machine may time a sentence out: a documented error.
                    self.notes.append(f"calibration of {voice}: {r.status_code} {r.text[:100]}")
                r.raise_for_status()
                self.spc[voice] = len(r.content) / 2 / 22050 / len(text)

    async def run(self):
        seconds = self.args.seconds
        await self.calibrate()
        self.t0 = time.monotonic()
        self.deadline = self.t0 + seconds
        clients = [asyncio.create_task(self.client()) for _ in range(self.args.clients)]
        killer = asyncio.create_task(self.killer())
        replacer = asyncio.create_task(self.replacer(0.35 * seconds))
        await asyncio.sleep(max(10.0, 0.15 * seconds))
        await self.sample("start")
        await asyncio.sleep(max(0.0, self.t0 + 0.55 * seconds - time.monotonic()))
        await self.sample("middle")
        await asyncio.gather(*clients)
        killer.cancel()
        await replacer
        await self.sample("end")
        self.elapsed = time.monotonic() - self.t0

    def stop_server(self):
        """SIGTERM, then wait for the exit; engines and temp files left are leaks."""
        pid = self.args.pid
        os.kill(pid, signal.SIGTERM)
        until = time.monotonic() + 90
        exited = False
        while time.monotonic() < until:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        exited = True
                        break
            except OSError:
                exited = True
                break
            time.sleep(0.05)
        # Engines get their parent-death signal with the server: give them a moment.
        time.sleep(0.5)
        engines = self.engines()
        temp = []
        for root, _, files in os.walk(self.args.temp_dir):
            temp.extend(os.path.join(root, f) for f in files)
        return exited, engines, temp

    def report(self, exited, engines, temp):
        out = []
        p = out.append
        load = open("/proc/loadavg").read().split()[:3]
        p(f"soak over {self.elapsed:.0f} s, {self.args.clients} clients, voices {', '.join(self.voices)}, "
          f"load average {' '.join(load)}")
        p("seconds per character: " + ", ".join(f"{v} {s:.4f}" for v, s in self.spc.items()))
        p("")
        p("| front-end | requests | ok | hung up | documented errors | lost | malformed | first audio p50 | p99 |")
        p("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
        for frontend in self.frontends:
            these = [o for o in self.outcomes if o.frontend == frontend]
            count = lambda kind: sum(1 for o in these if o.kind == kind)
            documented = {}
            for o in these:
                if o.kind == "documented":
                    documented[o.detail] = documented.get(o.detail, 0) + 1
            firsts = sorted(o.first_audio for o in these if o.first_audio is not None and o.kind in ("ok", "hangup"))
            pct = lambda q: f"{firsts[min(len(firsts) - 1, int(q * len(firsts)))]:.2f} s" if firsts else "-"
            doc = ", ".join(f"{k} {v}" for k, v in sorted(documented.items())) or "0"
            p(f"| {frontend} | {len(these)} | {count('ok')} | {count('hangup')} | {doc} | {count('lost')} | "
              f"{count('malformed')} | {pct(0.5)} | {pct(0.99)} |")
        p("")
        p(f"engine kills (SIGKILL): {len(self.kills)}")
        if self.replaced:
            at = self.replaced[1] - self.t0
            p(f"voice {self.replaced[0]} replaced at {at:.0f} s; its requests after: "
              + ", ".join(f"{k} {self.after_replace.count(k)}" for k in sorted(set(self.after_replace))))
        p("")
        p("| server | RSS | open descriptors | engines |")
        p("| --- | ---: | ---: | ---: |")
        for label, rss, fds, n in self.samples:
            p(f"| {label} | {rss / 1024:.1f} MiB | {fds} | {n} |")
        for note in self.notes:
            p(f"note: {note}")
        p("")
        p(f"server exited after SIGTERM: {'yes' if exited else 'NO'}; engines left: {len(engines)} {engines}; "
          f"temp files left: {len(temp)} {temp[:5]}")
        start = next(s for s in self.samples if s[0] == "start")
        rss_drift = max(abs(s[1] - start[1]) for s in self.samples) / 1024
        fd_drift = max(abs(s[2] - start[2]) for s in self.samples)
        fds_grown = max(0, self.samples[-1][2] - start[2] - FDS_FLAT)
        flat = rss_drift <= RSS_FLAT_MIB and fd_drift <= FDS_FLAT
        p(f"RSS drift {rss_drift:.1f} MiB (at most {RSS_FLAT_MIB}), descriptor drift {fd_drift} (at most {FDS_FLAT}): "
          + ("flat" if flat else "NOT FLAT"))
        n = len(self.outcomes)
        lost = sum(1 for o in self.outcomes if o.kind == "lost")
        malformed = sum(1 for o in self.outcomes if o.kind == "malformed")
        leaked = len(engines) + len(temp) + fds_grown + (0 if exited else 1)
        p(f"soak: {n} requests, {lost} lost, {malformed} malformed, {leaked} leaked")
        print("\n".join(out), flush=True)
        return lost == 0 and malformed == 0 and leaked == 0 and flat and n > 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--wyoming-port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--voices-dir", required=True)
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument("--voices", required=True)
    parser.add_argument("--decoder", required=True)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--frontends", default=",".join(FRONTENDS), help="comma-separated subset to draw from")
    args = parser.parse_args()
    print(f"soak: {args.seconds:.0f} s, seed {args.seed}", flush=True)
    soak = Soak(args)
    try:
        asyncio.run(soak.run())
    except BaseException:
        # Still stop the server, so that nothing outlives the run.
        soak.stop_server()
        raise
    finally:
        soak.decoder.close()
    ok = soak.report(*soak.stop_server())
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
