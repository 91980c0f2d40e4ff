"""Atomic file output: a file appears complete or not at all.

Content goes to a temporary file in the destination's folder, which replaces
the destination with one `os.replace` once fully written (and flushed to
disk); on any error the temporary file is removed and the destination is
untouched. Every writer of the project (caffemodels, solverstates,
prototxts, images, downloads' final rename) goes through here.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


def _permissions_as_open(tmp: str) -> None:
    # mkstemp creates 0600 files; give the result what open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that wants a file
    name; rename it onto `path` on success. The temporary name keeps the
    suffix, so writers that infer the format from it (PIL, scipy.io.savemat,
    torch.onnx) behave as for `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        _permissions_as_open(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file object whose content becomes `path`, fsynced
    before the rename so a crash cannot leave a renamed but empty file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        yield out
        out.flush()
        os.fsync(out.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as out:
        out.write(text.encode())
