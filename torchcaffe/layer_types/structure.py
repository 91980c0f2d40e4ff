"""Caffe's shape-changing layers without a spatial window: Tile, Reduction,
Parameter."""
from __future__ import annotations

import math

import numpy as np
import torch

from .base import CaffeLayer, register
from .common import canonical_axis


@register("Tile")
class TileLayer(CaffeLayer):
    """The bottom repeated `tiles` times along `axis`, block after block."""

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        p = self.param.tile_param
        if not p.HasField("tiles"):
            raise self.error("tile_param.tiles must be set")
        if p.tiles <= 0:
            raise self.error(f"tile_param.tiles must be positive, got {p.tiles}")
        self.tiles = p.tiles

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self.axis = canonical_axis(self, self.param.tile_param.axis, len(shape))
        self.repeats = [1] * len(shape)
        self.repeats[self.axis] = self.tiles
        return [shape[:self.axis] + (shape[self.axis] * self.tiles,) + shape[self.axis + 1:]]

    def forward(self, bottoms):
        return [bottoms[0].repeat(self.repeats)]


_SUM, _ASUM, _SUMSQ, _MEAN = 1, 2, 3, 4  # ReductionParameter.ReductionOp


@register("Reduction")
class ReductionLayer(CaffeLayer):
    """coeff * (sum, sum of |x|, sum of x^2 or mean) over all axes from
    `axis` on; the top keeps the axes before it (0-d for axis 0)."""

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        p = self.param.reduction_param
        if p.operation not in (_SUM, _ASUM, _SUMSQ, _MEAN):
            raise self.error(f"reduction_param.operation {p.operation} is not SUM, ASUM, SUMSQ or MEAN")
        self.operation = p.operation
        self.coeff = float(p.coeff)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self.axis = canonical_axis(self, self.param.reduction_param.axis, len(shape))
        self.reduced = tuple(range(self.axis, len(shape)))
        return [shape[:self.axis]]

    def forward(self, bottoms):
        x = bottoms[0]
        if self.operation == _ASUM:
            x = x.abs()
        elif self.operation == _SUMSQ:
            x = x * x
        out = x.mean(dim=self.reduced) if self.operation == _MEAN else x.sum(dim=self.reduced)
        return [out * self.coeff if self.coeff != 1.0 else out]


def blob_proto_array(layer: CaffeLayer, proto) -> np.ndarray:
    """A BlobProto stored in the layer definition, as Blob::FromProto reads
    it: `shape` or the legacy 4-d dims, `double_data` over `data`."""
    if proto.HasField("shape"):
        shape = tuple(int(d) for d in proto.shape.dim)
    else:
        shape = (proto.num, proto.channels, proto.height, proto.width)
    values = proto.double_data if len(proto.double_data) else proto.data
    if len(values) != math.prod(shape):
        raise layer.error(f"stored blob of shape {list(shape)} holds {len(values)} values")
    return np.asarray(values, dtype=np.float32).reshape(shape)


@register("Parameter")
class ParameterLayer(CaffeLayer):
    """One learnable blob of `parameter_param.shape`, which is also the top.
    Caffe gives it no filler: it starts at zero unless the layer definition
    stores its values (`blobs`) or a caffemodel supplies them."""

    num_bottoms = 0
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        shape = tuple(int(d) for d in self.param.parameter_param.shape.dim)
        if any(d < 0 for d in shape):
            raise self.error(f"parameter_param.shape {list(shape)} has a negative dimension")
        stored = self.param.blobs
        if len(stored) > 1:
            raise self.error(f"the layer definition stores {len(stored)} blobs; Parameter has one")
        if len(stored):
            values = blob_proto_array(self, stored[0])
            if values.shape != shape:
                raise self.error(f"the stored blob has shape {list(values.shape)}, "
                                 f"parameter_param.shape is {list(shape)}")
            self.blobs = [torch.from_numpy(values)]
        else:
            self.blobs = [torch.zeros(shape, dtype=torch.float32)]

    def reshape(self, bottom_shapes):
        return [tuple(self.blobs[0].shape)]

    def forward(self, bottoms):
        # the top shares the blob's values and gradient, as Caffe's does
        return [self.blobs[0].view_as(self.blobs[0])]
