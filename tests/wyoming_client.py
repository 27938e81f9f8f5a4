"""A Wyoming client on the official `wyoming` package, driven by tests/wyoming.rs.

Usage: python tests/wyoming_client.py PORT MODE 'JSON ARGS'

Prints one JSON object: what the server answered, with times in seconds from
the request's first event. Modes:

  info        describe; the answer parsed by `Info.from_event` (it raises when a
              field the package requires is missing)
  synthesize  one `synthesize`, read the way Home Assistant's one-shot path
              reads it (homeassistant/components/wyoming/tts.py,
              async_get_tts_audio: until `audio-stop`)
  stream      Home Assistant's streaming sequence (same file,
              _write_tts_message / _read_tts_audio): synthesize-start, the text
              in chunks cut every `cut` characters (mid-word) written `delay`
              seconds apart, the whole text again as `synthesize`,
              synthesize-stop; read concurrently until `synthesize-stopped` or
              the connection closes
  hangup      a `synthesize` (or a stream, with "stream": true), and a close
              right after the first audio chunk

Every mode takes "before": events sent first, as [{"type", "data"}] (to show
that unknown types are ignored), and "voice": {"name", "language", "speaker"}.
"""

import asyncio
import json
import sys
import time

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

READ_TIMEOUT = 120.0


def voice_of(args):
    voice = args.get("voice")
    if voice is None:
        return None
    return SynthesizeVoice(
        name=voice.get("name"),
        language=voice.get("language"),
        speaker=voice.get("speaker"),
    )


class Audio:
    """What came back, as Home Assistant would see it."""

    def __init__(self, started):
        self.started = started
        self.types = []
        self.format = None
        self.audio_starts = 0
        self.chunk_formats = set()
        self.samples = 0
        self.chunks = 0
        self.largest_chunk = 0
        self.first_audio = None
        self.pcm = bytearray()
        self.error = None
        self.closed = False

    def take(self, event):
        """One event in; True once it ends the answer's audio."""
        if not self.types or self.types[-1] != event.type:
            self.types.append(event.type)
        if AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
            self.audio_starts += 1
            if self.format is None:
                self.format = [start.rate, start.width, start.channels]
        elif AudioChunk.is_type(event.type):
            chunk = AudioChunk.from_event(event)
            if self.first_audio is None:
                self.first_audio = time.monotonic() - self.started
            self.chunk_formats.add((chunk.rate, chunk.width, chunk.channels))
            self.samples += chunk.samples
            self.chunks += 1
            self.largest_chunk = max(self.largest_chunk, chunk.samples)
            self.pcm.extend(chunk.audio)
        elif Error.is_type(event.type):
            error = Error.from_event(event)
            self.error = {"text": error.text, "code": error.code}
        return False

    def report(self):
        peak = 0
        if self.pcm:
            samples = memoryview(bytes(self.pcm)).cast("h")
            peak = max(abs(s) for s in samples[:: max(1, len(samples) // 20000)])
        return {
            "types": self.types,
            "format": self.format,
            "audio_starts": self.audio_starts,
            "chunk_formats": sorted(list(f) for f in self.chunk_formats),
            "samples": self.samples,
            "seconds": self.samples / self.format[0] if self.format else 0.0,
            "chunks": self.chunks,
            "largest_chunk": self.largest_chunk,
            "first_audio": self.first_audio,
            "total": time.monotonic() - self.started,
            "peak": peak,
            "error": self.error,
            "closed": self.closed,
        }


async def read(client):
    return await asyncio.wait_for(client.read_event(), timeout=READ_TIMEOUT)


async def send_before(client, args):
    for raw in args.get("before", []):
        await client.write_event(Event(type=raw["type"], data=raw.get("data", {})))


async def info(client, args):
    await send_before(client, args)
    started = time.monotonic()
    await client.write_event(Describe().event())
    event = await read(client)
    took = time.monotonic() - started
    if event is None or not Info.is_type(event.type):
        return {"error": "no info: %r" % (event,)}
    parsed = Info.from_event(event)
    return {
        "ms": took * 1000.0,
        "tts": [
            {
                "name": program.name,
                "installed": program.installed,
                "version": program.version,
                "description": program.description,
                "attribution": [program.attribution.name, program.attribution.url],
                "streaming": program.supports_synthesize_streaming,
                "voices": [
                    {
                        "name": voice.name,
                        "languages": voice.languages,
                        "installed": voice.installed,
                        "description": voice.description,
                        "speakers": (
                            None
                            if voice.speakers is None
                            else [s.name for s in voice.speakers]
                        ),
                    }
                    for voice in program.voices
                ],
            }
            for program in parsed.tts
        ],
        "asr": len(parsed.asr),
    }


async def synthesize(client, args):
    await send_before(client, args)
    audio = Audio(time.monotonic())
    await client.write_event(Synthesize(text=args["text"], voice=voice_of(args)).event())
    while True:
        event = await read(client)
        if event is None:
            audio.closed = True
            break
        audio.take(event)
        if AudioStop.is_type(event.type) or Error.is_type(event.type):
            break
    if audio.error is not None:
        # A failure closes the connection: nothing may follow the error.
        audio.closed = (await read(client)) is None
    return audio.report()


async def stream(client, args):
    await send_before(client, args)
    text = args["text"]
    cut = int(args.get("cut", 7))
    delay = float(args.get("delay", 0.05))
    voice = voice_of(args)
    audio = Audio(time.monotonic())
    written = {}

    async def write():
        await client.write_event(SynthesizeStart(voice=voice).event())
        message = ""
        for at in range(0, len(text), cut):
            piece = text[at : at + cut]
            message += piece
            await client.write_event(SynthesizeChunk(text=piece).event())
            written["last_chunk"] = time.monotonic() - audio.started
            await asyncio.sleep(delay)
        await client.write_event(Synthesize(text=message, voice=voice).event())
        await client.write_event(SynthesizeStop().event())
        written["stop"] = time.monotonic() - audio.started

    writer = asyncio.create_task(write())
    stopped = False
    try:
        while True:
            event = await read(client)
            if event is None:
                audio.closed = True
                break
            audio.take(event)
            if SynthesizeStopped.is_type(event.type):
                stopped = True
                break
            if Error.is_type(event.type):
                audio.closed = (await read(client)) is None
                break
    finally:
        if not writer.done():
            writer.cancel()
    try:
        await writer
    except (asyncio.CancelledError, OSError, ConnectionError):
        pass
    report = audio.report()
    report["stopped"] = stopped
    report["last_chunk_written"] = written.get("last_chunk")
    report["stop_written"] = written.get("stop")
    # Anything after synthesize-stopped would belong to no request.
    if stopped:
        try:
            extra = await asyncio.wait_for(client.read_event(), timeout=0.3)
            report["after_stopped"] = None if extra is None else extra.type
        except asyncio.TimeoutError:
            report["after_stopped"] = None
    return report


async def hangup(client, args):
    audio = Audio(time.monotonic())
    voice = voice_of(args)
    if args.get("stream"):
        await client.write_event(SynthesizeStart(voice=voice).event())
        await client.write_event(SynthesizeChunk(text=args["text"]).event())
        await client.write_event(SynthesizeStop().event())
    else:
        await client.write_event(Synthesize(text=args["text"], voice=voice).event())
    while True:
        event = await read(client)
        if event is None:
            audio.closed = True
            break
        audio.take(event)
        if AudioChunk.is_type(event.type) or Error.is_type(event.type):
            break
    await client.disconnect()
    report = audio.report()
    report["hung_up"] = time.time()
    return report


MODES = {"info": info, "synthesize": synthesize, "stream": stream, "hangup": hangup}


async def main():
    port = int(sys.argv[1])
    mode = MODES[sys.argv[2]]
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    try:
        result = await mode(client, args)
    finally:
        try:
            await client.disconnect()
        except Exception:  # already closed by the mode
            pass
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
