"""Exact float32 implementations of Convolution, Deconvolution and
InnerProduct, among which `kernel_choice` picks one per layer shape.

Every implementation computes the same sums (only their order, hence float
rounding, differs) and computes a gradient only for the inputs that
autograd asks for, so Caffe's `propagate_down` and `force_backward`
decisions hold whichever runs.

A kernel is a forward method and a backward method of the same family,
named `method` (both the same) or `forward/backward`, e.g.
`direct/im2col_openblas`: oneDNN's forward, Caffe's im2col backward with
OpenBLAS's GEMM. The methods:

- `direct`: torch's own operator (oneDNN on the CPU, cuDNN on CUDA); its
  backward is `aten.convolution_backward` for exactly the wanted gradients.
- `channels_last`: the same operator on NHWC copies of the input and weight;
  results come back in the usual contiguous layout.
- `im2col`, `im2col_openblas`: Caffe's algorithm. Per item, the column
  buffer of a band of output rows at a time (at most COLUMN_BYTES; a plain
  view for 1x1 kernels with stride 1 and no pad) and one GEMM per group:
  torch's BLAS (MKL) or numpy's bundled OpenBLAS. Backward recomputes the
  columns rather than keeping them, so no method keeps more than the input
  and the weight for backward.
- `tap_gemm` (Convolution, 2-D, stride 1, no groups; backward only, its
  forward is `direct`'s): the weight gradient as one GEMM (torch's BLAS) per
  kernel tap on shifted views of the zero-padded input, with no column
  buffer; the input gradient by oneDNN. oneDNN's weight gradient is the
  slow half of its backward (1.3x to 1.5x its input gradient on VGG's 3x3
  layers); from 256 channels on, BLAS's long per-tap products beat it by a
  few percent in quiet stretches and by up to 30% under load.
- `winograd` (Convolution, 3x3, stride 1, pad at most 1, no dilation or
  groups, CPU float32, inference only): NNPACK's Winograd F(6x6, 3x3), the
  algorithm cuDNN picks for such layers on GPUs. Its sums are the same in
  exact arithmetic, but its transforms round more: on VGG16's 3x3 layers
  its largest error is 6e-6 to 8e-6 of the largest output, against 1e-6 to
  4e-6 for `direct` (`python -m bench --only kernel_accuracy`). That is
  within the golden tolerances for one pass, but compounded over training
  steps it is not, so it is offered only for calls no backward runs
  through (deploy, scoring); `-winograd` in the policy leaves it out.
- InnerProduct `linear` (torch's F.linear), `addmm` (one GEMM with the bias
  as its initial value) and `addmm_openblas` (OpenBLAS's GEMM, then the bias,
  as Caffe adds it).

The OpenBLAS methods exist when numpy's BLAS is OpenBLAS and threadpoolctl
is installed; its thread pool is kept at torch's thread count.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .errors import CaffeError

log = logging.getLogger(__name__)

_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV_FNS = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
#: the most memory one band of im2col columns may take
COLUMN_BYTES = 32 * 2**20


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

    def extent(self, axis: int) -> int:
        """How many input positions one kernel application spans on `axis`."""
        return self.dilation[axis] * (self.kernel[axis] - 1) + 1

    def out_size(self, size: int, axis: int) -> int:
        return (size + 2 * self.pad[axis] - self.extent(axis)) // self.stride[axis] + 1


# ---------------------------------------------------------------- GEMM providers

class _TorchGemm:
    """torch's BLAS (MKL in the CPU wheels)."""

    @staticmethod
    def mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
        torch.mm(a, b, out=out)

    @staticmethod
    def mm_add(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
        out.addmm_(a, b)


def _blas_operand(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when BLAS can read it as it is (row- or column-major with a
    leading dimension), else a contiguous copy: numpy would otherwise fall
    back to its slow loop."""
    rows, cols = t.shape
    if (t.stride(1) == 1 and t.stride(0) >= max(cols, 1)) or \
            (t.stride(0) == 1 and t.stride(1) >= max(rows, 1)):
        return t
    return t.contiguous()


class _OpenBlasGemm:
    """numpy's OpenBLAS on zero-copy views of the tensors. OpenBLAS's own
    thread pool spins between calls, against torch's threads; so it runs
    one thread per call and a GEMM is split by output columns (or rows)
    among torch's thread count of workers here, which wait without spinning
    (numpy releases the GIL)."""

    def __init__(self):
        self._controllers: list | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 0
        # a forked child has none of the parent's worker threads
        os.register_at_fork(after_in_child=self._forget_workers)

    def _forget_workers(self) -> None:
        self._pool, self._workers = None, 0

    @property
    def available(self) -> bool:
        if self._controllers is None:
            self._controllers = []
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                log.info("threadpoolctl is not installed: the OpenBLAS kernels are off")
            else:
                self._controllers = ThreadpoolController().select(
                    internal_api="openblas").lib_controllers
                if not self._controllers:
                    log.info("numpy's BLAS is not OpenBLAS: the OpenBLAS kernels are off")
        return bool(self._controllers)

    def _workers_now(self) -> int:
        """torch's thread count; OpenBLAS itself single-threaded."""
        if not self.available:
            raise CaffeError("the OpenBLAS kernels need numpy built with OpenBLAS and the "
                             "threadpoolctl package")
        threads = torch.get_num_threads()
        if threads != self._workers:
            for controller in self._controllers:
                controller.set_num_threads(1)
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="openblas-gemm") \
                if threads > 1 else None
            self._workers = threads
        return threads

    def _run(self, a: torch.Tensor, b: torch.Tensor, out: np.ndarray) -> None:
        """out = a @ b, split among the workers along out's longer side."""
        a, b = _blas_operand(a.detach()).numpy(), _blas_operand(b.detach()).numpy()
        workers = self._workers_now()
        rows, cols = out.shape
        parts = min(workers, max(rows, cols) // 64)
        if parts < 2:
            np.matmul(a, b, out=out)
            return
        bounds = [round(i * max(rows, cols) / parts) for i in range(parts + 1)]
        if cols >= rows:
            jobs = [(a, b[:, lo:hi], out[:, lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
        else:
            jobs = [(a[lo:hi], b, out[lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
        futures = [self._pool.submit(np.matmul, x, y, out=o) for x, y, o in jobs[1:]]
        np.matmul(*jobs[0][:2], out=jobs[0][2])
        for future in futures:
            future.result()

    def mm(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
        if out.stride(1) == 1 and out.stride(0) >= out.shape[1]:
            self._run(a, b, out.detach().numpy())
        else:
            result = np.empty(tuple(out.shape), dtype=out.detach().numpy().dtype)
            self._run(a, b, result)
            out.copy_(torch.from_numpy(result))

    def mm_add(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
        result = np.empty(tuple(out.shape), dtype=out.detach().numpy().dtype)
        self._run(a, b, result)
        out += torch.from_numpy(result)


_TORCH_GEMM = _TorchGemm()
_BLAS_DTYPES = (torch.float32, torch.float64)
OPENBLAS = _OpenBlasGemm()


def _grouped_mm(gemm, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """Per group g: out rows of g = a[g] @ b rows of g (a: groups x m x k;
    b and out split evenly along their rows)."""
    groups = a.shape[0]
    inner, rows = b.shape[0] // groups, out.shape[0] // groups
    for g in range(groups):
        gemm.mm(a[g], b[g * inner:(g + 1) * inner], out[g * rows:(g + 1) * rows])


# ---------------------------------------------------------------- im2col + GEMM, by bands

def _bands(window: Window, out_rows: int, out_cols: int, column_rows: int,
           item_bytes: int) -> list[range]:
    """Output rows in bands whose columns (of `item_bytes` elements) fit COLUMN_BYTES."""
    if window.pointwise:
        return [range(0, out_rows)]
    step = max(1, COLUMN_BYTES // max(column_rows * out_cols * item_bytes, 1))
    return [range(r, min(r + step, out_rows)) for r in range(0, out_rows, step)]


def _input_rows(window: Window, band: range) -> tuple[int, int]:
    """The input rows (unpadded coordinates, may reach into the pad) that
    the kernel windows of output rows `band` read."""
    start = band.start * window.stride[0] - window.pad[0]
    return start, start + (len(band) - 1) * window.stride[0] + window.extent(0)


def _clipped(top: int, bottom: int, height: int) -> tuple[int, int]:
    """The rows of [top, bottom) inside [0, height) (an empty range may remain)."""
    lo = min(max(top, 0), height)
    return lo, max(min(bottom, height), lo)


class _Workspace:
    """Buffers reused by every band of one layer call (fresh memory per band
    would cost page faults): a band of the image with its pad (the pad
    columns stay zero) and the band's columns, C x kh x kw x rows x Wo."""

    def __init__(self, like: torch.Tensor, channels: int, width: int, out_width: int,
                 window: Window, bands: list[range]):
        self.window, self.width, self.out_width = window, width, out_width
        rows = max(len(b) for b in bands)
        slab_rows = (rows - 1) * window.stride[0] + window.extent(0)
        self.slab = like.new_zeros((channels, slab_rows, width + 2 * window.pad[1]))
        self.columns = like.new_empty((channels,) + window.kernel + (rows, out_width))

    def _windows(self, band: range) -> torch.Tensor:
        """The slab's kernel windows for `band`: C x kh x kw x rows x Wo, a view."""
        w, slab = self.window, self.slab
        sc, sr = slab.stride(0), slab.stride(1)
        return slab.as_strided(
            (slab.shape[0],) + w.kernel + (len(band), self.out_width),
            (sc, w.dilation[0] * sr, w.dilation[1], w.stride[0] * sr, w.stride[1]),
            slab.storage_offset())

    def columns_of(self, image: torch.Tensor, band: range) -> torch.Tensor:
        """im2col of one C x H x W image for output rows `band`."""
        height, pad = image.shape[1], self.window.pad[1]
        top, bottom = _input_rows(self.window, band)
        lo, hi = _clipped(top, bottom, height)
        rows = bottom - top
        self.slab[:, lo - top:hi - top, pad:pad + self.width].copy_(image[:, lo:hi])
        if top < 0:
            self.slab[:, :lo - top].zero_()
        if bottom > height:
            self.slab[:, hi - top:rows].zero_()
        columns = self.columns[..., :len(band), :]
        columns.copy_(self._windows(band))
        return columns.reshape(-1, len(band) * self.out_width)

    def band_columns(self, band: range) -> torch.Tensor:
        """The column buffer for `band`, to be written (by a GEMM)."""
        return self.columns[..., :len(band), :].reshape(-1, len(band) * self.out_width)

    def add_image(self, target: torch.Tensor, band: range) -> None:
        """col2im: the columns of `band` summed into the C x H x W `target`."""
        height, pad, w = target.shape[1], self.window.pad[1], self.window
        top, bottom = _input_rows(w, band)
        self.slab[:, :bottom - top].zero_()
        windows, columns = self._windows(band), self.columns[..., :len(band), :]
        for i in range(w.kernel[0]):
            for j in range(w.kernel[1]):
                windows[:, i, j] += columns[:, i, j]
        lo, hi = _clipped(top, bottom, height)
        target[:, lo:hi] += self.slab[:, lo - top:hi - top, pad:pad + self.width]


def _columns(image: torch.Tensor, workspace: _Workspace | None, band: range) -> torch.Tensor:
    """Caffe's column buffer of one C x H x W image for output rows `band`:
    (C * prod(kernel)) x (len(band) * output width); the image itself for a
    pointwise window (no workspace)."""
    if workspace is None:
        return image.reshape(image.shape[0], -1)
    return workspace.columns_of(image, band)


def _workspace(like, channels, width, out_width, window, bands) -> _Workspace | None:
    return None if window.pointwise else _Workspace(like, channels, width, out_width, window,
                                                    bands)


def _to_grid(image: torch.Tensor, weight: torch.Tensor, window: Window, gemm) -> torch.Tensor:
    """Convolution: weight (grid channels x image channels / groups x k) @ columns."""
    out_size = tuple(window.out_size(s, axis) for axis, s in enumerate(image.shape[2:]))
    length = out_size[0] * out_size[1]
    weights = weight.reshape(window.groups, weight.shape[0] // window.groups, -1)
    out = image.new_empty((image.shape[0], weight.shape[0]) + out_size)
    bands = _bands(window, out_size[0], out_size[1], weight[0].numel() * window.groups,
                   image.element_size())
    workspace = _workspace(image, image.shape[1], image.shape[3], out_size[1], window, bands)
    for i in range(image.shape[0]):
        flat = out[i].view(weight.shape[0], length)
        for band in bands:
            _grouped_mm(gemm, weights, _columns(image[i], workspace, band),
                        flat[:, band.start * out_size[1]:band.stop * out_size[1]])
    return out


def _to_image(grid: torch.Tensor, weight: torch.Tensor, window: Window, image_size,
              gemm) -> torch.Tensor:
    """Transposed: col2im(weight^T @ grid), the image side of size `image_size`."""
    groups = window.groups
    weights = weight.reshape(groups, weight.shape[0] // groups, -1).transpose(1, 2)
    channels, width = weight.shape[1] * groups, grid.shape[3]
    out = grid.new_zeros((grid.shape[0], channels) + tuple(image_size))
    bands = _bands(window, grid.shape[2], width, weight[0].numel() * groups,
                   grid.element_size())
    workspace = _workspace(grid, channels, image_size[1], width, window, bands)
    for i in range(grid.shape[0]):
        flat = grid[i].reshape(grid.shape[1], -1)
        for band in bands:
            rows = flat[:, band.start * width:band.stop * width]
            if workspace is None:
                _grouped_mm(gemm, weights, rows, out[i].view(channels, -1))
            else:
                _grouped_mm(gemm, weights, rows, workspace.band_columns(band))
                workspace.add_image(out[i], band)
    return out


def _weight_grad(grid: torch.Tensor, image: torch.Tensor, weight: torch.Tensor,
                 window: Window, gemm) -> torch.Tensor:
    """The sum over items and bands of grid rows @ columns(image)^T, per group."""
    groups, width = window.groups, grid.shape[3]
    rows_per_group, columns_per_group = weight.shape[0] // groups, weight[0].numel()
    total = weight.new_empty((weight.shape[0], columns_per_group))
    bands = _bands(window, grid.shape[2], width, columns_per_group * groups,
                   grid.element_size())
    workspace = _workspace(image, image.shape[1], image.shape[3], width, window, bands)
    for i in range(grid.shape[0]):
        flat = grid[i].reshape(grid.shape[1], -1)
        for band in bands:
            columns = _columns(image[i], workspace, band)
            rows = flat[:, band.start * width:band.stop * width]
            # the first product is written, later ones added: no zeroed
            # accumulator and no temporary the size of the weight for one band
            multiply = gemm.mm_add if i or band.start else gemm.mm
            for g in range(groups):
                out_rows = slice(g * rows_per_group, (g + 1) * rows_per_group)
                multiply(rows[out_rows],
                         columns[g * columns_per_group:(g + 1) * columns_per_group].t(),
                         total[out_rows])
    return total.reshape(weight.shape)


def _bias_view(bias: torch.Tensor, dims: int) -> torch.Tensor:
    return bias.view((1, -1) + (1,) * (dims - 2))


def _deconv_size(x: torch.Tensor, window: Window) -> tuple[int, ...]:
    return tuple(s * (i - 1) + window.extent(axis) - 2 * p
                 for axis, (i, s, p) in enumerate(zip(x.shape[2:], window.stride, window.pad)))


def _im2col_forward(gemm, transposed: bool) -> Callable:
    def forward(x, weight, bias, window: Window):
        out = _to_image(x, weight, window, _deconv_size(x, window), gemm) if transposed \
            else _to_grid(x, weight, window, gemm)
        if bias is not None:
            out += _bias_view(bias, out.dim())
        return out
    return forward


def _im2col_backward(gemm, transposed: bool) -> Callable:
    def backward(grad, x, weight, has_bias: bool, needs, window: Window):
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if needs[0]:
            grad_x = _to_grid(grad, weight, window, gemm) if transposed else \
                _to_image(grad, weight, window, tuple(x.shape[2:]), gemm)
        if needs[1]:
            grid, image = (x, grad) if transposed else (grad, x)
            grad_w = _weight_grad(grid, image, weight, window, gemm)
        if needs[2] and has_bias:
            grad_b = grad.sum(dim=(0,) + tuple(range(2, grad.dim())))
        return grad_x, grad_w, grad_b
    return backward


# ---------------------------------------------------------------- torch's operator

def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def _direct_forward(transposed: bool, nhwc: bool) -> Callable:
    def forward(x, weight, bias, window: Window):
        if nhwc:
            x, weight = _nhwc(x), _nhwc(weight)
        if transposed:
            out = _DECONV_FNS[x.dim() - 2](x, weight, bias, window.stride, window.pad, 0,
                                           window.groups, window.dilation)
        else:
            out = _CONV_FNS[x.dim() - 2](x, weight, bias, window.stride, window.pad,
                                         window.dilation, window.groups)
        return out.contiguous() if nhwc else out
    return forward


def _direct_backward(transposed: bool, nhwc: bool) -> Callable:
    def backward(grad, x, weight, has_bias: bool, needs, window: Window):
        if nhwc:
            grad, x, weight = _nhwc(grad), _nhwc(x), _nhwc(weight)
        channels = weight.shape[1] * window.groups if transposed else weight.shape[0]
        grads = torch.ops.aten.convolution_backward(
            grad, x, weight, [channels] if has_bias else None, list(window.stride),
            list(window.pad), list(window.dilation), transposed, [0] * (x.dim() - 2),
            window.groups, [bool(needs[0]), bool(needs[1]), bool(needs[2] and has_bias)])
        return tuple(None if g is None else g.contiguous() for g in grads)
    return backward


# ---------------------------------------------------------------- tap GEMMs

_DIRECT_CONV_BACKWARD = _direct_backward(transposed=False, nhwc=False)


def _tap_accepts(window: Window) -> bool:
    return window.stride == (1, 1) and window.groups == 1


def _tap_weight_grad(grad: torch.Tensor, x: torch.Tensor, window: Window) -> torch.Tensor:
    """The weight gradient of a stride-1 convolution as one GEMM per kernel
    tap, with no column buffer. The input is padded into a channels x
    (items * rows * columns) matrix and the output gradient zero-filled to
    the same grid; tap (a, b) is then the output gradient times that matrix
    shifted by a rows and b columns, a plain strided view. No nonzero
    gradient reaches past its item's row or column, and the products the
    zero fill adds are exact zeros for finite inputs (x + 0 == x), so the
    sums are the im2col ones in another order. (An inf in the input would
    make a NaN of them; by then the forward has made the loss non-finite
    anyway.)"""
    (pad_h, pad_w), (dil_h, dil_w) = window.pad, window.dilation
    image = F.pad(x.transpose(0, 1), (pad_w, pad_w, pad_h, pad_h))
    rows, cols = image.shape[2:]
    wide = F.pad(grad.transpose(0, 1), (0, cols - grad.shape[3], 0, rows - grad.shape[2]))
    image, wide = image.reshape(image.shape[0], -1), wide.reshape(wide.shape[0], -1)
    length = wide.shape[1]
    kh, kw = window.kernel
    taps = grad.new_empty((kh, kw, wide.shape[0], image.shape[0]))
    for a in range(kh):
        for b in range(kw):
            shift = a * dil_h * cols + b * dil_w
            # the last `shift` columns of the gradient are zero fill
            torch.mm(wide[:, :length - shift], image[:, shift:].t(), out=taps[a, b])
    return taps.permute(2, 3, 0, 1).contiguous()


def _tap_backward(grad, x, weight, has_bias: bool, needs, window: Window):
    grad_x = grad_w = grad_b = None
    if needs[0]:
        grad_x = _DIRECT_CONV_BACKWARD(grad, x, weight, False, (True, False, False), window)[0]
    if needs[1]:
        grad_w = _tap_weight_grad(grad, x, window)
    if needs[2] and has_bias:
        grad_b = grad.sum(dim=(0, 2, 3))
    return grad_x, grad_w, grad_b


# ---------------------------------------------------------------- Winograd (NNPACK)

class _Nnpack:
    """NNPACK through torch. It must be initialized before its first call,
    and its thread pool keeps the thread count of that first call, so it is
    offered only while torch's count is still that one."""

    def __init__(self):
        self._ready: bool | None = None
        self.threads: int | None = None

    @property
    def available(self) -> bool:
        if self._ready is None:
            self._ready = bool(torch.backends.nnpack.is_available())
        return self._ready and self.threads in (None, torch.get_num_threads())

    def convolution(self, x, weight, bias, window: Window) -> torch.Tensor:
        if self.threads is None:
            self.threads = torch.get_num_threads()
        return torch._nnpack_spatial_convolution(x.contiguous(), weight.contiguous(), bias,
                                                 list(window.pad), list(window.stride))


NNPACK = _Nnpack()


def _winograd_accepts(window: Window) -> bool:
    return (window.kernel == (3, 3) and window.stride == (1, 1) and window.dilation == (1, 1)
            and window.groups == 1 and all(p <= 1 for p in window.pad))


# ---------------------------------------------------------------- InnerProduct

def _as_matrix(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


def _ip_linear(x, weight, bias):
    return F.linear(x, weight, bias)


def _ip_addmm(x, weight, bias):
    flat = torch.mm(_as_matrix(x), weight.t()) if bias is None else \
        torch.addmm(bias, _as_matrix(x), weight.t())
    return flat.reshape(x.shape[:-1] + (weight.shape[0],))


def _ip_gemm_forward(gemm) -> Callable:
    def forward(x, weight, bias):
        flat = _as_matrix(x)
        out = x.new_empty((flat.shape[0], weight.shape[0]))
        gemm.mm(flat, weight.t(), out)
        if bias is not None:
            out += bias
        return out.reshape(x.shape[:-1] + (weight.shape[0],))
    return forward


def _ip_gemm_backward(gemm) -> Callable:
    def backward(grad, x, weight, has_bias: bool, needs):
        grad, flat = _as_matrix(grad.contiguous()), _as_matrix(x)
        grad_x = grad_w = grad_b = None
        if needs[0]:
            grad_x = x.new_empty(flat.shape)
            gemm.mm(grad, weight, grad_x)
            grad_x = grad_x.reshape(x.shape)
        if needs[1]:
            grad_w = weight.new_empty(weight.shape)
            gemm.mm(grad.t(), flat, grad_w)
        if needs[2] and has_bias:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b
    return backward


# ---------------------------------------------------------------- methods and kernels

@dataclass(frozen=True)
class Method:
    """One way to compute a layer forward and one way backward.
    `forward(x, weight, bias, *extra)`; `backward(grad, x, weight, has_bias,
    (need x, need weight, need bias), *extra) -> (grad x, grad weight, grad
    bias)`, None where not needed. `native`: the forward is torch operators
    whose own autograd backward is this backward. `nnpack`, `openblas`: the
    library it needs."""

    forward: Callable
    backward: Callable
    native: bool = False
    openblas: bool = False
    nnpack: bool = False
    #: the window geometries it computes (None: every one)
    accepts: Callable[[Window], bool] | None = None
    #: only for calls no backward runs through (its rounding would compound
    #: over training steps)
    inference_only: bool = False
    #: a backward only: its forward is another method's (which the forward
    #: race times), and it is offered only where backward runs
    backward_only: bool = False


def _conv_methods(transposed: bool) -> dict[str, Method]:
    methods = {
        "direct": Method(_direct_forward(transposed, False), _direct_backward(transposed, False),
                         native=True),
        "channels_last": Method(_direct_forward(transposed, True),
                                _direct_backward(transposed, True), native=True),
        "im2col": Method(_im2col_forward(_TORCH_GEMM, transposed),
                         _im2col_backward(_TORCH_GEMM, transposed)),
        "im2col_openblas": Method(_im2col_forward(OPENBLAS, transposed),
                                  _im2col_backward(OPENBLAS, transposed), openblas=True),
    }
    if not transposed:
        methods["tap_gemm"] = Method(methods["direct"].forward, _tap_backward,
                                     accepts=_tap_accepts, backward_only=True)
        methods["winograd"] = Method(NNPACK.convolution, methods["direct"].backward,
                                     nnpack=True, accepts=_winograd_accepts,
                                     inference_only=True)
    return methods


# method name -> Method, the first of each being the default
CONVOLUTION = _conv_methods(False)
DECONVOLUTION = _conv_methods(True)
INNER_PRODUCT = {
    "linear": Method(_ip_linear, _ip_gemm_backward(_TORCH_GEMM), native=True),
    "addmm": Method(_ip_addmm, _ip_gemm_backward(_TORCH_GEMM), native=True),
    "addmm_openblas": Method(_ip_gemm_forward(OPENBLAS), _ip_gemm_backward(OPENBLAS),
                             openblas=True),
}
FAMILIES = {"Convolution": CONVOLUTION, "Deconvolution": DECONVOLUTION,
            "InnerProduct": INNER_PRODUCT}
#: methods that handle only two spatial axes
TWO_D_ONLY = {"channels_last", "im2col", "im2col_openblas", "tap_gemm", "winograd"}


def available(method: Method, x: torch.Tensor, extra: tuple = ()) -> bool:
    """Whether `method` can run on tensors like `x` with the layer's `extra`
    arguments (a Window for (de)convolutions). OpenBLAS: CPU float32 and
    float64 only; NNPACK: CPU float32 only."""
    cpu = x.device.type == "cpu"
    if method.openblas and not (cpu and x.dtype in _BLAS_DTYPES and OPENBLAS.available):
        return False
    if method.nnpack and not (cpu and x.dtype == torch.float32 and NNPACK.available):
        return False
    return method.accepts is None or (bool(extra) and method.accepts(extra[0]))


def split_name(name: str) -> tuple[str, str]:
    """(forward method, backward method) of a kernel name."""
    forward, _, backward = name.partition("/")
    return forward, backward or forward


def join_name(forward: str, backward: str) -> str:
    return forward if forward == backward else f"{forward}/{backward}"


class _Composed(torch.autograd.Function):
    """One method's forward with another's backward (or a non-native
    method's own backward); keeps the input and the weight for backward."""

    @staticmethod
    def forward(ctx, forward, backward, x, weight, bias, *extra):
        ctx.backward, ctx.extra, ctx.has_bias = backward, extra, bias is not None
        ctx.save_for_backward(x, weight)
        return forward(x, weight, bias, *extra)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grads = ctx.backward(grad, x, weight, ctx.has_bias, ctx.needs_input_grad[2:5],
                             *ctx.extra)
        return (None, None) + tuple(grads) + (None,) * len(ctx.extra)


def kernel(family: str, name: str) -> Callable:
    """The implementation `fn(x, weight, bias, *extra)` of kernel `name`
    (`method` or `forward/backward`) of a family."""
    methods = FAMILIES[family]
    forward, backward = (methods[n] for n in split_name(name))
    if forward is backward and forward.native:
        return forward.forward

    def run(x, weight, bias, *extra):
        return _Composed.apply(forward.forward, backward.backward, x, weight, bias, *extra)
    return run
