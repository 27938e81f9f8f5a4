"""Our split (engine/split_graph.py + stream_synth.py) against streaming-vits on
one voice: exactness against the whole graph, and time to the first chunk
against the whole synthesis, for sentences of 60/110/220/420 characters.

    .venv/bin/python benches/split_compare.py [voices/NAME.onnx]

Needs `streaming-vits` in the venv (not a dependency of piperd). Its split
goes to a temporary folder, never beside the voice. Noise scales at 0."""

import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "engine"))

import split_graph  # noqa: E402
import stream_synth  # noqa: E402
from piper import PiperConfig, PiperVoice  # noqa: E402

SENTENCES = {
    60: "The old lighthouse keeper climbed the stairs every evening.",
    110: "The old lighthouse keeper climbed the narrow stairs every evening, "
    "lit the lamp, and watched the ships go by.",
    220: "When the morning train finally pulled into the station, the passengers, "
    "who had waited for hours in the cold, gathered their bags, checked their "
    "tickets once more, and stepped onto the platform, relieved it was over.",
}
SENTENCES[420] = SENTENCES[220][:-1] + ", while the porters, " + (
    "who had seen it all before, loaded the carts with trunks and boxes, called "
    "out the names of hotels across the town, and the conductor, tired and cold, "
    "walked slowly back along the empty carriages to count the lost umbrellas."
)


def best(f, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "voices/en_US-joe-medium.onnx")
    with open(model + ".json", encoding="utf-8") as f:
        import json

        config = PiperConfig.from_dict(json.load(f))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    whole = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    voice = PiperVoice(session=whole, config=config)
    cache = tempfile.mkdtemp(prefix="split-compare-")
    os.environ["PIPER_ENGINE_CACHE_DIR"] = cache
    graph, store = split_graph.load_or_split(model, print)
    fe = ort.InferenceSession(graph.frontend, opts, providers=["CPUExecutionProvider"])
    parts = {
        name: ort.InferenceSession(part, opts, providers=["CPUExecutionProvider"])
        for name, part in graph.parts.items()
    }
    ours = stream_synth.StreamVoice(voice, graph, fe, parts, store, print)

    from streaming_vits.engine import StreamingTTS
    from streaming_vits.profile import Profile

    sv = StreamingTTS.__new__(StreamingTTS)
    from streaming_vits import graph as sv_graph

    sv.meta, sv.dir = sv_graph.ensure_split(model, sample_rate=config.sample_rate,
                                            cache=os.path.join(cache, "svits"), verbose=False)
    sv.hop, sv.sample_rate = sv.meta.hop, sv.meta.sample_rate
    sv.profile, sv.threads, sv.cached, sv.config = Profile(), 2, None, {}
    sv.fe = ort.InferenceSession(str(sv.dir / sv.meta.frontend), opts, providers=["CPUExecutionProvider"])
    sv.dec = ort.InferenceSession(str(sv.dir / sv.meta.decoder), opts, providers=["CPUExecutionProvider"])
    seam = sv.meta.seam
    sv._in = [seam.z_p, seam.mask] + ([seam.g] if seam.g else [])
    scales = np.array([0.0, 1.0, 0.0], np.float32)

    print(f"load {os.getloadavg()[0]:.2f}; ours: margins (flow {ours.calibration.flow}) {ours.calibration.left}/"
          f"{ours.calibration.right}, schedule {ours.first_schedule}; streaming-vits: "
          f"L{sv.profile.left}/R{sv.profile.right} {sv.profile.schedule}")
    print("chars  ids  full_ms  ours_first_ms ratio  svits_first_ms ratio  ours_err  svits_err")
    for chars, text in SENTENCES.items():
        phonemes = voice.phonemize(text)[0]
        ids = voice.phonemes_to_ids(phonemes)
        feed = {"input": np.array([ids], np.int64),
                "input_lengths": np.array([len(ids)], np.int64), "scales": scales}
        ref = whole.run(None, feed)[0].reshape(-1)
        full = best(lambda: whole.run(None, feed))

        def ours_first():
            seam_, _ = ours.frontend(ids, {"noise_scale": 0.0, "noise_w_scale": 0.0})
            return ours.decode(seam_, 0, min(ours.first_schedule[0], seam_[0].shape[2]))

        def sv_first():
            z, m, g = sv.frontend(np.array([ids], np.int64), 0, scales)
            return sv.decode_chunk(z, m, g, 0, min(sv.profile.schedule[0], z.shape[2]))

        t_ours, t_sv = best(ours_first), best(sv_first)
        seam_, _ = ours.frontend(ids, {"noise_scale": 0.0, "noise_w_scale": 0.0})
        frames = seam_[0].shape[2]
        got, a, i = [], 0, 0
        while a < frames:
            b = min(frames, a + ours.first_schedule[min(i, len(ours.first_schedule) - 1)])
            got.append(ours.decode(seam_, a, b))
            a, i = b, i + 1
        err_ours = float(np.max(np.abs(np.concatenate(got) - ref)))
        z, m, g = sv.frontend(np.array([ids], np.int64), 0, scales)
        got, a, i = [], 0, 0
        while a < z.shape[2]:
            b = min(z.shape[2], a + sv.profile.schedule[min(i, len(sv.profile.schedule) - 1)])
            got.append(sv.decode_chunk(z, m, g, a, b))
            a, i = b, i + 1
        err_sv = float(np.max(np.abs(np.concatenate(got) - ref)))
        print(f"{len(text):5d} {len(ids):4d} {full * 1e3:8.0f} {t_ours * 1e3:13.0f} {t_ours / full:5.2f}"
              f" {t_sv * 1e3:15.0f} {t_sv / full:5.2f}  {err_ours:.1e}  {err_sv:.1e}")
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
