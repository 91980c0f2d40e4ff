"""Caffe's elementwise neuron layers: ReLU (leaky), Sigmoid, TanH, Dropout,
AbsVal, BNLL, ELU, Power, Exp, Log, Threshold, Clip, Swish, PReLU."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import fillers
from .base import CaffeLayer, register
from .common import is_in_place, legacy_shape

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


@register("AbsVal")
class AbsValLayer(_NeuronLayer):
    def setup(self, bottom_shapes, generator):
        if is_in_place(self):
            raise self.error("does not allow in-place computation (top equals bottom)")

    def forward(self, bottoms):
        # autograd's sign(x) (0 at 0) is Caffe's caffe_cpu_sign
        return [torch.abs(bottoms[0])]


@register("BNLL")
class BNLLLayer(_NeuronLayer):
    """log(1 + exp(x)); the gradient exp(x) / (1 + exp(x)) as Caffe's."""

    def forward(self, bottoms):
        return [F.softplus(bottoms[0])]


@register("ELU")
class ELULayer(_NeuronLayer):
    def setup(self, bottom_shapes, generator):
        self.alpha = float(self.param.elu_param.alpha)

    def forward(self, bottoms):
        # gradient at 0 is alpha, as Caffe's (x <= 0) branch gives
        return [F.elu(bottoms[0], self.alpha)]


class _ConstantFunction(torch.autograd.Function):
    """A constant of the input's shape; backward writes zeros to the
    bottom diff, as Caffe's Power does when it ignores its input."""

    @staticmethod
    def forward(ctx, x, value: float):
        return torch.full_like(x, value)

    @staticmethod
    def backward(ctx, grad_y):
        return torch.zeros_like(grad_y), None


class _PowerFunction(torch.autograd.Function):
    """y = (shift + scale * x) ** power with Caffe's backward, which forms
    the derivative from the output: diff_scale * y / (shift + scale * x)
    (power * y / x when shift is 0; linear when power is 2). Where the base
    is 0 this gives 0/0 = NaN, not calculus' limit, as Caffe does."""

    @staticmethod
    def forward(ctx, x, power: float, scale: float, shift: float):
        base = _affine(x, scale, shift)
        y = torch.pow(base, power)
        ctx.save_for_backward(x, y)
        ctx.constants = (power, scale, shift)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, y = ctx.saved_tensors
        power, scale, shift = ctx.constants
        diff_scale = power * scale
        if power == 2:
            grad = x * (diff_scale * scale)
            if shift != 0:
                grad = grad + diff_scale * shift
        elif shift == 0:
            grad = (y / x) * power
        else:
            grad = y / _affine(x, scale, shift)
            if diff_scale != 1:
                grad = grad * diff_scale
        return grad * grad_y, None, None, None


def _float_pow(base: float, exponent: float) -> float:
    """base ** exponent in float32, as Caffe's pow (NaN or inf where it
    gives them, not a Python error)."""
    return float(torch.tensor(base, dtype=torch.float32).pow(exponent))


def _affine(x: torch.Tensor, scale: float, shift: float) -> torch.Tensor:
    """scale * x + shift, skipping the identity steps as Caffe does."""
    if scale != 1:
        x = x * scale
    if shift != 0:
        x = x + shift
    return x


@register("Power")
class PowerLayer(_NeuronLayer):
    def setup(self, bottom_shapes, generator):
        p = self.param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)

    def forward(self, bottoms):
        x = bottoms[0]
        if self.power * self.scale == 0:
            value = 1.0 if self.power == 0 else _float_pow(self.shift, self.power)
            return [_ConstantFunction.apply(x, value)]
        if self.power == 1:
            return [_affine(x, self.scale, self.shift)]
        return [_PowerFunction.apply(x, self.power, self.scale, self.shift)]


def _log_of_base(layer: CaffeLayer, field: str, base: float) -> float:
    """ln(base) for Exp / Log's `base` (-1 means e), with Caffe's checks."""
    if base == -1:
        return 1.0
    if not base > 0:
        raise layer.error(f"{field}.base must be strictly positive (or -1 for e), got {base}")
    log_base = math.log(base)
    if math.isinf(log_base):
        raise layer.error(f"{field}.base {base} has an infinite logarithm")
    return log_base


@register("Exp")
class ExpLayer(_NeuronLayer):
    """y = base ** (shift + scale * x), formed as Caffe does:
    outer * exp(inner * x) with inner = ln(base) * scale, outer = base ** shift."""

    def setup(self, bottom_shapes, generator):
        p = self.param.exp_param
        base = float(p.base)
        log_base = _log_of_base(self, "exp_param", base)
        self.inner_scale = log_base * float(p.scale)
        shift = float(p.shift)
        self.outer_scale = 1.0 if shift == 0 else _float_pow(math.e if base == -1 else base, shift)

    def forward(self, bottoms):
        x = bottoms[0]
        y = torch.exp(x if self.inner_scale == 1 else x * self.inner_scale)
        if self.outer_scale != 1:
            y = y * self.outer_scale
        return [y]


@register("Log")
class LogLayer(_NeuronLayer):
    """y = log_base(shift + scale * x)."""

    def setup(self, bottom_shapes, generator):
        p = self.param.log_param
        log_base = _log_of_base(self, "log_param", float(p.base))
        if log_base == 0:
            raise self.error("log_param.base must not be 1 (1 / ln(base) is infinite)")
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = float(p.scale), float(p.shift)

    def forward(self, bottoms):
        y = torch.log(_affine(bottoms[0], self.scale, self.shift))
        if self.base_scale != 1:
            y = y * self.base_scale
        return [y]


@register("Threshold")
class ThresholdLayer(_NeuronLayer):
    """1 where x > threshold, else 0. Caffe has no backward for it: nothing
    propagates to the bottom."""

    def setup(self, bottom_shapes, generator):
        self.threshold = float(self.param.threshold_param.threshold)

    def forward(self, bottoms):
        x = bottoms[0].detach()
        return [(x > self.threshold).to(x.dtype)]


@register("Clip")
class ClipLayer(_NeuronLayer):
    def setup(self, bottom_shapes, generator):
        p = self.param.clip_param
        for field in ("min", "max"):
            if not p.HasField(field):
                raise self.error(f"clip_param.{field} is required")
        self.min, self.max = float(p.min), float(p.max)
        if self.min > self.max:
            raise self.error(f"clip_param.min {self.min} is greater than clip_param.max {self.max}")

    def forward(self, bottoms):
        # torch's clamp passes the gradient for min <= x <= max, bounds
        # included, as Caffe's Clip does
        return [torch.clamp(bottoms[0], self.min, self.max)]


@register("Swish")
class SwishLayer(_NeuronLayer):
    """x * sigmoid(beta * x)."""

    def setup(self, bottom_shapes, generator):
        self.beta = float(self.param.swish_param.beta)

    def forward(self, bottoms):
        x = bottoms[0]
        return [x * torch.sigmoid(x * self.beta)]


@register("PReLU")
class PReLULayer(_NeuronLayer):
    """x where x > 0, else slope * x, with a learned slope per channel
    (axis 1; blob shape [C]) or one shared slope (blob shape [])."""

    def setup(self, bottom_shapes, generator):
        p = self.param.prelu_param
        self.channel_shared = p.channel_shared
        self.channels = self._channels(bottom_shapes[0])
        slope_shape = () if self.channel_shared else (self.channels,)
        if p.HasField("filler"):
            self.blobs = [fillers.fill(p.filler, slope_shape, generator)]
        else:
            self.blobs = [torch.full(slope_shape, 0.25, dtype=torch.float32)]

    def _channels(self, shape) -> int:
        """Axis 1, read as Caffe's legacy channels() (so at most 4 axes)."""
        if len(shape) < 2:
            raise self.error(f"needs a bottom with at least 2 axes, got shape {list(shape)}")
        return legacy_shape(self, shape, "bottom")[1]

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        channels = self._channels(shape)
        if not self.channel_shared and channels != self.channels:
            raise self.error(f"bottom has {channels} channels, the slopes {self.channels}")
        self._slope_view = (1,) if self.channel_shared else (self.channels,) + (1,) * (len(shape) - 2)
        return [shape]

    def forward(self, bottoms):
        x = bottoms[0]
        slope = self.blobs[0].reshape(self._slope_view)
        # the x <= 0 branch (gradient slope, slope gradient x) includes 0, as Caffe's
        return [torch.where(x > 0, x, x * slope)]
