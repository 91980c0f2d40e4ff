"""Atomic writers for the files data_layers produces (text lists, palette
PNGs, .mat labels), on top of torchcaffe.atomic."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from torchcaffe.atomic import atomic_path, write_text


def write_lines(path: str | os.PathLike, lines: list[str]) -> None:
    write_text(path, "".join(f"{line}\n" for line in lines))


def save_image(path: str | os.PathLike, image: Image.Image, **options) -> None:
    """Save a PIL image; the format follows `path`'s suffix."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=Image.registered_extensions()[Path(path).suffix.lower()], **options)


# MATLAB 5 files open with a 116-byte text description; scipy writes the
# current time into it, which would make the same data give other bytes
_MAT_DESCRIPTION = b"MATLAB 5.0 MAT-file, written by data_layers".ljust(116)


def save_mat(path: str | os.PathLike, variables: dict[str, np.ndarray | dict]) -> None:
    """Save a MATLAB 5 file; the same variables always give the same bytes."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables)
    data = _MAT_DESCRIPTION + buffer.getvalue()[len(_MAT_DESCRIPTION):]
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
