"""Caffe's spatial layers: Convolution, Deconvolution, Im2col, Pooling, SPP,
LRN, Crop."""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from .. import fillers, kernel_choice
from ..errors import LayerError
from ..kernels import Window
from ..proto import caffe_pb2
from .base import CaffeLayer, register
from .common import canonical_axis

_SPATIAL_AXES = (1, 2, 3)
FLT_MAX = 3.4028234663852886e38
FLT_MIN = 1.1754943508222875e-38
_TEST = 1


def _spatial_values(layer: CaffeLayer, name: str, repeated, h_w: tuple | None,
                    n: int, default: int) -> tuple[int, ...]:
    """One value per spatial axis from a repeated field (none: default, one:
    all axes, or one each) or from its 2-d `_h` / `_w` pair."""
    if h_w is not None:
        if len(repeated):
            raise layer.error(f"set either {name} or its _h/_w form, not both")
        if n != 2:
            raise layer.error(f"the _h/_w form of {name} applies only to 2-d inputs, this one has {n}")
        return tuple(int(v) for v in h_w)
    values = [int(v) for v in repeated]
    if len(values) == 0:
        return (default,) * n
    if len(values) == 1:
        return (values[0],) * n
    if len(values) != n:
        raise layer.error(f"{name} has {len(values)} values; give 1 or one per spatial axis ({n})")
    return tuple(values)


def _hw_pair(layer: CaffeLayer, p, name: str, both_required: bool):
    """(h, w) when either of `name_h` / `name_w` is set, else None."""
    has_h, has_w = p.HasField(f"{name}_h"), p.HasField(f"{name}_w")
    if not (has_h or has_w):
        return None
    if both_required and not (has_h and has_w):
        raise layer.error(f"{name}_h and {name}_w must be given together")
    return getattr(p, f"{name}_h"), getattr(p, f"{name}_w")


def _window_geometry(layer: CaffeLayer, p, n: int) -> tuple[tuple[int, ...], ...]:
    """(kernel, stride, pad, dilation) per spatial axis from a ConvolutionParameter."""
    kernel_hw = _hw_pair(layer, p, "kernel", True)
    if kernel_hw is None and not len(p.kernel_size):
        raise layer.error("kernel_size (or kernel_h and kernel_w) is required")
    kernel = _spatial_values(layer, "kernel_size", p.kernel_size, kernel_hw, n, 0)
    stride = _spatial_values(layer, "stride", p.stride, _hw_pair(layer, p, "stride", True), n, 1)
    pad = _spatial_values(layer, "pad", p.pad, _hw_pair(layer, p, "pad", False), n, 0)
    dilation = _spatial_values(layer, "dilation", p.dilation, None, n, 1)
    if min(kernel) <= 0 or min(stride) <= 0 or min(dilation) <= 0:
        raise layer.error(f"kernel {kernel}, stride {stride} and dilation {dilation} must be positive")
    return kernel, stride, pad, dilation


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    """Convolution's output extent on one axis."""
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


class _ConvolutionBase(CaffeLayer):
    """Parameters, blobs and shapes shared by Convolution and Deconvolution;
    the same weights apply to every bottom / top pair."""

    num_bottoms = None
    num_tops = None

    def setup(self, bottom_shapes, generator):
        p = self.param.convolution_param
        if len(bottom_shapes) == 0 or len(bottom_shapes) != len(self.param.top):
            raise self.error(
                f"needs as many tops as bottoms (at least one); got {len(bottom_shapes)} "
                f"bottoms, {len(self.param.top)} tops"
            )
        shape = bottom_shapes[0]
        if canonical_axis(self, p.axis, len(shape)) != 1:
            raise self.error("only channel axis 1 is supported")
        n = len(shape) - 2
        if n not in _SPATIAL_AXES:
            raise self.error(f"supports 1 to 3 spatial axes, the bottom {list(shape)} has {n}")
        self.num_spatial = n
        self.kernel, self.stride, self.pad, self.dilation = _window_geometry(self, p, n)
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.error("convolution_param.num_output must be set and positive")
        self.num_output = p.num_output
        self.group = p.group
        self.channels = shape[1]
        if self.group == 0 or self.channels % self.group or self.num_output % self.group:
            raise self.error(
                f"group {self.group} must divide both the input channels ({self.channels}) "
                f"and num_output ({self.num_output})"
            )
        self.window = Window(self.kernel, self.stride, self.pad, self.dilation, self.group)
        #: the kernel the last forward ran (kernel_choice decides)
        self.kernel_name: str | None = None
        self.bias_term = p.bias_term
        self.blobs = [fillers.fill(p.weight_filler, self.weight_shape(), generator)]
        if self.bias_term:
            self.blobs.append(fillers.fill(p.bias_filler, (self.num_output,), generator))

    def weight_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def spatial_out(self, size: int, k: int, s: int, p: int, d: int) -> int:
        raise NotImplementedError

    def reshape(self, bottom_shapes):
        tops = []
        for i, shape in enumerate(bottom_shapes):
            shape = tuple(shape)
            if len(shape) != self.num_spatial + 2 or shape[1] != self.channels:
                raise self.error(
                    f"bottom {i} of shape {list(shape)} does not match the {self.channels}-channel, "
                    f"{self.num_spatial}-d input the weights were made for"
                )
            if i and shape != tuple(bottom_shapes[0]):
                raise self.error(f"bottom {i} of shape {list(shape)} differs from bottom 0 {list(bottom_shapes[0])}")
            spatial = tuple(
                self.spatial_out(*args)
                for args in zip(shape[2:], self.kernel, self.stride, self.pad, self.dilation)
            )
            if min(spatial) <= 0:
                raise self.error(f"input {list(shape)} is too small for kernel {self.kernel}: output {list(spatial)}")
            tops.append((shape[0], self.num_output) + spatial)
        return tops

    def _bias(self):
        return self.blobs[1] if self.bias_term else None

    def _run(self, bottoms, weight, window: Window, positions: int):
        """Every bottom through the kernel chosen for this shape."""
        self.kernel_name, kernel = kernel_choice.choose(
            self.name, self.type, kernel_choice.layer_work(weight, positions), bottoms[0],
            weight, self._bias(), window)
        return [kernel(x, weight, self._bias(), window) for x in bottoms]


@register("Convolution")
class ConvolutionLayer(_ConvolutionBase):
    def weight_shape(self):
        return (self.num_output, self.channels // self.group) + self.kernel

    def spatial_out(self, size, k, s, p, d):
        return _conv_out(size, k, s, p, d)

    def forward(self, bottoms):
        positions = kernel_choice.conv_positions(bottoms[0], self.window)
        return self._run(bottoms, self.blobs[0], self.window, positions)


@register("Deconvolution")
class DeconvolutionLayer(_ConvolutionBase):
    """Transposed convolution. When the weights are channel-diagonal (the FCN
    bilinear upsamplers: group 1, C in == C out, w[i, j] == 0 for i != j) and
    no weight gradient is wanted, it runs as the equivalent depthwise
    transposed convolution: the same sums without the zero terms."""

    def setup(self, bottom_shapes, generator):
        super().setup(bottom_shapes, generator)
        # (weight, its version, its depthwise weight or None)
        self._diagonal_cache: tuple | None = None

    def weight_shape(self):
        return (self.channels, self.num_output // self.group) + self.kernel

    def spatial_out(self, size, k, s, p, d):
        return s * (size - 1) + d * (k - 1) + 1 - 2 * p

    def forward(self, bottoms):
        weight, window = self.blobs[0], self.window
        depthwise = self._depthwise_weight(weight)
        if depthwise is not None:
            weight, window = depthwise, dataclasses.replace(window, groups=self.channels)
        positions = bottoms[0].shape[0] * math.prod(bottoms[0].shape[2:])
        return self._run(bottoms, weight, window, positions)

    def _depthwise_weight(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The [C, 1, *k] diagonal of a channel-diagonal weight, else None."""
        if (self.group != 1 or self.channels != self.num_output or self.channels == 1
                or (weight.requires_grad and torch.is_grad_enabled())):
            return None
        # On the GPU the answer is cached per weight storage and version: host
        # writes arrive by copy_, which bumps the version (shared by detached
        # aliases), and the cache holds the tensor so its storage cannot be
        # reused by another. This avoids a device sync per call. On the CPU the
        # weight may be written through a numpy view that bumps nothing, so it
        # is checked each time (cheap next to the transposed convolution).
        cache = self._diagonal_cache
        if (weight.is_cuda and cache is not None and cache[0].data_ptr() == weight.data_ptr()
                and cache[0].shape == weight.shape and cache[1] == weight._version):
            return cache[2]
        index = torch.arange(self.channels, device=weight.device)
        diagonal = weight[index, index]
        is_diagonal = bool(torch.count_nonzero(weight) == torch.count_nonzero(diagonal))
        result = diagonal.unsqueeze(1) if is_diagonal else None
        self._diagonal_cache = (weight, weight._version, result)
        return result


@register("Im2col")
class Im2colLayer(CaffeLayer):
    """Caffe's column buffer as a top: for each item, C * prod(kernel) rows
    (channel-major, then kernel offsets in row-major order) by the output
    positions of the matching convolution."""

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        p = self.param.convolution_param
        shape = bottom_shapes[0]
        self.axis = canonical_axis(self, p.axis, len(shape))
        n = len(shape) - self.axis - 1
        if n not in (1, 2):
            raise self.error(f"supports 1 or 2 spatial axes after the channel axis {self.axis}, "
                             f"the bottom {list(shape)} has {n}")
        self.num_spatial = n
        self.kernel, self.stride, self.pad, self.dilation = _window_geometry(self, p, n)

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) != self.axis + 1 + self.num_spatial:
            raise self.error(f"bottom {list(shape)} no longer has {self.num_spatial} spatial axes")
        spatial = tuple(_conv_out(*args) for args in zip(
            shape[self.axis + 1:], self.kernel, self.stride, self.pad, self.dilation))
        if min(spatial) <= 0:
            raise self.error(f"input {list(shape)} is too small for kernel {self.kernel}: "
                             f"output {list(spatial)}")
        channels = shape[self.axis] * math.prod(self.kernel)
        self.top_shape = shape[:self.axis] + (channels,) + spatial
        return [self.top_shape]

    def forward(self, bottoms):
        x = bottoms[0]
        x = x.reshape((-1,) + tuple(x.shape[self.axis:]))
        kernel, stride, pad, dilation = self.kernel, self.stride, self.pad, self.dilation
        if self.num_spatial == 1:  # as a 2-d image of height 1
            x = x.unsqueeze(2)
            kernel, stride, pad, dilation = (1,) + kernel, (1,) + stride, (0,) + pad, (1,) + dilation
        columns = F.unfold(x, kernel, dilation=dilation, padding=pad, stride=stride)
        return [columns.reshape(self.top_shape)]


_MAX_POOL, _AVE_POOL, _STOCHASTIC_POOL = 0, 1, 2
_CEIL = 0


@register("Pooling")
class PoolingLayer(CaffeLayer):
    """MAX / AVE pooling of 4-d blobs with Caffe's output size (ceil rounding
    by default, the last window starting inside the input or its leading
    pad) and Caffe's AVE divisor (the window clipped to the padded input).
    MAX routes the gradient to the first maximum in row-major scan order.
    STOCHASTIC (no pad) samples in TRAIN and weights by value in TEST.
    A second top (MAX only) holds the argmax mask as Caffe's flat h * W + w."""

    num_bottoms = 1
    num_tops = (1, 2)

    def setup(self, bottom_shapes, generator):
        p = self.param.pooling_param
        self.method = p.pool
        self.want_mask = len(self.param.top) == 2
        if self.want_mask and self.method != _MAX_POOL:
            raise self.error("a second (mask) top is produced only by MAX pooling")
        self.global_pooling = p.global_pooling
        if self.global_pooling:
            if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
                raise self.error("global_pooling takes the whole input; do not set a kernel size")
        elif p.HasField("kernel_size") == (p.HasField("kernel_h") or p.HasField("kernel_w")):
            raise self.error("give kernel_size, or kernel_h and kernel_w (exactly one form)")
        elif not p.HasField("kernel_size") and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
            raise self.error("kernel_h and kernel_w must be given together")
        if p.HasField("pad_h") != p.HasField("pad_w") or (p.HasField("pad") and p.HasField("pad_h")):
            raise self.error("give pad, or pad_h and pad_w together")
        if p.HasField("stride_h") != p.HasField("stride_w") or (p.HasField("stride") and p.HasField("stride_h")):
            raise self.error("give stride, or stride_h and stride_w together")
        self.pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad, p.pad)
        if self.method == _STOCHASTIC_POOL and self.pad != (0, 0):
            raise self.error("pad is implemented only for MAX and AVE pooling, not STOCHASTIC")
        self.stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride, p.stride)
        if self.global_pooling:
            if self.pad != (0, 0) or self.stride != (1, 1):
                raise self.error("global_pooling needs pad 0 and stride 1")
            self.kernel = None
        else:
            self.kernel = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size,) * 2
            if min(self.kernel) <= 0:
                raise self.error(f"kernel {self.kernel} must be positive")
            if self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]:
                raise self.error(f"pad {self.pad} must be smaller than the kernel {self.kernel}")
        if min(self.stride) <= 0:
            raise self.error(f"stride {self.stride} must be positive")
        self.ceil = p.round_mode == _CEIL

    def _pooled_size(self, size: int, k: int, s: int, p: int) -> int:
        span = size + 2 * p - k
        out = (-(-span // s) if self.ceil else span // s) + 1
        if (self.pad[0] or self.pad[1]) and (out - 1) * s >= size + p:
            out -= 1  # Caffe: the last window must start inside the input (or its leading pad)
        return out

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), got {list(shape)}")
        kernel = shape[2:] if self.global_pooling else self.kernel
        self.window = tuple(kernel)
        self.out_size = tuple(
            self._pooled_size(size, k, s, p)
            for size, k, s, p in zip(shape[2:], kernel, self.stride, self.pad)
        )
        if min(self.out_size) <= 0:
            raise self.error(f"input {list(shape)} is smaller than the kernel {list(kernel)}")
        # torch's own ceil-mode pooling gives Caffe's windows and AVE divisors
        # when its pad limit holds and its size formula lands on Caffe's
        self.native = all(p <= k // 2 for p, k in zip(self.pad, kernel)) and self.out_size == tuple(
            _torch_pooled_size(size, k, s, p, self.ceil)
            for size, k, s, p in zip(shape[2:], kernel, self.stride, self.pad)
        )
        self.in_size = shape[2:]
        tops = [(shape[0], shape[1]) + self.out_size]
        return tops * len(self.param.top)

    def forward(self, bottoms):
        x = bottoms[0]
        if self.method == _STOCHASTIC_POOL:
            return [self._forward_stochastic(x)]
        if self.native:
            if self.method == _AVE_POOL:
                return [F.avg_pool2d(x, self.window, self.stride, self.pad, ceil_mode=self.ceil)]
            if self.want_mask:
                top, index = F.max_pool2d(x, self.window, self.stride, self.pad,
                                          ceil_mode=self.ceil, return_indices=True)
                return [top, index.to(x.dtype)]
            return [F.max_pool2d(x, self.window, self.stride, self.pad, ceil_mode=self.ceil)]
        return self._forward_padded(x)

    def _forward_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Caffe's windows through explicit padding, for the sizes torch's
        pooling does not reproduce (pad > kernel / 2, or a window that starts
        past the input when there is no pad)."""
        trailing = [
            max(0, (o - 1) * s + k - size - p)
            for o, s, k, size, p in zip(self.out_size, self.stride, self.window, self.in_size, self.pad)
        ]
        pad_spec = (self.pad[1], trailing[1], self.pad[0], trailing[0])
        oh, ow = self.out_size
        if self.method == _MAX_POOL:
            # Caffe starts each max at -FLT_MAX, which an all-padding window keeps
            padded = F.pad(x, pad_spec, value=-FLT_MAX)
            top, index = F.max_pool2d(padded, self.window, self.stride, return_indices=True)
            top = top[:, :, :oh, :ow]
            if not self.want_mask:
                return [top]
            index = index[:, :, :oh, :ow]
            width = padded.shape[3]
            row, col = index // width - self.pad[0], index % width - self.pad[1]
            return [top, (row * self.in_size[1] + col).to(x.dtype)]
        padded = F.pad(x, pad_spec)
        sums = F.avg_pool2d(padded, self.window, self.stride, divisor_override=1)[:, :, :oh, :ow]
        return [sums / self._ave_divisor(x.device)]

    def _forward_stochastic(self, x: torch.Tensor) -> torch.Tensor:
        """Caffe's stochastic pooling (its GPU kernels; there is no CPU one),
        for non-negative inputs. TRAIN: each window yields one of its values,
        picked with probability value / window sum (the first whose running
        sum reaches u * sum, u uniform from the device's default generator);
        the gradient goes to that element. TEST: sum(x^2) / sum(x) per window,
        with no gradient (Caffe's TEST backward reads a stale sample)."""
        n, c = x.shape[:2]
        oh, ow = self.out_size
        # zeros after the input make the clipped last windows whole; they
        # change neither sum, and a pick never lands on them (they come after
        # a real element with the same running sum)
        trailing = [max(0, (o - 1) * s + k - size)
                    for o, s, k, size in zip(self.out_size, self.stride, self.window, self.in_size)]
        padded = F.pad(x, (0, trailing[1], 0, trailing[0]))
        windows = F.unfold(padded, self.window, stride=self.stride).reshape(n, c, -1, oh * ow)
        if self.phase == _TEST:
            values = windows.detach()
            weighted = (values * values).sum(dim=2) / (values.sum(dim=2) + FLT_MIN)
            return weighted.reshape(n, c, oh, ow)
        running = windows.detach().cumsum(dim=2)
        threshold = torch.rand((n, c, 1, oh * ow), device=x.device, dtype=x.dtype) * running[:, :, -1:]
        pick = (running < threshold).sum(dim=2, keepdim=True).clamp_(max=windows.shape[2] - 1)
        return windows.gather(2, pick).reshape(n, c, oh, ow)

    def _ave_divisor(self, device) -> torch.Tensor:
        """Caffe's AVE window areas: each window clipped to the padded input."""
        counts = []
        for o, s, k, size, p in zip(self.out_size, self.stride, self.window, self.in_size, self.pad):
            start = torch.arange(o, device=device) * s - p
            counts.append((torch.clamp(start + k, max=size + p) - start).to(torch.float32))
        return counts[0][:, None] * counts[1][None, :]


def _torch_pooled_size(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    """torch's pooling output size (it clips the last window even without pad)."""
    span = size + 2 * p - k
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


@register("SPP")
class SPPLayer(CaffeLayer):
    """Spatial pyramid pooling: level i pools the input into 2^i x 2^i bins
    with Caffe's window (kernel = ceil(size / bins), stride = kernel, pad =
    (kernel * bins - size + 1) // 2 on each axis); each level's output is
    flattened and the levels are concatenated along axis 1. With
    pyramid_height 1 the top is the single pooling output (4 axes)."""

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        p = self.param.spp_param
        if p.pyramid_height < 1:
            raise self.error("spp_param.pyramid_height must be at least 1")
        self.pyramid_height = p.pyramid_height
        self._levels_for: tuple | None = None

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), got {list(shape)}")
        if self._levels_for != shape:
            self.levels = [self._level(i, shape) for i in range(self.pyramid_height)]
            self._levels_for = shape
        tops = [level.reshape([shape])[0] for level in self.levels]
        if self.pyramid_height == 1:
            return tops
        return [(shape[0], sum(math.prod(top[1:]) for top in tops))]

    def _level(self, index: int, shape: tuple) -> PoolingLayer:
        bins = 2 ** index
        param = caffe_pb2.LayerParameter(name=f"{self.name}_level{index}", type="Pooling",
                                         bottom=["bottom"], top=["top"])
        pool = param.pooling_param
        pool.pool = self.param.spp_param.pool
        for axis, size in zip("hw", shape[2:]):
            kernel = -(-size // bins)
            setattr(pool, f"kernel_{axis}", kernel)
            setattr(pool, f"stride_{axis}", kernel)
            setattr(pool, f"pad_{axis}", (kernel * bins - size + 1) // 2)
        level = PoolingLayer(param, self.phase)
        try:
            level.setup([shape], None)
            level.reshape([shape])
        except LayerError as exc:
            raise self.error(f"pyramid level {index} ({bins}x{bins} bins of input "
                             f"{list(shape)}): {exc}") from None
        return level

    def forward(self, bottoms):
        pooled = [level.forward(bottoms)[0] for level in self.levels]
        if self.pyramid_height == 1:
            return pooled
        return [torch.cat([p.flatten(1) for p in pooled], dim=1)]


_ACROSS_CHANNELS = 0


@register("LRN")
class LRNLayer(CaffeLayer):
    """Local response normalisation.
    ACROSS_CHANNELS: x / (k + alpha / n * sum of x^2 over n channels) ^ beta.
    WITHIN_CHANNEL:  x / (1 + alpha / n^2 * sum of x^2 over an n x n window) ^ beta
    (zero padded, k unused, as Caffe's composition of pooling and power)."""

    num_bottoms = 1
    num_tops = 1

    def setup(self, bottom_shapes, generator):
        p = self.param.lrn_param
        if p.local_size % 2 == 0:
            raise self.error(f"local_size must be odd, got {p.local_size}")
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.across = p.norm_region == _ACROSS_CHANNELS

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            raise self.error(f"input must have 4 axes (num, channels, height, width), got {list(shape)}")
        return [shape]

    def forward(self, bottoms):
        x = bottoms[0]
        if self.across:
            return [F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)]
        window_mean = F.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2,
                                   count_include_pad=True)
        return [x * (1.0 + self.alpha * window_mean).pow(-self.beta)]


@register("Crop")
class CropLayer(CaffeLayer):
    """The first bottom cut to the second bottom's extent on every axis from
    `axis` on, starting at `offset` (one value for all axes, or one each)."""

    num_bottoms = 2
    num_tops = 1

    def reshape(self, bottom_shapes):
        shape, reference = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if len(shape) != len(reference):
            raise self.error(f"bottoms have {len(shape)} and {len(reference)} axes; they must match")
        p = self.param.crop_param
        axis = canonical_axis(self, p.axis, len(shape))
        n_cropped = len(shape) - axis
        offsets = list(p.offset)
        if len(offsets) not in (0, 1, n_cropped):
            raise self.error(
                f"{len(offsets)} offsets given; give none, one, or one per cropped axis ({n_cropped})"
            )
        if len(offsets) <= 1:
            offsets = (offsets or [0]) * n_cropped
        self.slices = [slice(None)] * axis
        top = list(shape[:axis])
        for i, off in enumerate(offsets):
            dim = axis + i
            if shape[dim] - off < reference[dim]:
                raise self.error(
                    f"crop of extent {reference[dim]} at offset {off} on axis {dim} exceeds the "
                    f"bottom's extent {shape[dim]} (bottom {list(shape)}, reference {list(reference)})"
                )
            self.slices.append(slice(off, off + reference[dim]))
            top.append(reference[dim])
        self.slices = tuple(self.slices)
        return [tuple(top)]

    def forward(self, bottoms):
        # Caffe copies the window (a copy in the bottom's memory format); no
        # gradient reaches the reference bottom
        return [bottoms[0][self.slices].clone(memory_format=torch.preserve_format)]
