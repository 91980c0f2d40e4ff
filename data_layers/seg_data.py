"""What every FCN segmentation data layer shares.

The reference data layers read one (image, label) pair per forward and
reshape the net to it (batch 1, any image size). This module holds that
machinery once; each dataset module only says where its files are and how to
load one top for one image id.

Parameters (`python_param.param_str`) are a Python dict literal, parsed with
`ast.literal_eval` and checked against the layer's schema: an unknown key, a
missing required key or a wrong type is a `CaffeError`. Keys common to all
layers:

- `split`: the split file's name (`train`, `seg11valid`, `trainval`, ...)
- `randomize` (default True): random order, but only when 'train' is in
  `split` (evaluation splits are always read in file order)
- `seed` (default None): seed of the order; None seeds from the system
- `prefetch` (default 0): load this many upcoming samples on a background
  thread; the order of samples does not change. The depth is capped at the
  split's size and at `MAX_PREFETCH`.

Files. Every file is read only if it is a regular file (a FIFO would block
the reader forever); any read or decode error, a decompression bomb
included, is a `CaffeError` naming the layer, the image id and the file.
Label images must be 8-bit (palette or gray): wider labels would wrap to
wrong classes without a word. All tops of one sample must agree in height
and width.

Training options of the paper's studies (all off by default, as the
reference nets have them; each forward draws them afresh, from a generator
of their own seeded by `seed`, so they never change the order of samples):

- `mirror` (default False): flip every top left-right with probability 1/2
- `jitter` (default 0): translate every top by a random whole number of
  pixels in [-jitter, jitter] along each axis, keeping its size; uncovered
  image pixels are 0 (the mean, once subtracted), uncovered labels void
- `loss_p` (default 1): loss sampling. The label is cut into `loss_cell` x
  `loss_cell` cells from its top-left pixel (default 32, a final-layer cell
  of the stride-32 nets) and each cell is kept with probability `loss_p`;
  the others become void (255), so the loss ignores them
- `class_weights` (default None): class balancing, one weight per class;
  each labelled pixel of class c is kept with probability w_c / max(w)
  (the rest become void), so the expected loss is the class-weighted loss
  divided by max(w)

Label tops are those named in `LABEL_TOPS`; the option order per forward is
mirror, jitter, loss sampling, class balancing.

Order. As the reference layers do: with random order the first sample is
`rng.randint(0, n - 1)` right after seeding `random.Random(seed)`, and every
forward draws the next the same way (sampling with replacement); otherwise
samples go through the split file in order and wrap around. The reference
seeds Python's global `random`; this layer keeps a private generator with
the same algorithm, so it draws the same sequence without touching (or being
disturbed by) anyone else's use of `random`.

Training on N processes (`caffe.solver_count()` N, this one rank r), a
TRAIN-phase layer draws the same order as one process would and takes items
r, r + N, r + 2N, ... of it (Caffe's interleaved data sharding), so the N
processes together read each item of that order exactly once; a random
order then needs a `seed`. TEST-phase layers read everything (only rank 0
tests).

Resuming the order (the contract a solver snapshot relies on):

- `get_state()` returns a dict of plain Python values (str, int, list,
  None; it round-trips through JSON) that describes the sample the *next*
  reshape will load and the generator that picks the ones after it. Take it
  between iterations (after a forward), as a snapshot does.
- `set_state(state)` on a layer set up with the same split restores it: the
  next reshape/forward then produces the same samples the original layer
  would have. A state from a different split or list length is refused.
"""
from __future__ import annotations

import ast
import logging
import random
import weakref
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

from caffe_backend import caffe
from data_layers.palette import VOID
from torchcaffe.errors import CaffeError, clip
from torchcaffe.regular_file import open_regular, read_regular_bytes

log = logging.getLogger(__name__)

#: Most samples a layer loads ahead (each is held in memory until used)
MAX_PREFETCH = 64

#: The mean (BGR) the reference VOC / SBDD nets subtract.
VOC_MEAN_BGR = (104.00699, 116.66877, 122.67892)

_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One param_str key: the accepted types and the default (none = required)."""

    types: type | tuple[type, ...]
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING


#: Keys every segmentation data layer accepts.
COMMON_PARAMS = {
    "split": Param(str),
    "randomize": Param(bool, True),
    "seed": Param((int, type(None)), None),
    "prefetch": Param(int, 0),
    "mirror": Param(bool, False),
    "jitter": Param(int, 0),
    "loss_p": Param((int, float), 1.0),
    "loss_cell": Param(int, 32),
    "class_weights": Param((list, tuple, type(None)), None),
}


def parse_param_str(param_str: str, schema: dict[str, Param], layer: str) -> dict[str, Any]:
    """The checked parameters of `layer` from its param_str (a dict literal)."""
    try:
        value = ast.literal_eval(param_str)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise CaffeError(
            f"{layer}: param_str must be a Python dict literal, got {param_str!r} ({exc})"
        ) from None
    if not isinstance(value, dict):
        raise CaffeError(f"{layer}: param_str must be a dict literal, got {type(value).__name__}")
    unknown = sorted(map(str, set(value) - set(schema)))
    if unknown:
        raise CaffeError(f"{layer}: unknown param_str key(s) {unknown}; accepted: {sorted(schema)}")
    params = {}
    for key, spec in schema.items():
        if key not in value:
            if spec.required:
                raise CaffeError(f"{layer}: param_str lacks the required key '{key}'")
            params[key] = spec.default
            continue
        given = value[key]
        # bool is an int subclass: True must not pass where a number is meant
        is_bool_for_number = isinstance(given, bool) and bool not in _as_tuple(spec.types)
        if not isinstance(given, spec.types) or is_bool_for_number:
            names = " or ".join(t.__name__ for t in _as_tuple(spec.types))
            raise CaffeError(f"{layer}: param_str key '{key}' must be {names}, got {given!r}")
        params[key] = given
    for key, low in (("prefetch", 0), ("jitter", 0), ("loss_cell", 1)):
        if params.get(key, low) < low:
            raise CaffeError(f"{layer}: param_str key '{key}' must be >= {low}, got {params[key]}")
    if "loss_p" in params and not 0 < params["loss_p"] <= 1:
        raise CaffeError(f"{layer}: param_str key 'loss_p' must lie in (0, 1], got {params['loss_p']}")
    if params.get("class_weights") is not None:
        weights = params["class_weights"]
        if not weights or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                   and w >= 0 for w in weights) or max(weights) <= 0:
            raise CaffeError(f"{layer}: param_str key 'class_weights' must be a list of "
                             f"non-negative numbers, not all 0, got {weights!r}")
    return params


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def parse_mean(value: Any, layer: str) -> np.ndarray:
    """A per-channel mean given as a sequence of numbers, as float64 like the reference."""
    if not isinstance(value, (tuple, list)) or not value or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise CaffeError(f"{layer}: param_str key 'mean' must be a tuple of numbers, got {value!r}")
    return np.array(value, dtype=np.float64)


def read_split(path: Path, layer: str) -> list[str]:
    """The image ids listed one per line in a split file."""
    try:
        ids = read_regular_bytes(path).decode("utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CaffeError(f"{layer}: cannot read the split file {path}: {exc.strerror or exc}") from None
    ids = [line.strip() for line in ids if line.strip()]
    if not ids:
        raise CaffeError(f"{layer}: the split file {path} lists no image ids")
    return ids


# -- loading one file ------------------------------------------------------------


def _read_error(layer: str, image_id: str, path: Path, exc: BaseException) -> CaffeError:
    if isinstance(exc, FileNotFoundError):
        return CaffeError(f"{layer}: image '{image_id}': no file {path}")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return CaffeError(f"{layer}: image '{image_id}': cannot read {path}: "
                      f"{type(exc).__name__}: {clip(reason, 300)}")


def _open_image(path: Path, image_id: str, layer: str) -> np.ndarray:
    """The pixels of an image file; mode I;16 and the like keep their width."""
    try:
        with open_regular(path) as f, Image.open(f) as image:
            image.load()
            return np.array(image)
    # PIL raises OSError for truncated files, DecompressionBombError, ValueError,
    # SyntaxError (corrupt headers) and others for hostile ones
    except (Exception, MemoryError) as exc:
        raise _read_error(layer, image_id, path, exc) from None


def load_bgr(path: Path, image_id: str, mean: np.ndarray, layer: str) -> np.ndarray:
    """An RGB image file as Caffe input: float32, BGR, minus `mean`, C x H x W.

    The subtraction runs in the mean's dtype and is stored as float32, as the
    reference's in-place `in_ -= self.mean` does.
    """
    pixels = _open_image(path, image_id, layer)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise CaffeError(
            f"{layer}: image '{image_id}': {path} is not a 3-channel colour image (shape {pixels.shape})"
        )
    bgr = pixels.astype(np.float32)[:, :, ::-1]
    bgr -= mean
    return bgr.transpose(2, 0, 1)


def load_channels(path: Path, image_id: str, mean: np.ndarray, layer: str) -> np.ndarray:
    """A 3-channel image file in its stored channel order, float32 minus `mean`, C x H x W."""
    pixels = _open_image(path, image_id, layer)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise CaffeError(f"{layer}: image '{image_id}': {path} has not 3 channels (shape {pixels.shape})")
    data = pixels.astype(np.float32)
    data -= mean
    return data.transpose(2, 0, 1)


def load_gray(path: Path, image_id: str, layer: str) -> np.ndarray:
    """A one-channel image file (8 or 16 bit) as a float32 H x W array."""
    pixels = _open_image(path, image_id, layer)
    if pixels.ndim != 2:
        raise CaffeError(f"{layer}: image '{image_id}': {path} is not a one-channel image (shape {pixels.shape})")
    return pixels.astype(np.float32)


def load_label_png(path: Path, image_id: str, layer: str) -> np.ndarray:
    """A palette or gray PNG of class indices as a 1 x H x W uint8 array."""
    pixels = _open_image(path, image_id, layer)
    if pixels.ndim != 2:
        raise CaffeError(
            f"{layer}: image '{image_id}': label {path} must be a palette or gray image of class "
            f"indices, not colour (shape {pixels.shape})"
        )
    if pixels.dtype != np.uint8:
        raise CaffeError(
            f"{layer}: image '{image_id}': label {path} has {pixels.dtype} pixels; labels must "
            "be 8-bit class indices (a wider image would wrap to wrong classes)"
        )
    return pixels[np.newaxis]


def load_mat(path: Path, image_id: str, key: str, layer: str) -> np.ndarray:
    """Variable `key` of a MATLAB file."""
    try:
        with open_regular(path) as f:
            variables = scipy.io.loadmat(f)
    except (Exception, MemoryError) as exc:  # truncated or hostile files raise anything
        raise _read_error(layer, image_id, path, exc) from None
    if key not in variables:
        found = sorted(k for k in variables if not k.startswith("__"))
        raise CaffeError(f"{layer}: image '{image_id}': {path} has no variable '{key}' (has {found})")
    return variables[key]


def as_label(values: np.ndarray, path: Path, image_id: str, layer: str) -> np.ndarray:
    """A 2-D label array of whole numbers in 0..255 as 1 x H x W uint8 (the
    reference's cast would wrap other values into wrong classes)."""
    if values.ndim != 2:
        raise CaffeError(f"{layer}: image '{image_id}': the label in {path} is not 2-D (shape {values.shape})")
    if values.dtype != np.uint8:
        if values.dtype.kind not in "uif":
            raise CaffeError(f"{layer}: image '{image_id}': the label in {path} holds "
                             f"{values.dtype} values, not class indices")
        with np.errstate(invalid="ignore"):
            bad = ~((values >= 0) & (values <= 255) & (values == np.round(values)))
        if bad.any():
            raise CaffeError(f"{layer}: image '{image_id}': the label in {path} has "
                             f"{int(bad.sum())} values that are not class indices 0..255 "
                             f"(e.g. {values[bad].flat[0]!r})")
    return values.astype(np.uint8)[np.newaxis]


# -- order and prefetch ------------------------------------------------------------


def data_share(phase: int) -> tuple[int, int]:
    """(rank, count) of this process's share of a TRAIN net's data order;
    (0, 1) for a TEST net (only rank 0 tests) or a one-process run, as
    Caffe's DataLayer::Skip."""
    if phase != caffe.TRAIN:
        return 0, 1
    return caffe.solver_rank(), caffe.solver_count()


@dataclass
class Sampler:
    """Which sample comes next: the reference's order, resumable.

    With `share` (rank, count) = (r, N) the sampler yields items r, r + N,
    r + 2N, ... of the one-process order (every rank draws the whole order
    from the same seed and keeps its share), so N ranks together read each
    item of that order exactly once."""

    count: int
    rng: random.Random | None  # None: sequential order
    share: tuple[int, int] = (0, 1)
    idx: int = field(init=False, default=0)

    def __post_init__(self):
        rank, _ = self.share
        if self.rng is not None:
            for _ in range(rank + 1):
                self.idx = self.rng.randint(0, self.count - 1)
        else:
            self.idx = rank % self.count

    def advance(self) -> None:
        stride = self.share[1]
        if self.rng is not None:
            for _ in range(stride):
                self.idx = self.rng.randint(0, self.count - 1)
        else:
            self.idx = (self.idx + stride) % self.count

    def upcoming(self, k: int) -> list[int]:
        """The next `k` indices after the current one, leaving the state as it is."""
        stride = self.share[1]
        if self.rng is None:
            return [(self.idx + i * stride) % self.count for i in range(1, k + 1)]
        ahead = random.Random()
        ahead.setstate(self.rng.getstate())
        return [[ahead.randint(0, self.count - 1) for _ in range(stride)][-1]
                for _ in range(k)]

    def rng_state(self) -> list | None:
        if self.rng is None:
            return None
        version, internal, gauss_next = self.rng.getstate()
        return [version, list(internal), gauss_next]

    def set_rng_state(self, state: Sequence) -> None:
        version, internal, gauss_next = state
        state = (version, tuple(internal), gauss_next)
        # setstate overwrites the generator word by word before it finds a bad
        # one: try it on a scratch generator so a refused state changes nothing
        random.Random().setstate(state)
        self.rng.setstate(state)


class Prefetcher:
    """Loads samples on one background thread ahead of when they are asked for.

    Loading is a pure function of the index, so fetching early cannot change
    what a sample holds or the order in which samples are used.
    """

    def __init__(self, load, depth: int, name: str):
        self._load = load
        self.depth = depth
        self._pending: dict[int, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"prefetch-{name}")
        weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)

    def take(self, index: int):
        future = self._pending.pop(index, None)
        return future.result() if future is not None else self._load(index)

    def schedule(self, wanted: list[int]) -> None:
        """Keep loads running for `wanted` (the next indices) and drop the rest."""
        for index in list(self._pending):
            if index not in wanted:
                self._pending.pop(index).cancel()
        for index in wanted:
            if index not in self._pending:
                self._pending[index] = self._pool.submit(self._load, index)


# -- training options ------------------------------------------------------------


class Augmenter:
    """The random training options of one layer (see the module docstring),
    applied to one sample's tops per forward."""

    def __init__(self, params: dict[str, Any], label_tops: Sequence[bool], layer: str):
        self.mirror = params["mirror"]
        self.jitter = params["jitter"]
        self.loss_p = float(params["loss_p"])
        self.loss_cell = params["loss_cell"]
        weights = params["class_weights"]
        self.keep = None if weights is None else np.asarray(weights, np.float64) / max(weights)
        self.is_label = list(label_tops)
        self.layer = layer
        self.rng = np.random.default_rng(params["seed"])

    @property
    def active(self) -> bool:
        return self.mirror or self.jitter > 0 or self.loss_p < 1 or self.keep is not None

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self.mirror and self.rng.random() < 0.5:
            arrays = [a[..., ::-1] for a in arrays]
        if self.jitter:
            dy, dx = (int(d) for d in self.rng.integers(-self.jitter, self.jitter + 1, size=2))
            arrays = [shift(a, dy, dx, VOID if label else 0)
                      for a, label in zip(arrays, self.is_label)]
        labels = [i for i, label in enumerate(self.is_label) if label]
        if self.loss_p < 1 and labels:
            height, width = arrays[labels[0]].shape[-2:]
            cells = self.rng.random((-(-height // self.loss_cell), -(-width // self.loss_cell)))
            dropped = np.repeat(np.repeat(cells >= self.loss_p, self.loss_cell, 0),
                                self.loss_cell, 1)[:height, :width]
            arrays = list(arrays)
            for i in labels:
                arrays[i] = np.where(dropped, VOID, arrays[i]).astype(arrays[i].dtype)
        if self.keep is not None:
            arrays = list(arrays)
            for i in labels:
                arrays[i] = self._balance(arrays[i])
        return arrays

    def _balance(self, label: np.ndarray) -> np.ndarray:
        counted = label != VOID
        if counted.any() and label[counted].max() >= len(self.keep):
            raise CaffeError(f"{self.layer}: class_weights gives {len(self.keep)} weights but a "
                             f"label holds class {int(label[counted].max())}")
        keep = self.keep[np.where(counted, label, 0)]
        dropped = counted & (self.rng.random(label.shape) >= keep)
        return np.where(dropped, VOID, label).astype(label.dtype)

    def state(self) -> dict | None:
        return self.rng.bit_generator.state if self.active else None

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def shift(array: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """`array` (... x H x W) moved down by `dy` and right by `dx` pixels (negative:
    up / left) at the same size; the uncovered pixels are `fill`."""
    out = np.full_like(array, fill)
    height, width = array.shape[-2:]
    if abs(dy) >= height or abs(dx) >= width:
        return out
    out[..., max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
        array[..., max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    return out


# -- the layer -------------------------------------------------------------------


class SegDataLayer(caffe.Layer):
    """Base of the segmentation data layers; see the module docstring.

    A subclass sets `PARAMS` (its keys beyond `COMMON_PARAMS`) and implements
    `configure`, `split_path`, `top_names` and `load_top`.
    """

    PARAMS: dict[str, Param] = {}
    #: the tops that hold labels (void fill, loss sampling, class balancing)
    LABEL_TOPS: tuple[str, ...] = ("label",)

    # -- what a dataset supplies

    def configure(self, params: dict[str, Any]) -> None:
        """Keep the dataset's parameters (directories, mean, ...)."""
        raise NotImplementedError

    def split_path(self) -> Path:
        raise NotImplementedError

    def top_names(self) -> list[str]:
        raise NotImplementedError

    def load_top(self, name: str, image_id: str) -> np.ndarray:
        """The array for top `name` of image `image_id`, without the batch axis."""
        raise NotImplementedError

    # -- Caffe's interface

    def setup(self, bottom, top):
        layer = type(self).__name__
        params = parse_param_str(self.param_str, {**COMMON_PARAMS, **self.PARAMS}, layer)
        self.split = params["split"]
        self.configure(params)
        names = self.top_names()
        if len(top) != len(names):
            raise CaffeError(f"{layer}: needs {len(names)} tops ({', '.join(names)}), the net gives {len(top)}")
        if len(bottom) != 0:
            raise CaffeError(f"{layer}: a data layer takes no bottoms, the net gives {len(bottom)}")
        self.indices = read_split(self.split_path(), layer)
        randomize = params["randomize"] and "train" in self.split
        self._share = data_share(self.phase)
        if self._share[1] > 1 and randomize and params["seed"] is None:
            raise CaffeError(f"{layer}: random order with {self._share[1]} training processes "
                             "needs a 'seed' in param_str, so that every process draws the "
                             "same order and takes its own share of it")
        self._sampler = Sampler(len(self.indices),
                                random.Random(params["seed"]) if randomize else None, self._share)
        depth = min(params["prefetch"], len(self.indices), MAX_PREFETCH)
        if depth < params["prefetch"]:
            log.info("%s: prefetch %d capped at %d", layer, params["prefetch"], depth)
        self._prefetcher = Prefetcher(self._load_sample, depth, layer) if depth else None
        self._sample: tuple[int, list[np.ndarray]] | None = None
        self._augment = Augmenter(params, [name in self.LABEL_TOPS for name in names], layer)
        log.info("%s: %d images in split '%s' (%s order%s)", layer, len(self.indices), self.split,
                 "random" if randomize else "file",
                 "" if self._share[1] == 1 else f", share {self._share[0]} of {self._share[1]}")

    # tops by index: pycaffe's blob vectors cannot be iterated
    def reshape(self, bottom, top):
        arrays = self._current_sample()
        for index, array in enumerate(arrays):
            top[index].reshape(1, *array.shape)

    def forward(self, bottom, top):
        arrays = self._current_sample()
        if self._augment.active:
            arrays = self._augment(arrays)
        for index, array in enumerate(arrays):
            top[index].data[...] = array
        self._sampler.advance()

    def backward(self, top, propagate_down, bottom):
        pass  # data layers have nothing to propagate

    # -- resuming

    def get_state(self) -> dict[str, Any]:
        """The sampling state as plain values; see the module docstring."""
        return {
            "split": self.split,
            "count": len(self.indices),
            "share": list(self._share),
            "idx": self._sampler.idx,
            "rng": self._sampler.rng_state(),
            "augment": self._augment.state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue the order from a `get_state()` result."""
        layer = type(self).__name__
        try:
            split, count, idx, rng = state["split"], state["count"], state["idx"], state["rng"]
        except (KeyError, TypeError):
            raise CaffeError(f"{layer}: a sampling state needs keys split, count, idx, rng; got {state!r:.200}") from None
        if split != self.split or count != len(self.indices):
            raise CaffeError(
                f"{layer}: the sampling state is for split '{split}' of {count} images, "
                f"this layer reads split '{self.split}' of {len(self.indices)}"
            )
        share = state.get("share", [0, 1])
        if share != list(self._share):
            shown = (f"share {share[0]} of {share[1]}" if isinstance(share, list)
                     and len(share) == 2 else f"share {share!r:.50}")
            raise CaffeError(f"{layer}: the sampling state is for {shown} training processes, "
                             f"this layer reads share {self._share[0]} of {self._share[1]}")
        if (rng is None) != (self._sampler.rng is None):
            raise CaffeError(f"{layer}: the sampling state's order (random or not) differs from this layer's")
        if not isinstance(idx, int) or not 0 <= idx < count:
            raise CaffeError(f"{layer}: sampling state index {idx!r} is outside 0..{count - 1}")
        augment = state.get("augment")
        if augment is not None:
            try:  # on a scratch generator first: a refused state must change nothing
                np.random.default_rng().bit_generator.state = augment
            except (TypeError, ValueError, KeyError) as exc:
                raise CaffeError(f"{layer}: the sampling state's augmentation generator is "
                                 f"malformed: {exc}") from None
        if rng is not None:
            try:
                self._sampler.set_rng_state(rng)
            except (TypeError, ValueError, OverflowError) as exc:
                raise CaffeError(f"{layer}: the sampling state's generator state is malformed: {exc}") from None
        self._sampler.idx = idx
        if augment is not None:
            self._augment.set_state(augment)

    # -- internals

    def _load_sample(self, index: int) -> list[np.ndarray]:
        image_id = self.indices[index]
        names = self.top_names()
        arrays = [self.load_top(name, image_id) for name in names]
        sizes = {name: array.shape[-2:] for name, array in zip(names, arrays)}
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"{name} {h}x{w}" for name, (h, w) in sizes.items())
            raise CaffeError(f"{type(self).__name__}: image '{image_id}': its files differ in "
                             f"size ({listed}); every top of a sample must have the image's "
                             "height and width")
        return arrays

    def _current_sample(self) -> list[np.ndarray]:
        # Caffe calls reshape at setup and before every forward: load once per sample
        idx = self._sampler.idx
        if self._sample is None or self._sample[0] != idx:
            if self._prefetcher is None:
                self._sample = (idx, self._load_sample(idx))
            else:
                self._sample = (idx, self._prefetcher.take(idx))
                self._prefetcher.schedule(self._sampler.upcoming(self._prefetcher.depth))
        return self._sample[1]
