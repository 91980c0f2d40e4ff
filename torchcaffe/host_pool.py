"""The allocator of the `pool` host-memory policy (host_pool.cpp; host_memory
says what it does and why).

torch lets Python swap its CUDA allocator but not its CPU one, so the pool is
a few hundred lines of C++ built against the headers torch ships (see
torchcaffe.native: once per machine and torch install, cached as
`~/.cache/torchcaffe/host_pool-<key>.so`). Anything that stops it (no
compiler, not Linux, a read-only cache) raises PoolUnavailable with the
reason.
"""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

from .native import NativeUnavailable, load

SOURCE = Path(__file__).with_name("host_pool.cpp")
#: torch's requests from this size up go to the pool; smaller ones to malloc
MIN_BLOCK = 2**20
_STATS = ("in_use", "kept", "high_water", "mapped", "moves", "unmapped")

_library: ctypes.CDLL | None = None


class PoolUnavailable(Exception):
    """The pool cannot be built or installed here; the message says why."""


def install() -> None:
    """Build (once per machine) and install the pool as torch's CPU allocator."""
    global _library
    if _library is not None:
        return
    if not sys.platform.startswith("linux"):
        raise PoolUnavailable("it needs Linux (mremap)")
    try:
        library = load(SOURCE, link_c10=True)
    except NativeUnavailable as reason:
        raise PoolUnavailable(str(reason)) from None
    library.torchcaffe_pool_install.argtypes = [ctypes.c_size_t]
    code = library.torchcaffe_pool_install(MIN_BLOCK)
    if code:
        raise PoolUnavailable(f"torch did not take it as its CPU allocator (code {code})")
    _library = library


def stats() -> dict[str, int] | None:
    """The pool's counters (bytes in use, kept and at the high-water mark,
    bytes mapped fresh, pieces moved, bytes unmapped), or None without it."""
    if _library is None:
        return None
    values = (ctypes.c_size_t * len(_STATS))()
    _library.torchcaffe_pool_stats(values)
    return dict(zip(_STATS, values))


def trim() -> None:
    """Unmap the blocks the pool keeps for reuse."""
    if _library is not None:
        _library.torchcaffe_pool_trim()
