"""A flood of streamed requests at once: how admission control answers it.

Sends N concurrent streamed /api/tts requests of a long text to a running
piperd (loopback only) and prints, for the admitted and the refused, their
count and the time to their first byte of audio (or of the refusal).

    python3 benches/flood.py --port 5050 --requests 120 --chars 5000

Only the standard library: it speaks HTTP/1.1 over asyncio streams.
"""

import argparse
import asyncio
import json
import statistics
import time

PROSE = (
    "The old lighthouse keeper climbed the stairs every evening, counting each "
    "step as his father had taught him. Out on the water, the fishing boats "
    "turned for home, their lamps swinging in the dusk. Nobody in the village "
    "remembered a night the light had failed, and he meant to keep it so. "
)


def text_of(chars):
    return (PROSE * (chars // len(PROSE) + 1))[:chars]


async def one(port, body, timeout):
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        "POST /api/tts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        status = int(status_line.split()[1])
        while (await asyncio.wait_for(reader.readline(), timeout)) not in (b"\r\n", b""):
            pass
        # Chunked: the first chunk's size line, then its first byte.
        await asyncio.wait_for(reader.readline(), timeout)
        await asyncio.wait_for(reader.read(1), timeout)
        first = time.monotonic() - started
    except (asyncio.TimeoutError, IndexError, ValueError):
        status, first = 0, None
    writer.close()
    return status, first


def summary(label, times):
    if not times:
        return f"{label}: 0"
    times = sorted(times)
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    return (
        f"{label}: {len(times)}, first byte p50 {statistics.median(times):.2f} s, "
        f"p90 {p(0.9):.2f} s, max {times[-1]:.2f} s"
    )


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=5050)
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--chars", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    body = json.dumps({"text": text_of(args.chars), "stream": True}).encode()
    results = await asyncio.gather(
        *(one(args.port, body, args.timeout) for _ in range(args.requests))
    )
    admitted = [t for s, t in results if s == 200 and t is not None]
    refused = [t for s, t in results if s == 503 and t is not None]
    other = [s for s, t in results if s not in (200, 503) or t is None]
    print(f"{args.requests} streamed requests of {args.chars} characters at once")
    print(summary("admitted (200)", admitted))
    print(summary("refused (503)", refused))
    print(f"other: {len(other)} {sorted(set(other))}")


if __name__ == "__main__":
    asyncio.run(main())
