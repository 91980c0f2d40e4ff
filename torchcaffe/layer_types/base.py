"""What every built-in layer implements, and the registry of layer types.

A layer is built from its `LayerParameter`; the net then calls
`reshape(bottom_shapes)` whenever bottom shapes may have changed (once at
construction, again on `net.reshape()` or a new input shape), and
`forward(bottoms)` with torch tensors. `forward` uses differentiable torch
ops (or a custom autograd.Function where Caffe's backward differs from the
calculus, e.g. SoftmaxWithLoss), so backward comes from autograd; it never
touches numpy or the Blob objects.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import LayerError

Shape = tuple[int, ...]

LAYER_TYPES: dict[str, type["CaffeLayer"]] = {}


def register(*type_names: str) -> Callable[[type], type]:
    """Class decorator: make the class the implementation of these Caffe types."""

    def wrap(cls: type) -> type:
        for name in type_names:
            LAYER_TYPES[name] = cls
        return cls

    return wrap


def layer_type_list() -> list[str]:
    """The registered Caffe type names, sorted, as pycaffe's
    `caffe.layer_type_list()` (Caffe's LayerRegistry::LayerTypeList) gives
    them; the package's import has registered every family by now."""
    return sorted(LAYER_TYPES)


class CaffeLayer:
    #: Caffe's loss layers: their first top gets loss_weight 1 unless set
    is_loss: bool = False
    #: bottoms/tops counts Caffe checks at setup (None: any)
    num_bottoms: int | tuple[int, int] | None = None
    num_tops: int | tuple[int, int] | None = None
    #: set by the net: this in-place layer may overwrite its bottom tensor
    #: when no autograd graph is recorded (no other layer reads that tensor)
    overwrite_ok: bool = False
    #: forward changes `self.blobs` in place (BatchNorm's running statistics),
    #: so the net treats their device copies as the newest afterwards
    writes_blobs: bool = False

    def __init__(self, param, phase: int):
        self.param = param  # caffe_pb2.LayerParameter
        self.name: str = param.name
        self.type: str = param.type
        self.phase = phase
        # learnable or stored blobs in Caffe's order and shapes (float32, CPU
        # until the net moves them); filled by setup()
        self.blobs: list[torch.Tensor] = []

    def error(self, message: str) -> LayerError:
        return LayerError(self.name, self.type, message)

    def setup(self, bottom_shapes: list[Shape], generator: torch.Generator) -> None:
        """Validate parameters against the bottoms; create `self.blobs` with
        their fillers (drawing from `generator`). Called once."""

    def reshape(self, bottom_shapes: list[Shape]) -> list[Shape]:
        """Top shapes for these bottom shapes, by Caffe's formulas; raise
        `self.error(...)` for shapes Caffe refuses."""
        raise NotImplementedError

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError
