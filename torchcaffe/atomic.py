"""Atomic file output: a file appears complete or not at all.

Content goes to a temporary file in the destination's folder, which replaces
the destination with one `os.replace` once fully written (and flushed to
disk); on any error the temporary file is removed and the destination is
untouched. Every writer of the project (caffemodels, solverstates,
prototxts, images, downloads' final rename) goes through here.

Temporary names are `.<destination name>.<pid>.<random><suffix>`: a process
killed mid-write leaves its temporary file behind, and `remove_stale_temps`
(run by a writer of many files, e.g. the solver for its snapshot prefix, when
it starts) deletes those whose writer process no longer exists. A failed write (disk full, read-only or forbidden folder) is a
`CaffeError` naming the destination, not the temporary file.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import CaffeError

log = logging.getLogger(__name__)


def _permissions_as_open(tmp: str) -> None:
    # mkstemp creates 0600 files; give the result what open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists, another user's (or not a pid we can judge): keep it
    return True


def remove_stale_temps(folder: str | os.PathLike, name_prefix: str) -> list[Path]:
    """Delete temporary files left in `folder` by killed writers of
    destinations whose names start with `name_prefix`; returns those removed.
    Files of live processes (this one included) are left alone."""
    pattern = re.compile(rf"\.{re.escape(name_prefix)}.*\.(\d+)\.[^.]+(\.[^.]*)?\Z")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    if removed:
        log.info("removed %d stale temporary file(s) of '%s' in %s", len(removed), name_prefix,
                 os.fspath(folder))
    return removed


def _write_error(path: Path, exc: OSError) -> CaffeError:
    reason = exc.strerror or str(exc)
    return CaffeError(f"cannot write {os.fspath(path)}: {reason}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that wants a file
    name; rename it onto `path` on success. The temporary name keeps the
    suffix, so writers that infer the format from it (PIL, scipy.io.savemat,
    torch.onnx) behave as for `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                   suffix=path.suffix)
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        yield Path(tmp)
        _permissions_as_open(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
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
