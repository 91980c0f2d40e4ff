"""Caffe's elementwise neuron layers: ReLU (leaky), Sigmoid, TanH, Dropout."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import CaffeLayer, register
from .common import is_in_place

_TRAIN = 0


class _NeuronLayer(CaffeLayer):
    """One bottom, one top of the same shape."""

    num_bottoms = 1
    num_tops = 1

    def reshape(self, bottom_shapes):
        return [tuple(bottom_shapes[0])]


@register("ReLU")
class ReLULayer(_NeuronLayer):
    def setup(self, bottom_shapes, generator):
        self.negative_slope = float(self.param.relu_param.negative_slope)

    def forward(self, bottoms):
        x = bottoms[0]
        # in place only without a graph: the in-place blob's diff needs the
        # producer's output to keep its own autograd node
        inplace = self.overwrite_ok and not torch.is_grad_enabled()
        if self.negative_slope == 0.0:
            return [F.relu(x, inplace=inplace)]
        # Caffe: x > 0 ? x : slope * x (gradient 1 or slope, slope at 0)
        return [F.leaky_relu(x, self.negative_slope, inplace=inplace)]


@register("Sigmoid")
class SigmoidLayer(_NeuronLayer):
    def forward(self, bottoms):
        return [torch.sigmoid(bottoms[0])]


@register("TanH")
class TanHLayer(_NeuronLayer):
    def forward(self, bottoms):
        return [torch.tanh(bottoms[0])]


@register("Dropout")
class DropoutLayer(_NeuronLayer):
    """Inverted dropout: TRAIN keeps a unit with probability 1 - ratio and
    scales it by 1 / (1 - ratio); TEST passes values through."""

    def setup(self, bottom_shapes, generator):
        self.ratio = float(self.param.dropout_param.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        self.in_place = is_in_place(self)

    def forward(self, bottoms):
        x = bottoms[0]
        if self.phase == _TRAIN:
            return [F.dropout(x, self.ratio, training=True)]
        # Caffe copies the bottom unless the layer works in place
        return [x if self.in_place else x.clone()]
