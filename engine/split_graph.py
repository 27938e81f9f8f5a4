"""piperd engine: a Piper voice's graph cut in two at the prior sample z_p.

Piper exports VITS as one graph, phoneme ids to waveform. Everything up to
the prior sample `z_p = m_p + randn * exp(logs_p) * noise_scale` (text
encoder, duration predictor, alignment, both noise draws) needs the whole
sentence and is cheap; everything after it (flow, HiFi-GAN decoder) is a
stack of convolutions over frames with a finite receptive field, so it can
be decoded in chunks with a few frames of margin on each side.

`split(model_path)` finds that seam by the graph's structure (the `Add` fed
by the last `RandomNormalLike`, the same seam the streaming-vits package
finds), and extracts the graphs on either side of it:

  frontend  the voice's own inputs  ->  m_p, logs_p (per phoneme id),
                                        noise scale, [speaker embedding],
                                        w_ceil (frames per phoneme id)
  flow      z_p, frame mask, [speaker embedding]  ->  z (the vocoder's input)
  vocoder   z, [speaker embedding]  ->  audio

The part after the seam is cut once more, where the flow hands z to the
HiFi-GAN vocoder (the input of the convolution before its first upsampling,
`find_vocoder_input`), because the two need very different margins: the
flow's four coupling layers of four width-5 convolutions see 32 frames each
side, the vocoder about 11 (on en_US-joe-medium, a chunk's samples stop
changing at 32 and at 12 frames of margin). The flow is a sixth of the
decoding work, so a chunk boundary that cost 32 + 32 frames of the whole
decoder costs 16 + 16 frames of the vocoder and 32 + 32 of the flow
instead (calibrated margins, see stream_synth): about 37 frames' work
rather than 64. A graph where that second seam is not found keeps one `decoder` graph
(z_p, frame mask, [speaker embedding] -> audio) with the wider margins.

Between the two, the engine expands m_p and logs_p to frames itself
(`np.repeat` by w_ceil) and draws the prior's noise: the graph does that
expansion as a product with a dense frames x ids path matrix, whose
temporaries were a third of the frontend's peak memory on a long sentence
(about 100 of 300 MiB at 1,400 ids). A graph where that expansion is not
found keeps it inside the frontend, which then returns z_p and the frame
mask itself (`meta["expand"]` is None).

`w_ceil` is the `Ceil` tensor piper's `patch_voice_with_alignment` exposes:
with the hop length it gives the samples each phoneme id spans.

The graphs are stored under the cache folder, keyed by the model file's
SHA-256, never beside the voice: the voices folder may be read-only.

The split runs in a short-lived child process (this module run by the same
interpreter, `split MODEL FOLDER`), which writes the graphs and
split.json into the folder: the `onnx` package holds the whole model and its
shape inference at once (the engine's peak memory on a first start was the
split's, about 420 MiB, above what synthesis ever needs), and a child's
memory is given back when it ends. The child reads its stdin until it
closes and then exits: the engine keeps that pipe open while it waits, so
the child cannot outlive the engine, even one killed with SIGKILL.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading

# Bump when what is stored changes meaning: older entries are then ignored.
CACHE_VERSION = 3


class CannotSplit(Exception):
    """The graph does not have the seam of a Piper VITS export."""


def model_hash(model_path):
    digest = hashlib.sha256()
    with open(model_path, "rb") as model_file:
        for block in iter(lambda: model_file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_seam(graph):
    """Returns (z_p, mask, speaker embedding or None, w_ceil, index of the
    first node after the seam)."""
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    noise = [i for i, node in enumerate(nodes) if node.op_type == "RandomNormalLike"]
    if not noise:
        raise CannotSplit("no RandomNormalLike node: not a VITS export")
    # The last draw is the prior's noise; z_p is the first Add downstream of it.
    reached = {nodes[noise[-1]].output[0]}
    z_p = cut = None
    for i in range(noise[-1] + 1, len(nodes)):
        node = nodes[i]
        if not any(name in reached for name in node.input):
            continue
        if node.op_type == "Add":
            z_p, cut = node.output[0], i + 1
            break
        reached.update(node.output)
    if z_p is None:
        raise CannotSplit("no Add after the prior's noise (z_p)")

    crossing = []
    for node in nodes[cut:]:
        for name in node.input:
            if name in producer and producer[name] < cut and name not in crossing:
                crossing.append(name)
    # The speaker embedding feeds the decoder's conditioning convolutions.
    conditioning = [
        node.input[0]
        for node in nodes
        if node.op_type == "Conv" and "cond" in node.name and node.input[0] in producer
    ]
    speaker = max(set(conditioning), key=conditioning.count) if conditioning else None
    mask = None
    for name in crossing:
        if name in (z_p, speaker):
            continue
        users = sum(1 for node in nodes[cut:] if name in node.input)
        if users > 5:
            mask = name
            break
    if mask is None:
        raise CannotSplit(f"no frame mask among the tensors crossing the seam: {crossing}")
    unexpected = [name for name in crossing if name not in (z_p, mask, speaker)]
    if unexpected:
        raise CannotSplit(f"more tensors cross the seam than z_p, mask, speaker: {unexpected}")
    ceils = {out for node in nodes[:cut] if node.op_type == "Ceil" for out in node.output}
    if len(ceils) != 1:
        raise CannotSplit(f"expected one Ceil (w_ceil) before the seam, found {len(ceils)}")
    return z_p, mask, speaker, next(iter(ceils)), cut


def find_expansion(graph, z_p):
    """The tensors the prior is made of, before their expansion to frames:
    (m_p, logs_p, noise scale), or None when the graph does not show
    `z_p = P m_p + randn * exp(P logs_p) * noise_scale` with one path
    matrix P applied by two MatMuls."""
    nodes = list(graph.node)
    producer = {out: node for node in nodes for out in node.output}

    def through(name, ops):
        """The input of the chain of single-input `ops` that makes `name`."""
        node = producer.get(name)
        while node is not None and node.op_type in ops:
            name = node.input[0]
            node = producer.get(name)
        return name, node

    add = producer.get(z_p)
    if add is None or add.op_type != "Add" or len(add.input) != 2:
        return None
    mean_name, mean = through(add.input[0], ("Transpose",))
    scaled = producer.get(add.input[1])
    if mean is None or mean.op_type != "MatMul" or scaled is None or scaled.op_type != "Mul":
        return None
    noisy, noise_scale = producer.get(scaled.input[0]), scaled.input[1]
    if noisy is None or noisy.op_type != "Mul":
        return None
    draw, spread = (producer.get(name) for name in noisy.input)
    if draw is None or draw.op_type != "RandomNormalLike":
        draw, spread = spread, draw
    if draw is None or draw.op_type != "RandomNormalLike" or spread is None:
        return None
    if spread.op_type != "Exp":
        return None
    _, logs = through(spread.input[0], ("Transpose",))
    if logs is None or logs.op_type != "MatMul" or logs.input[0] != mean.input[0]:
        return None
    m_p, m_t = through(mean.input[1], ("Transpose",))
    logs_p, l_t = through(logs.input[1], ("Transpose",))
    if m_p == mean.input[1] or logs_p == logs.input[1]:
        return None  # no transpose back to [1, channels, ids]: not the shape expected
    return m_p, logs_p, noise_scale


def find_vocoder_input(graph, speaker):
    """The flow's output as the vocoder reads it: the input of the
    convolution (HiFi-GAN's conv_pre) whose output, through an activation
    and the speaker's conditioning `Add`, feeds the first upsampling
    `ConvTranspose`. None when the graph does not show that shape."""
    nodes = list(graph.node)
    producer = {out: node for node in nodes for out in node.output}
    up = next((node for node in nodes if node.op_type == "ConvTranspose"), None)
    if up is None:
        return None
    name = up.input[0]
    for _ in range(8):
        node = producer.get(name)
        if node is None:
            return None
        if node.op_type == "Conv":
            return node.input[0] if node.input[0] != speaker else None
        if node.op_type in ("LeakyRelu", "Relu"):
            name = node.input[0]
        elif node.op_type == "Add":
            # conv_pre(z) + cond(g): the branch not made from the speaker.
            branches = [
                i
                for i in node.input
                if i in producer
                and producer[i].op_type == "Conv"
                and producer[i].input[0] != speaker
            ]
            if len(branches) != 1:
                return None
            name = branches[0]
        else:
            return None
    return None


def hop_length(model):
    """Samples per frame: the product of the decoder's upsampling strides."""
    import re

    hop = 1
    found = False
    for node in model.graph.node:
        if node.op_type != "ConvTranspose" or len(node.input) < 2:
            continue
        if not re.fullmatch(r"dec\.ups\.\d+\.weight", node.input[1]):
            continue
        for attribute in node.attribute:
            if attribute.name == "strides":
                hop *= attribute.ints[0]
                found = True
    if not found:
        raise CannotSplit("no dec.ups.* upsampling layers: not a HiFi-GAN decoder")
    return hop


class SplitGraph:
    """The graphs, as paths of the cached files or (when there is no cache
    to keep them in) serialized bytes, and the names of their ends.
    onnxruntime takes either; a path keeps no copy of the graph in the
    engine's memory, which a session made later (another thread count)
    would otherwise need kept. `parts`: the decoding graphs by name, in the
    order they run (`meta["parts"]`: flow then vocoder, or one decoder)."""

    def __init__(self, frontend, parts, meta):
        self.frontend = frontend
        self.parts = parts
        self.meta = meta

    @property
    def hop(self):
        return self.meta["hop"]


def split(model_path):
    """Cuts the model at z_p. Raises `CannotSplit` for a graph without the seam."""
    import onnx

    model = onnx.load(str(model_path))
    z_p, mask, speaker, w_ceil, _ = find_seam(model.graph)
    hop = hop_length(model)
    # piper ships duplicate metadata keys, which the extractor's checker refuses.
    seen, keep = set(), []
    for prop in model.metadata_props:
        if prop.key not in seen:
            seen.add(prop.key)
            keep.append(prop)
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    inputs = [value.name for value in model.graph.input]
    seam = [z_p, mask] + ([speaker] if speaker else [])
    expansion = find_expansion(model.graph, z_p)
    ends = list(expansion) if expansion else [z_p, mask]
    extractor = onnx.utils.Extractor(model)
    frontend = extractor.extract_model(inputs, ends + ([speaker] if speaker else []) + [w_ceil])
    output = model.graph.output[0].name
    decoder = extractor.extract_model(seam, [output])
    z = find_vocoder_input(decoder.graph, speaker)
    parts = {"decoder": decoder}
    vocoder_inputs = None
    if z is not None:
        flow = extractor.extract_model(seam, [z])
        vocoder = extractor.extract_model([z] + ([speaker] if speaker else []), [output])
        vocoder_inputs = [value.name for value in vocoder.graph.input]
        # The vocoder must need nothing but z (and the speaker): a graph
        # that also reads the mask or the noise is not the shape expected.
        if set(vocoder_inputs) <= {z, speaker} and len(flow.graph.node) + len(
            vocoder.graph.node
        ) <= len(decoder.graph.node) + 2:
            parts = {"flow": flow, "vocoder": vocoder}
        else:
            z = vocoder_inputs = None
    meta = {
        "cache_version": CACHE_VERSION,
        "inputs": inputs,
        "z_p": z_p,
        "mask": mask,
        "speaker": speaker,
        "w_ceil": w_ceil,
        "hop": hop,
        "parts": list(parts),
        "z": z,
        "vocoder_inputs": vocoder_inputs,
        "expand": (
            {"m_p": expansion[0], "logs_p": expansion[1], "noise_scale": expansion[2]}
            if expansion
            else None
        ),
    }
    return SplitGraph(
        frontend.SerializeToString(),
        {name: graph.SerializeToString() for name, graph in parts.items()},
        meta,
    )


def _write_atomically(path, data):
    folder = os.path.dirname(path)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".part-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


class Cache:
    """One folder per model hash: frontend.onnx, the decoding parts
    (flow.onnx and vocoder.onnx, or decoder.onnx), split.json, and what
    calibration measured (calibration.json)."""

    def __init__(self, root, digest):
        self.folder = os.path.join(root, digest[:32]) if root else None

    def _path(self, name):
        return os.path.join(self.folder, name)

    def load_split(self):
        if not self.folder:
            return None
        try:
            with open(self._path("split.json"), "r", encoding="utf-8") as meta_file:
                meta = json.load(meta_file)
            if meta.get("cache_version") != CACHE_VERSION:
                return None
            paths = {name: self._path(f"{name}.onnx") for name in ["frontend"] + meta["parts"]}
            if not all(os.path.isfile(path) for path in paths.values()):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        frontend = paths.pop("frontend")
        return SplitGraph(frontend, paths, meta)

    def store_split(self, graph):
        self._store("frontend.onnx", graph.frontend)
        for name, part in graph.parts.items():
            self._store(f"{name}.onnx", part)
        # Last: its presence says the graphs beside it are whole.
        self._store("split.json", json.dumps(graph.meta, indent=1).encode("utf-8"))

    def load_json(self, name):
        if not self.folder:
            return None
        try:
            with open(self._path(name), "r", encoding="utf-8") as stored:
                found = json.load(stored)
        except (OSError, ValueError):
            return None
        if not isinstance(found, dict) or found.get("cache_version") != CACHE_VERSION:
            return None
        return found

    def store_json(self, name, obj):
        self._store(name, json.dumps(dict(obj, cache_version=CACHE_VERSION), indent=1).encode())

    def _store(self, name, data):
        if not self.folder:
            return
        os.makedirs(self.folder, exist_ok=True)
        _write_atomically(self._path(name), data)


def _source():
    """This module's source, to run it as the child: piperd's engine prelude
    keeps it as `__source__` (its modules come from no file); otherwise it is
    read from the module's file."""
    source = globals().get("__source__")
    if source is None:
        with open(__file__, "r", encoding="utf-8") as source_file:
            source = source_file.read()
    return source


# Exit status of the child for a graph without the seam (see `CannotSplit`).
CANNOT_SPLIT = 3


def split_in_child(model_path, folder):
    """Splits the model in a child process, which writes the graphs and
    split.json into `folder`. Raises `CannotSplit` for a graph without the
    seam, RuntimeError when the child fails otherwise."""
    child = subprocess.Popen(
        [sys.executable, "-c", _source(), "split", str(model_path), folder],
        stdin=subprocess.PIPE,
        # Its output goes to the engine's log: the engine's stdout is the protocol's.
        stdout=sys.stderr.fileno(),
        stderr=subprocess.PIPE,
    )
    try:
        # Its stdin stays open until it ends: it exits once that closes.
        errors = child.stderr.read()
        child.wait()
    except BaseException:
        child.kill()
        child.wait()
        raise
    finally:
        child.stdin.close()
        child.stderr.close()
    if errors:
        sys.stderr.write(errors.decode("utf-8", "replace"))
        sys.stderr.flush()
    message = errors.decode("utf-8", "replace").strip().splitlines()
    message = message[-1] if message else f"exit status {child.returncode}"
    if child.returncode == CANNOT_SPLIT:
        raise CannotSplit(message)
    if child.returncode != 0:
        raise RuntimeError(f"the split failed: {message}")


def _exit_when_stdin_closes():
    """The child's watch on its parent: stdin closes when the engine ends."""
    # The raw descriptor: a buffered reader's lock would stop the exit.
    while os.read(0, 4096):
        pass
    os._exit(1)


def child_main(args):
    """`split MODEL FOLDER`: the child's side of `split_in_child`."""
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    model_path, folder = args
    try:
        graph = split(model_path)
    except CannotSplit as err:
        sys.stderr.write(f"{err}\n")
        return CANNOT_SPLIT
    cache = Cache(os.path.dirname(folder), "")
    cache.folder = folder
    cache.store_split(graph)
    return 0


def cache_root():
    """PIPER_ENGINE_CACHE_DIR as piperd passes it; empty means no cache."""
    return os.environ.get("PIPER_ENGINE_CACHE_DIR", "")


def load_or_split(model_path, log):
    """The voice's split graph and its cache, splitting on first use (in a
    child process, see `split_in_child`). A cache that cannot be written
    only costs the split at every start: the graphs are then made in a
    temporary folder and kept in memory."""
    cache = Cache(cache_root(), model_hash(model_path))
    graph = cache.load_split()
    if graph is not None:
        return graph, cache
    if cache.folder:
        try:
            os.makedirs(cache.folder, exist_ok=True)
            if not os.access(cache.folder, os.W_OK):
                raise PermissionError("not writable")
        except OSError as err:
            log(f"cannot store the split graph in {cache.folder}: {err}; it is made again at each start")
            cache.folder = None
    if cache.folder:
        split_in_child(model_path, cache.folder)
        graph = cache.load_split()
        if graph is None:
            raise RuntimeError(f"the split left no graphs in {cache.folder}")
        return graph, cache
    with tempfile.TemporaryDirectory(prefix="piperd-split-") as folder:
        split_in_child(model_path, folder)
        with open(os.path.join(folder, "split.json"), "r", encoding="utf-8") as meta_file:
            meta = json.load(meta_file)
        graphs = {}
        for name in ["frontend"] + meta["parts"]:
            with open(os.path.join(folder, f"{name}.onnx"), "rb") as graph_file:
                graphs[name] = graph_file.read()
    frontend = graphs.pop("frontend")
    return SplitGraph(frontend, graphs, meta), cache


if __name__ == "__main__" and sys.argv[1:2] == ["split"]:
    sys.exit(child_main(sys.argv[2:]))
