"""Coordinate maps between NetSpec tops, and `crop` layers computed from them.

Each spatial layer relates its output coordinates to its input coordinates
by an affine map per spatial axis, written (axis, scale a, shift b) as in
pycaffe's coord_map:

    Convolution / Pooling (kernel k, stride s, pad p, dilation d, extent
    e = d (k - 1) + 1):   a = 1 / s,   b = (p - (e - 1) / 2) / s
    Deconvolution (the inverse of the matching convolution):
                          a = s,       b = (e - 1) / 2 - p
    Crop (offset o):      a = 1,       b = -o
    point-wise layers (ReLU, Dropout, Eltwise, Scale, ...): a = 1, b = 0

Maps compose along a path (scales multiply, shifts add after scaling). To
crop top A to top B, both are walked back to a common ancestor; the map from
A to B must then be a pure integer translation (a == 1, b <= 0, b integral)
and the Crop offset is -b. `crop` computes with exact fractions, so offsets
do not depend on float rounding.

The public functions answer as pycaffe's do: a map is `(axis, a, b)` with
numpy float arrays (one value per spatial axis), the identity is
`(None, 1, 0)`; maps between unconnected tops raise RuntimeError and crops
that cannot be made raise AssertionError (both also CaffeError, with the
layers named).
"""
from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from .errors import CaffeError
from .net_spec import Function, Top, layers

__all__ = ["conv_params", "crop_params", "coord_map", "compose", "inverse",
           "coord_map_from_to", "crop", "UndefinedMapException", "AxisMismatchException",
           "UnconnectedTopsError", "CropError"]

# Layers that leave spatial coordinates unchanged (the channel-wise Concat is
# handled separately: only a concat over channels keeps coordinates).
PASS_THROUGH_LAYERS = frozenset({
    "AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Exp",
    "Log", "LRN", "MVN", "Power", "PReLU", "ReLU", "Scale", "Sigmoid",
    "Softmax", "Split", "TanH", "Threshold",
})

_LEGACY_HW_FIELDS = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"}


class UndefinedMapException(CaffeError):
    """A layer whose coordinate map is not defined (e.g. InnerProduct, data)."""


class AxisMismatchException(CaffeError):
    """Two maps that act on different axes cannot be composed."""


class UnconnectedTopsError(CaffeError, RuntimeError):
    """No common ancestor through spatial layers (pycaffe raises RuntimeError)."""


class CropError(CaffeError, AssertionError):
    """A crop that is not a pure non-negative integer translation (pycaffe
    asserts these)."""


class CoordMap(NamedTuple):
    """Per spatial axis a scale and a shift; `axis` is the first axis the map
    acts on (None: any axis, as for point-wise layers)."""

    axis: int | None
    scale: tuple[Fraction, ...]
    shift: tuple[Fraction, ...]


IDENTITY = CoordMap(None, (Fraction(1),), (Fraction(0),))


def describe(fn: Function) -> str:
    """`'score_pool4' (Convolution)` when the NetSpec named a top, else the type."""
    name = getattr(fn, "netspec_name", None)
    return f"'{name}' ({fn.type_name})" if name else f"an unnamed {fn.type_name} layer"


def _values(raw, fn: Function, field: str) -> tuple[Fraction, ...]:
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    try:
        values = tuple(Fraction(v) for v in items)
    except (TypeError, ValueError):
        raise CaffeError(f"{describe(fn)}: {field} must be numbers, got {raw!r}") from None
    if not values:
        raise CaffeError(f"{describe(fn)}: {field} is empty")
    return values


def _broadcast(*vectors: tuple[Fraction, ...]) -> list[tuple[Fraction, ...]]:
    """Per-axis values of equal length (a single value applies to every axis)."""
    length = max(len(v) for v in vectors)
    if any(len(v) not in (1, length) for v in vectors):
        raise CaffeError(f"per-axis values of different lengths: {vectors}")
    return [v * length if len(v) == 1 else v for v in vectors]


def _window_params(fn: Function):
    """(axis, stride, effective kernel extent, pad) of a conv-like layer."""
    params = fn.params.get("convolution_param", fn.params)
    if fn.type_name == "Pooling":
        params = fn.params.get("pooling_param", fn.params)
    legacy = _LEGACY_HW_FIELDS & set(params)
    if legacy:
        raise CaffeError(
            f"{describe(fn)}: coordinate mapping does not support the legacy "
            f"fields {sorted(legacy)}; give kernel_size / stride / pad instead"
        )
    if "kernel_size" not in params:
        raise CaffeError(f"{describe(fn)}: coordinate mapping needs kernel_size")
    kernel = _values(params["kernel_size"], fn, "kernel_size")
    dilation = _values(params.get("dilation", 1), fn, "dilation")
    stride = _values(params.get("stride", 1), fn, "stride")
    pad = _values(params.get("pad", 0), fn, "pad")
    kernel, dilation, stride, pad = _broadcast(kernel, dilation, stride, pad)
    extent = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))
    return params.get("axis", 1), stride, extent, pad


def conv_params(fn: Function):
    """pycaffe's conv_params: (axis, stride, kernel extent, pad) of a
    convolution-like layer, the last three as numpy arrays."""
    axis, stride, extent, pad = _window_params(fn)
    return axis, _floats(stride), _floats(extent), _floats(pad)


def crop_params(fn: Function):
    """pycaffe's crop_params: (axis, offset array) of a Crop layer, with defaults."""
    params = fn.params.get("crop_param", fn.params)
    return params.get("axis", 2), _floats(_values(params.get("offset", 0), fn, "offset"))


def _floats(values) -> np.ndarray:
    return np.array([float(v) for v in values], ndmin=1)


def _exact_map(fn: Function) -> CoordMap:
    """The coordinate map of one layer, from its bottoms to its tops."""
    kind = fn.type_name
    if kind in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = _window_params(fn)
        return CoordMap(axis, tuple(1 / s for s in stride),
                        tuple((p - (e - 1) / 2) / s for s, e, p in zip(stride, extent, pad)))
    if kind == "Deconvolution":
        axis, stride, extent, pad = _window_params(fn)
        return CoordMap(axis, stride, tuple((e - 1) / 2 - p for e, p in zip(extent, pad)))
    if kind == "Crop":
        params = fn.params.get("crop_param", fn.params)
        offset = _values(params.get("offset", 0), fn, "offset")
        # the crop axis counts N too; maps are stated from the channel axis
        return CoordMap(params.get("axis", 2) - 1, (Fraction(1),), tuple(-o for o in offset))
    if kind in PASS_THROUGH_LAYERS:
        return IDENTITY
    if kind == "Concat":
        params = fn.params.get("concat_param", fn.params)
        if params.get("axis", params.get("concat_dim", 1)) == 1:
            return IDENTITY
    raise UndefinedMapException(f"{describe(fn)} has no coordinate map")


def _compose(base: CoordMap, following: CoordMap) -> CoordMap:
    """`base` followed by `following` (walking towards the inputs): scales
    multiply and the further shift is scaled by the base scale."""
    if base.axis is None:
        axis = following.axis
    elif following.axis is None or following.axis == base.axis:
        axis = base.axis
    else:
        raise AxisMismatchException(
            f"coordinate maps on different axes ({base.axis} and {following.axis})"
        )
    a1, b1, a2, b2 = _broadcast(base.scale, base.shift, following.scale, following.shift)
    return CoordMap(axis, tuple(x * y for x, y in zip(a1, a2)),
                    tuple(x * s + y for x, s, y in zip(a1, b2, b1)))


def _inverse(cmap: CoordMap) -> CoordMap:
    """The map back from outputs to inputs."""
    return CoordMap(cmap.axis, tuple(1 / a for a in cmap.scale),
                    tuple(-b / a for a, b in zip(cmap.scale, cmap.shift)))


def _mapped_bottoms(top: Top) -> tuple[Top, ...]:
    # a Crop's second bottom only supplies the shape: coordinates follow the first
    return top.fn.inputs[:1] if top.fn.type_name == "Crop" else top.fn.inputs


def _ancestor_maps(start: Top) -> tuple[dict[Top, CoordMap], list[Function]]:
    """Map from every reachable ancestor blob to `start` (breadth first), and
    the layers where the walk stopped because they have no coordinate map."""
    maps = {start: IDENTITY}
    stopped = []
    frontier = deque([start])
    while frontier:
        top = frontier.popleft()
        if not top.fn.inputs:
            continue  # a data or Input layer: the walk's origin
        try:
            layer_map = _exact_map(top.fn)
        except UndefinedMapException:
            stopped.append(top.fn)
            continue
        for bottom in _mapped_bottoms(top):
            if bottom not in maps:
                maps[bottom] = _compose(maps[top], layer_map)
                frontier.append(bottom)
    return maps, stopped


def _exact_from_to(top_from: Top, top_to: Top) -> CoordMap:
    """The map taking coordinates of `top_from` to those of `top_to`,
    through their nearest common ancestor."""
    from_maps, stopped_from = _ancestor_maps(top_from)
    to_maps, stopped_to = _ancestor_maps(top_to)
    for ancestor, to_map in to_maps.items():  # nearest to top_to first
        if ancestor in from_maps:
            return _compose(to_map, _inverse(from_maps[ancestor]))
    stopped = stopped_from + stopped_to
    detail = (
        "; the walk stopped at " + ", ".join(describe(fn) for fn in stopped)
        + " (no coordinate map)" if stopped else ""
    )
    raise UnconnectedTopsError(
        f"cannot map {describe(top_from.fn)} to {describe(top_to.fn)}: they share "
        f"no ancestor through spatial layers{detail}"
    )


# ---------------------------------------------------------------- pycaffe's surface

def _as_pycaffe(cmap: CoordMap):
    if cmap.axis is None and cmap.scale == (1,) and cmap.shift == (0,):
        return None, 1, 0
    return cmap.axis, _floats(cmap.scale), _floats(cmap.shift)


def coord_map(fn: Function):
    """(axis, a, b) of one layer: output coordinate i * a + b for input i."""
    return _as_pycaffe(_exact_map(fn))


def compose(base_map, next_map):
    """`base_map` followed by `next_map` (walking towards the inputs)."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is not None and ax2 is not None and ax1 != ax2:
        raise AxisMismatchException(f"coordinate maps on different axes ({ax1} and {ax2})")
    return (ax2 if ax1 is None else ax1), a1 * a2, a1 * b2 + b1


def inverse(cmap):
    """The map back from outputs to inputs."""
    ax, a, b = cmap
    return ax, 1 / a, -b / a


def coord_map_from_to(top_from: Top, top_to: Top):
    """(axis, a, b) taking coordinates of `top_from` to those of `top_to`."""
    return _as_pycaffe(_exact_from_to(top_from, top_to))


def crop(top_from: Top, top_to: Top) -> Top:
    """A Crop layer cutting `top_from` to the extent of `top_to`, its offset
    computed from the coordinate maps of the layers between them."""
    axis, scale, shift = _exact_from_to(top_from, top_to)
    what = f"crop({describe(top_from.fn)} -> {describe(top_to.fn)})"
    if any(a != 1 for a in scale):
        raise CropError(
            f"{what}: the tops are at different scales (factor "
            f"{', '.join(str(a) for a in scale)}); crop needs a pure translation"
        )
    if any(b.denominator != 1 for b in shift):
        raise CropError(
            f"{what}: the offset {', '.join(str(-b) for b in shift)} is not an "
            "integer; the layers' kernel / stride / pad do not align"
        )
    if any(b > 0 for b in shift):
        raise CropError(
            f"{what}: the offset {', '.join(str(-b) for b in shift)} is negative; "
            "the first top would have to be padded, not cropped"
        )
    crop_axis = 2 if axis is None else axis + 1
    return layers.Crop(top_from, top_to,
                       crop_param=dict(axis=crop_axis, offset=[int(-b) for b in shift]))
