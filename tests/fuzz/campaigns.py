"""The fuzz campaigns: seed files, how a case mutates them, and the checks
an accepted or refused case must pass (raised as `Broken`)."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image

import torchcaffe
from torchcaffe.caffemodel import read_caffemodel
from torchcaffe.errors import MAX_MESSAGE, CaffeError
from torchcaffe.proto import caffe_pb2
from torchcaffe.wire import encode_varint

from .mutate import INTERESTING_INTS, mutate_bytes, mutate_text

log = logging.getLogger(__name__)


class Broken(AssertionError):
    """A case broke a promise other than 'no crash' (all-or-nothing, values)."""


def check_message(exc: CaffeError) -> None:
    if len(str(exc)) > MAX_MESSAGE + 200:
        raise Broken(f"error message of {len(str(exc))} characters")


# ---------------------------------------------------------------- shared seed nets

DEPLOY = """
name: "fuzz"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""

TRAIN = """
name: "fuzz_train"
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 1 dim: 3 dim: 6 dim: 6 } shape { dim: 1 dim: 1 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""

POLICIES = {
    "fixed": "",
    "step": "gamma: 0.5 stepsize: 3",
    "multistep": "gamma: 0.1 stepvalue: 2 stepvalue: 5",
    "poly": "power: 0.5",
    "exp": "gamma: 0.9",
    "inv": "gamma: 0.1 power: 0.75",
    "sigmoid": "gamma: 0.1 stepsize: 5",
}


def _params(net) -> list[np.ndarray]:
    return [b.data.copy() for blobs in net.params.values() for b in blobs]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b))


def _legacy_v1(net) -> bytes:
    """The net's weights as an old V1 caffemodel (`layers`, enum types,
    num/channels/height/width blobs, double_data for the ip layer)."""
    param = caffe_pb2.NetParameter(name="fuzz")
    types = {"conv": caffe_pb2.V1LayerParameter.CONVOLUTION,
             "ip": caffe_pb2.V1LayerParameter.INNER_PRODUCT}
    for name, kind in types.items():
        layer = param.layers.add(name=name, type=kind)
        for blob in net.params[name]:
            shape = (1,) * (4 - blob.data.ndim) + blob.data.shape
            proto = layer.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
            if name == "ip":
                proto.double_data.extend(blob.data.ravel().astype(np.float64))
            else:
                proto.data.extend(blob.data.ravel())
    return param.SerializeToString()


# ---------------------------------------------------------------- caffemodel

class CaffemodelCampaign:
    """`Net.copy_from` on mutated caffemodels (current and V1 format). A
    refused file must leave the net's params as they were; an accepted one
    must load exactly the values protobuf decodes from it."""

    name = "caffemodel reader (copy_from)"

    def prepare(self, work: Path) -> None:
        self.work = work
        (work / "deploy.prototxt").write_text(DEPLOY)
        torchcaffe.set_random_seed(7)
        self.net = torchcaffe.Net(str(work / "deploy.prototxt"), torchcaffe.TEST)
        self.net.save(str(work / "seed.caffemodel"))
        self.seeds = [(work / "seed.caffemodel").read_bytes(), _legacy_v1(self.net)]

    def case(self, rng: random.Random) -> None:
        data = mutate_bytes(rng.choice(self.seeds), rng)
        path = self.work / "case.caffemodel"
        path.write_bytes(data)
        before = _params(self.net)
        try:
            self.net.copy_from(str(path))
        except CaffeError as exc:
            check_message(exc)
            if not _same(before, _params(self.net)):
                raise Broken("a refused caffemodel changed the net's params") from None
            raise
        _check_against_protobuf(data, path)


def _check_against_protobuf(data: bytes, path: Path) -> None:
    """Every blob we read holds the values protobuf decodes (float32 cast)."""
    try:
        message = caffe_pb2.NetParameter.FromString(data)
    except Exception:
        return  # protobuf is stricter about fields we do not read; not a value mismatch
    if len(message.layers):
        return  # legacy files: V0/V1 upgrade rules, covered by the golden legacy tests
    ours = read_caffemodel(path)
    theirs = [l for l in message.layer]
    if [l.name for l in ours] != [l.name for l in theirs]:
        raise Broken("layer names differ from protobuf's decoding")
    for mine, proto in zip(ours, theirs):
        for array, blob in zip(mine.blobs, proto.blobs):
            values = blob.double_data if len(blob.double_data) else blob.data
            with np.errstate(over="ignore", invalid="ignore"):
                expected = np.asarray(values, np.float64).astype(np.float32)
            if not np.array_equal(array.ravel(), expected, equal_nan=True):
                raise Broken(f"layer '{mine.name}': values differ from protobuf's decoding")


# ---------------------------------------------------------------- solverstate

def _write_solver(work: Path, policy: str, kind: str) -> Path:
    path = work / f"solver_{policy}_{kind}.prototxt"
    path.write_text(f'net: "{work / "train.prototxt"}" type: "{kind}" base_lr: 0.01 '
                    f'momentum: 0.9 lr_policy: "{policy}" {POLICIES[policy]} '
                    f'display: 0 max_iter: 10 snapshot: 0 '
                    f'snapshot_prefix: "{work / "snap" / f"{policy}_{kind}"}"')
    return path


def _solver_state(solver) -> tuple:
    return (solver.iter, solver.current_step, [h.detach().clone() for h in solver.history],
            _params(solver.net), torch.get_rng_state().clone())


def _unchanged(solver, before: tuple) -> bool:
    now = _solver_state(solver)
    return (now[0] == before[0] and now[1] == before[1]
            and _same([h.cpu().numpy() for h in now[2]], [h.cpu().numpy() for h in before[2]])
            and _same(now[3], before[3]) and torch.equal(now[4], before[4]))


def _restore_all_or_nothing(solver, state_file: Path) -> None:
    before = _solver_state(solver)
    try:
        solver.restore(str(state_file))
    except CaffeError as exc:
        check_message(exc)
        if not _unchanged(solver, before):
            raise Broken("a refused restore changed the solver") from None
        raise


class SolverstateCampaign:
    """`restore` of mutated solverstates (and learned_net caffemodels), then
    one `step`, under every lr policy, for SGD and Adam."""

    name = "solverstate restore + one step"

    def prepare(self, work: Path) -> None:
        self.work = work
        (work / "train.prototxt").write_text(TRAIN)
        (work / "snap").mkdir(exist_ok=True)
        (work / "fifo").exists() or os.mkfifo(work / "fifo")
        self.solvers = []
        for policy in POLICIES:
            for kind in ("SGD", "Adam"):
                torchcaffe.set_random_seed(3)
                solver = torchcaffe.get_solver(str(_write_solver(work, policy, kind)))
                solver.step(2)
                model, state = solver.snapshot()
                Path(model.replace(".caffemodel", ".datastate.json")).unlink(missing_ok=True)
                self.solvers.append((solver, Path(model), Path(state)))

    def case(self, rng: random.Random) -> None:
        solver, model, state = rng.choice(self.solvers)
        case_model = self.work / "case.caffemodel"
        case_state = self.work / "case.solverstate"
        model_bytes = model.read_bytes()
        if rng.random() < 0.2:
            model_bytes = mutate_bytes(model_bytes, rng)
        case_model.write_bytes(model_bytes)
        message = caffe_pb2.SolverState.FromString(state.read_bytes())
        message.learned_net = str(case_model)
        choice = rng.random()
        if choice < 0.3:  # counters at the edges of int32 / int64 (the last value wins)
            extra = b"".join(encode_varint(number << 3) + encode_varint(rng.choice(INTERESTING_INTS))
                             for number in (1, 4) if rng.random() < 0.6)
            data = message.SerializeToString() + extra
        elif choice < 0.4:
            message.learned_net = rng.choice(["", "/dev/zero", str(self.work / "fifo"),
                                              str(self.work), str(self.work / "absent"),
                                              "x" * 5000])
            data = message.SerializeToString()
        else:
            data = mutate_bytes(message.SerializeToString(), rng)
        case_state.write_bytes(data)
        _restore_all_or_nothing(solver, case_state)
        solver.step(1)


# ---------------------------------------------------------------- sidecar

VOC_IDS = ["a1", "a2", "a3"]


def write_voc(root: Path, size=(4, 5)) -> Path:
    """A tiny VOC year folder: 3 images, palette labels, splits train / seg11valid."""
    voc = root / "VOC2011"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for k, image_id in enumerate(VOC_IDS, 1):
        rgb = np.full((*size, 3), 40 * k, np.uint8)
        Image.fromarray(rgb).save(voc / "JPEGImages" / f"{image_id}.jpg")
        label = Image.fromarray(np.full(size, k, np.uint8), mode="L").convert("P")
        label.save(voc / "SegmentationClass" / f"{image_id}.png")
    for split in ("train", "seg11valid"):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(VOC_IDS) + "\n")
    return voc


def write_sbd(root: Path, size=(4, 5)) -> Path:
    sbd = root / "dataset"
    (sbd / "img").mkdir(parents=True, exist_ok=True)
    (sbd / "cls").mkdir(exist_ok=True)
    for k, image_id in enumerate(VOC_IDS, 1):
        Image.fromarray(np.full((*size, 3), 30 * k, np.uint8)).save(sbd / "img" / f"{image_id}.jpg")
        scipy.io.savemat(sbd / "cls" / f"{image_id}.mat",
                         {"GTcls": {"Segmentation": np.full(size, k, np.uint8)}})
    (sbd / "train.txt").write_text("\n".join(VOC_IDS) + "\n")
    return sbd


MEAN = "(104.00699, 116.66877, 122.67892)"


def voc_layer(voc: Path, split: str, name: str = "data", extra: str = "") -> str:
    params = f"{{'voc_dir': '{voc}', 'split': '{split}', 'mean': {MEAN}, 'seed': 1337{extra}}}"
    return (f'layer {{ name: "{name}" type: "Python" top: "{name}" top: "{name}_label"\n'
            f'  python_param {{ module: "data_layers.voc_layers" layer: "VOCSegDataLayer"\n'
            f'    param_str: "{params}" }} }}\n')


def sbd_layer(sbd: Path, split: str, name: str, extra: str = "") -> str:
    params = f"{{'sbdd_dir': '{sbd}', 'split': '{split}', 'mean': {MEAN}, 'seed': 1337{extra}}}"
    return (f'layer {{ name: "{name}" type: "Python" top: "{name}" top: "{name}_label"\n'
            f'  python_param {{ module: "data_layers.voc_layers" layer: "SBDDSegDataLayer"\n'
            f'    param_str: "{params}" }} }}\n')


def _random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice(INTERESTING_INTS)
    if kind == 1:
        return rng.choice([0.5, -1.5, float("nan"), float("inf"), 1e308])
    if kind == 2:
        return rng.choice(["", "train", "A" * 10, "!!notbase64", "AAAA", "x" * 100000])
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 4:
        return "[" * 100000  # as a string; nesting comes from the text edits
    if kind == 5:
        return []
    if kind in (6, 7):
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["split", "count", "idx", "rng", "cpu", "train_net", "data", "x"]):
            _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _mutate_json(document, rng: random.Random):
    """Replace one random node of the document by a random JSON value, or delete it."""
    containers = []

    def walk(node):
        if isinstance(node, dict):
            for key in node:
                containers.append((node, key))
                walk(node[key])
        elif isinstance(node, list):
            for i in range(len(node)):
                containers.append((node, i))
                walk(node[i])

    walk(document)
    if not containers:
        return _random_json(rng)
    parent, key = rng.choice(containers)
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[key]
    else:
        parent[key] = _random_json(rng)
    return document


class SidecarCampaign:
    """`restore` with a mutated `.datastate.json` beside a valid solverstate:
    a refusal must leave the solver, its data layer and torch's generator
    as they were."""

    name = ".datastate.json sidecar"

    def prepare(self, work: Path) -> None:
        self.work = work
        voc = write_voc(work)
        (work / "train.prototxt").write_text(
            voc_layer(voc, "train") +
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "score"\n'
            '  convolution_param { num_output: 21 kernel_size: 1 weight_filler { type: "xavier" } } }\n'
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "data_label" top: "loss" }\n')
        (work / "solver.prototxt").write_text(
            f'net: "{work / "train.prototxt"}" base_lr: 1e-6 momentum: 0.9 lr_policy: "fixed" '
            f'display: 0 max_iter: 10 snapshot: 0 snapshot_prefix: "{work / "train"}"')
        torchcaffe.set_random_seed(5)
        self.solver = torchcaffe.SGDSolver(str(work / "solver.prototxt"))
        self.solver.step(2)
        model, state = self.solver.snapshot()
        self.state = Path(state)
        self.sidecar_text = Path(model.replace(".caffemodel", ".datastate.json")).read_text()
        self.solver.step(1)  # away from the snapshot, so a restore changes things

    def case(self, rng: random.Random) -> None:
        case_state = self.work / "case.solverstate"
        shutil.copyfile(self.state, case_state)
        sidecar = self.work / "case.datastate.json"
        if rng.random() < 0.6:
            text = json.dumps(_mutate_json(json.loads(self.sidecar_text), rng))
            data = text.encode()
        else:
            data = mutate_bytes(self.sidecar_text.encode(), rng)
        if rng.random() < 0.02:
            data = b"[" * 200000
        sidecar.write_bytes(data)
        layer = self.solver.net.layers[0]
        state_before = layer.get_state()
        try:
            _restore_all_or_nothing(self.solver, case_state)
        except CaffeError:
            if layer.get_state() != state_before:
                raise Broken("a refused sidecar changed the data layer's state") from None
            raise
        self.solver.step(1)


# ---------------------------------------------------------------- prototxt

NETS = [DEPLOY, TRAIN, """
name: "many"
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 group: 1
                            weight_filler { type: "msra" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "lrn" type: "LRN" bottom: "conv1" top: "lrn" lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool" type: "Pooling" bottom: "lrn" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "pool" top: "up"
        convolution_param { num_output: 4 kernel_size: 4 stride: 2 bias_term: false weight_filler { type: "bilinear" } } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop" crop_param { axis: 2 offset: 0 } }
layer { name: "cat" type: "Concat" bottom: "crop" bottom: "data" top: "cat" concat_param { axis: 1 } }
layer { name: "drop" type: "Dropout" bottom: "cat" top: "cat" dropout_param { dropout_ratio: 0.5 } }
layer { name: "score" type: "Convolution" bottom: "cat" top: "score"
        convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "sum" type: "Eltwise" bottom: "score" bottom: "score" top: "sum" eltwise_param { operation: SUM } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" bottom: "label" top: "loss"
        loss_param { ignore_label: 255 normalize: false } }
layer { name: "acc" type: "Accuracy" bottom: "sum" bottom: "label" top: "acc" include { phase: TEST } }
""", """
name: "shapes"
input: "data"
input_shape { dim: 2 dim: 4 dim: 3 dim: 3 }
layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }
layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip" inner_product_param { num_output: 6 weight_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "reshape" type: "Reshape" bottom: "ip" top: "r" reshape_param { shape { dim: 0 dim: 2 dim: -1 } } }
layer { name: "slice" type: "Slice" bottom: "r" top: "s1" top: "s2" slice_param { axis: 1 slice_point: 1 } }
layer { name: "scale" type: "Scale" bottom: "s1" top: "scaled" scale_param { bias_term: true filler { type: "constant" value: 2 } } }
layer { name: "bn" type: "BatchNorm" bottom: "s2" top: "bn" }
layer { name: "sig" type: "Sigmoid" bottom: "scaled" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "bn" top: "tanh" }
layer { name: "argmax" type: "ArgMax" bottom: "tanh" top: "argmax" argmax_param { top_k: 1 axis: 2 } }
layer { name: "silence" type: "Silence" bottom: "sig" bottom: "argmax" }
"""]

SNIPPETS = [
    'engine: CUDNN', 'bottom: "data"', 'top: "data"', 'top: "conv"', 'propagate_down: true',
    'include { phase: TRAIN }', 'exclude { phase: TEST }', 'layers { name: "old" type: RELU bottom: "data" top: "data" }',
    'input: "extra"', 'input_dim: 1', 'force_backward: true', 'loss_weight: 2',
    'layer { name: "split" type: "Split" bottom: "data" top: "data" }',
    'layer { name: "split2" type: "Split" bottom: "data" }',
    'layer { name: "py" type: "Python" python_param { module: "builtins" layer: "object" } }',
    'layer { name: "py2" type: "Python" bottom: "data" top: "py2" python_param { module: "builtins" layer: "input" } }',
    'layer { name: "py3" type: "Python" top: "py3" python_param { module: "sys" layer: "exit" } }',
    'param { lr_mult: 1 name: "shared" }', 'param { name: "shared" share_mode: PERMISSIVE }',
    'weight_filler { type: "gaussian" std: -1 }', 'bias_filler { type: "nosuch" }',
    'layer { name: "emb" type: "Embed" bottom: "label" top: "emb" embed_param { num_output: 3 input_dim: 4 } }',
    'convolution_param { num_output: 1 kernel_size: 1 dilation: 2 }', 'dim: 0', 'dim: -1', 'axis: -5',
    'phase: TRAIN', 'state { phase: TEST stage: "x" }', '}', '{', '#', '"',
]
STRINGS = ["data", "label", "conv", "score", "Convolution", "Deconvolution", "Pooling", "ReLU", "Split",
           "Python", "Input", "SoftmaxWithLoss", "NoSuchType", "", "loss", "..", "\\x00"]


class PrototxtCampaign:
    """Parse, build, forward and backward of mutated net prototxts."""

    name = "prototxt parse / build / forward / backward"

    def prepare(self, work: Path) -> None:
        self.work = work

    def case(self, rng: random.Random) -> None:
        text = mutate_text(rng.choice(NETS), rng, SNIPPETS, STRINGS)
        path = self.work / "case.prototxt"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        phase = rng.choice((torchcaffe.TRAIN, torchcaffe.TEST))
        try:
            net = torchcaffe.Net(str(path), phase)
            net.forward()
            net.backward()
        except CaffeError as exc:
            check_message(exc)
            raise


# ---------------------------------------------------------------- data layers

PARAM_EDITS = [", 'prefetch': 1000000000", ", 'prefetch': 2", ", 'prefetch': -1", ", 'randomize': 'no'",
               ", 'seed': 2**64", ", 'seed': None", ", 'unknown': 1", ", 'split': 'nosuch'",
               ", 'split': '../../x'", ", 'mean': ()", ", 'mean': (1, 2)", ", 'mean': 'abc'",
               ", 'prefetch': 2**62", ", 'seed': -5", ", 'split': 'seg11valid'", ", 'split': 'train'"]


def _bomb_png() -> bytes:
    """A PNG header claiming 60000 x 60000 pixels (PIL's bomb limit is ~179M)."""
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    chunk = lambda kind, body: (struct.pack(">I", len(body)) + kind + body  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + body)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) \
        + chunk(b"IEND", b"")


def _png(array: np.ndarray) -> bytes:
    import io
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


class DataLayerCampaign:
    """VOC and SBDD layers in a net, reading a tiny dataset whose files (or
    param_str) a case damages: 3 forwards, so later samples are read too."""

    name = "data layers (VOC / SBDD)"

    def prepare(self, work: Path) -> None:
        self.work = work
        self.voc = write_voc(work)
        self.sbd = write_sbd(work)
        self.files = sorted(p for p in work.rglob("*") if p.is_file())
        self.specials = {
            "bomb": _bomb_png(), "empty": b"", "16bit": _png(np.full((4, 5), 300, np.uint16)),
            "bigger": _png(np.full((6, 5), 1, np.uint8)), "rgb": _png(np.full((4, 5, 3), 1, np.uint8)),
            "mat16": None, "matfloat": None,
        }

    @staticmethod
    def _reset(path: Path, content: bytes) -> None:
        """Put a regular file with `content` back where a case left anything."""
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        path.write_bytes(content)

    def _damage(self, rng: random.Random, path: Path, original: bytes) -> None:
        self._reset(path, original)  # a second damage starts from the real file
        kind = rng.randrange(10)
        if kind <= 4:
            path.write_bytes(mutate_bytes(path.read_bytes(), rng))
        elif kind == 5:
            path.unlink()
            os.mkfifo(path)
        elif kind == 6:
            path.unlink()
            path.mkdir()
        elif kind == 7 and path.suffix == ".mat":
            value = rng.choice([np.full((4, 5), 300, np.uint16), np.full((4, 5), 1.5),
                                np.full((4, 5), -1, np.int16), np.full((3, 3), 1, np.uint8),
                                np.full((4, 5), np.nan)])
            scipy.io.savemat(path, {"GTcls": {"Segmentation": value}})
        else:
            name = rng.choice([k for k, v in self.specials.items() if v is not None])
            path.write_bytes(self.specials[name])

    def case(self, rng: random.Random) -> None:
        originals = {}
        extra_voc = extra_sbd = ""
        try:
            for _ in range(rng.randint(1, 2)):
                if rng.random() < 0.25:
                    if rng.random() < 0.5:
                        extra_voc += rng.choice(PARAM_EDITS)
                    else:
                        extra_sbd += rng.choice(PARAM_EDITS)
                    continue
                path = rng.choice(self.files)
                if path not in originals:  # a second damage may have made it a FIFO
                    originals[path] = path.read_bytes()
                self._damage(rng, path, originals[path])
            text = (voc_layer(self.voc, "seg11valid", "voc", extra_voc)
                    + sbd_layer(self.sbd, "train", "sbd", extra_sbd))
            net_file = self.work / "data.prototxt"
            net_file.write_text(text)
            try:
                net = torchcaffe.Net(str(net_file), torchcaffe.TRAIN)
                for _ in range(3):
                    net.forward()
            except CaffeError as exc:
                check_message(exc)
                raise
        finally:
            for path, content in originals.items():
                self._reset(path, content)


CAMPAIGNS = {
    "caffemodel": CaffemodelCampaign,
    "solverstate": SolverstateCampaign,
    "sidecar": SidecarCampaign,
    "prototxt": PrototxtCampaign,
    "data": DataLayerCampaign,
}
