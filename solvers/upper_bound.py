"""Appendix A: upper bounds on mean IU for predictions at a coarser scale.

    python -m solvers.upper_bound voc-fcn32s --data data [--factors 128,64,32,16,8,4]

A net whose output is `factor` times coarser than the image can at best
predict one label per `factor` x `factor` cell. The paper bounds what that
costs by downsampling the ground truth by the factor, upsampling it back and
scoring it against the original (VOC2011 val: 128 -> 50.9, 64 -> 73.3,
32 -> 86.1, 16 -> 92.8, 8 -> 96.4, 4 -> 98.5 mean IU). Here:

- downsampling takes one label per cell: `nearest` (default) the label at
  the cell's centre pixel, `mode` its most frequent non-void label (the
  best one label can do); a void (255) choice becomes background (0), since
  a prediction is always some class;
- upsampling back repeats each cell's label over its cell (cells start at
  the top-left pixel; the last row / column of cells may be partial);
- scoring is the project's (`solvers.score`): void truth pixels count
  nowhere.

The labels come from the model's own Python data layer over `--data` (any
dataset the data layers read: VOC, SBDD, NYUD, SIFT Flow, PASCAL-Context,
the synthetic set; see `solvers.labels`), by default its test split.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from data_layers.palette import VOID
from solvers.labels import read_labels
from solvers.score import fast_hist, scores_from_hist
from torchcaffe.errors import CaffeError

log = logging.getLogger(__name__)

PAPER_FACTORS = (128, 64, 32, 16, 8, 4)
METHODS = ("nearest", "mode")


def coarsen(label: np.ndarray, factor: int, method: str = "nearest") -> np.ndarray:
    """`label` (H x W class indices, 255 void) downsampled by `factor` and
    upsampled back to H x W: one label per factor x factor cell."""
    if factor < 1:
        raise ValueError(f"factor must be at least 1, got {factor}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    label = np.asarray(label)
    height, width = label.shape
    if method == "nearest":
        rows = np.minimum(np.arange(0, height, factor) + factor // 2, height - 1)
        cols = np.minimum(np.arange(0, width, factor) + factor // 2, width - 1)
        cells = label[np.ix_(rows, cols)].astype(np.int64)
    else:
        cells = _block_mode(label, factor)
    cells[cells == VOID] = 0
    full = np.repeat(np.repeat(cells, factor, axis=0), factor, axis=1)
    return full[:height, :width]


def _block_mode(label: np.ndarray, factor: int) -> np.ndarray:
    """The most frequent non-void label of every cell (ties: the lowest;
    an all-void cell: 255)."""
    height, width = label.shape
    rows, cols = -(-height // factor), -(-width // factor)
    padded = np.full((rows * factor, cols * factor), VOID, dtype=np.int64)
    padded[:height, :width] = label
    blocks = padded.reshape(rows, factor, cols, factor).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    classes = [c for c in np.unique(label) if c != VOID]
    if not classes:
        return np.full((rows, cols), VOID, dtype=np.int64)
    counts = np.stack([(blocks == c).sum(-1) for c in classes], axis=-1)
    mode = np.asarray(classes, dtype=np.int64)[counts.argmax(-1)]
    return np.where(counts.max(-1) > 0, mode, VOID)


def upper_bounds(labels, classes: int, factors: Sequence[int], method: str = "nearest",
                 names: Sequence[str] | None = None) -> dict[int, object]:
    """Scores (`SegScores`) of the coarsened ground truth per factor, over an
    iterable of label maps."""
    hists = {f: np.zeros((classes, classes), dtype=np.int64) for f in factors}
    for label in labels:
        label = np.asarray(label)
        if label.size and label[label != VOID].max(initial=0) >= classes:
            raise CaffeError(f"upper bound: a label holds class {int(label[label != VOID].max())} "
                             f"but the net has {classes} classes")
        for factor in factors:
            hists[factor] += fast_hist(label, coarsen(label, factor, method), classes)
    return {f: scores_from_hist(h, names) for f, h in hists.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m solvers.upper_bound",
        description="Appendix A: mean IU of ground truth downsampled by a factor and "
                    "upsampled back (the best a prediction at that scale can do).")
    parser.add_argument("model", help="a model whose data layer reads the dataset, e.g. voc-fcn32s")
    parser.add_argument("--data", type=Path, default=Path("data"), help="dataset root (default ./data)")
    parser.add_argument("--split", help="split to read (default: the model's test split)")
    parser.add_argument("--label", help="label top to score (SIFT Flow: sem or geo)")
    parser.add_argument("--factors", default=",".join(map(str, PAPER_FACTORS)),
                        help="comma list of factors (default: the paper's 128,...,4)")
    parser.add_argument("--method", choices=METHODS, default="nearest",
                        help="one label per cell: its centre pixel's or its most frequent")
    parser.add_argument("--images", type=int, help="only the first N images")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        factors = [int(f) for f in args.factors.split(",") if f.strip()]
    except ValueError:
        parser.error(f"--factors {args.factors}: give whole numbers, e.g. 32,16,8")
    if not factors or min(factors) < 1:
        parser.error(f"--factors {args.factors}: every factor must be at least 1")
    try:
        classes, names, count, labels = read_labels(args.model, args.data, args.split,
                                                    args.label, args.images)
        scores = upper_bounds(tqdm(labels, total=count, desc="labels", unit="img"),
                              classes, factors, args.method, names)
    except CaffeError as exc:
        parser.exit(1, f"upper_bound: error: {exc}\n")
    print(f"{'factor':>6}  {'mean IU':>7}  {'pixel acc':>9}")
    for factor, score in scores.items():
        print(f"{factor:>6}  {100 * score.mean_iu:7.1f}  {100 * score.overall_acc:9.1f}")
    if args.json:
        document = {str(f): {"mean_iu": s.mean_iu, "overall_acc": s.overall_acc,
                             "per_class_iu": s.per_class_iu} for f, s in scores.items()}
        args.json.write_text(json.dumps({"model": args.model, "method": args.method,
                                         "images": count, "factors": document}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
