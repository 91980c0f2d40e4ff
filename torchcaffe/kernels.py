"""Exact float32 implementations of Convolution, Deconvolution and
InnerProduct, among which `kernel_choice` picks one per layer shape.

Every implementation computes the same sums (only their order, hence float
rounding, differs) and keeps autograd's rule that a gradient is computed
only for the inputs that require one, so Caffe's `propagate_down` and
`force_backward` decisions hold whichever runs.

- `direct`: torch's own operator (oneDNN on the CPU, cuDNN on CUDA).
- `channels_last`: the same operator on NHWC copies of the input and weight;
  its output is returned in the usual contiguous layout.
- `im2col`: Caffe's algorithm. Per item, the column buffer of the image
  (`unfold`; a plain view for 1x1 kernels with stride 1 and no pad) and one
  GEMM per group; backward recomputes the columns rather than keeping them,
  so it holds no more memory than `direct` (input and weight only).
- InnerProduct `linear` (torch's F.linear) or `addmm` (one BLAS GEMM with the
  bias as its initial value, as Caffe adds it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV_FNS = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass(frozen=True)
class Window:
    """A (de)convolution's geometry per spatial axis, and its group count."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    @property
    def pointwise(self) -> bool:
        """1x1 with stride 1 and no pad: the column buffer is the image itself."""
        return all(k == 1 for k in self.kernel) and all(s == 1 for s in self.stride) \
            and not any(self.pad)


# ---------------------------------------------------------------- direct and NHWC

def conv_direct(x, weight, bias, window: Window):
    return _CONV_FNS[x.dim() - 2](x, weight, bias, window.stride, window.pad,
                                  window.dilation, window.groups)


def deconv_direct(x, weight, bias, window: Window):
    return _DECONV_FNS[x.dim() - 2](x, weight, bias, window.stride, window.pad, 0,
                                    window.groups, window.dilation)


def _channels_last(fn: Callable) -> Callable:
    def run(x, weight, bias, window: Window):
        nhwc = torch.channels_last
        out = fn(x.contiguous(memory_format=nhwc), weight.contiguous(memory_format=nhwc),
                 bias, window)
        return out.contiguous()
    return run


# ---------------------------------------------------------------- im2col + GEMM

def _columns(image: torch.Tensor, window: Window) -> torch.Tensor:
    """Caffe's column buffer of one C x H x W image: (C * prod(kernel)) x L."""
    if window.pointwise:
        return image.reshape(image.shape[0], -1)
    return F.unfold(image.unsqueeze(0), window.kernel, window.dilation, window.pad,
                    window.stride)[0]


def _image(columns: torch.Tensor, size: tuple[int, int], channels: int,
           window: Window) -> torch.Tensor:
    """col2im: the columns summed back into a C x H x W image."""
    if window.pointwise:
        return columns.reshape(channels, *size)
    return F.fold(columns.unsqueeze(0), size, window.kernel, window.dilation, window.pad,
                  window.stride)[0]


class _Im2colGemm(torch.autograd.Function):
    """Convolution (or, transposed, deconvolution) as Caffe computes it.

    Two sides: the image (a convolution's input, a deconvolution's output)
    and the grid of kernel positions (L = a convolution's output size, a
    deconvolution's input size). With W viewed as
    groups x grid channels / groups x image channels * k / groups:
    to_grid(image) = W @ columns(image), to_image(grid) = col2im(W^T @ grid),
    and the weight gradient is the sum over items of grid @ columns(image)^T.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, window: Window, image_size, transposed: bool):
        ctx.window, ctx.image_size, ctx.transposed = window, image_size, transposed
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        out = _to_image(x, weight, window, image_size) if transposed else _to_grid(x, weight, window)
        if bias is not None:
            out += bias.view((1, -1) + (1,) * (out.dim() - 2))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        window, transposed = ctx.window, ctx.transposed
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = _to_grid(grad, weight, window) if transposed else \
                _to_image(grad, weight, window, tuple(x.shape[2:]))
        if need_w:
            grid, image = (x, grad) if transposed else (grad, x)
            grad_w = _weight_grad(grid, image, weight, window)
        if need_b and ctx.has_bias:
            grad_b = grad.sum(dim=(0,) + tuple(range(2, grad.dim())))
        return grad_x, grad_w, grad_b, None, None, None


def _grouped(weight: torch.Tensor, groups: int) -> torch.Tensor:
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def _matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Per group (g x m x k) @ (g x k x n); one plain GEMM when g == 1, which
    BLAS runs faster than a batch of one (it reads transposed operands as they are)."""
    if a.shape[0] == 1:
        return torch.mm(a[0], b[0], out=None if out is None else out[0]).unsqueeze(0)
    return torch.bmm(a, b, out=out)


def _to_grid(image: torch.Tensor, weight: torch.Tensor, window: Window) -> torch.Tensor:
    groups = window.groups
    w = _grouped(weight, groups)
    n = image.shape[0]
    out_size = tuple(
        (size + 2 * p - (d * (k - 1) + 1)) // s + 1
        for size, k, s, p, d in zip(image.shape[2:], window.kernel, window.stride,
                                    window.pad, window.dilation))
    length = out_size[0] * out_size[1]
    out = image.new_empty((n, weight.shape[0]) + out_size)
    for i in range(n):
        columns = _columns(image[i], window).reshape(groups, -1, length)
        _matmul(w, columns, out=out[i].view(groups, -1, length))
    return out


def _to_image(grid: torch.Tensor, weight: torch.Tensor, window: Window, image_size) -> torch.Tensor:
    groups = window.groups
    w = _grouped(weight, groups).transpose(1, 2)
    n, length = grid.shape[0], grid.shape[2] * grid.shape[3]
    channels = weight.shape[1] * groups
    out = grid.new_empty((n, channels) + tuple(image_size))
    for i in range(n):
        columns = _matmul(w, grid[i].reshape(groups, -1, length))
        out[i] = _image(columns.reshape(-1, length), tuple(image_size), channels, window)
    return out


def _weight_grad(grid: torch.Tensor, image: torch.Tensor, weight: torch.Tensor,
                 window: Window) -> torch.Tensor:
    groups = window.groups
    length = grid.shape[2] * grid.shape[3]
    total = None
    for i in range(grid.shape[0]):
        columns = _columns(image[i], window).reshape(groups, -1, length).transpose(1, 2)
        rows = grid[i].reshape(groups, -1, length)
        if total is None:
            total = _matmul(rows, columns)
        elif groups == 1:
            total[0].addmm_(rows[0], columns[0])
        else:
            total.baddbmm_(rows, columns)
    return total.reshape(weight.shape)


def conv_im2col(x, weight, bias, window: Window):
    return _Im2colGemm.apply(x, weight, bias, window, None, False)


def deconv_im2col(x, weight, bias, window: Window):
    size = tuple(
        s * (i - 1) + d * (k - 1) + 1 - 2 * p
        for i, k, s, p, d in zip(x.shape[2:], window.kernel, window.stride, window.pad,
                                 window.dilation))
    return _Im2colGemm.apply(x, weight, bias, window, size, True)


# ---------------------------------------------------------------- InnerProduct

def ip_linear(x, weight, bias):
    return F.linear(x, weight, bias)


def ip_addmm(x, weight, bias):
    if x.dim() != 2:
        flat = ip_addmm(x.reshape(-1, x.shape[-1]), weight, bias)
        return flat.reshape(x.shape[:-1] + (weight.shape[0],))
    if bias is None:
        return torch.mm(x, weight.t())
    return torch.addmm(bias, x, weight.t())


# kernel name -> implementation, the first of each being the default
CONVOLUTION = {"direct": conv_direct, "channels_last": _channels_last(conv_direct),
               "im2col": conv_im2col}
DECONVOLUTION = {"direct": deconv_direct, "channels_last": _channels_last(deconv_direct),
                 "im2col": deconv_im2col}
INNER_PRODUCT = {"linear": ip_linear, "addmm": ip_addmm}
FAMILIES = {"Convolution": CONVOLUTION, "Deconvolution": DECONVOLUTION,
            "InnerProduct": INNER_PRODUCT}
#: kernels that handle only two spatial axes
TWO_D_ONLY = {"channels_last", "im2col"}
