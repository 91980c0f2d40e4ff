"""Caffe's data layers: DummyData, MemoryData, Data (LMDB / LevelDB),
ImageData, WindowData, HDF5Data, and the HDF5Output sink.

A data layer has no bottoms; each forward produces the next batch as new
tensors on the net's device. Reading order is Caffe's: a DB in key order,
a list file in line order (or shuffled with the layer's seeded generator),
wrapping at the end. Random choices (TRAIN crops, mirror, shuffles, skips)
draw from a generator the layer seeds at setup from the net's filler
generator, so `set_random_seed` makes a run repeatable.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch

from .. import fillers
from ..errors import CaffeError
from ..proto import caffe_pb2
from .base import CaffeLayer, register

log = logging.getLogger(__name__)


def layer_rng(generator: torch.Generator) -> np.random.Generator:
    """A data layer's own generator: seeded by one draw from the net's filler
    generator (Caffe seeds each layer's RNG with one caffe_rng_rand())."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return np.random.default_rng(seed)


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
