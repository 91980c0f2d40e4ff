"""Caffe's data layers: DummyData, MemoryData, Data (LMDB / LevelDB),
ImageData, HDF5Data, and the HDF5Output sink (WindowData has its own
module, window_data.py).

A data layer has no bottoms; each forward produces the next batch as new
tensors on the net's device. Reading order is Caffe's: a DB in key order,
a list file in line order (or shuffled with the layer's seeded generator),
wrapping at the end. Random choices (TRAIN crops, mirror, shuffles, skips)
draw from a generator the layer seeds at setup from the net's filler
generator, so `set_random_seed` makes a run repeatable.

Training on N processes, the TRAIN-phase Data, ImageData and HDF5Data
layers of rank r take items r, r + N, ... of the one order every rank walks
(Caffe's DataLayer::Skip; ImageData too, which Caffe leaves unsharded);
their shuffles then draw from the solver's random_seed, the same on every
rank (`parallel.order_seed`), while crops and mirrors stay per rank.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
from typing import Callable

import numpy as np
import torch

from .. import fillers, host_memory, image_io, parallel
from ..atomic import atomic_path
from ..data_transformer import DataTransformer
from ..datum import datum_pixels, parse_datum
from ..db import Reader
from ..errors import CaffeError, LayerError
from ..prefetch import Prefetcher
from ..proto import caffe_pb2
from .base import CaffeLayer, register

log = logging.getLogger(__name__)


def layer_rng(generator: torch.Generator) -> np.random.Generator:
    """A data layer's own generator: seeded by one draw from the net's filler
    generator (Caffe seeds each layer's RNG with one caffe_rng_rand())."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return np.random.default_rng(seed)


def _order_rng(layer, generator: torch.Generator, random_order: bool) -> np.random.Generator:
    own = layer_rng(generator)  # drawn either way: later layers' seeds stay as in one process
    _, count = parallel.data_share(layer.phase)
    if count == 1 or not random_order:
        return own
    return np.random.default_rng(parallel.order_seed(layer.name))


def generator_state(rng: np.random.Generator) -> dict:
    """A numpy generator's state as plain values (JSON)."""
    return rng.bit_generator.state


def checked_generator_state(rng: np.random.Generator, state, what: str) -> dict:
    """`state`, once a scratch generator of `rng`'s kind has accepted it."""
    try:
        type(rng.bit_generator)().state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise CaffeError(f"{what}: not a {type(rng.bit_generator).__name__} generator state "
                         f"({exc})") from None
    return state


def state_fields(state, names: tuple[str, ...], what: str) -> list:
    """The values of `names` in a saved reader state, or an error naming them."""
    if not isinstance(state, dict) or not all(name in state for name in names):
        raise CaffeError(f"{what}: a saved read position needs keys {', '.join(names)}; got "
                         f"{state!r:.200}")
    return [state[name] for name in names]


def check_same(saved, here, what: str) -> None:
    if saved != here:
        raise CaffeError(f"the saved read position is for {what} {saved!r:.80}, this layer has "
                         f"{here!r:.80}")


def check_index(value, limit: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < limit:
        raise CaffeError(f"the saved {what} {value!r:.40} is outside 0..{limit - 1}")
    return value


class DataLayer(CaffeLayer):
    """Shared by the layers that produce batches: no bottoms, tops on the
    net's device."""

    num_bottoms = 0

    def __init__(self, param, phase):
        super().__init__(param, phase)
        self.device = torch.device("cpu")
        self.top_shapes: list[tuple[int, ...]] = []

    def to_device(self, device: torch.device) -> None:
        self.device = device

    def reshape(self, bottom_shapes):
        # BaseDataLayer::Reshape does nothing: tops keep the last batch's shapes
        return list(self.top_shapes)

    def emit(self, arrays) -> list[torch.Tensor]:
        """Tensors on the net's device for these numpy arrays / tensors; the
        shapes are remembered for `reshape`."""
        tops = []
        for array in arrays:
            tensor = torch.as_tensor(array)
            if tensor.dtype != torch.float32:
                tensor = tensor.to(torch.float32)
            tops.append(tensor.to(self.device))
        self.top_shapes = [tuple(t.shape) for t in tops]
        return tops

    @contextlib.contextmanager
    def naming_errors(self):
        """Re-raise a file's or record's CaffeError as this layer's."""
        try:
            yield
        except LayerError:
            raise
        except CaffeError as exc:
            raise self.error(str(exc)) from None

    def positive(self, value: int, field: str) -> int:
        if value <= 0:
            raise self.error(f"{field} must be positive, got {value}")
        return int(value)


# ---------------------------------------------------------------- DummyData

@register("DummyData")
class DummyDataLayer(DataLayer):
    """Tops of the given shapes filled by fillers. A constant filler fills
    its tops once at setup; any other filler refills them at every forward
    (Caffe's `refill_`)."""

    num_tops = None

    def setup(self, bottom_shapes, generator):
        p = self.param.dummy_data_param
        n_tops = len(self.param.top)
        if n_tops < 1:
            raise self.error("needs at least one top")
        if len(p.data_filler) not in (0, 1, n_tops):
            raise self.error(f"dummy_data_param has {len(p.data_filler)} data_filler for "
                             f"{n_tops} tops (give 0, 1 or one per top)")
        legacy = {name: list(getattr(p, name)) for name in ("num", "channels", "height", "width")}
        if any(legacy.values()):
            if len(p.shape):
                raise self.error("dummy_data_param gives both shape and the legacy "
                                 "num/channels/height/width")
            for name, values in legacy.items():
                if len(values) not in (1, n_tops):
                    raise self.error(f"dummy_data_param.{name} must be given once or once "
                                     f"per top ({n_tops}), got {len(values)}")
            shapes = [tuple(int(values[0 if len(values) == 1 else i]) for values in legacy.values())
                      for i in range(n_tops)]
        else:
            if len(p.shape) not in (1, n_tops):
                raise self.error(f"dummy_data_param.shape must be given once or once per top "
                                 f"({n_tops}), got {len(p.shape)}")
            shapes = [tuple(int(d) for d in p.shape[0 if len(p.shape) == 1 else i].dim)
                      for i in range(n_tops)]
        if len(p.data_filler) == 0:
            filler_params = [caffe_pb2.FillerParameter(type="constant", value=0)] * n_tops
        elif len(p.data_filler) == 1:
            filler_params = [p.data_filler[0]] * n_tops
        else:
            filler_params = list(p.data_filler)
        self.generator = generator
        self.top_shapes = shapes
        self.fillers = filler_params
        # constant tops: filled now, kept; the others: filled at each forward
        self.fixed: list[torch.Tensor | None] = []
        self.fixed: list[torch.Tensor | None] = [
            self._fill(filler, shape) if filler.type == "constant" else None
            for filler, shape in zip(filler_params, shapes)]

    def _fill(self, filler, shape) -> torch.Tensor:
        if math.prod(shape) == 0:
            return torch.zeros(shape, dtype=torch.float32)
        try:
            return fillers.fill(filler, shape, self.generator)
        except CaffeError as exc:
            raise self.error(str(exc)) from None

    def to_device(self, device):
        super().to_device(device)
        self.fixed = [t.to(device) if t is not None else None for t in self.fixed]

    def forward(self, bottoms):
        tops = []
        for fixed, filler, shape in zip(self.fixed, self.fillers, self.top_shapes):
            tops.append(fixed if fixed is not None
                        else self._fill(filler, shape).to(self.device))
        return tops


# ---------------------------------------------------------------- MemoryData

@register("MemoryData")
class MemoryDataLayer(DataLayer):
    """Batches of arrays handed over by `Net.set_input_arrays(data, labels)`;
    each forward takes the next `batch_size` rows and wraps at the end. The
    tops are views of the given arrays (Caffe shares their memory too)."""

    num_tops = 2

    def setup(self, bottom_shapes, generator):
        p = self.param.memory_data_param
        self.batch_size, self.channels, self.height, self.width = (
            p.batch_size, p.channels, p.height, p.width)
        if self.batch_size * self.channels * self.height * self.width <= 0:
            raise self.error("memory_data_param: batch_size, channels, height and width "
                             "must all be set and positive")
        self.top_shapes = [(self.batch_size, self.channels, self.height, self.width),
                           (self.batch_size,)]
        self.data: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.position = 0

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """pycaffe's checks: 4-d float32 C-contiguous data of this layer's
        channels/height/width, labels of the same num (1-d, or N x 1 x 1 x 1),
        num a multiple of batch_size."""
        if labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, None, None, None])
        for name, array, dims in (("data", data, (self.channels, self.height, self.width)),
                                  ("labels", labels, (1, 1, 1))):
            if not isinstance(array, np.ndarray):
                raise self.error(f"set_input_arrays: {name} must be a numpy array")
            if not array.flags.c_contiguous:
                raise self.error(f"set_input_arrays: {name} array must be C contiguous")
            if array.ndim != 4:
                raise self.error(f"set_input_arrays: {name} array must be 4-d, got shape "
                                 f"{list(array.shape)}")
            if array.dtype != np.float32:
                raise self.error(f"set_input_arrays: {name} array must be float32, got {array.dtype}")
            if array.shape[1:] != dims:
                raise self.error(f"set_input_arrays: {name} array has shape {list(array.shape)}, "
                                 f"expected N x {' x '.join(map(str, dims))}")
        if data.shape[0] != labels.shape[0]:
            raise self.error(f"set_input_arrays: data and labels must have the same first "
                             f"dimension ({data.shape[0]} vs {labels.shape[0]})")
        if data.shape[0] == 0 or data.shape[0] % self.batch_size:
            raise self.error(f"set_input_arrays: first dimensions of input arrays ({data.shape[0]}) "
                             f"must be a positive multiple of batch size {self.batch_size}")
        if self.param.HasField("transform_param"):
            log.warning("layer '%s': MemoryData does not transform array data", self.name)
        self.data = torch.from_numpy(data)
        self.labels = torch.from_numpy(labels)
        self.position = 0

    def forward(self, bottoms):
        if self.data is None:
            raise self.error("no data: call net.set_input_arrays(data, labels) before forward")
        rows = slice(self.position, self.position + self.batch_size)
        self.position = (self.position + self.batch_size) % self.data.shape[0]
        return self.emit([self.data[rows], self.labels[rows]])


# ---------------------------------------------------------------- Data (LMDB / LevelDB)

class _Batches:
    """Assembles batches of transformed images; subclasses say where the
    next (pixels, label, where) comes from. Runs on the prefetch thread, so
    it holds no reference to its layer."""

    def __init__(self, transformer: DataTransformer, batch_size: int, with_labels: bool):
        self.transformer = transformer
        self.batch_size = batch_size
        self.with_labels = with_labels

    def next_item(self) -> tuple[np.ndarray, float, str]:
        raise NotImplementedError

    def state(self) -> dict:
        """Where the next batch starts, as plain values (a numpy array
        stands for its list, and must not change once handed out)."""
        return {"transform_rng": generator_state(self.transformer.rng)}

    def restorer(self, state) -> Callable[[], None]:
        """Check a `state()` result; the returned call makes it current."""
        (rng,) = state_fields(state, ("transform_rng",), "the transformer")
        rng = checked_generator_state(self.transformer.rng, rng, "transform_rng")

        def restore():
            self.transformer.rng.bit_generator.state = rng
        return restore

    def next_batch(self) -> list[np.ndarray]:
        data = labels = None
        for i in range(self.batch_size):
            pixels, label, where = self.next_item()
            # the batch takes the shape of its first image (Caffe's load_batch)
            image_shape = self.transformer.output_shape(pixels.shape, where)
            if data is None:
                data = host_memory.float32_array((self.batch_size,) + image_shape)
                labels = np.empty((self.batch_size,), np.float32)
            elif image_shape != data.shape[1:]:
                raise self.transformer.error(
                    f"{where}: image gives {list(image_shape)} but this batch's first gave "
                    f"{list(data.shape[1:])}; use batch_size 1, a resize or a crop for "
                    "images of different sizes")
            data[i] = self.transformer(pixels, where)
            labels[i] = label
        return [data, labels] if self.with_labels else [data]


class _DBBatches(_Batches):
    def __init__(self, reader: Reader, skip: int, color: bool | None,
                 share: tuple[int, int], *args):
        super().__init__(*args)
        self.reader = reader
        self.records = reader.cycle(skip)
        self.color = color
        self.share = share
        self.offset = 0  # records walked past, as Caffe's DataLayer counts them
        self.count = len(reader)
        self.start = skip % self.count  # a skip past the end wraps, as the walk does

    def state(self) -> dict:
        return {**super().state(), "records": self.count, "share": list(self.share),
                "start": self.start, "offset": self.offset}

    def restorer(self, state) -> Callable[[], None]:
        records, share, start, offset = state_fields(
            state, ("records", "share", "start", "offset"), "Data")
        check_same(records, self.count, "a database of records")
        check_same(share, list(self.share), "process share")
        check_index(start, self.count, "first record")
        check_index(offset, 2**63, "record count")
        restore_transformer = super().restorer(state)

        def restore():
            restore_transformer()
            self.start, self.offset = start, offset
            self.records = self.reader.cycle((start + offset) % self.count)
        return restore

    def next_item(self):
        rank, count = self.share
        while True:
            key, value = next(self.records)
            keep = self.offset % count == rank
            self.offset += 1
            if keep:
                break
        where = f"{self.reader.backend} {self.reader.path}, record key {key!r}"
        datum = parse_datum(value, where)
        return datum_pixels(datum, where, self.color), float(datum.label), where


class PrefetchingLayer(DataLayer):
    """A data layer whose batches are made on a prefetch thread, as many
    ahead as data_param.prefetch says (Caffe's prefetching layers all read
    that field; default 4)."""

    num_tops = (1, 2)

    def start(self, source, top_shapes: list[tuple[int, ...]]) -> None:
        """Prefetch from `source` (next_batch(), state(), restorer(state)):
        each batch comes with the source's state after it, so the layer
        knows where the batch after the last one it handed out starts,
        however far the prefetch thread has read ahead."""
        self.top_shapes = top_shapes
        self.source = source
        self.read_position = source.state()
        self.prefetcher = Prefetcher(functools.partial(_batch_and_state, source),
                                     self.param.data_param.prefetch, self.name)

    def start_images(self, batches: _Batches, first_pixels_shape, where: str) -> None:
        """Start with tops shaped by the first image, as Caffe's setup does."""
        size = batches.batch_size
        shapes = [(size,) + batches.transformer.output_shape(first_pixels_shape, where)]
        self.start(batches, shapes + [(size,)] * batches.with_labels)

    def forward(self, bottoms):
        with self.naming_errors():
            tops, self.read_position = self.prefetcher.next()
            return self.emit(tops)

    # -- resuming: the solver's snapshots save and restore the read position

    def get_state(self) -> dict:
        """Where the next batch starts: the read position and the random
        state of the order and of crops and mirrors (plain values)."""
        return {"type": self.type, **{key: value.tolist() if isinstance(value, np.ndarray)
                                      else value for key, value in self.read_position.items()}}

    def set_state(self, state) -> None:
        """Continue from a `get_state()` result; a refused state changes nothing."""
        (kind,) = state_fields(state, ("type",), self.type)
        check_same(kind, self.type, "a layer of type")
        restore = self.source.restorer(state)
        self.prefetcher.close(wait=True)
        restore()
        self.start(self.source, self.top_shapes)

    def order_rng(self, generator, random_order: bool) -> np.random.Generator:
        """The generator of the layer's order: its own (one draw of the net's
        generator), or, for a random order sharded across processes, one
        every rank seeds alike."""
        return _order_rng(self, generator, random_order)

    def transformer(self, generator) -> DataTransformer:
        # the transformer runs on the prefetch thread: it must not hold the layer
        return DataTransformer(self.param.transform_param, self.phase, layer_rng(generator),
                               functools.partial(LayerError, self.name, self.type))


def _batch_and_state(source):
    """Runs on the prefetch thread: a batch and where the one after it starts."""
    tops = source.next_batch()
    return tops, source.state()


@register("Data")
class DBDataLayer(PrefetchingLayer):
    """Datums from an LMDB or LevelDB, in key order, wrapping at the end."""

    def setup(self, bottom_shapes, generator):
        p = self.param.data_param
        batch_size = self.positive(p.batch_size, "data_param.batch_size")
        transformer = self.transformer(generator)
        # encoded Datums decode as transform_param says, or in colour when
        # data_param.force_encoded_color is set
        color = True if p.force_encoded_color else transformer.color
        with self.naming_errors():
            reader = Reader(p.source, p.backend)
            key, value = reader.first()
            where = f"{reader.backend} {reader.path}, record key {key!r}"
            first = datum_pixels(parse_datum(value, where), where, color)
        skip = int(transformer.rng.integers(p.rand_skip)) if p.rand_skip else 0
        if skip:
            log.info("layer '%s': skipping the first %d records", self.name, skip)
        batches = _DBBatches(reader, skip, color, parallel.data_share(self.phase), transformer,
                             batch_size, len(self.param.top) == 2)
        self.start_images(batches, first.shape, where)


# ---------------------------------------------------------------- ImageData

class _ImageListBatches(_Batches):
    """The list's entries in `order` (indices into the list file's lines,
    shuffled again at each wrap when `shuffle`)."""

    def __init__(self, entries, order: np.ndarray, root: str, size: tuple[int, int],
                 color: bool, shuffle: bool, rng: np.random.Generator, start: int,
                 share: tuple[int, int], *args):
        super().__init__(*args)
        self.entries = entries
        self.order = order
        self.root = root
        self.size = size
        self.color = color
        self.shuffle = shuffle
        self.rng = rng
        self.position = start
        self.share = share
        for _ in range(share[0]):
            self._advance()

    def read(self, position: int) -> np.ndarray:
        name = self.entries[self.order[position]][0]
        image = image_io.read(self.root + name, self.color)
        if self.size != (0, 0):
            image = image_io.resize_linear(image, *self.size)
        return image.transpose(2, 0, 1)

    def _advance(self) -> None:
        self.position += 1
        if self.position == len(self.entries):
            self.position = 0
            if self.shuffle:
                # a new array: states handed out keep the order they were taken in
                self.order = self.order.copy()
                self.rng.shuffle(self.order)

    def next_item(self):
        name, label = self.entries[self.order[self.position]]
        pixels = self.read(self.position)
        for _ in range(self.share[1]):
            self._advance()
        return pixels, float(label), f"image {self.root + name}"

    def state(self) -> dict:
        return {**super().state(), "images": len(self.entries), "share": list(self.share),
                "position": self.position, "order_rng": generator_state(self.rng),
                "order": self.order if self.shuffle else None}

    def restorer(self, state) -> Callable[[], None]:
        images, share, position, rng, order = state_fields(
            state, ("images", "share", "position", "order_rng", "order"), "ImageData")
        check_same(images, len(self.entries), "a list of images")
        check_same(share, list(self.share), "process share")
        check_index(position, len(self.entries), "list position")
        rng = checked_generator_state(self.rng, rng, "order_rng")
        order = _saved_order(order, self.shuffle, len(self.entries), "image order",
                             "image_data_param.shuffle")
        restore_transformer = super().restorer(state)

        def restore():
            restore_transformer()
            self.rng.bit_generator.state = rng
            self.position = position
            if order is not None:
                self.order = order
        return restore


@register("ImageData")
class ImageDataLayer(PrefetchingLayer):
    """Images named in a list file ('path label' per line), read as OpenCV
    would, optionally resized (INTER_LINEAR), then transformed."""

    num_tops = 2

    def setup(self, bottom_shapes, generator):
        p = self.param.image_data_param
        batch_size = self.positive(p.batch_size, "image_data_param.batch_size")
        if (p.new_height == 0) != (p.new_width == 0):
            raise self.error("image_data_param: set new_height and new_width together")
        with self.naming_errors():
            entries = image_io.read_image_list(p.source)
        if not entries:
            raise self.error(f"image_data_param.source {p.source} lists no images")
        transformer = self.transformer(generator)
        rng = self.order_rng(generator, p.shuffle or p.rand_skip > 0)
        order = np.arange(len(entries))
        if p.shuffle:
            rng.shuffle(order)  # the same draws as shuffling the list itself
        start = 0
        if p.rand_skip:
            start = int(rng.integers(p.rand_skip))
            if start >= len(entries):
                raise self.error(f"image_data_param.rand_skip drew {start}, but the list has "
                                 f"only {len(entries)} images")
        batches = _ImageListBatches(entries, order, p.root_folder, (p.new_height, p.new_width),
                                    p.is_color, p.shuffle, rng, start,
                                    parallel.data_share(self.phase), transformer, batch_size,
                                    True)
        with self.naming_errors():
            first = batches.read(start)
        self.start_images(batches, first.shape, f"image {entries[order[start]][0]}")


# ---------------------------------------------------------------- HDF5Data

def _import_h5py(layer: CaffeLayer):
    try:
        import h5py
    except ImportError:
        raise layer.error("needs the Python package 'h5py' (pip install h5py, or the "
                          "project's [data] extra)") from None
    return h5py


@register("HDF5Data")
class HDF5DataLayer(DataLayer):
    """Rows of the datasets named by the tops, from the .h5 files listed in
    `source`, file after file; batches cross file boundaries and wrap. With
    shuffle, the file order and each file's rows are permuted (again at each
    pass)."""

    num_tops = None

    def setup(self, bottom_shapes, generator):
        p = self.param.hdf5_data_param
        if self.param.HasField("transform_param"):
            raise self.error("HDF5Data does not transform data (remove transform_param)")
        if not self.param.top:
            raise self.error("needs at least one top")
        self.h5py = _import_h5py(self)
        self.batch_size = self.positive(p.batch_size, "hdf5_data_param.batch_size")
        try:
            with open(p.source) as f:
                self.files = f.read().split()
        except OSError as exc:
            raise self.error(f"hdf5_data_param.source {p.source}: {exc.strerror}") from None
        if not self.files:
            raise self.error(f"hdf5_data_param.source {p.source} lists no HDF5 file")
        self.shuffle = p.shuffle
        self.rng = _order_rng(self, generator, p.shuffle)
        self.share = parallel.data_share(self.phase)
        self.offset = 0  # rows walked past, as Caffe's HDF5DataLayer counts them
        self.file_order = np.arange(len(self.files))
        if self.shuffle:
            self.rng.shuffle(self.file_order)
        self.current_file = 0
        self.row_shapes: list[tuple[int, ...]] | None = None
        self._load(self.files[self.file_order[0]])
        self.current_row = 0
        self.top_shapes = [(self.batch_size,) + shape for shape in self.row_shapes]

    def _load(self, path: str) -> None:
        try:
            with self.h5py.File(path, "r") as f:
                datasets = []
                for name in self.param.top:
                    if name not in f or not isinstance(f[name], self.h5py.Dataset):
                        raise self.error(f"HDF5 file {path} has no dataset '{name}'")
                    dataset = f[name]
                    if dataset.ndim < 1 or dataset.dtype.kind not in "fiu":
                        raise self.error(f"HDF5 file {path}, dataset '{name}': need a numeric "
                                         f"array of at least 1 axis, got {dataset.dtype} "
                                         f"of shape {list(dataset.shape)}")
                    datasets.append(np.asarray(dataset[()], dtype=np.float32))
        except OSError as exc:
            raise self.error(f"failed to open HDF5 file {path}: {exc}") from None
        rows = datasets[0].shape[0]
        for name, array in zip(self.param.top, datasets):
            if array.shape[0] != rows:
                raise self.error(f"HDF5 file {path}: dataset '{name}' has {array.shape[0]} rows, "
                                 f"'{self.param.top[0]}' has {rows}")
            if self.row_shapes is not None:
                expected = self.row_shapes[list(self.param.top).index(name)]
                if array.shape[1:] != expected:
                    raise self.error(f"HDF5 file {path}: dataset '{name}' has rows of shape "
                                     f"{list(array.shape[1:])}, the first file's have "
                                     f"{list(expected)}")
        if rows == 0:
            raise self.error(f"HDF5 file {path} has no rows")
        if self.row_shapes is None:
            self.row_shapes = [a.shape[1:] for a in datasets]
        self.datasets = datasets
        self.row_order = np.arange(rows)
        if self.shuffle:
            self.rng.shuffle(self.row_order)

    def _next_row(self) -> None:
        self.offset += 1
        self.current_row += 1
        if self.current_row < len(self.row_order):
            return
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.shuffle:
                    self.rng.shuffle(self.file_order)
            self._load(self.files[self.file_order[self.current_file]])
        elif self.shuffle:
            self.rng.shuffle(self.row_order)
        self.current_row = 0

    def forward(self, bottoms):
        batch = [host_memory.float32_array((self.batch_size,) + shape)
                 for shape in self.row_shapes]
        rank, count = self.share
        for i in range(self.batch_size):
            while self.offset % count != rank:
                self._next_row()
            row = self.row_order[self.current_row]
            for out, dataset in zip(batch, self.datasets):
                out[i] = dataset[row]
            self._next_row()
        return self.emit(batch)

    # -- resuming: the solver's snapshots save and restore the read position

    def get_state(self) -> dict:
        """The file and row the next batch starts at, the orders being
        walked (when shuffled) and the generator, as plain values."""
        return {"type": self.type, "files": len(self.files), "share": list(self.share),
                "offset": self.offset, "file": self.current_file, "row": self.current_row,
                "rows": len(self.row_order), "rng": generator_state(self.rng),
                "file_order": self.file_order.tolist() if self.shuffle else None,
                "row_order": self.row_order.tolist() if self.shuffle else None}

    def set_state(self, state) -> None:
        """Continue from a `get_state()` result; a refused state changes nothing."""
        kind, files, share, offset, file, row, rows, rng, file_order, row_order = state_fields(
            state, ("type", "files", "share", "offset", "file", "row", "rows", "rng",
                    "file_order", "row_order"), self.type)
        check_same(kind, self.type, "a layer of type")
        check_same(files, len(self.files), "a source listing of files")
        check_same(share, list(self.share), "process share")
        check_index(offset, 2**63, "row count")
        check_index(file, len(self.files), "file index")
        rng = checked_generator_state(self.rng, rng, "rng")
        file_order = _saved_order(file_order, self.shuffle, len(self.files), "file order",
                                  "hdf5_data_param.shuffle")
        if file_order is None:
            file_order = np.arange(len(self.files))
        kept = (self.datasets, self.row_order, generator_state(self.rng))
        try:
            self._load(self.files[file_order[file]])  # checks the file (a shuffle draws)
            check_same(rows, len(self.row_order), f"{self.files[file_order[file]]} with rows")
            check_index(row, rows, "row")
            row_order = _saved_order(row_order, self.shuffle, rows, "row order",
                                     "hdf5_data_param.shuffle")
        except CaffeError:
            self.datasets, self.row_order, self.rng.bit_generator.state = kept
            raise
        self.rng.bit_generator.state = rng
        self.file_order, self.current_file, self.current_row = file_order, file, row
        self.offset = offset
        if self.shuffle:
            self.row_order = row_order


def _saved_order(values, shuffled: bool, size: int, what: str,
                 setting: str) -> np.ndarray | None:
    """A saved shuffled order, checked to be a permutation of `size` items
    (None, and saved as None, where the layer does not shuffle)."""
    if (values is None) == shuffled:
        raise CaffeError(f"the saved read position's {what} (shuffled or not) does not match "
                         f"this layer's {setting}")
    if values is None:
        return None
    order = np.asarray(values) if isinstance(values, list) else None
    if order is None or order.shape != (size,) or order.dtype.kind != "i" \
            or not np.array_equal(np.sort(order), np.arange(size)):
        raise CaffeError(f"the saved {what} is not a permutation of {size} items")
    return order


# ---------------------------------------------------------------- HDF5Output

@register("HDF5Output")
class HDF5OutputLayer(CaffeLayer):
    """Writes its two bottoms as datasets `data` and `label` (each as
    num x channels x height x width) to `file_name`. The file is written
    whole at the forward, to a temporary name renamed into place, so it is
    complete and closed as soon as the forward returns. Caffe writes one
    batch per file: a second forward replaces the file with its batch."""

    num_bottoms = 2
    num_tops = 0

    def setup(self, bottom_shapes, generator):
        self.h5py = _import_h5py(self)
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param.file_name must be set")

    def reshape(self, bottom_shapes):
        data, label = (tuple(s) for s in bottom_shapes)
        for name, shape in (("data", data), ("label", label)):
            if len(shape) > 4:
                raise self.error(f"bottom '{name}' of shape {list(shape)} has more than 4 axes")
        if data[:1] != label[:1]:
            raise self.error(f"data and label must have the same num, got {list(data)} and "
                             f"{list(label)}")
        return []

    def forward(self, bottoms):
        arrays = {}
        for name, tensor in zip(("data", "label"), bottoms):
            array = tensor.detach().cpu().numpy()
            arrays[name] = array.reshape(array.shape + (1,) * (4 - array.ndim))
        try:
            with atomic_path(self.file_name) as tmp, self.h5py.File(tmp, "w") as f:
                for name, array in arrays.items():
                    f.create_dataset(name, data=array)
        except OSError as exc:
            raise self.error(f"failed to write HDF5 file {self.file_name}: {exc}") from None
        log.info("layer '%s': saved %d rows to %s", self.name, len(arrays["data"]), self.file_name)
        return []
