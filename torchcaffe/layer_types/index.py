"""Caffe's layers that pick rows by a bottom of indices: Embed, Filter,
BatchReindex. Index bottoms hold floats, as every Caffe blob does; they take
no gradient (Caffe refuses to backpropagate to them)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import fillers
from .base import CaffeLayer, register


def integer_indices(layer: CaffeLayer, values: torch.Tensor, limit: int, what: str) -> torch.Tensor:
    """The float index blob as int64, each checked to be an integer in [0, limit)."""
    values = values.detach()
    indices = values.to(torch.int64)
    bad = (indices.to(values.dtype) != values) | (indices < 0) | (indices >= limit)
    if bool(bad.any()):
        value = float(values[bad].reshape(-1)[0])
        raise layer.error(f"{what} {value:g} is not an integer in [0, {limit})")
    return indices


class _IndexLayer(CaffeLayer):
    #: the bottom that holds indices (or the selector)
    index_bottom: int = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != self.index_bottom


@register("Embed")
class EmbedLayer(_IndexLayer):
    """top[..., :] = weight[index] (+ bias): a lookup of `input_dim` rows of
    `num_output` values; the top adds an axis of num_output to the bottom's."""

    num_bottoms = 1
    num_tops = 1
    index_bottom = 0

    def setup(self, bottom_shapes, generator):
        p = self.param.embed_param
        if p.num_output <= 0:
            raise self.error("embed_param.num_output must be set and positive")
        if p.input_dim <= 0:
            raise self.error("embed_param.input_dim must be set and positive")
        self.num_output, self.input_dim = p.num_output, p.input_dim
        self.bias_term = p.bias_term
        self.blobs = [fillers.fill(p.weight_filler, (self.input_dim, self.num_output), generator)]
        if self.bias_term:
            self.blobs.append(fillers.fill(p.bias_filler, (self.num_output,), generator))

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0]) + (self.num_output,)]

    def forward(self, bottoms):
        indices = integer_indices(self, bottoms[0], self.input_dim, "index")
        out = F.embedding(indices, self.blobs[0])
        if self.bias_term:
            out = out + self.blobs[1]
        return [out]


@register("Filter")
class FilterLayer(_IndexLayer):
    """Keeps the items (along axis 0) of every bottom but the last where the
    last bottom, the selector, is nonzero. At setup the tops have the
    bottoms' full batch, as Caffe's first reshape gives them; after a
    forward they hold the selected items only (none: batch 0)."""

    num_bottoms = None
    num_tops = None

    def setup(self, bottom_shapes, generator):
        if len(bottom_shapes) < 2:
            raise self.error(f"needs data bottoms and a selector bottom, got {len(bottom_shapes)} bottoms")
        if len(self.param.top) != len(bottom_shapes) - 1:
            raise self.error(f"needs one top per data bottom: {len(bottom_shapes) - 1} data "
                             f"bottoms, {len(self.param.top)} tops")
        self.index_bottom = len(bottom_shapes) - 1

    def reshape(self, bottom_shapes):
        selector = tuple(bottom_shapes[-1])
        if len(selector) == 0 or any(d != 1 for d in selector[1:]):
            raise self.error(f"the selector (last bottom) of shape {list(selector)} must have "
                             "singleton axes after the first")
        for i, shape in enumerate(bottom_shapes[:-1]):
            if len(shape) == 0 or shape[0] != selector[0]:
                raise self.error(f"bottom {i} of shape {list(shape)} does not have the "
                                 f"selector's {selector[0]} items on axis 0")
        return [tuple(shape) for shape in bottom_shapes[:-1]]

    def forward(self, bottoms):
        selected = torch.nonzero(bottoms[-1].detach().reshape(-1)).reshape(-1)
        return [b.index_select(0, selected) for b in bottoms[:-1]]


@register("BatchReindex")
class BatchReindexLayer(_IndexLayer):
    """top[i] = bottom[index[i]] along axis 0; repeated indices sum their
    gradients."""

    num_bottoms = 2
    num_tops = 1

    def reshape(self, bottom_shapes):
        shape, index = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if len(index) != 1:
            raise self.error(f"the index bottom must have 1 axis, got shape {list(index)}")
        if len(shape) == 0:
            raise self.error("the data bottom needs at least one axis")
        return [(index[0],) + shape[1:]]

    def forward(self, bottoms):
        data, index = bottoms
        indices = integer_indices(self, index, data.shape[0], "index")
        return [data.index_select(0, indices)]
