"""Bilinear interpolation kernels for the FCN upsampling (Deconvolution) layers.

A Deconvolution with stride f and kernel size 2f (or 2f - 1) whose kernel is
the bilinear filter below upsamples by f exactly like bilinear interpolation;
FCN initialises (and, with lr_mult 0, fixes) its upsampling layers so.
"""
from __future__ import annotations

import numpy as np

from torchcaffe.errors import CaffeError, LayerError


def upsample_filt(size: int) -> np.ndarray:
    """The `size x size` bilinear kernel for upsampling by `(size + 1) // 2`.

    Each axis is the tent 1 - |x - c| / f with f = (size + 1) // 2 and centre
    c = f - 1 for odd sizes, f - 0.5 for even sizes; the kernel is the outer
    product of the two axes (float64).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise CaffeError(f"upsample_filt: size must be a positive integer, got {size!r}")
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    tent = 1 - np.abs(np.arange(size) - center) / factor
    return np.outer(tent, tent)


def interp(net, layers) -> None:
    """Set the weights of each named Deconvolution layer to bilinear kernels.

    The weight blob is `[C_in, C_out/group, k, k]`.  With C_in == C_out/group
    channel c is upsampled into channel c (the diagonal c -> c is written; the
    other entries are left as they are, zero from Caffe's default filler).
    With one output per group every input channel gets the kernel.  Anything
    else, or a non-square kernel, is refused naming the layer.
    """
    for name in layers:
        if name not in net.params:
            raise CaffeError(f"interp: no learnable layer '{name}' in the net")
        weight = net.params[name][0].data
        if weight.ndim != 4:
            raise LayerError(name, _layer_type(net, name),
                             f"interp needs a 4-d kernel blob, got shape {weight.shape}")
        m, k, h, w = weight.shape
        if m != k and k != 1:
            raise LayerError(name, _layer_type(net, name),
                             f"interp needs as many input as output channels (or one output "
                             f"per group); the kernel blob is {weight.shape}")
        if h != w:
            raise LayerError(name, _layer_type(net, name),
                             f"interp needs a square kernel; the kernel is {h}x{w}")
        filt = upsample_filt(h)
        channels = np.arange(m)
        outputs = channels if k == m else np.zeros(m, dtype=int)
        weight[channels, outputs] = filt


def _layer_type(net, name: str) -> str:
    """The type of layer `name` when the net tells it (pycaffe's private names)."""
    names = list(getattr(net, "_layer_names", []))
    if name in names:
        return net.layers[names.index(name)].type
    return "unknown"
