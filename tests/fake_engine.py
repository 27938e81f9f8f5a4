"""A test double of the engine, for faults the real engine cannot be made to show.

It speaks the same framed protocol as engine/piper_worker.py (see
docs/engine-protocol.md) and produces a tone instead of speech. Markers in a
request's text, or variables in its environment, make it misbehave:

  text contains CRASH        writes part of the audio, then exits (every time)
  text contains CRASHONCE:X  exits before any audio, only the first time for token X
                             (a sentence that streamed nothing yet can be said again)
  text contains HANG         stops answering (the process stays alive)
  text contains GARBAGE      writes bytes that are not frames
  text contains TRUNCATE     writes half a frame, then exits
  text contains ODDAUDIO     sends audio with an odd number of bytes
  text contains CANCELUNASKED  answers with a cancelled frame it was never asked for
  FAKE_CRASH_ON_START=name   exits at start-up when the model path contains name
  FAKE_NEVER_READY=1         loads but never announces readiness
  FAKE_SLOW_START=seconds    waits this long before announcing readiness
  FAKE_STATE_DIR=dir         where CRASHONCE remembers its tokens
  FAKE_RTF=factor            takes this many seconds per second of audio it makes
                             (slow but valid, like a real engine on a busy machine)

The tone lasts 0.02 s per character, times length_scale, plus sentence_silence,
as speech does. Like the real engine, it sends a sentence's audio in several
`A` frames (parts of at most PART_SAMPLES), the silence with the last.

Only the standard library is used, so any python3 runs it.
"""

import json
import math
import os
import struct
import sys
import time

HEADER = struct.Struct("<2sBBII")
RATE = 22050
# Samples per audio frame: a sentence comes in parts, as decoder chunks do.
PART_SAMPLES = 4410
out = sys.stdout.buffer


def frame(kind, request_id, payload=b""):
    out.write(HEADER.pack(b"PD", ord(kind), 0, request_id, len(payload)) + payload)
    out.flush()


def tone(seconds):
    n = int(RATE * seconds)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / RATE))) for i in range(n)
    )


def half(audio):
    return audio[: len(audio) // 4 * 2]


def main():
    if sys.argv[1:2] == ["--check"]:
        print("fake-engine 1.0")
        return 0
    model = sys.argv[1] if len(sys.argv) > 1 else ""
    crash_name = os.environ.get("FAKE_CRASH_ON_START")
    if crash_name and crash_name in model:
        sys.stderr.write("RuntimeError: fake engine cannot load this voice\n")
        sys.stderr.flush()
        return 1
    time.sleep(float(os.environ.get("FAKE_SLOW_START", "0")))
    if os.environ.get("FAKE_NEVER_READY"):
        while sys.stdin.buffer.readline():
            pass
        return 0
    frame("R", 0, json.dumps({"sample_rate": RATE, "num_speakers": 1, "engine": "fake"}).encode())
    state_dir = os.environ.get("FAKE_STATE_DIR", "/tmp")
    rtf = float(os.environ.get("FAKE_RTF", "0"))
    for line in sys.stdin.buffer:
        request = json.loads(line)
        rid, text = request["id"], request["text"]
        seconds = 0.02 * len(text) * request.get("length_scale", 1.0)
        audio = tone(seconds) + b"\x00\x00" * int(RATE * request.get("sentence_silence", 0.0))
        time.sleep(rtf * len(audio) / 2 / RATE)
        if "CRASHONCE:" in text:
            token = text.split("CRASHONCE:")[1].split()[0]
            mark = os.path.join(state_dir, f"fake-engine-{token}")
            if not os.path.exists(mark):
                open(mark, "w").close()
                os._exit(1)
        elif "CRASH" in text:
            frame("A", rid, half(audio))
            sys.stderr.write("Segmentation fault (pretend)\n")
            sys.stderr.flush()
            os._exit(1)
        if "HANG" in text:
            while True:
                time.sleep(3600)
        if "GARBAGE" in text:
            out.write(b"Traceback (most recent call last): not a frame\n" * 4)
            out.flush()
            continue
        if "TRUNCATE" in text:
            out.write(HEADER.pack(b"PD", ord("A"), 0, rid, 1000) + b"\x00" * 10)
            out.flush()
            os._exit(1)
        if "CANCELUNASKED" in text:
            frame("C", rid)
            continue
        if "ODDAUDIO" in text:
            frame("A", rid, b"\x00" * 101)
            continue
        for at in range(0, len(audio), 2 * PART_SAMPLES):
            frame("A", rid, audio[at : at + 2 * PART_SAMPLES])
        frame("D", rid, json.dumps({"samples": len(audio) // 2}).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
