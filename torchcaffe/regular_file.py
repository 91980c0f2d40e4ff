"""Opening input files that must be regular files.

A FIFO, device or socket given where a weights file, solverstate, prototxt
or image is expected would block a reader forever (or stream without end);
they are refused as an `OSError` whose strerror says so, which every reader
already turns into its own error naming the file.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open `path` for binary reading if it is a regular file (following links)."""
    # O_NONBLOCK: opening a FIFO without a writer returns at once instead of blocking
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, device or socket?)",
                          os.fspath(path))
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: str | os.PathLike) -> bytes:
    with open_regular(path) as f:
        return f.read()
