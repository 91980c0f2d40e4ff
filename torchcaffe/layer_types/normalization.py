"""Caffe's normalization layers: BatchNorm, Bias, MVN."""
from __future__ import annotations

import math

import torch

from .. import fillers
from .base import CaffeLayer, register
from .common import canonical_axis, legacy_shape

_TEST = 1


@register("BatchNorm")
class BatchNormLayer(CaffeLayer):
    """(x - mean) / sqrt(var + eps) per channel (axis 1), with the batch's
    statistics or the stored ones. Its three blobs are not learned: the
    running mean and variance sums and their scale factor, which a forward
    with batch statistics updates as Caffe does; their lr_mult is forced to
    0 and autograd never reaches them."""

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        p = self.param.batch_norm_param
        shape = bottom_shapes[0]
        if len(shape) < 2:
            raise self.error(f"needs a bottom with at least 2 axes (N, C, ...), got {list(shape)}")
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else (
            self.phase == _TEST)
        self.moving_average_fraction = float(p.moving_average_fraction)
        self.eps = float(p.eps)
        self.writes_blobs = not self.use_global_stats
        self.channels = shape[1]
        self.blobs = [torch.zeros(self.channels), torch.zeros(self.channels), torch.zeros(1)]
        # as Caffe: absent param specs become lr_mult 0; given ones must say 0
        for i in range(len(self.blobs)):
            if i == len(self.param.param):
                self.param.param.add(lr_mult=0.0)
            elif self.param.param[i].lr_mult != 0:
                raise self.error(f"param[{i}].lr_mult must be 0: the batch statistics "
                                 "(mean, variance, scale factor) are not learnable")

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) < 2 or shape[1] != self.channels:
            raise self.error(f"bottom of shape {list(shape)} does not have the "
                             f"{self.channels} channels (axis 1) the layer was set up with")
        return [shape]

    def forward(self, bottoms):
        x = bottoms[0]
        x3 = x.reshape(x.shape[0], self.channels, -1)
        if self.use_global_stats:
            mean_sum, var_sum, factor = (b.detach() for b in self.blobs)
            # a scale factor of 0 (never updated) means zero statistics
            scale = torch.where(factor == 0, torch.zeros_like(factor), 1 / factor)
            mean, var = mean_sum * scale, var_sum * scale
            centered = x3 - mean[:, None]
        else:
            mean = x3.mean(dim=(0, 2))
            centered = x3 - mean[:, None]
            var = centered.square().mean(dim=(0, 2))
            self._update_running_stats(mean.detach(), var.detach(), x.numel() // self.channels)
        y = centered / torch.sqrt(var + self.eps)[:, None]
        return [y.reshape(x.shape)]

    def _update_running_stats(self, mean, var, m: int) -> None:
        maf = self.moving_average_fraction
        mean_sum, var_sum, factor = (b.detach() for b in self.blobs)
        # Caffe's axpby scales the old value first, then adds
        factor.mul_(maf).add_(1)
        mean_sum.mul_(maf).add_(mean)
        bias_correction = m / (m - 1) if m > 1 else 1.0
        var_sum.mul_(maf).add_(var, alpha=bias_correction)


@register("Bias")
class BiasLayer(CaffeLayer):
    """top = bottom + bias, the bias broadcast over `axis .. axis+num_axes`;
    the bias is a learned blob (one bottom) or the second bottom."""

    num_bottoms = (1, 2)
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        if len(bottom_shapes) > 1:
            return
        p = self.param.bias_param
        shape = bottom_shapes[0]
        axis = canonical_axis(self, p.axis, len(shape), "bias_param.axis")
        if p.num_axes < -1:
            raise self.error(f"bias_param.num_axes must be >= -1, got {p.num_axes}")
        end = len(shape) if p.num_axes == -1 else axis + p.num_axes
        if end > len(shape):
            raise self.error(f"bias blob would span axes {axis}..{end - 1} of a "
                             f"{len(shape)}-axis bottom (bias_param.axis {p.axis}, "
                             f"num_axes {p.num_axes})")
        self.blobs = [fillers.fill(p.filler, tuple(shape[axis:end]), generator)]

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        bias_shape = tuple(bottom_shapes[1]) if len(bottom_shapes) > 1 else tuple(self.blobs[0].shape)
        # a scalar bias applies anywhere; Caffe ignores the axis then
        axis = 0 if not bias_shape else canonical_axis(
            self, self.param.bias_param.axis, len(shape), "bias_param.axis")
        if shape[axis:axis + len(bias_shape)] != bias_shape:
            raise self.error(f"bias of shape {list(bias_shape)} does not match bottom "
                             f"{list(shape)} from axis {axis}")
        self._view = bias_shape + (1,) * (len(shape) - axis - len(bias_shape))
        return [shape]

    def forward(self, bottoms):
        bias = bottoms[1] if len(bottoms) > 1 else self.blobs[0]
        return [bottoms[0] + bias.reshape(self._view)]


class _MVNFunction(torch.autograd.Function):
    """Rows of x (num, dim) to (x - mean) / (std + eps), with Caffe's
    backward (dy - mean(dy) - y * mean(y * dy)) / (std + eps): exact only
    for eps 0, and Caffe's numbers are the reference."""

    @staticmethod
    def forward(ctx, x, eps: float):
        centered = x - x.mean(dim=1, keepdim=True)
        denominator = centered.square().mean(dim=1, keepdim=True).sqrt() + eps
        y = centered / denominator
        ctx.save_for_backward(y, denominator)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        y, denominator = ctx.saved_tensors
        grad = (grad_y - grad_y.mean(dim=1, keepdim=True)
                - y * (y * grad_y).mean(dim=1, keepdim=True))
        return grad / denominator, None


@register("MVN")
class MVNLayer(CaffeLayer):
    """Mean (and variance) normalisation over each channel's values, or over
    each item's when across_channels. Caffe adds eps to the standard
    deviation, and shapes the top 4-d (num, channels, height, width)."""

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        p = self.param.mvn_param
        self.normalize_variance = p.normalize_variance
        self.across_channels = p.across_channels
        self.eps = float(p.eps)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self.top_shape = legacy_shape(self, shape, "bottom")
        count = math.prod(shape)
        self.rows = self.top_shape[0] * (1 if self.across_channels else self.top_shape[1])
        self.row_length = count // self.rows if self.rows else 0
        return [self.top_shape]

    def forward(self, bottoms):
        x = bottoms[0].reshape(self.rows, self.row_length)
        if self.normalize_variance:
            y = _MVNFunction.apply(x, self.eps)
        else:
            y = x - x.mean(dim=1, keepdim=True)
        return [y.reshape(self.top_shape)]
