"""The SGD solver's update (L2 regularization, momentum, data -= update) in
one pass over each param's data, diff and history, instead of the six
passes of torch ops: the step is bound by memory traffic, and on a
full-width FCN it took about 0.44 s of a 9 s CPU training step.

fused_sgd.cpp does the same float operations in the same order as the
torch ops (`_torch_update`), so the result is bit for bit the same. That
depends on torch's kernels too (its `add_` with an alpha rounds once, as an
fma), so the fused update is used only after it has matched them here, on
this machine and torch, on a sample with both a threaded and a plain tail.
Built once per machine (torchcaffe.native) where a C++ compiler exists, on
x86-64 with AVX2 and FMA or on 64-bit ARM; elsewhere, when anything fails,
or with TORCHCAFFE_FUSED_SGD=0, the solver keeps the torch ops.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
from pathlib import Path

import torch

from .errors import CaffeError
from .native import NativeUnavailable, load

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_sgd.cpp")
ENV = "TORCHCAFFE_FUSED_SGD"

_library: ctypes.CDLL | None = None
_checked: bool | None = None


def _flags() -> tuple[str, ...] | None:
    """Compiler flags for this CPU, or None where the fused update is not offered."""
    base = ("-O3", "-ffp-contract=off", "-pthread")
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return base
    if machine in ("x86_64", "amd64"):
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line.split(":", 1)[1].split() for line in f
                              if line.startswith("flags")), [])
        except OSError:
            return None
        if "avx2" in flags and "fma" in flags:
            return base + ("-mavx2", "-mfma")
    return None


def _torch_update(data, diff, history, decay: float, momentum: float, rate: float) -> None:
    """The solver's torch ops for one param, mirrored (SGDSolver's L2
    _regularize, _compute_update_value and the final subtraction; a solver
    test checks that the two paths agree bit for bit)."""
    if decay:
        diff.add_(data, alpha=decay)
    history.mul_(momentum)
    diff.mul_(rate)
    history.add_(diff)
    diff.copy_(history)
    data.sub_(diff)


def _run(data, diff, history, decay: float, momentum: float, rate: float) -> None:
    _library.torchcaffe_sgd_update(data.data_ptr(), diff.data_ptr(), history.data_ptr(),
                                   data.numel(), decay, momentum, rate,
                                   torch.get_num_threads())


def _matches_torch() -> bool:
    generator = torch.Generator().manual_seed(7)
    for count in (4099, (1 << 19) + 37):  # unthreaded, and threaded with a ragged tail
        for decay in (0.0005, 0.0):
            arrays = [torch.randn(count, generator=generator) for _ in range(3)]
            arrays[2].mul_(1e3)  # history far larger than the diffs, as in training
            fused = [a.clone() for a in arrays]
            _torch_update(*arrays, decay, 0.9, 1e-4)
            _run(*fused, decay, 0.9, 1e-4)
            if not all(torch.equal(a, b) for a, b in zip(arrays, fused)):
                return False
    return True


def available() -> bool:
    """Whether the fused update is built, loaded and matches torch's ops here
    (and not turned off with TORCHCAFFE_FUSED_SGD=0)."""
    global _library, _checked
    setting = os.environ.get(ENV, "1")
    if setting not in ("0", "1"):
        raise CaffeError(f"{ENV}={setting!r}: use 1 (the fused update where it is built and "
                         "matches torch's ops; the default) or 0 (torch's ops)")
    if setting == "0":
        return False
    if _checked is None:
        _checked = False
        flags = _flags()
        if flags is None:
            log.debug("fused SGD update: not offered on this CPU")
            return False
        try:
            library = load(SOURCE, flags)
        except NativeUnavailable as reason:
            log.info("fused SGD update unavailable (%s): the solver uses torch's ops", reason)
            return False
        library.torchcaffe_sgd_update.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
            ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_int]
        library.torchcaffe_sgd_update.restype = None
        _library = library
        _checked = _matches_torch()
        if not _checked:
            log.info("fused SGD update: differs from torch's ops in rounding here; "
                     "the solver uses torch's ops")
    return _checked


def fits(tensors: list[torch.Tensor]) -> bool:
    """CPU float32 tensors laid out densely (what the C++ loop walks)."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()
               for t in tensors)


def update(datas, diffs, history, decays: list[float], momentum: float,
           rates: list[float]) -> None:
    """Every param's update in one pass each (call `available()` first)."""
    for data, diff, kept, decay, rate in zip(datas, diffs, history, decays, rates):
        _run(data, diff, kept, decay, momentum, rate)
