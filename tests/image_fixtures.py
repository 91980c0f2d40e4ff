"""Small image datasets on disk for the Caffe data-layer tests: image files
written with Pillow, list files, and what OpenCV (the library Caffe reads
images with) makes of them, as the independent reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the test extra) is the reference decoder")


def textured_rgb(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random RGB image (JPEG-friendly, distinct per seed)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def write_images(folder: Path, sizes: list[tuple[int, int]], ext: str = "png",
                 mode: str = "RGB") -> list[tuple[str, int]]:
    """Images img_<i>.<ext> of the given (height, width) sizes, labels 10 + i;
    returns the (name, label) entries."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (height, width) in enumerate(sizes):
        name = f"img_{i}.{ext}"
        image = Image.fromarray(textured_rgb(i, height, width)).convert(mode)
        image.save(folder / name, **({"quality": 90} if ext == "jpg" else {}))
        entries.append((name, 10 + i))
    return entries


def write_list(path: Path, entries) -> Path:
    path.write_text("".join(f"{name} {label}\n" for name, label in entries))
    return path


def cv_read(path: Path, color: bool = True) -> np.ndarray:
    """H x W x C uint8 as cv::imread gives it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    assert image is not None, path
    return image if image.ndim == 3 else image[:, :, None]


def chw(image: np.ndarray) -> np.ndarray:
    return image.transpose(2, 0, 1).astype(np.float32)
