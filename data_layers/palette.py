"""PASCAL VOC's colour map and label images stored as palette PNGs.

VOC's SegmentationClass PNGs are 8-bit palette images: the pixel value is
the class index (255 = void) and the palette only colours it. Class k's
colour spreads the bits of k over the high bits of R, G and B (bit 0 -> R,
bit 1 -> G, bit 2 -> B, then the next three bits one position lower), so
neighbouring indices get far-apart colours; the devkit's `labelcolormap`
defines it this way.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from data_layers.files import save_image

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus",
    "car", "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike",
    "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOID = 255


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The VOC colour map as a `num_colors` x 3 uint8 array of RGB colours."""
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        code, shift = index, 7
        while code:
            for channel in range(3):
                palette[index, channel] |= ((code >> channel) & 1) << shift
            code >>= 3
            shift -= 1
    return palette


def label_image(label: np.ndarray) -> Image.Image:
    """A 2-D uint8 label array as a palette ('P' mode) image in VOC colours."""
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"a label image needs a 2-D uint8 array, got {label.dtype} {label.shape}")
    image = Image.fromarray(label)  # mode 'L'; a palette turns it into 'P'
    image.putpalette(voc_palette().reshape(-1).tolist())
    return image


def save_label_png(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write `label` (2-D uint8 class indices) as a VOC palette PNG, atomically."""
    save_image(path, label_image(label))
