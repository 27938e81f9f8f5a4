"""piperd engine: one Piper voice served over a framed stdin/stdout protocol.

piperd runs this program once per warm voice, with the interpreter of the
project's virtual environment. It loads the voice with the `piper` package's
Python API, announces that it is ready, then answers synthesis requests. The
protocol is documented in docs/engine-protocol.md; in short:

  stdin   one JSON object per line: {"id": 7, "text": "...", options...}
          to synthesize (optionally on "threads": n onnxruntime threads),
          or {"cancel": 7} to stop request 7 early
  stdout  binary frames only:  b"PD" | kind (1 byte) | 0 | id (u32 LE)
                               | payload length (u32 LE) | payload
          kinds: R ready (JSON), A audio (s16le PCM), W words (JSON),
                 D done (JSON),
                 X error (JSON), C cancelled (empty)
  stderr  human-readable logs, kept by piperd for error reports.

Up to PIPER_ENGINE_PARALLEL requests are synthesized at once, on threads
that share the loaded voice. A request runs on every core unless it names
its own count: piperd gives a sentence alone every core, and sentences side
by side one core each, because two syntheses on every core each fight over
the cores. A request on every core runs its frontend on onnxruntime's
default threads, but decodes its decoder chunks (after the first of a
`first` sentence) side by side on the decoder's one-thread sessions, one
chunk per core at a time, sent in order (stream_synth's `synthesize`);
PIPER_ENGINE_SIDE_BY_SIDE=0 turns that off. One onnxruntime session exists per
thread count asked for, made on first use, except PIPER_ENGINE_THREADS (the
count piperd asks for when sentences share the cores) and, side by side,
the decoder's one-thread session, made ahead (after the ready frame); the
frontend has one session on every core for every request (see
`load_voice`). All of them share one memory arena, so the engine's memory
follows what it synthesizes at once, not how many sessions it has.

The program ends as soon as stdin closes, even in the middle of an utterance,
so that it can never outlive the server that feeds it.
"""

import concurrent.futures
import difflib
import json
import os
import queue
import re
import struct
import sys
import threading
import time
import unicodedata

HEADER = struct.Struct("<2sBBII")
MAGIC = b"PD"
READY, AUDIO, WORDS, DONE, ERROR, CANCELLED = (ord(k) for k in "RAWDXC")
OPTION_KEYS = ("speaker_id", "length_scale", "noise_scale", "noise_w_scale", "volume")
# A request on every core decodes its decoder chunks side by side on
# one-thread runs (see the module's docstring); PIPER_ENGINE_SIDE_BY_SIDE=0
# turns that off. With the vocoder's 2-D form on one thread (split_graph),
# two one-thread runs decode about 1.4x what one run on both cores does, which
# pays the extra cuts' margins: a lone streamed request of 1 to 3 sentences
# at a time made 19.8 audio s per s side by side against 18.1 without
# (2 cores, three 10 s runs each, interleaved); first audio is unchanged,
# since a `first` sentence's first chunk still runs alone on every core.
SIDE_BY_SIDE = os.environ.get("PIPER_ENGINE_SIDE_BY_SIDE", "1") != "0"

_out = sys.stdout.buffer
_out_lock = threading.Lock()
_local = threading.local()


def _lower_priority(niceness):
    """The calling thread's niceness (the engine's background work)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


# Matches a request's written words to its phonemes (`timings_ahead`) beside
# the decoding of its last sentence. Its Python holds the GIL, which a
# decoder thread needs to start a chunk: at a lower priority, it lets the
# decoder threads take the cores, and the GIL, first.
_WORDS = concurrent.futures.ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="words", initializer=_lower_priority, initargs=(10,)
)


class Cancelled(Exception):
    """A request piperd took back (`{"cancel": id}`) before it was done."""


def log(message):
    sys.stderr.write(f"engine: {message}\n")
    sys.stderr.flush()


def send(kind, request_id, payload=b""):
    with _out_lock:
        _out.write(HEADER.pack(MAGIC, kind, 0, request_id, len(payload)))
        _out.write(payload)
        _out.flush()


def send_json(kind, request_id, obj):
    send(kind, request_id, json.dumps(obj).encode("utf-8"))


class Requests:
    """Requests read but not answered yet, each with the onnxruntime run
    options that can stop its synthesis from another thread."""

    def __init__(self):
        import onnxruntime

        self._run_options = onnxruntime.RunOptions
        self._lock = threading.Lock()
        self._live = {}
        self.inbox = queue.Queue()

    def add(self, request):
        options = self._run_options()
        with self._lock:
            self._live[int(request.get("id", 0))] = options
        self.inbox.put((request, options))

    def cancel(self, request_id):
        with self._lock:
            options = self._live.get(request_id)
        if options is not None:
            options.terminate = True

    def done(self, request_id):
        with self._lock:
            self._live.pop(request_id, None)


def _varint(data, at):
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(data, start=0, end=None):
    """The top-level fields of a protobuf message: (number, wire type,
    value start, value end, field start)."""
    at = start
    end = len(data) if end is None else end
    while at < end:
        field_start = at
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, value_end = _varint(data, at)
            yield number, wire, at, value_end, field_start
            at = value_end
        elif wire == 1:
            yield number, wire, at, at + 8, field_start
            at += 8
        elif wire == 2:
            length, at = _varint(data, at)
            yield number, wire, at, at + length, field_start
            at += length
        elif wire == 5:
            yield number, wire, at, at + 4, field_start
            at += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def with_durations_output(model):
    """The voice model (ONNX bytes) with its `Ceil` tensor (`w_ceil`, the
    frames of each phoneme id) added to the graph's outputs, as piper's
    `patch_voice_with_alignment.add_alignment_output` does, but on the
    serialized bytes: the `onnx` package would add seconds of import to
    every engine start. `None` when the model has no single Ceil node, or
    already outputs it (then it is used as it is)."""
    graph = next(((s, e, f) for n, w, s, e, f in _fields(model) if n == 7 and w == 2), None)
    if graph is None:
        return None
    g_start, g_end, g_field = graph
    ceil_outputs = []
    outputs = []
    for number, wire, start, end, _ in _fields(model, g_start, g_end):
        if number == 1 and wire == 2:  # NodeProto
            op_type = b""
            names = []
            for n, w, s, e, _ in _fields(model, start, end):
                if n == 4 and w == 2:
                    op_type = model[s:e]
                elif n == 2 and w == 2:
                    names.append(model[s:e])
            if op_type == b"Ceil":
                ceil_outputs.extend(names)
        elif number == 12 and wire == 2:  # ValueInfoProto
            for n, w, s, e, _ in _fields(model, start, end):
                if n == 1 and w == 2:
                    outputs.append(model[s:e])
    if len(ceil_outputs) != 1 or ceil_outputs[0] in outputs:
        return None
    name = ceil_outputs[0]
    value_info = b"\x0a" + _encode_varint(len(name)) + name
    added = b"\x62" + _encode_varint(len(value_info)) + value_info
    header = b"\x3a" + _encode_varint(g_end - g_start + len(added))
    view = memoryview(model)
    # One copy of the model: it is tens of megabytes.
    return b"".join((view[:g_field], header, view[g_start:g_end], added, view[g_end:]))


_arena_registered = False


def register_shared_arena(onnxruntime):
    """One memory arena for every session of the engine: a session per
    thread count (and per graph) must not mean an arena each, each grown to
    its own peak."""
    global _arena_registered
    if _arena_registered:
        return
    onnxruntime.create_and_register_allocator(
        onnxruntime.OrtMemoryInfo(
            "Cpu",
            onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR,
            0,
            onnxruntime.OrtMemType.DEFAULT,
        ),
        onnxruntime.OrtArenaCfg(0, 0, -1, -1),
    )
    _arena_registered = True


class Sessions:
    """One graph's onnxruntime sessions, one per intra-op thread count: a
    run goes to the session the calling thread's request asked for
    (`_local.threads`), with that request's run options, so that
    `Requests.cancel` can stop a synthesis midway. Stands in for Piper's
    single session too (the whole-sentence path).

    `every_core_only`: one session on every core serves every request,
    whatever its thread count, and its threads do not spin for more work
    after a run (see `load_voice`: the frontend). `spin` False: the threads
    of its sessions do not spin either (the flow: the vocoder runs next);
    True: they spin within a run only.
    `one_thread`: the graph of sessions on one thread, when the part has a
    form faster there (split_graph's `as_two_dimensional`).
    `every_core_on_one`: runs on every core go to the session on one thread
    (see `load_voice`: the flow, when sentences alone decode side by side)."""

    def __init__(
        self, model, every_core_only=False, spin=True, one_thread=None, every_core_on_one=False
    ):
        import onnxruntime

        self._ort = onnxruntime
        # A path or the serialized graph.
        self._model = model
        self._one_thread = one_thread
        self._every_core_only = every_core_only
        self._every_core_on_one = every_core_on_one
        self._spin = spin and not every_core_only
        self._lock = threading.Lock()
        # Thread counts whose session is being made, outside the lock.
        self._pending = set()
        register_shared_arena(onnxruntime)
        # The session made first, which stands in for one still being made.
        self._default = 1 if every_core_on_one else 0
        self._by_threads = {self._default: self._make(self._default)}

    def _make(self, threads):
        options = self._ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.add_session_config_entry("session.use_env_allocators", "1")
        # Memory patterns are planned per input shape, and every sentence has
        # its own: they only add peaks (measured: two sentences side by side
        # 628 MiB with them, 504 MiB without, at the same speed).
        options.enable_mem_pattern = False
        if not self._spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        else:
            # Spinning between the operators of a run, not after it: a
            # thread left spinning after a chunk on every core takes a core
            # from the single-threaded chunks decoded next (measured on 2
            # cores: the first of them 30 to 60% slower).
            options.add_session_config_entry("session.force_spinning_stop", "1")
        one = threads == 1 or (threads == 0 and (os.cpu_count() or 1) == 1)
        model = self._one_thread if one and self._one_thread is not None else self._model
        return self._ort.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )

    def session(self, threads):
        """The session on `threads` threads. One still being made in the
        background stands in as the default session: a request must never
        wait on the low-priority thread that makes it (on a busy machine that
        thread gets almost no CPU, and the request would wait for seconds)."""
        if threads >= (os.cpu_count() or 1) or self._every_core_only:
            # Every core is what the default session has: one session, not
            # two alike (each costs its weights and its own peak).
            threads = 0
        if threads == 0 and self._every_core_on_one:
            threads = 1
        with self._lock:
            found = self._by_threads.get(threads)
            if found is not None:
                return found
            if threads in self._pending:
                return self._by_threads[self._default]
            self._pending.add(threads)
        try:
            made = self._make(threads)
        except Exception as err:  # e.g. the cached graph file was removed
            log(f"cannot make a session on {threads} threads ({err}); using the default one")
            return self._by_threads[self._default]
        finally:
            with self._lock:
                self._pending.discard(threads)
        with self._lock:
            return self._by_threads.setdefault(threads, made)

    def runner(self, threads, run_options):
        """`run(feed)` on the session of `threads` threads with these run
        options, for threads other than the request's own (its decoder runs
        side by side): onnxruntime allows concurrent runs of one session."""
        session = self.session(threads)
        return lambda feed: session.run(None, feed, run_options)

    def run(self, output_names, input_feed, run_options=None):
        session = self.session(getattr(_local, "threads", 0) or 0)
        return session.run(output_names, input_feed, getattr(_local, "run_options", None))

    def __getattr__(self, name):
        return getattr(self._by_threads[self._default], name)


def read_requests(requests):
    """Reads request lines; ends the whole program when stdin closes."""
    for raw in sys.stdin.buffer:
        line = raw.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
        except ValueError as err:
            request = {"id": 0, "invalid": f"request is not JSON: {err}"}
        if not isinstance(request, dict):
            request = {"id": 0, "invalid": "request is not a JSON object"}
        if "cancel" in request:
            try:
                requests.cancel(int(request["cancel"]))
            except (TypeError, ValueError):
                log(f"ignored a cancel line without a request id: {line[:80]!r}")
            continue
        requests.add(request)
    # The server closed our stdin (or died): stop at once, mid-utterance or not.
    os._exit(0)


class Engine:
    """The loaded voice: Piper's voice (phonemes, config, and the whole-
    sentence path) and, when its graph splits, the chunked path."""

    def __init__(self, voice, stream, sessions, parts=None):
        self.voice = voice
        # None: the graph could not be split; sentences are synthesized whole.
        self.stream = stream
        # Every Sessions of the voice, to make a thread count's ahead of use.
        self.sessions = sessions
        # The chunked path's decoding Sessions by part (flow and vocoder, or
        # one decoder), whose one-thread sessions decode a sentence alone on
        # every core side by side.
        self.parts = parts or {}


def load_voice(model_path, config_path):
    from piper import PiperConfig, PiperVoice

    with open(config_path, "r", encoding="utf-8") as config_file:
        config = PiperConfig.from_dict(json.load(config_file))
    try:
        import split_graph
        import stream_synth

        graph, cache = split_graph.load_or_split(model_path, log)
        # The frontend is one run per sentence, a fifth of its work or less:
        # one session on every core serves every sentence (a second one, on
        # one thread for sentences side by side, cost 20 MiB of peak for no
        # measured speed), and its threads do not spin after a run, since
        # the decoder runs next on threads of its own and a spinning
        # frontend thread takes a core from it (measured on 2 cores, a
        # 58-character sentence alone: 1.23x the raw engine's whole graph
        # with spinning, 1.07x without). The decoding parts keep one session
        # per thread count: the flow's threads do not spin, since the
        # vocoder runs next, and the vocoder's do between the operators of a
        # run but stop when it returns (see `Sessions._make`). The vocoder's
        # sessions on one thread run its 2-D form, a fifth faster there (see
        # split_graph). With sentences alone decoded side by side, the flow
        # has no session on every core: it would decode only the first chunk
        # of a sentence and the shortest sentences there (a 12-frame chunk
        # took 13.0 ms with the flow on one thread, 12.2 on every core), and
        # its weights and peak cost the engine 30 MiB; that room goes to
        # larger chunks side by side (see stream_synth.PARALLEL_FRAMES).
        frontend = Sessions(graph.frontend, every_core_only=True)
        flow_on_one = SIDE_BY_SIDE and (os.cpu_count() or 1) > 1
        parts = {
            name: Sessions(
                model,
                spin=name != "flow",
                one_thread=graph.one_thread.get(name),
                every_core_on_one=flow_on_one and name == "flow",
            )
            for name, model in graph.parts.items()
        }
        # Piper's voice serves for phonemes and config only: no whole graph
        # is loaded, so its memory is not spent.
        voice = PiperVoice(session=frontend, config=config)
        stream = stream_synth.StreamVoice(voice, graph, frontend, parts, cache, log)
        return Engine(voice, stream, [frontend, *parts.values()], parts)
    except Exception as err:  # any graph piper can run must still speak
        log(
            f"warning: cannot split {model_path} for chunked synthesis "
            f"({type(err).__name__}: {err}); every sentence is synthesized whole"
        )
    with open(model_path, "rb") as model_file:
        model = model_file.read()
    # With each phoneme's duration as a second output, for word timings.
    whole = Sessions(with_durations_output(model) or model)
    return Engine(PiperVoice(session=whole, config=config), None, [whole])


# Phonemes that take time but belong to no word: padding (`^` begin, `$`
# end, `_` between ids), the space between words, and the punctuation Piper
# keeps as phonemes (its duration is the pause at the mark).
_SEPARATORS = frozenset(" ^$_.,;:!?¡¿—…\"'()-")
# Marks that modify the phoneme around them (stress, length, tie): they have
# a duration of their own but are not matched against a word's phonemes.
_MODIFIERS = frozenset("ˈˌːˑ‿͡\u0303\u0329\u032f")


def _is_separator(phoneme):
    return not phoneme or all(c in _SEPARATORS or c.isspace() for c in phoneme)


# Punctuation that joins the parts of one written word when it stands
# between letters or digits: "can't", "well-known", "1,234", "10:30", "U.S.A".
_JOINERS = frozenset("'’-‐‑.,:/@&_")
_JOINER_RUN = re.compile("(?:[^" + re.escape("".join(_JOINERS)) + "]|(?<![" + re.escape("".join(_JOINERS)) + "])[" + re.escape("".join(_JOINERS)) + "](?![" + re.escape("".join(_JOINERS)) + "]))+")


def written_words(text):
    """The written words of a line, as (start, end) character offsets: runs
    of letters, digits, marks and symbols (so "$500" and "50%" are one
    word each), held together by the joiners above; punctuation around a
    word is not part of it. A run without a letter or digit is no word."""
    words = []
    start = None
    for at, char in enumerate(text + " "):
        category = unicodedata.category(char)
        if char.isalnum() or category[0] in "SM" or char in "%‰#" or (char in _JOINERS and start is not None):
            if start is None:
                start = at
            continue
        if start is not None:
            # Two joiners in a row ("Well...okay") part two words.
            for part in re.finditer(_JOINER_RUN, text[start:at]):
                begin, end = start + part.start(), start + part.end()
                while begin < end and text[begin] in _JOINERS:
                    begin += 1
                while end > begin and text[end - 1] in _JOINERS:
                    end -= 1
                if any(c.isalnum() for c in text[begin:end]):
                    words.append((begin, end))
            start = None
    return words


def word_phonemizer(voice):
    """`phonemize_words` for `word_timings`: each word's phonemes said alone,
    by the voice's own phonemizer. For espeak voices, one hold of piper's
    espeak lock and one voice selection for the whole list (selecting the
    voice costs more than phonemizing a word)."""
    from piper import voice as piper_voice
    from piper.config import PhonemeType

    if voice.config.phoneme_type != PhonemeType.ESPEAK:
        return lambda words: ["".join(map("".join, voice.phonemize(w))) for w in words]
    from piper import espeakbridge

    voice.phonemize("a")  # makes piper's espeak phonemizer, once

    def phonemize_words(words):
        with piper_voice._ESPEAK_PHONEMIZER_LOCK:
            espeakbridge.set_voice(voice.config.espeak_voice)
            return ["".join(c[0] for c in espeakbridge.get_phonemes(w)) for w in words]

    return phonemize_words


def word_timings(text, alignments, phonemize_words):
    """When each written word of `text` is spoken.

    `alignments` is the sentence's list of (phoneme, num_samples) in the
    order they are spoken, exactly as piper's `PhonemeAlignment` list (each
    phoneme's samples include the `_` pad after it; `^` and `$` are the
    padding at both ends); several lists are simply concatenated, with the
    silence between them as an entry ("", samples). `phonemize_words(words)`
    gives each word's phonemes when said alone.

    espeak does not keep the written words apart: it expands numbers and
    symbols into several words ("$500": dˈɑːlɚ fˈaɪvhˈʌndɹɪd), joins words
    across a clause without a mark ("Well... okay": wˈɛloʊkˈeɪ) and says
    some words differently in context. So each word's own phonemes are
    matched against the sentence's (difflib's longest matching blocks), and
    phonemes left unmatched go to the word on their side of the nearest
    space or mark. A word's start and end are the first and last sample of
    its phonemes, from the durations the model itself used.

    Returns [(char_start, char_end, start_sample, end_sample, phoneme_ends)]
    in the order of the text, one per written word; `phoneme_ends` is where
    each of the word's phonemes ends (its last is `end_sample`), so that a
    client can place the letters inside the word.
    """
    words = written_words(text)
    if not words:
        return []
    # The sentence's phonemes that sound, with their sample ranges, and
    # whether a separator stands before each.
    sound = []  # (phoneme, raw index)
    starts = []
    at = 0
    for phoneme, samples in alignments:
        starts.append(at)
        at += int(samples)
    ends = starts[1:] + [at]
    sep_before = []
    pending_sep = True
    for index, (phoneme, _) in enumerate(alignments):
        if _is_separator(phoneme):
            pending_sep = True
            continue
        if all(c in _MODIFIERS for c in phoneme):
            continue
        sound.append((phoneme, index))
        sep_before.append(pending_sep)
        pending_sep = False
    if not sound:
        return [(s, e, 0, 0, []) for s, e in words]

    reference = []
    labels = []
    alone = phonemize_words([text[start:end] for start, end in words])
    for label, phonemes in enumerate(alone):
        for phoneme in unicodedata.normalize("NFD", phonemes):
            if _is_separator(phoneme) or phoneme in _MODIFIERS:
                continue
            reference.append(phoneme)
            labels.append(label)
    spoken = [phoneme for phoneme, _ in sound]
    owner = [None] * len(sound)
    matcher = difflib.SequenceMatcher(None, reference, spoken, autojunk=False)
    last = -1
    for ref_at, spoken_at, size in matcher.get_matching_blocks():
        for k in range(size):
            label = labels[ref_at + k]
            if label >= last:  # words stay in order
                owner[spoken_at + k] = label
                last = label

    # Unmatched runs: split at the separators inside them, the pieces going
    # to the words between the neighbours (or to the neighbours).
    i = 0
    n = len(sound)
    while i < n:
        if owner[i] is not None:
            i += 1
            continue
        j = i
        while j < n and owner[j] is None:
            j += 1
        left = owner[i - 1] if i > 0 else -1
        right = owner[j] if j < n else len(words)
        pieces = [[i]]
        for k in range(i + 1, j):
            if sep_before[k]:
                pieces.append([k])
            else:
                pieces[-1].append(k)
        between = list(range(left + 1, right))
        if left >= 0 and not sep_before[i]:
            # The run continues the word before it.
            for k in pieces.pop(0):
                owner[k] = left
        for number, piece in enumerate(pieces):
            if between:
                label = between[min(number, len(between) - 1)]
            elif right < len(words):
                label = right
            else:
                label = left
            for k in piece:
                owner[k] = label
        i = j

    first = {}
    final = {}
    for k, label in enumerate(owner):
        if label is None or label >= len(words):
            continue
        first.setdefault(label, k)
        final[label] = k
    out = []
    previous_end = 0
    for label, (start, end) in enumerate(words):
        if label not in first:
            out.append((start, end, previous_end, previous_end, []))
            continue
        raw_first = sound[first[label]][1]
        raw_last = sound[final[label]][1]
        # A stress mark just before the first phoneme belongs to the word.
        while raw_first > 0 and not _is_separator(alignments[raw_first - 1][0]) and all(
            c in _MODIFIERS for c in alignments[raw_first - 1][0]
        ):
            raw_first -= 1
        while raw_last + 1 < len(alignments) and all(
            c in _MODIFIERS for c in alignments[raw_last + 1][0]
        ) and alignments[raw_last + 1][0]:
            raw_last += 1
        begin = max(starts[raw_first], previous_end)
        finish = max(ends[raw_last], begin)
        phoneme_ends = [
            max(ends[k], begin) for k in range(raw_first, raw_last + 1) if ends[k] > starts[k]
        ]
        out.append((start, end, begin, finish, phoneme_ends))
        previous_end = finish
    return out


def collect_alignments(alignments, sentence, silence):
    """Adds a sentence's (phoneme, samples) to the request's list, and the
    silence after it as ("", samples); `None` in the list once a sentence
    has none (a model without the durations output), so no words are sent."""
    if sentence is None or (alignments and alignments[-1] is None):
        alignments.append(None)
        return
    alignments.extend((a.phoneme, int(a.num_samples)) for a in sentence)
    if silence:
        alignments.append(("", silence))


def words_of(voice, text, alignments):
    """`word_timings` of the request's text, with the voice's word phonemizer."""
    phonemize_words = getattr(voice, "_piperd_word_phonemizer", None)
    if phonemize_words is None:
        phonemize_words = word_phonemizer(voice)
        voice._piperd_word_phonemizer = phonemize_words
    return word_timings(text, alignments, phonemize_words)


def timings_ahead(voice, text, alignments):
    """`words_of` on the words thread, once the durations of every sentence
    are known; a future, or None when there are none."""
    if not alignments or alignments[-1] is None:
        return None
    return _WORDS.submit(words_of, voice, text, list(alignments))


def send_words(voice, request_id, text, alignments, matched=None):
    """The `W` frame: each written word of the request's text, as UTF-8 byte
    offsets in it, and its first and last sample in the request's audio;
    `matched`: the words' future from `timings_ahead`, if it made one."""
    if not alignments or alignments[-1] is None:
        return
    try:
        if matched is not None:
            timings = matched.result()
        else:
            timings = words_of(voice, text, alignments)
    except Exception as err:  # timings are an extra: never fail the audio for them
        log(f"request {request_id}: no word timings: {type(err).__name__}: {err}")
        return
    offsets = [0]
    for char in text:
        offsets.append(offsets[-1] + len(char.encode("utf-8")))
    words = [[offsets[s], offsets[e], first, last, ends] for s, e, first, last, ends in timings]
    send_json(WORDS, request_id, {"words": words})


def synthesize(engine, request, run_options):
    request_id = int(request.get("id", 0))
    if "invalid" in request:
        send_json(ERROR, request_id, {"message": request["invalid"]})
        return
    text = request.get("text")
    if not isinstance(text, str):
        send_json(ERROR, request_id, {"message": "request has no text"})
        return
    if request.get("phonemize"):
        phonemize(engine.voice, request_id, text)
        return
    options = {key: request[key] for key in OPTION_KEYS if request.get(key) is not None}
    silence = float(request.get("sentence_silence") or 0.0)
    silence_bytes = b"\x00\x00" * int(engine.voice.config.sample_rate * silence)
    if run_options.terminate:
        send(CANCELLED, request_id)
        return
    try:
        threads = min(max(0, int(request.get("threads") or 0)), os.cpu_count() or 1)
        for sessions in engine.sessions:
            sessions.session(threads)
        _local.threads = threads
    except Exception as err:  # a bad count, or a session that cannot be made
        log(f"request {request_id}: no session for {request.get('threads')!r} threads: {err}")
        send_json(ERROR, request_id, {"message": f"{type(err).__name__}: {err}"})
        return
    _local.run_options = run_options
    # Small first chunks only where a listener waits for this audio to start.
    first = request.get("first", True) is not False
    samples = 0
    alignments = []
    try:
        if engine.stream is not None:
            side_by_side = None
            cores = os.cpu_count() or 1
            if SIDE_BY_SIDE and threads == 0 and cores > 1:
                # Every core: the decoder chunks on one thread each, side by side.
                runs = {name: part.runner(1, run_options) for name, part in engine.parts.items()}
                side_by_side = (cores, runs)
            from stream_synth import slowdown

            slower = slowdown(threads, cores)
            ahead = None
            if side_by_side is not None and isinstance(request.get("next"), str):
                last = request.get("next_last") is True
                ahead = engine.stream.ahead(request["next"], options, side_by_side, last)
            pieces = stream_sentences(
                engine.stream, text, options, first, run_options, side_by_side, slower, ahead
            )
        else:
            pieces = whole_sentences(engine.voice, text, options)
        matched = None
        for kind, value in pieces:
            if run_options.terminate:
                raise Cancelled()
            if kind == "aligned":
                collect_alignments(alignments, value, len(silence_bytes) // 2)
                continue
            if kind == "decoding":
                # The last sentence's chunks run side by side, outside the
                # GIL: the words are matched meanwhile, not after them.
                matched = timings_ahead(engine.voice, text, alignments)
                continue
            pcm = value if kind == "audio" else silence_bytes
            if not pcm:
                continue
            samples += len(pcm) // 2
            send(AUDIO, request_id, pcm)
        if run_options.terminate:
            raise Cancelled()
    except Exception as err:  # an utterance the engine cannot speak must not end it
        if run_options.terminate:
            send(CANCELLED, request_id)
            return
        log(f"request {request_id} failed: {type(err).__name__}: {err}")
        send_json(ERROR, request_id, {"message": f"{type(err).__name__}: {err}"})
        return
    finally:
        _local.run_options = None
        _local.threads = 0
    if samples == 0:
        send_json(ERROR, request_id, {"message": "nothing speakable", "unspeakable": True})
        return
    send_words(engine.voice, request_id, text, alignments, matched)
    send_json(DONE, request_id, {"samples": samples})


def phonemize(voice, request_id, text):
    """A phonemize request: the phonemes piper would speak, without synthesis.

    One A frame holds them as UTF-8 JSON (a list with one string per sentence
    piper finds), padded with spaces to an even length, then D.
    """
    try:
        sentences = ["".join(phonemes) for phonemes in voice.phonemize(text)]
    except Exception as err:  # text the phonemizer cannot read must not end the engine
        log(f"request {request_id}: phonemize failed: {type(err).__name__}: {err}")
        send_json(ERROR, request_id, {"message": f"{type(err).__name__}: {err}"})
        return
    payload = json.dumps(sentences, ensure_ascii=False).encode("utf-8")
    payload += b" " * (len(payload) % 2)
    send(AUDIO, request_id, payload)
    send_json(DONE, request_id, {"samples": len(payload) // 2})


def stream_sentences(
    stream, text, options, first, run_options, side_by_side=None, slower=1.0, ahead=None
):
    """Sentence by sentence: ("aligned", its phoneme alignments) once its
    frontend ran, ("audio", pcm) per decoder chunk, then ("silence", None)
    where its silence goes; and ("decoding", None) once the last
    sentence's chunks are under way side by side (see stream_synth's
    `synthesize`). `slower`: the decode's slowdown on this request's
    threads (see stream_synth.slowdown); `ahead`: see stream_synth's
    `synthesize`, for the last sentence."""

    def check():
        if run_options.terminate:
            raise Cancelled()

    found = stream.sentences(text)
    for index, phonemes in enumerate(found):
        last = index == len(found) - 1
        for kind, value in stream.synthesize(
            phonemes, options, first, check, side_by_side, slower, ahead if last else None
        ):
            if kind == "audio":
                yield "audio", value
            elif kind == "alignments":
                yield "aligned", value
            elif kind == "decoding" and last:
                yield "decoding", None
        # Its silence, if any, after its last chunk.
        yield "silence", None
        # Only the first sentence of a request is waited on.
        first = False


def whole_sentences(voice, text, options):
    """Piper's own synthesis, one sentence at a time, scaled to full peak,
    in the pieces of `stream_sentences` (a sentence's audio in one)."""
    from piper import SynthesisConfig

    config = SynthesisConfig(**options)
    for chunk in voice.synthesize(text, syn_config=config, include_alignments=True):
        yield "aligned", chunk.phoneme_alignments
        yield "audio", chunk.audio_int16_bytes
        yield "silence", None


def prepare(engine, threads):
    """Makes the sessions on `threads` threads (0: none), and with
    SIDE_BY_SIDE the decoder's on one thread that a sentence alone on every
    core decodes on."""
    _lower_priority(19)
    try:
        if threads > 0:
            for sessions in engine.sessions:
                sessions.session(threads)
        if SIDE_BY_SIDE and (os.cpu_count() or 1) > 1:
            for part in engine.parts.values():
                part.session(1)
    except Exception as err:  # a request that asks for it reports the error
        log(f"cannot prepare a session on {threads} threads: {err}")


def serve(engine, requests):
    while True:
        request, run_options = requests.inbox.get()
        try:
            synthesize(engine, request, run_options)
        finally:
            requests.done(int(request.get("id", 0)))


def check():
    """`--check`: can this interpreter run the engine at all?"""
    from importlib.metadata import version

    import onnxruntime  # noqa: F401
    import piper  # noqa: F401

    print(f"piper-tts {version('piper-tts')}")
    return 0


def main():
    if sys.argv[1:2] == ["--check"]:
        return check()
    if len(sys.argv) < 3:
        log("usage: piper_worker.py MODEL.onnx MODEL.onnx.json")
        return 2
    model_path, config_path = sys.argv[1], sys.argv[2]
    parallel = max(1, int(os.environ.get("PIPER_ENGINE_PARALLEL", "1") or 1))

    started = time.monotonic()
    try:
        requests = Requests()
        threading.Thread(target=read_requests, args=(requests,), daemon=True).start()
        engine = load_voice(model_path, config_path)
    except Exception as err:
        log(f"cannot load voice {model_path}: {type(err).__name__}: {err}")
        return 3
    # Warm the sessions so that the first real request is not the slow one.
    warm = engine.voice.phonemize("Ready.")
    if engine.stream is not None:
        for phonemes in warm:
            for _ in engine.stream.synthesize(phonemes, {}):
                pass
    else:
        for _ in whole_sentences(engine.voice, "Ready.", {}):
            pass
    load_ms = (time.monotonic() - started) * 1000.0

    from importlib.metadata import version

    send_json(
        READY,
        0,
        {
            "sample_rate": engine.voice.config.sample_rate,
            "num_speakers": engine.voice.config.num_speakers,
            "engine": f"piper-tts {version('piper-tts')}",
            "load_ms": round(load_ms, 1),
            "threads": parallel,
            "cancel": True,
            "pid": os.getpid(),
            "chunked": engine.stream is not None,
            # A request's `next` sentence: its frontend is made ahead, beside
            # the chunks of a sentence decoded side by side.
            "ahead": engine.stream is not None and SIDE_BY_SIDE and (os.cpu_count() or 1) > 1,
            **(engine.stream.describe() if engine.stream is not None else {}),
        },
    )
    log(f"ready in {load_ms:.0f} ms: {model_path}")
    # The session for sentences side by side is made after the ready frame,
    # on a low-priority thread, so it costs neither the cold start nor the
    # first requests; a request that needs it before then waits for it.
    shared = int(os.environ.get("PIPER_ENGINE_THREADS", "0") or 0)
    threading.Thread(target=prepare, args=(engine, shared), daemon=True).start()
    # onnxruntime releases the GIL while it runs, and piper serializes its
    # phonemizer, so the threads share one loaded model.
    for _ in range(parallel - 1):
        threading.Thread(target=serve, args=(engine, requests), daemon=True).start()
    serve(engine, requests)


if __name__ == "__main__":
    sys.exit(main())
