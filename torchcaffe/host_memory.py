"""Keep freed host memory in the process for the next allocation.

glibc's malloc serves every block above 32 MiB with a fresh `mmap` and
unmaps it on free, so a net whose activations and gradients are hundreds of
MiB gets every one of them from the kernel again on every pass: each page
faults and is zeroed before the first write (650,000 to 800,000 faults
per full-width FCN-8s training step, 7% to 13% of its time on two cores).
Caffe allocates its blobs once and reuses them. This module makes glibc
serve large blocks from the heap and keep freed heap memory, so a pass
reuses the last pass's pages. The price is memory: the process keeps its
high-water mark until it exits, and the heap fragments, so the peak
resident memory of a training run is about 10-15% higher than with
glibc's defaults although the bytes in use are the same.

`TORCHCAFFE_MALLOC=system` leaves malloc as it is; so does setting any of
glibc's own MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_MAX_
or MALLOC_TOP_PAD_ (the user has chosen). Other C libraries are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

from .errors import CaffeError

log = logging.getLogger(__name__)

ENV = "TORCHCAFFE_MALLOC"
_GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_",
              "MALLOC_TOP_PAD_")
# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
#: blocks up to this size come from the heap (larger ones stay mmap'd)
MMAP_THRESHOLD = 2**30
#: free memory at the heap's top kept rather than returned to the system
#: (mallopt takes an int: 2 GiB is the most it can say)
TRIM_THRESHOLD = 2**31 - 1

_state: str | None = None


def _policy() -> str:
    value = os.environ.get(ENV, "retain").strip().lower() or "retain"
    if value not in ("retain", "system"):
        raise CaffeError(f"{ENV}={os.environ[ENV]!r}: expected 'retain' or 'system'")
    return value


def _glibc():
    """glibc's handle, or None for another C library."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


def retain_freed_memory() -> str:
    """Apply the policy once per process; returns what holds: 'retain',
    'system' (asked for, or another C library) or 'environment' (glibc
    tuned by the user's MALLOC_* variables)."""
    global _state
    if _state is not None:
        return _state
    if _policy() == "system":
        _state = "system"
    elif any(name in os.environ for name in _GLIBC_ENV):
        _state = "environment"
    else:
        libc = _glibc()
        if libc is None:
            _state = "system"
        else:
            # glibc versions that cap the threshold refuse the large value:
            # then no block is mmap'd at all
            if not libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
                libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            _state = "retain"
    log.debug("host memory: %s (%s=system to leave malloc alone)", _state, ENV)
    return _state
