"""Real clients against piperd's live-text front-ends, for tests/elevenlabs.rs.

    elevenlabs_client.py PORT sdk FORMAT      the official elevenlabs SDK's convert_realtime
    elevenlabs_client.py PORT pipecat         Pipecat's multi-stream-input sequence (websockets)
    elevenlabs_client.py PORT sse             the official openai SDK, stream_format="sse"

Each prints one JSON object of what it heard (the ElevenLabs ones: every
text sent and every audio message's size and alignments, for the checks in
tests/elevenlabs.rs). Every wait is bounded.
"""

import asyncio
import base64
import json
import sys
import time
import uuid

VOICE = "en_US-joe-medium"
TIMEOUT = 120


def heard_audio(msg: dict, audio: bytes) -> dict:
    """What the checks need of an audio message: its size and alignments."""
    return {
        "bytes": len(audio),
        "alignment": msg.get("alignment"),
        "normalizedAlignment": msg.get("normalizedAlignment"),
    }


def sdk(port: int, output_format: str) -> dict:
    import elevenlabs.realtime_tts as realtime
    from elevenlabs.client import ElevenLabs

    # The SDK yields only audio; its socket is watched to see the rest of
    # each message (the alignment) and the text it sent.
    sent, messages = [], []

    class Watched:
        def __init__(self, socket):
            self.socket = socket

        def __enter__(self):
            self.socket.__enter__()
            return self

        def __exit__(self, *exc):
            return self.socket.__exit__(*exc)

        def send(self, message):
            sent.append(json.loads(message).get("text", ""))
            return self.socket.send(message)

        def recv(self, *args):
            message = self.socket.recv(*args)
            msg = json.loads(message)
            if msg.get("audio"):
                messages.append(heard_audio(msg, base64.b64decode(msg["audio"])))
            return message

    connect = realtime.connect
    realtime.connect = lambda *args, **kwargs: Watched(connect(*args, **kwargs))

    client = ElevenLabs(api_key="unused", base_url=f"http://127.0.0.1:{port}")
    # The SDK always speaks wss:// to its base URL; piperd here is plain ws.
    client.text_to_speech._ws_base_url = f"ws://127.0.0.1:{port}"

    def text():
        # An LLM's tokens, cut anywhere.
        for token in ["Hello", " from", " the", " official", " SDK", ".", " It", " streams", " text", "."]:
            yield token

    started = time.monotonic()
    first = None
    audio = b""
    for chunk in client.text_to_speech.convert_realtime(
        voice_id=VOICE, text=text(), model_id="eleven_flash_v2_5", output_format=output_format
    ):
        if first is None:
            first = time.monotonic() - started
        audio += chunk
    return {
        "bytes": len(audio),
        "head": audio[:4].hex(),
        "first_audio_s": first,
        "sent": "".join(sent),
        "messages": messages,
    }


async def pipecat(port: int) -> dict:
    """Pipecat's ElevenLabsTTSService, message for message: the socket with
    its query, a context opened with its voice settings, a sentence at a
    time, flush without text, its 10 s keepalive without a context, a
    flush and close_context at once at the end of the turn, then
    close_socket."""
    import websockets
    from websockets.asyncio.client import connect

    url = (
        f"ws://127.0.0.1:{port}/v1/text-to-speech/{VOICE}/multi-stream-input"
        "?model_id=eleven_turbo_v2_5&output_format=pcm_22050&auto_mode=true"
        "&enable_ssml_parsing=false&enable_logging=true&apply_text_normalization=auto"
    )
    heard = {"audio": {}, "finals": [], "other": [], "close_code": None, "messages": [], "sent": ""}
    async with connect(url, max_size=16 * 1024 * 1024, additional_headers={"xi-api-key": "unused"}) as ws:
        turn = str(uuid.uuid4())

        async def receive():
            async for message in ws:
                msg = json.loads(message)
                context = msg.get("contextId")
                if msg.get("isFinal") is True:
                    heard["finals"].append(context)
                    continue
                if msg.get("audio"):
                    audio = base64.b64decode(msg["audio"])
                    heard["audio"][context] = heard["audio"].get(context, 0) + len(audio)
                    heard["messages"].append(heard_audio(msg, audio))
                    if msg.get("context_id") != context:
                        heard["other"].append(msg)
                else:
                    heard["other"].append(msg)

        receiver = asyncio.create_task(receive())

        async def say(text: str) -> None:
            heard["sent"] += text
            await ws.send(json.dumps({"text": text, "context_id": turn}))

        await ws.send(json.dumps({"text": " ", "context_id": turn, "voice_settings": {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.0}}))
        heard["sent"] += " "
        await say("Hello, I am a voice agent. ")
        await ws.send(json.dumps({"context_id": turn, "flush": True}))
        await ws.send(json.dumps({"text": ""}))  # the keepalive, without a context
        await say("How can I help you today? ")
        # The end of the turn, as Pipecat ends it (on_turn_context_completed):
        # a flush, then close_context at once; the turn's audio is still to
        # come, and then its isFinal.
        await ws.send(json.dumps({"context_id": turn, "flush": True}))
        await ws.send(json.dumps({"context_id": turn, "close_context": True}))
        deadline = time.monotonic() + TIMEOUT
        while turn not in heard["finals"] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await ws.send(json.dumps({"close_socket": True}))
        try:
            await asyncio.wait_for(receiver, TIMEOUT)
        except websockets.ConnectionClosed:
            pass
        heard["close_code"] = ws.close_code
    heard["turn"] = turn
    return heard


def sse(port: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=TIMEOUT)
    events = []
    audio = b""
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="Server sent events. Two sentences of them.",
        response_format="pcm", stream_format="sse",
    ) as response:
        content_type = response.headers.get("content-type")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: "):])
            events.append(event["type"])
            if event["type"] == "speech.audio.delta":
                audio += base64.b64decode(event["audio"])
            else:
                done = event
    return {"content_type": content_type, "events": events, "bytes": len(audio), "done": done}


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode == "sdk":
        result = sdk(port, sys.argv[3])
    elif mode == "pipecat":
        result = asyncio.run(asyncio.wait_for(pipecat(port), TIMEOUT))
    elif mode == "sse":
        result = sse(port)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
