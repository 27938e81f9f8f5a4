"""piperd engine: a sentence as one frontend run plus decoder chunks.

The frontend (see split_graph.py) runs once on the whole sentence; the
decoder then runs over frame chunks, each with `left` frames of context
before it and `right` after it, which are decoded and thrown away: the
vocoder's margins, and the flow before it `flow` frames more each side (the
two are separate graphs, see split_graph.py). With margins at least the
real receptive fields, the chunks join into the audio of one whole decode
(measured on en_US-joe-medium: within 0.56 of a 16-bit step at vocoder
margins of 10 frames and flow margins of 22 more; a vocoder margin of 9
leaves samples 50 steps off).

What is calibrated once per voice, and stored beside its split graph:

- margins: the fewest frames of context, each side, after which chunked
  decodes of the level sentences, at every MARGIN_CHECK_EVERY frames, stop
  differing from the whole decodes by more than MARGIN_TOLERANCE_STEPS of
  the 16-bit output at the voice's gain (the flow's, FLOW_SAFETY more);
- decode cost: seconds per call and per frame, fitted on chunks of three
  sizes, from which the chunk schedule follows (see `schedule`);
- gain: Piper scales each sentence to full peak, which a stream cannot know
  before the sentence ends. Every sentence of the voice gets one gain
  instead, LEVEL_PEAK over the highest peak of the calibration sentences, so
  loudness never jumps between sentences or chunks; a sample that would
  pass LIMIT_KNEE is bent softly below full scale, sample by sample, so the
  limiter cannot differ between chunks either.

Asked to (`synthesize`'s `side_by_side`, which the engine passes unless
PIPER_ENGINE_SIDE_BY_SIDE=0), a sentence that has every core decodes its
chunks side by side, one single-threaded decoder run per core (onnxruntime makes more of the cores
that way than with one run on all of them; concurrent runs of one session
are allowed and release the GIL), and yields them in order, each as soon as
it and all before it are done (`synthesize`, `parallel_chunks`). Of the
ways to cut a sentence for that, the one whose chunks are expected to end
first is taken, under the calibrated decode cost: chunks small enough that
those decoded at once take no more frames than one chunk alone did, and,
for a sentence a listener waits on, each done before playback reaches it.
Decoded by the same session, a chunk is the same audio whether it runs
alone or beside others.
"""

import collections
import concurrent.futures
import itertools
import math
import threading
import time

import numpy as np

from piper.const import BOS, EOS, PAD
from piper.voice import PhonemeAlignment

# A chunked decode whose samples differ from the whole one's by at most this
# many steps of the 16-bit output (at the voice's gain) is the same audio:
# float arithmetic alone moves decodes of other lengths by a fraction of a
# step (en_US-joe-medium, margins past their needs: 0.1 to 0.6, once 1.04),
# while a vocoder margin one frame short leaves tens of steps.
MARGIN_TOLERANCE_STEPS = 1.0
# Margins tried, in frames: each one up to 32, where decoders' needs lie
# (en_US-joe-medium: 10 for its vocoder, 18 more found for its flow), so
# that none is paid for beyond what the decoder reads; coarser above.
MARGIN_CANDIDATES = tuple(range(4, 33)) + (40, 48, 64, 80, 96)
# Checked chunks start every this many frames of each level sentence: a
# margin must hold wherever a chunk may start, not at a few places.
MARGIN_CHECK_EVERY = 24
# Frames of each checked chunk (its two edges are what a margin protects).
MARGIN_CHECK_CHUNK = 8
# Frames of each piece of a calibration sentence's reference decode (see
# `_reference`): a whole decode of the longest one (about 700 frames) grew
# onnxruntime's arena for good: a 1,254-character sentence after a cold
# start peaked at 455 MiB (366-368 in pieces, 372-391 with a stored
# calibration).
REFERENCE_PIECE = 256
# Frames added to the margin found for the flow (or for a decoder that is
# one graph): the vocoder's need ends sharply (en_US-joe-medium, chunks at
# every third frame of seven sentences: 9 frames leave 50 steps, 10 half a
# step), the flow's fades slowly, and the checks above pass it early (they
# found 18 frames with one step allowed; at every third frame, 18 left 11.6
# steps, 20 left 2.8, 22 0.56, as the 16 and 16 calibrated before). A flow
# frame costs the flow's share of a decoded frame (a sixth here).
FLOW_SAFETY = 4
CALIBRATION_TEXT = (
    "The quick brown fox jumped skillfully over the lazy dog as it ran at full "
    "speed toward the fence, to crawl underneath it and get to the other side, "
    "toward the tree with the acorns that the squirrels were feasting on."
)
LEVEL_SENTENCES = (
    CALIBRATION_TEXT,
    "Hello! How are you today?",
    "Warning: the system will restart in five minutes, so please save your work now.",
    "One, two, three, four, five, six, seven, eight, nine, ten.",
)
# Peak of the calibration sentences after the voice's gain.
LEVEL_PEAK = 0.9
# Samples above this are bent toward full scale by a soft knee.
LIMIT_KNEE = 0.9
MAX_WAV_VALUE = 32767.0
# Frames of the first chunk: never fewer (a call costs more than its frames).
MIN_FIRST_CHUNK = 12
# Frames of the first chunk at most: first audio before everything else.
FIRST_CHUNK_MAX = 24
# Each chunk at least this many times the one before: margins cost work.
CHUNK_GROWTH = 1.5
# Frames of the largest chunk: bounds the decoder's memory per call.
MAX_CHUNK = 512
# Frames of the largest chunk of a sentence decoded beside others (on fewer
# threads than every core): the decoder's memory is that of the chunks in
# flight (measured on en_US-joe-medium, one thread: 47 MiB for a 128-frame
# chunk, 65 for 256, 87 for 320, 118 for 512), and beside others there are
# two, or three while a newcomer's first sentence borrows a turn. `make
# bench`'s engine peaked at 407 MiB after its sections with 320-frame
# chunks (474-492 MB with 512 under a plain concurrent load). Two sentences
# side by side on one thread each, 20 each, three interleaved runs: 256-frame
# chunks 340-349 MB and 8.6-10.3 s, 320-frame ones 355-374 MB and 8.9-11.0 s
# (no slower: the 2-D vocoder on one thread keeps up with smaller chunks);
# 192-frame ones were up to a tenth slower.
SHARED_MAX_CHUNK = 256
# Decode times are taken as this much longer than measured.
SCHEDULE_SAFETY = 1.25
# Frames of the chunks of a sentence alone decoded side by side at once, at
# most, their margins but one chunk's included: the decoder's memory (see
# SHARED_MAX_CHUNK), bounded by the chunks in flight. 640 on 2 cores is two
# chunks of up to 304 frames; with the flow on one thread only (see
# piper_worker.load_voice), one request at a time in 1-3-sentence texts
# peaked at 343-344 MiB and made 1.1% more audio per second than 512 (240
# frames) with the flow's every-core session, at 360-369 MiB, in 20
# interleaved 8 s rounds on 2 cores; 768 was no faster.
PARALLEL_FRAMES = 640
# Frames of a chunk decoded beside others on one core, at least as a bound:
# each costs its margins (see `parallel_chunks`).
PARALLEL_CHUNK_LEAST = 128
# A sentence is cut for the workers side by side only with at least this
# many frames for each: below, the margins cost more than a core gains.
SPLIT_LEAST = 128
# A decode on one thread is taken as this many times its cost on every core
# (measured on 2 cores: 1.6 to 1.9 for 100 to 1,000 frames), for a
# sentence beside others, whose playback must not run dry.
ONE_CORE_SLOWER = 1.75
# A chunk decoded on one thread while the other cores decode chunks of the
# same sentence is expected to take this many times its cost on every core
# (measured on 2 cores with en_US-joe-medium's flow and 2-D vocoder, in the
# engine's own chunks of a Wyoming run: 0.59 ms per frame of work side by
# side, 0.40 on every core; 1.48 to 1.56 decoding 48 to 300 frames apart).
SIDE_BY_SIDE_SLOWER = 1.45
# Of the chunk plans of a sentence, the simplest whose expected end is
# within this factor of the soonest is taken (see `parallel_chunks`).
PLAN_TOLERANCE = 1.005
# Frontends made ahead and not asked for yet that are kept (see `ahead`).
AHEAD_KEPT = 4
# Seconds per character of text that a frontend made ahead is expected to
# take, until this engine has timed its own (measured on 2 cores,
# en_US-joe-medium: a 101-character sentence 46 ms beside a one-thread
# decode). Run by a decoder thread after the last chunk, with the other
# cores idle, it is no faster: in a run of one request at a time, 5 such
# jobs took 1.04 times this engine's own expectation, 24 beside a chunk 0.97.
AHEAD_S_PER_CHAR = 0.00045
# A next sentence of at most this many frames is decoded ahead whole (see
# `StreamVoice.ahead`); of a longer one, its first half, the other half
# being for the worker that its request finds free.
AHEAD_WHOLE = 128
# Nothing known to follow it, a next sentence of this many frames or more is
# cut in two all the same: its request's other threads decode the rest.
AHEAD_SPLIT = 48


def slowdown(threads, cores):
    """How many times slower than on every core (the calibration's) a decode
    on `threads` threads is taken to be: ONE_CORE_SLOWER on one thread of
    two cores, in proportion on more."""
    if threads <= 0 or threads >= cores:
        return 1.0
    return max(1.0, ONE_CORE_SLOWER * cores / (2.0 * threads))


def largest_chunk(slower):
    """Frames of the largest chunk of a decode `slower` times the every-core
    one: MAX_CHUNK alone on every core, SHARED_MAX_CHUNK beside others."""
    return MAX_CHUNK if slower <= 1.0 else SHARED_MAX_CHUNK


def limit(audio):
    """The soft limiter: identity up to LIMIT_KNEE, then a tanh knee that
    stays below 1.0. Sample by sample, so it is the same in every chunk."""
    magnitude = np.abs(audio)
    over = magnitude > LIMIT_KNEE
    if not over.any():
        return audio
    room = 1.0 - LIMIT_KNEE
    bent = LIMIT_KNEE + room * np.tanh((magnitude[over] - LIMIT_KNEE) / room)
    audio = audio.copy()
    audio[over] = np.sign(audio[over]) * bent
    return audio


def to_int16_bytes(audio):
    """As piper's AudioChunk.audio_int16_bytes."""
    return (
        np.clip(audio * MAX_WAV_VALUE, -MAX_WAV_VALUE, MAX_WAV_VALUE).astype(np.int16).tobytes()
    )


def phoneme_alignments(config, phonemes, phoneme_ids, phoneme_id_samples):
    """Samples per phoneme, as piper's `PhonemeAlignment` list: each phoneme
    (with BOS and EOS around them) with the ids it produced, the pad after
    it included, and the samples those ids span. None when the ids do not
    line up with the phonemes (as piper answers then)."""
    if phoneme_id_samples is None or len(phoneme_id_samples) != len(phoneme_ids):
        return None
    pad_ids = config.phoneme_id_map.get(PAD, [])
    index = 0
    alignments = []
    for phoneme in itertools.chain([BOS], phonemes, [EOS]):
        expected = config.phoneme_id_map.get(phoneme, [])
        to_check = list(itertools.chain(expected, pad_ids)) if phoneme != EOS else expected
        start = index
        for phoneme_id in to_check:
            if index >= len(phoneme_ids) or phoneme_ids[index] != phoneme_id:
                return None
            index += 1
        alignments.append(
            PhonemeAlignment(
                phoneme=phoneme,
                phoneme_ids=to_check,
                num_samples=int(sum(phoneme_id_samples[start:index])),
            )
        )
    return alignments


class Calibration:
    """`left`, `right`: the vocoder's margins (the whole decoder's, without
    a flow graph); `flow`: the flow's margin each side (0 without one);
    `flow_share`: the flow's part of the decoding work per frame, so that a
    flow margin frame costs that much of a decoded frame."""

    def __init__(self, left, right, alpha, beta, gain, measured, flow=0, flow_share=0.0):
        self.left = left
        self.right = right
        self.alpha = alpha
        self.beta = beta
        self.gain = gain
        self.measured = measured
        self.flow = flow
        self.flow_share = flow_share

    @property
    def left_cost(self):
        """The left margins' work, in decoded frames."""
        return self.left + self.flow * self.flow_share

    @property
    def right_cost(self):
        """The right margins' work, in decoded frames."""
        return self.right + self.flow * self.flow_share

    def as_dict(self):
        return {
            "left": self.left,
            "right": self.right,
            "flow": self.flow,
            "flow_share": self.flow_share,
            "alpha_s": self.alpha,
            "beta_s_per_frame": self.beta,
            "gain": self.gain,
            "measured": self.measured,
        }

    @staticmethod
    def from_dict(d):
        try:
            return Calibration(
                int(d["left"]),
                int(d["right"]),
                float(d["alpha_s"]),
                float(d["beta_s_per_frame"]),
                float(d["gain"]),
                d.get("measured", {}),
                int(d.get("flow", 0)),
                float(d.get("flow_share", 0.0)),
            )
        except (KeyError, TypeError, ValueError):
            return None


class StreamVoice:
    """One voice's frontend and decoder sessions, its calibration, and the
    chunked synthesis of a sentence."""

    def __init__(self, voice, graph, frontend, parts, cache, log):
        """`parts`: a session (anything with `run(None, feed)`) for each of
        the graph's decoding parts, by name (see split_graph.SplitGraph)."""
        self.voice = voice
        self.config = voice.config
        self.graph = graph
        self.frontend_session = frontend
        self.runs = {
            name: (lambda feed, s=session: s.run(None, feed)) for name, session in parts.items()
        }
        self.cache = cache
        self.log = log
        meta = graph.meta
        self.hop = graph.hop
        self.inputs = set(meta["inputs"])
        self.seam = [meta["z_p"], meta["mask"]] + ([meta["speaker"]] if meta["speaker"] else [])
        # The flow's output, the vocoder's input; None: one decoder graph.
        self.z = meta.get("z") if "vocoder" in parts else None
        self.vocoder_inputs = meta.get("vocoder_inputs") or []
        # The frontend stops before the expansion to frames (see split_graph).
        self.expand = bool(meta.get("expand"))
        self.rng = np.random.default_rng()
        found = Calibration.from_dict(cache.load_json("calibration.json") or {})
        self.calibration = found or self._calibrate()
        self.first_schedule = self.schedule(first=True)
        # The first schedule by slowdown (see `plan`).
        self._schedules = {1.0: self.first_schedule}
        # Threads of the decoder runs side by side, made on first use.
        self._pool = None
        self._pool_workers = 0
        # Frontends made ahead (see `ahead`): a future by sentence key.
        self._ahead = collections.OrderedDict()
        # And the phonemes of the texts they were made for, by text.
        self._phonemized = collections.OrderedDict()
        self._ahead_lock = threading.Lock()
        self._ahead_s_per_char = AHEAD_S_PER_CHAR

    def describe(self):
        """For the ready frame."""
        c = self.calibration
        return {
            "margins": [c.left, c.right],
            "flow_margin": c.flow,
            "schedule": self.first_schedule,
            "gain": round(c.gain, 4),
        }

    # -- the two halves ----------------------------------------------------

    def frontend(self, phoneme_ids, options):
        config = self.config
        scales = np.array(
            [
                _pick(options.get("noise_scale"), config.noise_scale),
                _pick(options.get("length_scale"), config.length_scale),
                _pick(options.get("noise_w_scale"), config.noise_w_scale),
            ],
            dtype=np.float32,
        )
        feed = {
            "input": np.array([phoneme_ids], dtype=np.int64),
            "input_lengths": np.array([len(phoneme_ids)], dtype=np.int64),
            "scales": scales,
        }
        if "sid" in self.inputs:
            speaker = options.get("speaker_id")
            if speaker is None:
                speaker = config.default_speaker_id if config.num_speakers > 1 else 0
            feed["sid"] = np.array([speaker], dtype=np.int64)
        feed = {name: value for name, value in feed.items() if name in self.inputs}
        *seam, w_ceil = self.frontend_session.run(None, feed)
        if self.expand:
            m_p, logs_p, noise_scale, *speaker = seam
            seam = self.prior(m_p, logs_p, noise_scale, w_ceil) + speaker
        return seam, w_ceil

    def prior(self, m_p, logs_p, noise_scale, w_ceil):
        """[z_p, frame mask] from the frontend's per-id tensors, as the graph
        makes them: each id's column repeated for its frames (at least one
        frame in all), then z_p = m_p + randn * exp(logs_p) * noise_scale."""
        frames_of = w_ceil.reshape(-1).astype(np.int64)
        index = np.repeat(np.arange(frames_of.size), np.maximum(frames_of, 0))
        frames = max(1, index.size)
        m = np.zeros((1, m_p.shape[1], frames), dtype=np.float32)
        logs = np.zeros_like(m)
        m[:, :, : index.size] = m_p[:, :, index]
        logs[:, :, : index.size] = logs_p[:, :, index]
        scale = float(np.asarray(noise_scale).reshape(-1)[0])
        z_p = m
        if scale != 0.0:
            draw = self.rng.standard_normal(m.shape, dtype=np.float32)
            z_p = m + draw * np.exp(logs) * np.float32(scale)
        return [z_p, np.ones((1, 1, frames), dtype=np.float32)]

    def decode(self, seam, start, end, left=None, right=None, flow=None, runs=None, z=None):
        """Audio of frames [start, end), decoded with margins around them:
        `left` and `right` frames of the vocoder's (the decoder's) and, with
        a flow graph, `flow` more each side for the flow, whose output the
        vocoder's margins read. `runs`: `run(feed)` by part name (default:
        the sessions of the calling thread's request). `z`: the flow's
        output over the whole sentence (calibration), which the vocoder then
        reads instead of a flow run's."""
        # Calibration passes every margin: it makes `self.calibration`.
        c = getattr(self, "calibration", None)
        left = c.left if left is None else left
        right = c.right if right is None else right
        flow = c.flow if flow is None else flow
        runs = self.runs if runs is None else runs
        frames = seam[0].shape[2]
        lo, hi = max(0, start - left), min(frames, end + right)
        if self.z is None:
            outputs = runs["decoder"](self._seam_feed(seam, lo, hi))
        else:
            if z is None:
                a, b = max(0, lo - flow), min(frames, hi + flow)
                z = runs["flow"](self._seam_feed(seam, a, b))[0][:, :, lo - a : hi - a]
            else:
                z = z[:, :, lo:hi]
            vocoder_feed = {self.z: np.ascontiguousarray(z)}
            if len(self.seam) == 3 and self.seam[2] in self.vocoder_inputs:
                vocoder_feed[self.seam[2]] = seam[2]
            outputs = runs["vocoder"](vocoder_feed)
        audio = outputs[0].reshape(-1)
        offset = (start - lo) * self.hop
        return audio[offset : offset + (end - start) * self.hop]

    def _seam_feed(self, seam, a, b):
        """The decoding graph's inputs for frames [a, b) of the seam."""
        feed = {self.seam[0]: seam[0][:, :, a:b], self.seam[1]: seam[1][:, :, a:b]}
        if len(self.seam) == 3:
            feed[self.seam[2]] = seam[2]
        return feed

    # -- calibration -------------------------------------------------------

    def _calibration_seam(self, text):
        phonemes = self.voice.phonemize(text)
        ids = self.voice.phonemes_to_ids(list(itertools.chain(*phonemes)))
        seam, _ = self.frontend(ids, {"noise_scale": 0.0, "noise_w_scale": 0.0})
        return seam

    def _reference(self, seam, z=None):
        """The whole decode of a seam, made in pieces of REFERENCE_PIECE
        frames with the widest margins (on the flow's exact output `z`, when
        there is a flow), so that calibration never decodes more frames at
        once than synthesis does."""
        frames = seam[0].shape[2]
        wide = MARGIN_CANDIDATES[-1]
        flow = 0 if z is not None else wide
        pieces = [
            self.decode(seam, a, min(frames, a + REFERENCE_PIECE), wide, wide, flow, z=z)
            for a in range(0, frames, REFERENCE_PIECE)
        ]
        return np.concatenate(pieces)

    def _matches(self, seams, wholes, tolerance, margin, flow, exact=None):
        """Whether chunks of MARGIN_CHECK_CHUNK frames starting every
        MARGIN_CHECK_EVERY frames of each seam, with `margin` frames of
        context each side (and `flow` more for the flow), decode to its
        whole decode's samples within `tolerance`. `exact`: the flow's
        output over each whole seam, read instead of the flow's chunks."""
        exact = exact or [None] * len(seams)
        for seam, whole, z in zip(seams, wholes, exact):
            frames = seam[0].shape[2]
            for a in range(0, max(1, frames - MARGIN_CHECK_CHUNK), MARGIN_CHECK_EVERY):
                b = min(frames, a + MARGIN_CHECK_CHUNK)
                got = self.decode(seam, a, b, margin, margin, flow, z=z)
                want = whole[a * self.hop : b * self.hop]
                if np.max(np.abs(got - want)) > tolerance:
                    return False
        return True

    @staticmethod
    def _smallest_margin(matches):
        """Bisection over MARGIN_CANDIDATES for the fewest frames that
        `matches` (more context never hurts)."""
        lo, hi = 0, len(MARGIN_CANDIDATES) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if matches(MARGIN_CANDIDATES[mid]):
                hi = mid
            else:
                lo = mid + 1
        return MARGIN_CANDIDATES[lo]

    def _timed(self, decode):
        """The fastest of two runs of `decode()`, in seconds."""
        best = None
        for _ in range(2):
            t0 = time.perf_counter()
            decode()
            took = time.perf_counter() - t0
            best = took if best is None else min(best, took)
        return best

    def _calibrate(self):
        started = time.monotonic()
        seams = [self._calibration_seam(text) for text in LEVEL_SENTENCES]
        # The flow's exact output over each whole sentence (see `decode`).
        exact = [None] * len(seams)
        if self.z is not None:
            exact = [self.runs["flow"](self._seam_feed(s, 0, s[0].shape[2]))[0] for s in seams]
        wholes = [self._reference(seam, z) for seam, z in zip(seams, exact)]
        peaks = [float(np.max(np.abs(whole))) for whole in wholes]
        gain = LEVEL_PEAK / (max(peaks) or 1.0)
        # MARGIN_TOLERANCE_STEPS of the output, in the decoder's units.
        tolerance = MARGIN_TOLERANCE_STEPS / (gain * MAX_WAV_VALUE)
        # The vocoder's margin is found on the flow's exact output, then the
        # flow's beyond it.
        left = right = self._smallest_margin(
            lambda m: self._matches(seams, wholes, tolerance, m, 0, exact)
        )
        if self.z is None:
            # One decoder graph: its margin covers the flow in it.
            left = right = left + FLOW_SAFETY
        seam = seams[0]
        frames = seam[0].shape[2]
        flow, share = 0, 0.0
        if self.z is not None:
            flow = FLOW_SAFETY + self._smallest_margin(
                lambda m: self._matches(seams, wholes, tolerance, left, m)
            )
            # Over the frames of one reference piece.
            a = max(0, (frames - REFERENCE_PIECE) // 2)
            b = min(frames, a + REFERENCE_PIECE)
            feed = self._seam_feed(seam, a, b)
            flow_s = self._timed(lambda: self.runs["flow"](feed))
            both_s = self._timed(lambda: self.decode(seam, a, b, 0, 0, 0))
            share = min(1.0, flow_s / both_s) if both_s > 0 else 0.0
        # Decode cost: seconds = alpha + beta * (frames + margins' work),
        # least squares; a flow margin frame is `share` of a decoded frame.
        sizes, costs = [], []
        for size in (16, 64, 192):
            a = max(0, (frames - size) // 2)
            b = min(frames, a + size)
            costs.append(self._timed(lambda: self.decode(seam, a, b, left, right, flow)))
            sizes.append(size + left + right + 2 * flow * share)
        beta, alpha = np.polyfit(np.array(sizes, float), np.array(costs, float), 1)
        calibration = Calibration(
            left,
            right,
            max(float(alpha), 0.0),
            max(float(beta), 1e-6),
            gain,
            {"sizes": sizes, "seconds": costs, "peaks": peaks, "took_s": 0.0},
            flow,
            round(share, 4),
        )
        calibration.measured["took_s"] = round(time.monotonic() - started, 2)
        try:
            self.cache.store_json("calibration.json", calibration.as_dict())
        except OSError as err:
            self.log(f"cannot store the calibration: {err}")
        self.log(
            f"calibrated: margins {left}/{right} frames (flow {flow}, {share:.0%} of the work), "
            f"gain {gain:.3f}, "
            f"decode {calibration.alpha * 1e3:.1f} ms + {calibration.beta * 1e3:.2f} ms/frame"
        )
        return calibration

    # -- schedule ----------------------------------------------------------

    def schedule(self, first, slower=1.0):
        """Frames of each chunk of a sentence, the last repeated, for a
        decode `slower` times the calibrated one (on fewer threads).

        `first` (a listener waits for this audio to start): the first chunk
        is the smallest after which playback never runs dry, taking each
        decode as SCHEDULE_SAFETY times its measured cost, but at most
        FIRST_CHUNK_MAX (a slow or busy machine still starts early, and may
        pause once); each next chunk is the largest whose decode fits in the
        audio already made, and at least CHUNK_GROWTH times the one before,
        up to the largest chunk (`largest_chunk`). Otherwise (nobody waits on
        this sentence's start) every chunk is the largest, which spends the
        least on margins."""
        largest = largest_chunk(slower)
        if not first:
            return [largest]
        c = self.calibration
        alpha, beta = c.alpha * slower, c.beta * slower
        frame_s = self.hop / self.config.sample_rate
        margins = c.left_cost + c.right_cost
        # cost(n) <= n * frame_s: the next chunk, as large, fits in this one.
        per_frame = frame_s - beta * SCHEDULE_SAFETY
        least = (
            (alpha + beta * margins) * SCHEDULE_SAFETY / per_frame
            if per_frame > 0
            else FIRST_CHUNK_MAX
        )
        chunks = []
        head = int(min(FIRST_CHUNK_MAX, max(MIN_FIRST_CHUNK, np.ceil(least))))
        for n in self._chunks(head, slower=slower):
            chunks.append(n)
            if n >= largest or len(chunks) >= 32:
                return chunks

    def plan(self, frames, first, slower=1.0):
        """Frames of each chunk of a sentence of `frames` frames, decoded
        `slower` times slower than calibrated (on fewer threads than every
        core: a sentence beside others).

        Not `first`: chunks of `largest_chunk(slower)` frames. `first`: the
        schedule's chunks, except that the first chunk may grow up to
        FIRST_CHUNK_MAX when that spares a chunk. The schedule is made for
        sentences of any length, so its last chunk is often a short tail that
        costs a whole chunk's margins: a 260-frame sentence is 12 + 198 + 50
        frames, and 128 frames of margins (half again its work); 19 + 241
        keeps playback ahead just the same (each chunk still fits in the
        audio before it) for 64 frames of margins, and its first audio comes
        7 frames of decode later."""
        if not first:
            return list(self._chunks(largest_chunk(slower), frames, slower))
        if slower not in self._schedules:
            self._schedules[slower] = self.schedule(True, slower)
        least = self._schedules[slower][0]
        if frames <= least + self.calibration.right_cost:
            # One chunk of it all costs no more than the first one would with
            # its right margin: no later first audio, no margins.
            return [frames]
        best = None
        for head in range(least, max(least, FIRST_CHUNK_MAX) + 1):
            chunks = list(self._chunks(head, frames, slower))
            if best is None or len(chunks) < len(best):
                best = chunks
            if len(best) == 1:
                break
        return best

    def _chunks(self, head, frames=None, slower=1.0):
        """A first chunk of `head` frames, then each the largest whose decode
        (SCHEDULE_SAFETY times its measured cost, margins included) fits in
        the audio made before it, at least CHUNK_GROWTH times the one before
        and at most `largest_chunk(slower)`; the last is the rest of a
        sentence of `frames` frames once it fits (it has no right margin).
        `frames` None: without end (the schedule)."""
        c = self.calibration
        alpha, beta = c.alpha * slower, c.beta * slower
        frame_s = self.hop / self.config.sample_rate
        margins = c.left_cost + c.right_cost
        largest = largest_chunk(slower)
        n = head if frames is None else min(head, frames)
        buffered, start = n * frame_s, n
        yield n
        while frames is None or start < frames:
            rest = None if frames is None else frames - start
            fits = int((buffered / SCHEDULE_SAFETY - alpha) / beta - margins)
            grown = int(np.ceil(n * CHUNK_GROWTH))
            n = min(largest, max(grown, fits))
            last = rest is not None and rest <= min(largest, max(grown, fits + c.right_cost))
            if rest is not None and (last or n >= rest):
                n, last = rest, True
            cost = alpha + beta * (n + c.left_cost + (0 if last else c.right_cost))
            buffered = max(0.0, buffered - cost * SCHEDULE_SAFETY) + n * frame_s
            start += n
            yield n

    def parallel_chunk(self, workers):
        """Frames of the largest chunk decoded beside `workers - 1` others."""
        margins = self.calibration.left_cost + self.calibration.right_cost
        return max(PARALLEL_CHUNK_LEAST, int((PARALLEL_FRAMES + margins) // workers - margins))

    def _cost(self, n, left, right, side=False):
        """Expected seconds to decode `n` frames with the left and right
        margins when present: on every core, or (`side`) on one thread
        beside others decoding (SIDE_BY_SIDE_SLOWER times as long)."""
        c = self.calibration
        work = n + (c.left_cost if left else 0) + (c.right_cost if right else 0)
        seconds = c.alpha + c.beta * work
        return seconds * SIDE_BY_SIDE_SLOWER if side else seconds

    def _side_frames(self, seconds, margins):
        """Frames (a fraction) that one chunk with `margins` frames of
        margins decodes side by side in `seconds`: `_cost`'s inverse."""
        c = self.calibration
        return (seconds / SIDE_BY_SIDE_SLOWER - c.alpha) / c.beta - margins

    def parallel_chunks(self, frames, first, workers, extra=0.0):
        """(chunks on every core, chunks side by side, where the next
        sentence's frontend goes among the latter): the frames of a sentence
        of `frames` frames in chunks, those of the first list decoded one
        after the other on every core, then those of the second by `workers`
        single-threaded runs side by side, each on the first free worker
        (see `synthesize`), with a job of `extra` seconds (the next
        sentence's frontend, see `ahead`; 0: none) taken by the first free
        worker before the side chunk at the index given (None: no job).

        Candidates, of which the one that ends first under the calibrated
        cost wins (`_ends`): every chunk on every core (`plan`); or, after
        the schedule's first chunk of a `first` sentence (decoded alone on
        every core: it is the listener's wait), the rest side by side, cut
        into chunks of one size (`_even`) or by `_balanced`, which sizes
        each chunk so that the workers end together; or that first chunk
        on one worker while the others decode what follows (`_balanced`'s
        `beside`). Side by side, no chunk exceeds `parallel_chunk` (the
        chunks decoded at once take no more than PARALLEL_FRAMES frames
        alone: the decoder's memory), and with `first` each chunk is done
        before playback reaches it (SCHEDULE_SAFETY times the expected
        cost). The frontend job goes either after the chunks a listener
        waits on (none but a `first` sentence's first two) or last."""
        # In order of preference: every core, even, balanced, beside; each
        # side-by-side plan with the job early, then last.
        candidates = [(self.plan(frames, first), [], None)]
        head = [min(frames, self.first_schedule[0])] if first else []
        rest = frames - sum(head)
        sides = []
        if rest > 0:
            early = 1 if first else 0
            for side in (self._even(rest, workers), self._even(rest, workers, spread=True)):
                sides.append((head, side, early))
            balanced = self._balanced(frames, head, workers, first, extra, early)
            if balanced is not None:
                sides.append((head, balanced, early))
            if head:
                beside = self._balanced(frames, [], workers, first, extra, 2, beside=True)
                if beside is not None:
                    sides.append(([], beside, 2))
        for every_core, side, early in sides:
            if extra > 0:
                candidates.append((every_core, side, min(early, len(side))))
                candidates.append((every_core, side, len(side)))
            else:
                candidates.append((every_core, side, None))
        ends = [self._ends(frames, plan, workers, first, extra) for plan in candidates]
        # The first within PLAN_TOLERANCE of the soonest: fewer, even chunks
        # when the model sees little between them.
        every_core, side, at = next(
            p for p, e in zip(candidates, ends) if e <= min(ends) * PLAN_TOLERANCE
        )
        if len(side) == 1 and not extra:
            # One chunk side by side with nothing: every core for it.
            return every_core + side, [], None
        return every_core, side, at

    def after_ahead(self, frames, workers):
        """Chunks of the last `frames` frames of a sentence whose first ones
        a worker decodes ahead (see `ahead`): as few as `parallel_chunk`
        allows, since that worker goes on to the next sentence's job, and
        so is not left idle by a chunk too large for the other."""
        return _cut(frames, math.ceil(frames / self.parallel_chunk(workers)))

    def _even(self, frames, workers, spread=False):
        """`frames` in chunks of one size, at most `parallel_chunk`, and a
        multiple of the workers when each has SPLIT_LEAST frames, or
        (`spread`) always."""
        largest = self.parallel_chunk(workers)
        pieces = math.ceil(frames / largest)
        if spread or frames >= workers * SPLIT_LEAST:
            pieces = math.ceil(pieces / workers) * workers
        return _cut(frames, pieces)

    def _balanced(self, frames, head, workers, first, extra=0.0, at=None, beside=False):
        """The frames after `head` in chunks for `workers` side by side,
        each as large as lets the workers end together (the work left, its
        margins included, shared evenly from where each worker is free, the
        job of `extra` seconds taken before the chunk at `at`), within
        `parallel_chunk` and, for a `first` sentence, the playback deadline
        (`_due`); a rest of fewer than MIN_FIRST_CHUNK frames joins the
        chunk before it. None when a chunk cannot meet its deadline.
        `beside` (with `first` and no `head`): the first chunk is the
        schedule's first, decoded on one worker beside the others."""
        c = self.calibration
        largest = self.parallel_chunk(workers)
        start = sum(head)
        heard = self._cost(start, False, start < frames) if head else None
        free = [heard or 0.0] * workers
        chunks = []
        if beside and first:
            # The schedule's first chunk on one worker, the others decoding
            # what follows from the start.
            n = min(frames, self.first_schedule[0])
            heard = free[0] = self._cost(n, False, n < frames, side=True)
            chunks.append(n)
            start = n
        while start < frames:
            if len(chunks) == at:
                free[free.index(min(free))] += extra
            rest = frames - start
            i = free.index(min(free))
            left = start > 0
            # Where every worker would end with the rest as one chunk each.
            pieces = max(1, min(workers, rest // MIN_FIRST_CHUNK))
            # Every piece has a left margin but one that starts the sentence,
            # and a right margin but the last.
            work = rest + (pieces - (0 if left else 1)) * c.left_cost + (pieces - 1) * c.right_cost
            ends = (sum(free) + SIDE_BY_SIDE_SLOWER * (pieces * c.alpha + c.beta * work)) / workers
            margins = (c.left_cost if left else 0) + c.right_cost
            share = self._side_frames(ends - free[i], margins)
            n = max(MIN_FIRST_CHUNK, min(largest, math.ceil(share)))
            if first and heard is not None:
                most = int(self._side_frames(self._due(heard, start) - free[i], margins))
                if most < MIN_FIRST_CHUNK:
                    return None
                n = min(n, most)
            if rest - n < MIN_FIRST_CHUNK and rest <= largest:
                n = rest
            n = min(n, rest)
            free[i] += self._cost(n, left, start + n < frames, side=True)
            chunks.append(n)
            start += n
        return chunks

    def _due(self, heard, start):
        """Latest expected time the chunk from frame `start` may be done, the
        first audio heard at `heard`: before playback reaches it, with the
        costs taken SCHEDULE_SAFETY times as long."""
        return heard + start * self.hop / self.config.sample_rate / SCHEDULE_SAFETY

    def _ends(self, frames, plan, workers, first, extra=0.0):
        """Expected seconds until the last chunk of `plan` (as
        `parallel_chunks` returns it) is decoded and the job of `extra`
        seconds is done (as long alone as beside a chunk: see
        AHEAD_S_PER_CHAR), its side-by-side chunks each on the first free
        worker; infinite when a `first` sentence's chunk would be done
        after its deadline (`_due`)."""
        every_core, side, at = plan
        now, start, heard = 0.0, 0, None
        for n in every_core:
            now += self._cost(n, start > 0, start + n < frames)
            if first and heard is not None and now > self._due(heard, start):
                return math.inf
            heard = now if heard is None else heard
            start += n
        if not side:
            return now + extra
        free = [now] * workers
        done = now
        for k, n in enumerate(side):
            if k == at:
                free[free.index(min(free))] += extra
            i = free.index(min(free))
            free[i] += self._cost(n, start > 0, start + n < frames, side=True)
            # Sent in order: when it and every chunk before it are done.
            done = max(done, free[i])
            if first:
                if heard is None:
                    heard = done
                elif done > self._due(heard, start):
                    return math.inf
            start += n
        if at is not None and at >= len(side):
            # After every chunk has started, on the first free worker.
            free[free.index(min(free))] += extra
        return max(free)

    # -- synthesis ---------------------------------------------------------

    def sentences(self, text):
        """Phonemes of each sentence espeak finds in the text (found ahead,
        when a frontend was made ahead for it: see `ahead`)."""
        with self._ahead_lock:
            found = self._phonemized.pop(text, None)
        return found if found is not None else self._phonemize(text)

    def _phonemize(self, text):
        return [p for p in self.voice.phonemize(text) if p]

    # -- frontends made ahead ----------------------------------------------

    def _key(self, phonemes, options):
        """What a frontend run depends on: the phonemes and the options that
        reach the graph."""
        config = self.config
        return (
            tuple(phonemes),
            _pick(options.get("noise_scale"), config.noise_scale),
            _pick(options.get("length_scale"), config.length_scale),
            _pick(options.get("noise_w_scale"), config.noise_w_scale),
            options.get("speaker_id") if "sid" in self.inputs else None,
            # Audio made ahead carries the volume (see `_decode_ahead`).
            _pick(options.get("volume"), 1.0),
        )

    def ahead(self, text, options, side_by_side=None, last=False):
        """A job that makes the frontend of `text`'s first sentence, where
        the next request (the sentence piperd names in this one) takes it
        (`synthesize`); `job.seconds`: the time its frontend is expected to
        take beside a decoding thread, from the frontends this engine made
        ahead before (AHEAD_S_PER_CHAR until then).

        `synthesize` runs the frontend on one of its side-by-side decoder
        threads: beside this sentence's own frontend when that one was not
        made ahead (it runs alone otherwise), else where `parallel_chunks`
        plans it among this sentence's chunks. So the frontend, and the
        phonemes before it, leave the next sentence's path and share the
        cores with this one's work instead of running alone between the
        two. A frontend made ahead is the one the request would make: the
        same session, the same inputs; only its noise draw comes earlier.

        With `side_by_side` (workers, runs), the job then decodes the
        sentence's first frames on a thread of `runs`, at the options'
        volume, after this sentence's last chunk has started: the thread
        that would wait for the other ones to end decodes what comes next
        instead. The next request sends that audio first and decodes the
        rest beside it. A sentence of at most AHEAD_WHOLE frames is decoded
        whole, unless nothing is known to follow it (`last`): its request
        then has no other work for the other threads. Of a longer one (or a
        `last` one of AHEAD_SPLIT frames or more), its first half, at most
        `parallel_chunk(workers)` frames."""
        seconds = len(text) * self._ahead_s_per_char
        return _Ahead(self, text, options, seconds, side_by_side, last)

    def _make_ahead(self, text, options):
        """Makes the frontend of `text`'s first sentence, kept by its key.
        Returns what `_decode_ahead` needs, or None when this job did not
        make it."""
        began = time.perf_counter()
        try:
            found = self._phonemize(text)
        except Exception as err:  # the request that brings it says why
            self.log(f"cannot make the next sentence's frontend ahead: {err}")
            return None
        if not found:
            return None
        phonemes = found[0]
        key = self._key(phonemes, options)
        future = concurrent.futures.Future()
        with self._ahead_lock:
            # The request for `text` finds its phonemes here too.
            self._phonemized[text] = found
            while len(self._phonemized) > AHEAD_KEPT:
                self._phonemized.popitem(last=False)
            if key in self._ahead:
                return None
            self._ahead[key] = future
            while len(self._ahead) > AHEAD_KEPT:
                _, dropped = self._ahead.popitem(last=False)
                dropped.cancel()
        if not future.set_running_or_notify_cancel():
            return None
        try:
            ids = self.voice.phonemes_to_ids(phonemes)
            seam, w_ceil = self.frontend(ids, options)
            prefix = _Prefix()
            future.set_result((ids, (seam, w_ceil), prefix))
        except Exception as err:  # the request makes its own then
            future.set_exception(err)
            return None
        # What the next plans expect of a frontend made ahead.
        took = (time.perf_counter() - began) / max(1, len(text))
        self._ahead_s_per_char = 0.7 * self._ahead_s_per_char + 0.3 * took
        return seam, prefix

    def _decode_ahead(self, made, options, side_by_side, last):
        """Decodes the first frames of a sentence whose frontend
        `_make_ahead` made (`made`), unless its request already took that
        frontend and decodes them itself (see `ahead`)."""
        seam, prefix = made
        workers, runs = side_by_side
        frames = seam[0].shape[2]
        whole = frames < AHEAD_SPLIT if last else frames <= AHEAD_WHOLE
        n = frames if whole else min(self.parallel_chunk(workers), (frames + 1) // 2)
        future = prefix.claim(n)
        if future is None:
            return
        try:
            future.set_result(self._pcm(seam, 0, n, self._gain(options), runs))
        except Exception as err:  # its request decodes them again
            future.set_exception(err)

    def _made_ahead(self, phonemes, options):
        """(ids, (seam, w_ceil), prefix) of the frontend made ahead for this
        sentence, waiting for it if it runs, where `prefix` is (frames,
        future of their audio) of its first frames decoded ahead or under
        way, else None; None if there is none (or it had not started: then
        it never will)."""
        with self._ahead_lock:
            future = self._ahead.pop(self._key(phonemes, options), None)
        if future is None or future.cancel():
            return None
        try:
            ids, found, prefix = future.result()
        except Exception as err:  # made again on the request's own thread
            self.log(f"a frontend made ahead failed ({type(err).__name__}: {err}); made again")
            return None
        return ids, found, prefix.take()

    def synthesize(
        self, phonemes, options, first=True, check=None, side_by_side=None, slower=1.0, ahead=None
    ):
        """Yields ("alignments", list or None) once, then ("audio", pcm) per
        chunk of one sentence, in order, and ("decoding", None) once its
        chunks side by side have started (the GIL is free meanwhile).
        `check()` runs between chunks (it raises to stop early). `slower`:
        how many times the calibrated decode time a chunk takes here (a
        sentence beside others, on fewer threads than every core: see
        `slowdown`); the chunk plan keeps playback ahead at that speed.

        `side_by_side` (a sentence that has every core to itself): None, or
        (workers, runs), where `runs` holds a `run(feed)` per decoding part
        (as `decode` takes them), each on one thread, that
        `workers` threads may call at once. onnxruntime makes more of each
        core that way than with one run on every core. The chunks are then
        planned by `parallel_chunks`: those it puts on every core (a short
        sentence, or the first chunk of a `first` sentence, the listener's
        wait) are decoded here, the others by `workers` threads, at most
        `workers` chunks at a time, each sent as soon as it and every chunk
        before it are done. An exception in a worker is raised here.
        `ahead` (side by side only): the next sentence's job (see `ahead`),
        which the threads run: its frontend beside this sentence's own, or
        where `parallel_chunks` plans it among this sentence's chunks, and
        its first frames after this sentence's last chunk has started.

        The frontend is the one made ahead for this sentence, if any, and
        the first frames are those decoded ahead, if any: they are sent
        first, and the rest is decoded beside them."""
        made = self._made_ahead(phonemes, options)
        side = side_by_side is not None and side_by_side[0] >= 2
        workers, runs = side_by_side if side else (1, None)
        ahead = ahead if side else None
        jobs = [] if ahead is None else [ahead.frontend, ahead.decode]
        prefix = None
        if made is None:
            if jobs and not first:
                # This frontend would run alone: the next one runs beside
                # it. Not where a listener waits for this one's start: beside
                # another, a frontend took 16% longer (29.2 ms median alone,
                # 33.9 beside, first sentences of the benchmark's prose).
                self._workers(workers).submit(jobs.pop(0))
            ids = self.voice.phonemes_to_ids(phonemes)
            seam, w_ceil = self.frontend(ids, options)
        else:
            ids, (seam, w_ceil), prefix = made
        samples = (w_ceil.reshape(-1) * self.hop).astype(np.int64)
        yield "alignments", phoneme_alignments(self.config, phonemes, ids, samples)
        gain = self._gain(options)
        frames = seam[0].shape[2]

        def pcm(start, end, runs=None):
            return self._pcm(seam, start, end, gain, runs)

        start = 0
        if prefix is not None:
            start, decoded = prefix
            # Decoded again here if that failed.
            prefix = _Decoded(decoded, lambda: pcm(0, start, runs), self.log)
        if prefix is not None and start >= frames:
            # All of it decoded ahead: the next sentence's work starts now,
            # while this one's audio goes out.
            if jobs:
                self._workers(workers).submit(_both(*jobs))
            if check is not None:
                check()
            yield "audio", prefix.result()
            return
        extra = ahead.seconds if len(jobs) == 2 else 0.0
        if not side:
            head, rest, at = self.plan(frames - start, first and not start, slower), [], None
        elif start:
            # The next frontend first, on the worker free now: the next
            # request waits for it; its decode after these chunks.
            head, rest, at = [], self.after_ahead(frames - start, workers), 0
        else:
            head, rest, at = self.parallel_chunks(frames, first, workers, extra)
        if prefix is not None and head:
            yield "audio", prefix.result()
            prefix = None
        for size in head:
            if check is not None:
                check()
            yield "audio", pcm(start, start + size)
            start += size
        if rest:
            if len(jobs) == 2 and at is not None and at < len(rest):
                # The frontend among the chunks, its decode after them.
                placed = [(at, jobs[0]), (len(rest), jobs[1])]
            else:
                placed = [(len(rest), _both(*jobs))] if jobs else []
            yield from self._side_by_side(pcm, start, rest, workers, runs, check, placed, prefix)
        elif jobs:
            self._workers(workers).submit(_both(*jobs))

    def _gain(self, options):
        """The voice's calibrated gain times the request's volume."""
        return self.calibration.gain * float(_pick(options.get("volume"), 1.0))

    def _pcm(self, seam, start, end, gain, runs=None):
        """16-bit audio of frames [start, end), at `gain`, limited."""
        return to_int16_bytes(limit(self.decode(seam, start, end, runs=runs) * gain))

    def _workers(self, workers):
        """The decoder's pool of at least `workers` threads."""
        if self._pool is None or self._pool_workers < workers:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="decode"
            )
            self._pool_workers = workers
        return self._pool

    def _side_by_side(self, pcm, start, sizes, workers, runs, check, placed=(), prefix=None):
        """`pcm(start, end, runs)` of each chunk, on `workers` threads, in
        order. A chunk starts as soon as a worker is free, whichever chunk
        ended; at most `workers` of this sentence's jobs run at once (the
        decoder's memory grows with the chunks in flight). `placed`:
        (index, run) pairs: `run()` goes to a worker just before the chunk
        at that index (after the last chunk when it is their count); its end
        is not waited for, and it runs even if the last chunk ends before a
        worker took it (not when the sentence stops early). `prefix`: None,
        or the `_Decoded` first frames, decoding on a worker (it counts as
        one of the jobs), sent first."""
        pool = self._workers(workers)
        jobs = []
        for size in sizes:
            jobs.append((start, start + size))
            start += size
        for index, run in sorted(placed, key=lambda p: p[0], reverse=True):
            jobs.insert(index, run)
        started = [] if prefix is None else [prefix]
        state = {"running": 0, "closed": False, "next": 0}
        changed = threading.Condition(threading.RLock())

        def fill():
            # Under `changed`'s lock (reentrant: a callback added to a
            # future that is already done runs at once, here).
            while not state["closed"] and state["running"] < workers and state["next"] < len(jobs):
                work = jobs[state["next"]]
                state["next"] += 1
                state["running"] += 1
                if callable(work):
                    future = pool.submit(work)
                else:
                    future = pool.submit(pcm, work[0], work[1], runs)
                    started.append(future)
                future.add_done_callback(ended)
            changed.notify_all()

        def ended(_future):
            with changed:
                state["running"] -= 1
                fill()

        ended_well = False
        try:
            with changed:
                if prefix is not None:
                    state["running"] += 1
                    prefix.future.add_done_callback(ended)
                fill()
            yield "decoding", None
            for index in range(len(sizes) + (prefix is not None)):
                if check is not None:
                    check()
                with changed:
                    while index >= len(started):
                        changed.wait()
                    future = started[index]
                yield "audio", future.result()
            ended_well = True
        finally:
            # Cancelled, failed or closed early: no more of its chunks start,
            # and the sentence's work ends here (a terminated run ends at once).
            with changed:
                state["closed"] = True
                waiting = [f for f in started if f is not prefix]
                left = jobs[state["next"] :]
            for future in waiting:
                future.cancel()
            concurrent.futures.wait(waiting)
            if ended_well:
                # The next sentence's work that no worker took yet.
                for work in left:
                    if callable(work):
                        pool.submit(work)


class _Ahead:
    """The next sentence's job (see `StreamVoice.ahead`): `frontend()`, then
    `decode()` of its first frames (nothing without side by side, or when
    the frontend was not made by this job); `seconds`: the frontend's
    expected time."""

    def __init__(self, voice, text, options, seconds, side_by_side=None, last=False):
        self.seconds = seconds
        self._voice, self._text, self._options = voice, text, options
        self._side_by_side, self._last = side_by_side, last
        self._made = None
        self._fronted = threading.Event()

    def frontend(self):
        try:
            self._made = self._voice._make_ahead(self._text, self._options)
        finally:
            self._fronted.set()

    def decode(self):
        # Its frontend may still run on another worker.
        self._fronted.wait()
        if self._made is not None and self._side_by_side is not None:
            self._voice._decode_ahead(self._made, self._options, self._side_by_side, self._last)

    def __call__(self):
        self.frontend()
        self.decode()


def _both(*runs):
    """One job of `runs`, one after the other."""

    def run():
        for r in runs:
            r()

    return run


class _Prefix:
    """The first frames of a sentence made ahead: claimed by the job that
    decodes them, or taken by its request first (which then decodes them
    itself); never both."""

    def __init__(self):
        self._lock = threading.Lock()
        self._taken = False
        self._claimed = None

    def claim(self, frames):
        """The future the job sets to their audio, or None when the request
        took the frontend first."""
        with self._lock:
            if self._taken:
                return None
            future = concurrent.futures.Future()
            future.set_running_or_notify_cancel()
            self._claimed = (frames, future)
            return future

    def take(self):
        """(frames, future) of a claim, or None."""
        with self._lock:
            self._taken = True
            return self._claimed


class _Decoded:
    """Audio decoded ahead (`future`), or by `again()` here if that failed."""

    def __init__(self, future, again, log):
        self.future = future
        self._again, self._log = again, log

    def result(self):
        try:
            return self.future.result()
        except Exception as err:
            self._log(f"first frames decoded ahead failed ({type(err).__name__}: {err}); again")
            return self._again()



def _cut(frames, pieces):
    """`frames` in `pieces` chunks of one size (the last the rest)."""
    size = math.ceil(frames / pieces)
    return [size] * (frames // size) + ([frames % size] if frames % size else [])


def _pick(value, default):
    return default if value is None else value
