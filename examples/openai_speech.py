"""Speak through piperd with the official OpenAI Python package.

    pip install openai
    python examples/openai_speech.py "Hello from piperd." hello.mp3

piperd serves OpenAI's speech endpoint, so the only change from code written
for OpenAI is the base URL (and a key only if the server sets PIPER_API_KEYS).
"""

import os
import sys

from openai import OpenAI

base_url = os.environ.get("PIPERD_URL", "http://127.0.0.1:5050") + "/v1"
client = OpenAI(base_url=base_url, api_key=os.environ.get("PIPERD_API_KEY", "unused"))

text = sys.argv[1] if len(sys.argv) > 1 else "Hello from piperd, through the OpenAI client."
out = sys.argv[2] if len(sys.argv) > 2 else "speech.mp3"
# The format follows the file name: mp3, opus, flac, wav or pcm.
fmt = out.rsplit(".", 1)[-1] if "." in out else "mp3"

# Streaming write: the file grows while the server is still synthesizing.
with client.audio.speech.with_streaming_response.create(
    model="tts-1",
    voice=os.environ.get("PIPERD_VOICE", "alloy"),
    input=text,
    response_format=fmt,
    speed=float(os.environ.get("PIPERD_SPEED", "1.0")),
) as response:
    response.stream_to_file(out)
print(f"wrote {out}")
