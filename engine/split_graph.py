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

The vocoder is also stored with its one-dimensional convolutions written
as two-dimensional ones over a height of one (`as_two_dimensional`), for
sessions on one thread: onnxruntime runs 2-D convolutions in its blocked
channel layout (NCHWc), and on one thread that decodes the same audio (to
1e-7) about a fifth faster (en_US-joe-medium, 30 to 512 frames: 12.2 against
15.6 ms, 246.5 against 310.5 ms). On two threads it is about a tenth slower
(those kernels divide the work poorly over a height of one), so sessions on
more threads keep the vocoder as it is.

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
CACHE_VERSION = 5


class CannotSplit(Exception):
    """The graph does not have the seam of a Piper VITS export."""


def model_hash(model_path, root=None):
    """The SHA-256 of the model file. With a cache folder (`root`, default
    `cache_root()`), it is remembered there by the file's device, inode,
    size and modification time, as make and rsync tell a changed file: a
    start then reads no model byte for it (hashing en_US-joe-medium's 63 MB
    took 40-58 ms of each engine start on 2 cores). A file replaced or
    rewritten gets a new inode or modification time, so it is hashed again;
    hard links of one model share its entry."""
    root = cache_root() if root is None else root
    known = None
    if root:
        try:
            st = os.stat(model_path)
            stamp = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
            name = hashlib.sha256(stamp.encode()).hexdigest()[:32]
            known = os.path.join(root, "hashes", name)
            with open(known, "r", encoding="ascii") as found:
                digest = found.read().strip()
            if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
                return digest
        except (OSError, ValueError):
            pass
    digest = hashlib.sha256()
    with open(model_path, "rb") as model_file:
        for block in iter(lambda: model_file.read(1 << 20), b""):
            digest.update(block)
    digest = digest.hexdigest()
    if known is not None:
        try:
            os.makedirs(os.path.dirname(known), exist_ok=True)
            _write_atomically(known, digest.encode("ascii"))
        except OSError:  # an unwritable cache only costs the hash next time
            pass
    return digest


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

    def __init__(self, frontend, parts, meta, one_thread=None):
        self.frontend = frontend
        self.parts = parts
        self.meta = meta
        # Graphs of some parts for sessions on one thread (the vocoder's 2-D
        # form), by part name.
        self.one_thread = one_thread or {}

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
    one_thread = {}
    if "vocoder" in parts:
        flat = as_two_dimensional(parts["vocoder"])
        if flat is not None and _same_output(parts["vocoder"], flat):
            one_thread["vocoder"] = flat
    meta = {
        "cache_version": CACHE_VERSION,
        "one_thread": list(one_thread),
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
        {name: graph.SerializeToString() for name, graph in one_thread.items()},
    )


# Operations that work on a (N, C, 1, L) tensor as on (N, C, L): elementwise,
# with scalar constants only.
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "LeakyRelu", "Relu", "Tanh", "Sigmoid"}


def as_two_dimensional(model):
    """The graph with each 1-D Conv and ConvTranspose written as a 2-D one
    over a height of one: inputs unsqueezed at axis 2, kernels (O, I, K) as
    (O, I, 1, K), and what leaves the convolutions and the elementwise
    operations between them (with scalar constants) squeezed back. None when
    any other operation feeds those, or an input is not a float tensor of
    rank 3: the 2-D form is then not known to be the same computation."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    for value in graph.input:
        tensor = value.type.tensor_type
        if tensor.elem_type != onnx.TensorProto.FLOAT or len(tensor.shape.dim) != 3:
            return None

    def flat(node):
        return node.op_type in ("Conv", "ConvTranspose") or node.op_type in ELEMENTWISE

    made_flat = {name for node in graph.node if flat(node) for name in node.output}
    feeds_flat = {name for node in graph.node if flat(node) for name in node.input}
    convs = 0
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            weight = initializers.get(node.input[1])
            if weight is None or len(weight.dims) != 3:
                return None
            convs += 1
        elif node.op_type in ELEMENTWISE:
            for name in node.input:
                if name in initializers and len(initializers[name].dims) != 0:
                    return None
        elif feeds_flat & set(node.output):
            return None
    if convs == 0:
        return None
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        weight = initializers[node.input[1]]
        kernel = numpy_helper.to_array(weight)
        weight.CopyFrom(
            numpy_helper.from_array(
                kernel.reshape(kernel.shape[:2] + (1,) + kernel.shape[2:]), weight.name
            )
        )
        for attribute in node.attribute:
            values = list(attribute.ints)
            if attribute.name in ("kernel_shape", "strides", "dilations"):
                values = [1] + values
            elif attribute.name == "output_padding":
                values = [0] + values
            elif attribute.name == "pads":
                values = [0, values[0], 0, values[1]]
            else:
                continue
            del attribute.ints[:]
            attribute.ints.extend(values)
    axis = "two_dimensional_axis"
    graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), axis))
    inputs = {value.name for value in graph.input}
    outputs = {value.name for value in graph.output}
    nodes = [
        helper.make_node("Unsqueeze", [name, axis], [f"{name}__2d"])
        for name in inputs
        if name in feeds_flat
    ]
    squeezed = set()
    for node in graph.node:
        if flat(node):
            for i, name in enumerate(node.input):
                if name in inputs or name in made_flat:
                    node.input[i] = f"{name}__2d"
            for i, name in enumerate(node.output):
                node.output[i] = f"{name}__2d"
        else:
            # What leaves the 2-D part goes back to its own shape.
            for name in node.input:
                if name in made_flat and name not in squeezed:
                    nodes.append(helper.make_node("Squeeze", [f"{name}__2d", axis], [name]))
                    squeezed.add(name)
        nodes.append(node)
    for name in outputs & made_flat - squeezed:
        nodes.append(helper.make_node("Squeeze", [f"{name}__2d", axis], [name]))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return model


def _same_output(model, flat):
    """Whether the two graphs give the same output (within 1e-5) on a
    random input of 40 frames; False when either does not run."""
    try:
        import numpy as np
        import onnxruntime

        feeds = {}
        rng = np.random.default_rng(0)
        for index, value in enumerate(model.graph.input):
            shape = value.type.tensor_type.shape.dim
            dims = [d.dim_value if d.dim_value > 0 else 1 for d in shape]
            if index == 0 and shape[2].dim_value <= 0:
                dims[2] = 40
            feeds[value.name] = (rng.standard_normal(dims) * 0.8).astype(np.float32)
        runs = []
        for graph in (model, flat):
            session = onnxruntime.InferenceSession(
                graph.SerializeToString(), providers=["CPUExecutionProvider"]
            )
            runs.append(session.run(None, feeds)[0])
        return runs[0].shape == runs[1].shape and float(np.max(np.abs(runs[0] - runs[1]))) <= 1e-5
    except Exception:  # a graph that does not run here is not used
        return False


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
    (flow.onnx and vocoder.onnx, or decoder.onnx), the vocoder's 2-D form
    for one thread (vocoder-1t.onnx, when made), split.json, and what
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
            one_thread = {name: self._path(f"{name}-1t.onnx") for name in meta["one_thread"]}
            if not all(os.path.isfile(path) for path in [*paths.values(), *one_thread.values()]):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        frontend = paths.pop("frontend")
        return SplitGraph(frontend, paths, meta, one_thread)

    def store_split(self, graph):
        self._store("frontend.onnx", graph.frontend)
        for name, part in graph.parts.items():
            self._store(f"{name}.onnx", part)
        for name, part in graph.one_thread.items():
            self._store(f"{name}-1t.onnx", part)
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
        for name in ["frontend"] + meta["parts"] + [f"{n}-1t" for n in meta["one_thread"]]:
            with open(os.path.join(folder, f"{name}.onnx"), "rb") as graph_file:
                graphs[name] = graph_file.read()
    frontend = graphs.pop("frontend")
    one_thread = {name: graphs.pop(f"{name}-1t") for name in meta["one_thread"]}
    return SplitGraph(frontend, graphs, meta, one_thread), cache


if __name__ == "__main__" and sys.argv[1:2] == ["split"]:
    sys.exit(child_main(sys.argv[2:]))
