"""A LiveKit agent's text-to-speech on piperd: ElevenLabs' plugin, one URL changed.

    pip install "livekit-agents[elevenlabs]"
    python examples/livekit_elevenlabs.py "Hello from piperd, through LiveKit." livekit.wav

LiveKit's elevenlabs.TTS streams over ElevenLabs' multi-stream-input
WebSocket, which piperd serves; `base_url` is the one line that differs from
an agent written for ElevenLabs. In an agent, pass the same `tts=` to
`AgentSession`; here the plugin runs alone, writes what it says to a WAV and
prints the timed words LiveKit read from piperd's alignment.
"""

import asyncio
import os
import sys
import wave

import aiohttp
from livekit.agents.types import USERDATA_TIMED_TRANSCRIPT
from livekit.plugins import elevenlabs

PIPERD = os.environ.get("PIPERD_URL", "http://127.0.0.1:5050") + "/v1"


async def main(text: str, out: str) -> None:
    async with aiohttp.ClientSession() as http:
        tts = elevenlabs.TTS(
            api_key=os.environ.get("PIPERD_API_KEY", "unused"),
            base_url=PIPERD,  # the one line: piperd instead of https://api.elevenlabs.io/v1
            voice_id=os.environ.get("PIPERD_VOICE", "en_US-joe-medium"),
            encoding="pcm_22050",  # the bundled voice's own rate
            http_session=http,
        )
        stream = tts.stream()
        for word in text.split(" "):  # as an LLM's tokens arrive
            stream.push_text(word + " ")
        stream.end_input()
        frames = [event.frame async for event in stream]
        await stream.aclose()
    pcm = b"".join(bytes(frame.data) for frame in frames)
    words = [w for frame in frames for w in frame.userdata.get(USERDATA_TIMED_TRANSCRIPT, [])]
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(22050)
        wav.writeframes(pcm)
    print(f"wrote {out}: {len(pcm) / 2 / 22050:.1f} s")
    print(" ".join(f"{w.strip()}@{w.start_time:.2f}s" for w in words if w.strip()))


if __name__ == "__main__":
    asyncio.run(main(
        sys.argv[1] if len(sys.argv) > 1 else "Hello from piperd, through LiveKit.",
        sys.argv[2] if len(sys.argv) > 2 else "livekit.wav",
    ))
