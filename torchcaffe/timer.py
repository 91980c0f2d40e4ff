"""pycaffe's `caffe.Timer`: start / stop, elapsed milliseconds in `ms`."""
from __future__ import annotations

import logging
import time

import torch

from . import mode

log = logging.getLogger(__name__)


def _sync() -> None:
    # GPU work is asynchronous; Caffe's GPU timer measures it with CUDA events
    if mode.device().type == "cuda":
        torch.cuda.synchronize()


class Timer:
    """Wall-clock timer (device work included in GPU mode), as Caffe's Timer."""

    def __init__(self):
        self._started: float | None = None
        self._elapsed = 0.0
        self._has_run = False

    def start(self) -> None:
        if self._started is None:
            _sync()
            self._started = time.perf_counter()
            self._has_run = True

    def stop(self) -> None:
        if self._started is not None:
            _sync()
            self._elapsed = time.perf_counter() - self._started
            self._started = None

    @property
    def ms(self) -> float:
        """Milliseconds between the last start and stop (stops a running timer)."""
        if not self._has_run:
            log.warning("Timer has never been run before reading time.")
            return 0.0
        self.stop()
        return self._elapsed * 1000.0
