"""Caffe's weight fillers: initial values for a parameter blob.

`fill(filler_param, shape, generator)` returns a new float32 CPU tensor drawn
from `generator`, so a seeded generator gives the same blob every time. The
types and formulas are BVLC Caffe's (`constant` is the default type, value 0,
which is why an unset filler gives zeros).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .errors import INT_MAX, CaffeError, clip

Shape = Sequence[int]
_FillFn = Callable[[object, tuple[int, ...], torch.Generator], torch.Tensor]

# FillerParameter.VarianceNorm values
_FAN_IN, _FAN_OUT, _AVERAGE = 0, 1, 2


def _no_sparse(param, type_name: str) -> None:
    if param.sparse != -1:
        raise CaffeError(f"filler '{type_name}': sparse is supported only by the gaussian filler")


def _constant(param, shape, generator):
    _no_sparse(param, "constant")
    return torch.full(shape, float(param.value), dtype=torch.float32)


def _uniform_between(shape, low: float, high: float, generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=torch.float32) * (high - low) + low


def _uniform(param, shape, generator):
    _no_sparse(param, "uniform")
    if param.min > param.max:
        raise CaffeError(f"filler 'uniform': min {param.min} is greater than max {param.max}")
    return _uniform_between(shape, param.min, param.max, generator)


def _gaussian(param, shape, generator):
    # Caffe's caffe_rng_gaussian CHECKs sigma > 0 (NaN fails it too)
    if not param.std > 0:
        raise CaffeError(f"filler 'gaussian': std must be > 0, got {param.std}")
    data = torch.randn(shape, generator=generator, dtype=torch.float32) * param.std + param.mean
    if param.sparse < -1:
        raise CaffeError(f"filler 'gaussian': sparse must be >= -1, got {param.sparse}")
    if param.sparse >= 0:
        # each output (axis 0) keeps on average `sparse` nonzero input weights
        if len(shape) < 1:
            raise CaffeError("filler 'gaussian': sparse needs a blob with at least one axis")
        keep = torch.full(shape, param.sparse / shape[0], dtype=torch.float32).clamp_(0, 1)
        data *= torch.bernoulli(keep, generator=generator)
    return data


def _positive_unitball(param, shape, generator):
    _no_sparse(param, "positive_unitball")
    data = torch.rand(shape, generator=generator, dtype=torch.float32)
    rows = shape[0] if len(shape) else 1
    flat = data.reshape(rows, -1)
    flat /= flat.sum(dim=1, keepdim=True)
    return flat.reshape(shape)


def _fan(param, shape) -> float:
    count = math.prod(shape)
    fan_in = count // shape[0] if shape else count
    fan_out = count // shape[1] if len(shape) > 1 else count
    if param.variance_norm == _AVERAGE:
        return (fan_in + fan_out) / 2.0
    if param.variance_norm == _FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def _xavier(param, shape, generator):
    _no_sparse(param, "xavier")
    bound = math.sqrt(3.0 / _fan(param, shape))
    return _uniform_between(shape, -bound, bound, generator)


def _msra(param, shape, generator):
    _no_sparse(param, "msra")
    std = math.sqrt(2.0 / _fan(param, shape))
    return torch.randn(shape, generator=generator, dtype=torch.float32) * std


def _bilinear(param, shape, generator):
    _no_sparse(param, "bilinear")
    if len(shape) != 4:
        raise CaffeError(f"filler 'bilinear': blob must have 4 axes, got shape {list(shape)}")
    height, width = shape[2], shape[3]
    if height != width:
        raise CaffeError(f"filler 'bilinear': kernel must be square, got {height}x{width}")
    factor = math.ceil(width / 2.0)
    # centre of the kernel in units of the upsampling factor (float, as Caffe)
    centre = torch.tensor((2 * factor - 1 - factor % 2) / (2.0 * factor), dtype=torch.float32)
    pos = torch.arange(width, dtype=torch.float32) / factor
    profile = 1 - (pos - centre).abs()
    kernel = profile[:, None] * profile[None, :]
    return kernel.expand(shape).contiguous()


_FILLERS: dict[str, _FillFn] = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


def fill(param, shape: Shape, generator: torch.Generator) -> torch.Tensor:
    """A new float32 CPU tensor of `shape` filled as `param` (a caffe_pb2
    FillerParameter) says."""
    shape = tuple(int(d) for d in shape)
    fill_fn = _FILLERS.get(param.type)
    if fill_fn is None:
        raise CaffeError(f"unknown filler type '{clip(param.type)}' "
                         f"(known: {', '.join(sorted(_FILLERS))})")
    count = math.prod(shape)
    if count == 0:
        raise CaffeError(f"filler '{param.type}': cannot fill an empty blob of shape {list(shape)}")
    if count > INT_MAX:  # Caffe's Blob::Reshape refuses the blob before any filler runs
        raise CaffeError(f"param blob shape {list(shape)} has {count} elements: blob size "
                         f"exceeds INT_MAX")
    return fill_fn(param, shape, generator)
