"""The allocator of the `pool` host-memory policy (host_pool.cpp; host_memory
says what it does and why).

torch lets Python swap its CUDA allocator but not its CPU one, so the pool is
a few hundred lines of C++ built once per machine and torch install with the
system's C++ compiler (`$CXX`, else `c++`) against the headers torch ships,
cached as `$XDG_CACHE_HOME/torchcaffe/host_pool-<key>.so` (or under
`~/.cache`), and loaded with ctypes. Anything that stops it (no compiler, not
Linux, a read-only cache) raises PoolUnavailable with the reason.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("host_pool.cpp")
#: torch's requests from this size up go to the pool; smaller ones to malloc
MIN_BLOCK = 2**20
_STATS = ("in_use", "kept", "high_water", "mapped", "moves", "unmapped")

_library: ctypes.CDLL | None = None


class PoolUnavailable(Exception):
    """The pool cannot be built or installed here; the message says why."""


def _compiler() -> str:
    return os.environ.get("CXX") or "c++"


def library_path() -> Path:
    """Where the built pool for this source and torch lives."""
    import torch

    key = hashlib.sha1()
    for part in (SOURCE.read_bytes(), torch.__version__.encode(), torch.__file__.encode(),
                 platform.machine().encode()):
        key.update(part)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "torchcaffe" / f"host_pool-{key.hexdigest()[:16]}.so"


def _build(target: Path) -> None:
    import torch

    cxx = _compiler()
    if shutil.which(cxx) is None:
        raise PoolUnavailable(f"no C++ compiler to build it ({cxx!r} not found; set CXX)")
    torch_dir = Path(torch.__file__).parent
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp",
                                       dir=target.parent)
    except OSError as exc:
        raise PoolUnavailable(f"cannot write its build to {target.parent}: {exc}") from None
    os.close(fd)
    command = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC",
               f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
               "-I", str(torch_dir / "include"), str(SOURCE), "-o", scratch,
               "-L", str(torch_dir / "lib"), "-lc10", f"-Wl,-rpath,{torch_dir / 'lib'}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise PoolUnavailable(f"{cxx} failed to build {SOURCE.name}: {last}")
        os.replace(scratch, target)  # whole, or not at all
    except (OSError, subprocess.SubprocessError) as exc:
        raise PoolUnavailable(f"building {SOURCE.name} with {cxx}: {exc}") from None
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def install() -> None:
    """Build (once per machine) and install the pool as torch's CPU allocator."""
    global _library
    if _library is not None:
        return
    if not sys.platform.startswith("linux"):
        raise PoolUnavailable("it needs Linux (mremap)")
    path = library_path()
    if not path.exists():
        _build(path)
    try:
        library = ctypes.CDLL(str(path))
    except OSError:
        _build(path)  # a damaged build from before: once more
        try:
            library = ctypes.CDLL(str(path))
        except OSError as exc:
            raise PoolUnavailable(f"cannot load {path}: {exc}") from None
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
