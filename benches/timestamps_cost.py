"""What word timestamps cost the engine, per sentence of varied prose.

Runs the engine's own code (engine/piper_worker.py) in this process: the
voice loaded as the engine loads it, once without and once with the
durations output, then `word_timings` on each sentence's alignments.
Prints the synthesis time with and without the output, the time of
`word_timings`, and their share of synthesis; and, for each sentence
followed by a second of silence, how far its first word's start and last
word's end are from where speech starts and stops in the audio itself
(10 ms windows under an RMS of 150, as tests/timestamps.rs finds them).
Run from the repository:

    .venv/bin/python benches/timestamps_cost.py [rounds]

Timings on a shared machine are noisy: compare medians of several rounds.
"""

import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "voices" / "en_US-joe-medium.onnx"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the quiet river bank.",
    "Nobody expected the morning train to arrive so early, least of all the station master.",
    "Why would anyone leave the door open on such a cold night?",
    "She counted the boxes twice: forty-two in the hall, eleven in the kitchen, and three more.",
    "Pay $500 by 10:30 on March 3rd, or 1,234 items go back to Dr. Smith's warehouse.",
    "Well... okay, fine: we'll meet at the U.S. embassy at noon.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Hello there.",
]


def load_engine():
    spec = importlib.util.spec_from_file_location("piper_worker", ROOT / "engine" / "piper_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def speech_edges(samples, rate):
    """Where speech starts and where the trailing silence starts, in s."""
    import numpy as np

    window = rate // 100
    count = len(samples) // window
    frames = samples[: count * window].astype(np.float64).reshape(count, window)
    loud = np.sqrt((frames ** 2).mean(axis=1)) >= 150.0
    indices = np.nonzero(loud)[0]
    return indices[0] * window / rate, (indices[-1] + 1) * window / rate


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    engine = load_engine()
    from piper import PiperConfig, PiperVoice, SynthesisConfig
    import onnxruntime

    with open(f"{MODEL}.json", encoding="utf-8") as f:
        config = PiperConfig.from_dict(json.load(f))
    plain = PiperVoice(
        session=onnxruntime.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]),
        config=config,
    )
    timed = engine.load_voice(MODEL, f"{MODEL}.json")
    phonemize_words = engine.word_phonemizer(timed)
    syn = SynthesisConfig()
    for voice in (plain, timed):  # warm both
        for _ in voice.synthesize("Ready.", syn_config=syn, include_alignments=True):
            pass

    without, with_output, words, errors = [], [], [], []
    for _ in range(rounds):
        for text in SENTENCES:
            started = time.perf_counter()
            for _ in plain.synthesize(text, syn_config=syn):
                pass
            without.append(time.perf_counter() - started)

            started = time.perf_counter()
            alignments = []
            for chunk in timed.synthesize(text, syn_config=syn, include_alignments=True):
                engine.collect_alignments(alignments, chunk, 0)
            with_output.append(time.perf_counter() - started)
            assert alignments and alignments[-1] is not None, "no alignments"

            started = time.perf_counter()
            timings = engine.word_timings(text, alignments, phonemize_words)
            words.append(time.perf_counter() - started)
            if len(errors) < 2 * len(SENTENCES) * 2:
                import numpy as np

                pcm = np.concatenate([c.audio_int16_array for c in timed.synthesize(
                    text, syn_config=syn, include_alignments=True)])
                onset, stop = speech_edges(pcm, config.sample_rate)
                errors.append(abs(timings[0][2] / config.sample_rate - onset))
                errors.append(abs(timings[-1][3] / config.sample_rate - stop))

    total_without = sum(without)
    total_with = sum(with_output)
    total_words = sum(words)
    print(f"sentences: {len(without)} ({rounds} rounds of {len(SENTENCES)})")
    print(f"synthesis without the durations output: {total_without:.3f} s")
    print(f"synthesis with the durations output:    {total_with:.3f} s")
    print(f"word_timings:                           {total_words * 1000:.1f} ms "
          f"(median {statistics.median(words) * 1000:.2f} ms a sentence)")
    print(f"word_timings / synthesis: {100 * total_words / total_with:.2f} %")
    print(f"(with output + word_timings) / without: "
          f"{100 * ((total_with + total_words) / total_without - 1):+.2f} %")
    errors.sort()
    print(f"boundary error against the audio's own silence: {len(errors)} boundaries, "
          f"median {statistics.median(errors) * 1000:.1f} ms, "
          f"90th percentile {errors[int(len(errors) * 0.9)] * 1000:.1f} ms, "
          f"max {errors[-1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
