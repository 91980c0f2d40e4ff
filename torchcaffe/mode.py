"""Caffe's process-wide mode: CPU or GPU, the device id, the random seed, and
the opt-in fast-math switches.

Like `Caffe::mode()`, the mode is global and read at every forward: a net built
in CPU mode moves to the GPU on its next forward after `set_mode_gpu()`.
Default math is float32-exact (TF32 off, NCHW layout); `set_tf32(True)` and
`set_channels_last(True)` trade exactness for speed on GPUs that support them.
"""
from __future__ import annotations

import logging
import random

import torch

from .errors import CaffeError

log = logging.getLogger(__name__)


class _Mode:
    """The one instance below holds the settings; functions of this module change it."""

    def __init__(self) -> None:
        self.gpu = False
        self.device_id = 0
        self.channels_last = False
        self.tf32 = False
        self.seed: int | None = None
        self._filler_generator: torch.Generator | None = None

    def device(self) -> torch.device:
        return torch.device("cuda", self.device_id) if self.gpu else torch.device("cpu")

    def filler_generator(self) -> torch.Generator:
        if self._filler_generator is None:
            self._filler_generator = torch.Generator()
            # unseeded Caffe draws its seed from the system; so do we
            self._filler_generator.manual_seed(
                self.seed if self.seed is not None else random.SystemRandom().getrandbits(63))
        return self._filler_generator


_MODE = _Mode()


def set_mode_cpu() -> None:
    _MODE.gpu = False


def set_mode_gpu() -> None:
    if not torch.cuda.is_available():
        raise CaffeError("set_mode_gpu: no CUDA device is available to PyTorch")
    _MODE.gpu = True
    # PyTorch enables TF32 in cuDNN by default; Caffe's float32 math needs it off
    set_tf32(_MODE.tf32)


def set_device(device_id: int) -> None:
    if torch.cuda.is_available() and not 0 <= device_id < torch.cuda.device_count():
        raise CaffeError(f"set_device({device_id}): only {torch.cuda.device_count()} "
                         "CUDA device(s) are available")
    _MODE.device_id = int(device_id)
    if _MODE.gpu:
        torch.cuda.set_device(_MODE.device_id)


def set_random_seed(seed: int) -> None:
    """Seed Caffe's RNG: weight fillers, and dropout masks on every device."""
    _MODE.seed = int(seed)
    _MODE._filler_generator = None
    torch.manual_seed(_MODE.seed)


def set_tf32(enabled: bool) -> None:
    """Allow TensorFloat-32 in GPU convolutions and matmuls (not Caffe-exact)."""
    _MODE.tf32 = bool(enabled)
    torch.backends.cuda.matmul.allow_tf32 = _MODE.tf32
    torch.backends.cudnn.allow_tf32 = _MODE.tf32


def set_channels_last(enabled: bool) -> None:
    """Keep 4-d params and inputs in NHWC memory layout on the GPU (same values,
    different summation order in some kernels)."""
    _MODE.channels_last = bool(enabled)


def device() -> torch.device:
    """The device nets compute on in the current mode."""
    return _MODE.device()


def channels_last() -> bool:
    return _MODE.channels_last and _MODE.gpu


def filler_generator() -> torch.Generator:
    """The CPU generator weight fillers draw from (seeded by `set_random_seed`)."""
    return _MODE.filler_generator()
