"""A Pipecat voice agent's text-to-speech on piperd: ElevenLabs' service, one URL changed.

    pip install "pipecat-ai[elevenlabs]"
    python examples/pipecat_elevenlabs.py "Hello from piperd, through Pipecat." pipecat.wav

Pipecat's ElevenLabsTTSService speaks ElevenLabs' multi-stream-input WebSocket,
which piperd serves; `url` is the one line that differs from code written for
ElevenLabs. The voice is an installed voice's name (or an ElevenLabs voice id
mapped by PIPER_ELEVENLABS_VOICES). This runs the service alone in a tiny
pipeline, writes what it says to a WAV file and prints each word with the
time Pipecat read from piperd's alignment (the words an agent's context
keeps when the user interrupts).
"""

import asyncio
import os
import sys
import wave

from pipecat.frames.frames import EndFrame, TTSAudioRawFrame, TTSSpeakFrame, TTSTextFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

PIPERD = os.environ.get("PIPERD_URL", "http://127.0.0.1:5050").replace("http", "ws", 1)


class Collect(FrameProcessor):
    def __init__(self):
        super().__init__()
        self.audio = b""
        self.words = []

    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self.audio += frame.audio
        elif isinstance(frame, TTSTextFrame) and frame.pts is not None:
            self.words.append((frame.text, frame.pts))
        await self.push_frame(frame, direction)


async def main(text: str, out: str) -> None:
    tts = ElevenLabsTTSService(
        api_key=os.environ.get("PIPERD_API_KEY", "unused"),
        url=PIPERD,  # the one line: piperd instead of wss://api.elevenlabs.io
        settings=ElevenLabsTTSService.Settings(voice=os.environ.get("PIPERD_VOICE", "en_US-joe-medium")),
        sample_rate=22050,  # pcm_22050: the bundled voice's own rate
    )
    collect = Collect()
    task = PipelineTask(Pipeline([tts, collect]), params=PipelineParams(audio_out_sample_rate=22050))
    await task.queue_frames([TTSSpeakFrame(text), EndFrame()])
    await PipelineRunner(handle_sigint=False).run(task)
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(22050)
        wav.writeframes(collect.audio)
    print(f"wrote {out}: {len(collect.audio) / 2 / 22050:.1f} s")
    if collect.words:
        first = collect.words[0][1]
        print(" ".join(f"{word}@{(pts - first) / 1e9:.2f}s" for word, pts in collect.words))


if __name__ == "__main__":
    asyncio.run(main(
        sys.argv[1] if len(sys.argv) > 1 else "Hello from piperd, through Pipecat.",
        sys.argv[2] if len(sys.argv) > 2 else "pipecat.wav",
    ))
