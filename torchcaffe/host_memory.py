"""How host memory freed by one pass is handed to the next.

A full-width FCN-8s training step allocates and frees hundreds of MiB of
activations and gradients. glibc's malloc serves every block above 32 MiB
with a fresh `mmap` and unmaps it on free, so each pass gets them from the
kernel again: every page faults and is zeroed before the first write
(550,000 to 1,000,000 faults per step on two cores; the README's speed
section has what they cost). Caffe allocates its blobs once and reuses them.

`TORCHCAFFE_MALLOC` picks the policy:
- `pool` (the default): torch's CPU blocks from 1 MiB up come from a pool
  (host_pool.cpp, built once per machine; see torchcaffe.host_pool). Each
  block is a mapping of its own, and a freed one stays resident for the
  next request of any size: kept blocks are cut down or moved side by side
  (mremap moves pages without copying or faulting them). Fresh pages are
  mapped only when nothing is kept, so the resident memory of large blocks
  never passes the most bytes in use at once, and a repeated pass faults
  almost nothing (hundreds of faults per step instead of hundreds of
  thousands). What torch leaves to malloc (numpy's arrays, the image
  decoders') stays on glibc's heap below 32 MiB; larger blocks are
  unmapped on free, so a caffemodel read once does not stay resident.
  Without a C++ compiler it falls back to `retain`, with a warning.
  `trim()` gives the kept blocks back.
- `retain`: glibc serves large blocks from its heap and keeps freed heap
  memory, so a pass reuses the last pass's pages. The heap fragments, so
  peak resident memory is 14% to 18% above a plain PyTorch module's,
  although the bytes in use are lower; the process keeps its high-water
  mark until it exits.
- `lean`: every block from 4 MiB up gets a mapping of its own and is
  unmapped on free (glibc's default, minus the threshold that otherwise
  rises to 32 MiB and lets mid-sized blocks fragment the heap): low peak
  memory, but every pass faults its activations in again. Transparent huge
  pages cut that cost (`THP_MEM_ALLOC_ENABLE=1` in the environment before
  torch starts, with the kernel's THP mode `madvise` or `always`).
- `system`: malloc as it is.
Setting any of glibc's own MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_,
MALLOC_MMAP_MAX_ or MALLOC_TOP_PAD_ leaves everything as it is (the user
has chosen). `retain` and `lean` need glibc; other C libraries are left
alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

import numpy as np
import torch

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
#: `lean`: blocks from this size up are mmap'd (a fixed threshold, so it
#: does not rise with the blocks freed)
LEAN_MMAP_THRESHOLD = 4 * 2**20
#: `lean`: glibc's default top-of-heap trim threshold
LEAN_TRIM_THRESHOLD = 128 * 2**10
#: `pool`: what torch leaves to malloc (numpy's and the image decoders'
#: arrays) stays on the heap below glibc's own largest threshold, with
#: this much free memory kept at its top, so a data layer's per-image
#: arrays are not faulted in again each time; larger blocks (a
#: caffemodel's) are unmapped on free
POOL_MMAP_THRESHOLD = 32 * 2**20
POOL_TRIM_THRESHOLD = 64 * 2**20
POLICIES = ("pool", "retain", "lean", "system")

_state: str | None = None


def _policy() -> str:
    value = os.environ.get(ENV, "pool").strip().lower() or "pool"
    if value not in POLICIES:
        raise CaffeError(f"{ENV}={os.environ[ENV]!r}: expected one of "
                         + ", ".join(repr(p) for p in POLICIES))
    return value


def _glibc():
    """glibc's handle, or None for another C library."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


def apply_policy() -> str:
    """Apply the policy once per process; returns what holds: 'pool',
    'retain', 'lean', 'system' (asked for, or another C library) or
    'environment' (glibc tuned by the user's MALLOC_* variables)."""
    global _state
    if _state is not None:
        return _state
    policy = _policy()
    if policy == "system":
        _state = "system"
    elif any(name in os.environ for name in _GLIBC_ENV):
        _state = "environment"
    elif policy == "pool" and _install_pool():
        _tune_glibc("pool")
        _state = "pool"
    else:
        _state = _tune_glibc("lean" if policy == "lean" else "retain")
    log.debug("host memory: %s (%s to change it)", _state, ENV)
    return _state


def _install_pool() -> bool:
    from .host_pool import PoolUnavailable, install

    try:
        install()
    except PoolUnavailable as reason:
        log.warning("host memory: the pool allocator is unavailable (%s); freed memory "
                    "is kept by malloc instead (%s=retain), which takes more", reason, ENV)
        return False
    return True


def _tune_glibc(policy: str) -> str:
    """Set glibc up for `policy`; returns it, or 'system' for another C library."""
    libc = _glibc()
    if libc is None:
        return "system"
    mmap_threshold, trim_threshold = {
        "retain": (MMAP_THRESHOLD, TRIM_THRESHOLD),
        "lean": (LEAN_MMAP_THRESHOLD, LEAN_TRIM_THRESHOLD),
        "pool": (POOL_MMAP_THRESHOLD, POOL_TRIM_THRESHOLD)}[policy]
    # glibc versions that cap the threshold refuse retain's large value:
    # then no block is mmap'd at all
    if not libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold):
        libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    return policy


def float32_array(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialized float32 array for data made anew on every pass (a
    data layer's batch), from where freed memory is best reused: the pool
    when it holds (the next batch gets this one's pages, whichever thread
    asks), else numpy's malloc (glibc's arena per thread would map a
    batch made on a prefetch thread afresh each time if torch asked)."""
    if _state == "pool":
        return torch.empty(shape, dtype=torch.float32).numpy()
    return np.empty(shape, np.float32)


def trim() -> None:
    """Give the memory kept for reuse back to the system (the pool's kept
    blocks, or malloc's free heap pages under `retain`); the next pass
    faults it in again."""
    from . import host_pool

    host_pool.trim()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
