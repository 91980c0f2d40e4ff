"""Atomic file writing for everything data_layers produces.

A file appears complete or not at all: content goes to a temporary file in
the destination folder, which then replaces the destination in one rename.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`.

    The temporary name keeps `path`'s suffix so that writers which infer the
    format from the name (PIL, scipy.io.savemat) behave as for `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_lines(path: str | os.PathLike, lines: list[str]) -> None:
    write_text(path, "".join(f"{line}\n" for line in lines))


def save_image(path: str | os.PathLike, image: Image.Image, **options) -> None:
    """Save a PIL image; the format follows `path`'s suffix."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=Image.registered_extensions()[Path(path).suffix.lower()], **options)


def save_mat(path: str | os.PathLike, variables: dict[str, np.ndarray | dict]) -> None:
    with atomic_path(path) as tmp:
        scipy.io.savemat(tmp, variables)
