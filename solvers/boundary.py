"""How well a segmentation follows object edges: IU within a band around them.

Coarse predictions (FCN-32s) find objects but smear their outlines; the
skips of FCN-16s / 8s are there to sharpen them. Mean IU over whole images
is dominated by object interiors, so the edges are scored apart: the band
holds every labelled pixel within `width` pixels (chessboard distance) of
a place where the ground truth changes class, void excluded, and the usual
confusion matrix and IU are computed over those pixels only.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from scipy import ndimage

from data_layers.palette import VOID
from solvers.overlays import edges
from solvers.score import fast_hist

BAND_WIDTH = 3  # pixels on either side of a ground-truth edge


def band_mask(label: np.ndarray, width: int = BAND_WIDTH) -> np.ndarray:
    """Labelled pixels within `width` pixels of a change of class in `label`
    (void, VOC's 255, counts as no class: its rings border every object)."""
    classes = np.where(label == VOID, 0, label)
    near = ndimage.binary_dilation(edges(classes), structure=np.ones((3, 3), bool),
                                   iterations=width)
    return near & (label != VOID)


def band_hist(pairs: Iterable[tuple[np.ndarray, np.ndarray]], n: int,
              width: int = BAND_WIDTH) -> np.ndarray:
    """n x n confusion counts over the edge bands of (truth, prediction) pairs."""
    hist = np.zeros((n, n), dtype=np.int64)
    for truth, prediction in pairs:
        band = band_mask(truth, width)
        hist += fast_hist(truth[band], prediction[band], n)
    return hist
