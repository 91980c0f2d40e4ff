"""Scoring throughput on VOC-sized (500 x 500) label maps, 21 classes.

Rows: `fast_hist` (one bincount over truth * n + prediction) against the
obvious bincount-free confusion matrix, `np.add.at` on (truth, prediction)
index pairs; and the whole per-image scoring step (argmax over the 21 x 500
x 500 scores on the device + fast_hist) in images per second.
"""
from __future__ import annotations


import numpy as np
import torch

from bench.timing import best_seconds
from solvers.score import fast_hist

N_CLASSES = 21
SIZE = 500
REPEATS = 20


def _naive_hist(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    keep = (a >= 0) & (a < n)
    hist = np.zeros((n, n), dtype=np.int64)
    np.add.at(hist, (a[keep].astype(np.int64), b[keep].astype(np.int64)), 1)
    return hist


def run(device: str) -> list[dict]:
    rng = np.random.RandomState(0)
    truth = rng.randint(0, N_CLASSES, (SIZE, SIZE)).astype(np.uint8)
    truth[rng.rand(SIZE, SIZE) < 0.05] = 255  # void border pixels
    pred = rng.randint(0, N_CLASSES, (SIZE, SIZE))
    assert (fast_hist(truth, pred, N_CLASSES) == _naive_hist(truth, pred, N_CLASSES)).all()
    rows = []
    if device == "cpu":  # the histogram itself is host work whatever the device
        fast = best_seconds(lambda: fast_hist(truth, pred, N_CLASSES), REPEATS)
        naive = best_seconds(lambda: _naive_hist(truth, pred, N_CLASSES), REPEATS)
        rows.append({"metric": "fast_hist 500x500, 21 classes", "unit": "ms",
                     "value": fast * 1e3, "baseline": "np.add.at confusion matrix",
                     "baseline_value": naive * 1e3})
    scores = torch.from_numpy(rng.randn(N_CLASSES, SIZE, SIZE).astype(np.float32)).to(device)

    def score_one():
        labels = scores.argmax(0).cpu().numpy()
        fast_hist(truth, labels, N_CLASSES)
    ms = best_seconds(score_one, REPEATS) * 1e3
    rows.append({"metric": "scoring (argmax + fast_hist) per 500x500 image", "unit": "img/s",
                 "value": 1e3 / ms, "baseline": None, "baseline_value": None})
    return rows
