"""How host memory freed by one pass is handed to the next (glibc only).

glibc's malloc serves every block above 32 MiB with a fresh `mmap` and
unmaps it on free, so a net whose activations and gradients are hundreds of
MiB gets every one of them from the kernel again on every pass: each page
faults and is zeroed before the first write (550,000 to 1,000,000 faults
per full-width FCN-8s training step on two cores; the README's speed
section has what they cost).
Caffe allocates its blobs once and reuses them. This module makes glibc
serve large blocks from the heap and keep freed heap memory, so a pass
reuses the last pass's pages. The price is memory: the process keeps its
high-water mark until it exits, and the heap fragments, so the peak
resident memory of a full-width FCN-8s training run is 14% to 18% above a
plain PyTorch module's although the bytes in use are lower (at the peak,
holes between live blocks add about 40% to them).

`TORCHCAFFE_MALLOC` picks the policy:
- `retain` (the default): as above.
- `lean`: the opposite trade. Every block from 4 MiB up gets a mapping of
  its own and is unmapped on free (glibc's default, minus the threshold
  that otherwise rises to 32 MiB and lets mid-sized blocks fragment the
  heap), so peak memory stays within a few percent of the bytes in use:
  below a plain PyTorch module's. Every pass then faults its activations in
  again, which costs time (the README's speed section has the figures);
  transparent huge pages cut that cost (`THP_MEM_ALLOC_ENABLE=1` in the
  environment before torch starts, with the kernel's THP mode `madvise` or
  `always`), because a 2 MiB page takes one fault instead of 512.
- `system`: malloc as it is.
Setting any of glibc's own MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_,
MALLOC_MMAP_MAX_ or MALLOC_TOP_PAD_ also leaves it alone (the user has
chosen). Other C libraries are left alone.
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
#: `lean`: blocks from this size up are mmap'd (a fixed threshold, so it
#: does not rise with the blocks freed)
LEAN_MMAP_THRESHOLD = 4 * 2**20
#: `lean`: glibc's default top-of-heap trim threshold
LEAN_TRIM_THRESHOLD = 128 * 2**10
POLICIES = ("retain", "lean", "system")

_state: str | None = None


def _policy() -> str:
    value = os.environ.get(ENV, "retain").strip().lower() or "retain"
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
    """Apply the policy once per process; returns what holds: 'retain',
    'lean', 'system' (asked for, or another C library) or 'environment'
    (glibc tuned by the user's MALLOC_* variables)."""
    global _state
    if _state is not None:
        return _state
    policy, libc = _policy(), _glibc()
    if policy == "system" or libc is None:
        _state = "system"
    elif any(name in os.environ for name in _GLIBC_ENV):
        _state = "environment"
    elif policy == "lean":
        libc.mallopt(_M_MMAP_THRESHOLD, LEAN_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, LEAN_TRIM_THRESHOLD)
        _state = "lean"
    else:
        # glibc versions that cap the threshold refuse the large value:
        # then no block is mmap'd at all
        if not libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
            libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        _state = "retain"
    log.debug("host memory: %s (%s=lean or system to change it)", _state, ENV)
    return _state
