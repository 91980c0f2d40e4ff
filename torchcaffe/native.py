"""Small C++ helpers built on the user's machine: compiled once per machine,
torch install and source with the system's C++ compiler (`$CXX`, else
`c++`), cached as `$XDG_CACHE_HOME/torchcaffe/<name>-<key>.so` (or under
`~/.cache`), written whole or not at all, and loaded with ctypes. Anything
that stops it (no compiler, a failed build, a read-only cache) raises
NativeUnavailable with the reason; each caller has a fallback.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path


class NativeUnavailable(Exception):
    """A helper cannot be built or loaded here; the message says why."""


def _compiler() -> str:
    return os.environ.get("CXX") or "c++"


def library_path(source: Path, flags: tuple[str, ...] = ()) -> Path:
    """Where the build of `source` with `flags` for this torch lives."""
    import torch

    key = hashlib.sha1()
    for part in (source.read_bytes(), torch.__version__.encode(), torch.__file__.encode(),
                 platform.machine().encode(), " ".join(flags).encode()):
        key.update(part)
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "torchcaffe" / f"{source.stem}-{key.hexdigest()[:16]}.so"


def _build(source: Path, target: Path, flags: tuple[str, ...], link_c10: bool) -> None:
    import torch

    cxx = _compiler()
    if shutil.which(cxx) is None:
        raise NativeUnavailable(f"no C++ compiler to build it ({cxx!r} not found; set CXX)")
    torch_dir = Path(torch.__file__).parent
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp",
                                       dir=target.parent)
    except OSError as exc:
        raise NativeUnavailable(f"cannot write its build to {target.parent}: {exc}") from None
    os.close(fd)
    command = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", *flags, str(source), "-o", scratch]
    if link_c10:
        command += [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.compiled_with_cxx11_abi())}",
                    "-I", str(torch_dir / "include"), "-L", str(torch_dir / "lib"), "-lc10",
                    f"-Wl,-rpath,{torch_dir / 'lib'}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise NativeUnavailable(f"{cxx} failed to build {source.name}: {last}")
        os.replace(scratch, target)  # whole, or not at all
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeUnavailable(f"building {source.name} with {cxx}: {exc}") from None
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def load(source: Path, flags: tuple[str, ...] = (), link_c10: bool = False) -> ctypes.CDLL:
    """The built `source` (built first when this machine has no build of it)."""
    path = library_path(source, flags)
    if not path.exists():
        _build(source, path, flags, link_c10)
    try:
        return ctypes.CDLL(str(path))
    except OSError:
        _build(source, path, flags, link_c10)  # a damaged build from before: once more
        try:
            return ctypes.CDLL(str(path))
        except OSError as exc:
            raise NativeUnavailable(f"cannot load {path}: {exc}") from None
