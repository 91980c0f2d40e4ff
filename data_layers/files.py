"""Atomic writers for the files data_layers produces (text lists, palette
PNGs, .mat labels), on top of torchcaffe.atomic."""
from __future__ import annotations

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


def save_mat(path: str | os.PathLike, variables: dict[str, np.ndarray | dict]) -> None:
    with atomic_path(path) as tmp:
        scipy.io.savemat(tmp, variables)
