"""Segmentation scoring: the confusion matrix and the FCN paper's metrics.

`fast_hist(a, b, n)` counts pixel pairs (truth a, prediction b) over truth
labels in [0, n): rows are truth, columns prediction, so labels outside
that range (255, VOC's void) count nowhere. From the matrix:

- overall accuracy: correct pixels / labelled pixels;
- mean accuracy: per-class accuracy (diagonal / row sum) averaged over the
  classes that occur in the truth;
- per-class IU: diagonal / (row sum + column sum - diagonal); a class absent
  from both truth and prediction has no IU (NaN) and is left out of the mean
  IU, a class only predicted has IU 0 and counts;
- frequency-weighted IU: IU weighted by the classes' share of the truth.

`seg_tests(solver, save_format, dataset, layer, gt)` scores the solver's
first test net with the train net's weights, as the reference's score.py:
one forward per id of `dataset`, argmax of `layer` against blob `gt`,
optionally saving each prediction as a VOC-palette PNG named by its id into
`save_format.format(iter)`, and writing the results as JSON.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from torchcaffe.atomic import write_text
from data_layers.palette import VOC_CLASSES, save_label_png
from torchcaffe.progress import progress

log = logging.getLogger(__name__)


def fast_hist(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """n x n confusion counts of truth `a` (row) against prediction `b`
    (column); pixels whose truth is outside [0, n) are ignored."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"fast_hist: truth has {a.size} pixels, prediction {b.size}")
    if b.size and (b.min() < 0 or b.max() >= n):
        raise ValueError(f"fast_hist: predictions must lie in [0, {n}), got "
                         f"{b.min()}..{b.max()}")
    if a.size and (a.min() < 0 or a.max() > 255):
        keep = (a >= 0) & (a < n)
        a, b = a[keep], b[keep]
    # truth in [n, 255] (255 is void) lands in bins past n * n, which are cut
    # off: label maps need no mask and no copy of their kept pixels
    index = a.astype(np.intp) * n + b
    return np.bincount(index, minlength=n * n)[:n * n].reshape(n, n)


@dataclass
class SegScores:
    """The metrics of one confusion matrix (NaN where undefined)."""

    overall_acc: float
    mean_acc: float
    mean_iu: float
    fwavacc: float
    per_class_iu: dict[str, float]
    loss: float | None = None
    iter: int | None = None
    pixels: int = 0
    hist: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        """JSON-ready (NaN becomes None)."""
        out = asdict(self)
        out.pop("hist")
        out["per_class_iu"] = {k: _json_number(v) for k, v in self.per_class_iu.items()}
        for key in ("overall_acc", "mean_acc", "mean_iu", "fwavacc", "loss"):
            out[key] = _json_number(out[key])
        out["confusion"] = self.hist.astype(np.int64).tolist() if self.hist is not None else None
        return out


def _json_number(value):
    return None if value is None or not np.isfinite(value) else float(value)


def _nanmean(values: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: the mean is NaN
        return float(np.nanmean(values))


def class_names(n: int, names: Sequence[str] | None = None) -> list[str]:
    if names is not None:
        if len(names) != n:
            raise ValueError(f"{len(names)} class names given for {n} classes")
        return list(names)
    return list(VOC_CLASSES) if n == len(VOC_CLASSES) else [f"class_{k}" for k in range(n)]


def scores_from_hist(hist: np.ndarray, names: Sequence[str] | None = None,
                     loss: float | None = None, iteration: int | None = None) -> SegScores:
    """Overall / mean accuracy, mean / per-class / frequency-weighted IU."""
    hist = np.asarray(hist, dtype=np.float64)
    n = hist.shape[0]
    diag = np.diag(hist)
    truth = hist.sum(1)
    predicted = hist.sum(0)
    total = hist.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        overall = diag.sum() / total if total else np.nan
        per_class_acc = diag / truth
        iu = diag / (truth + predicted - diag)
    freq = truth / total if total else np.zeros(n)
    present = freq > 0
    return SegScores(
        overall_acc=float(overall),
        mean_acc=_nanmean(per_class_acc),
        mean_iu=_nanmean(iu),
        fwavacc=float((freq[present] * iu[present]).sum()) if total else float("nan"),
        per_class_iu=dict(zip(class_names(n, names), map(float, iu))),
        loss=loss, iter=iteration, pixels=int(total), hist=hist)


def _argmax_labels(blob) -> np.ndarray:
    """argmax over channels of the first image of `blob`, as uint8-able ints
    (on the device when the blob is a torchcaffe blob: only labels travel)."""
    tensor = getattr(blob, "data_tensor", None)
    if tensor is not None:
        return tensor[0].argmax(0).cpu().numpy()
    return blob.data[0].argmax(0)


def compute_hist(net, save_dir, dataset: Sequence[str], layer: str = "score",
                 gt: str = "label", loss: str | None = "loss",
                 names: Sequence[str] | None = None):
    """Forward `net` once per id in `dataset`, accumulating the confusion of
    argmax(`layer`) against `gt`; returns (hist, mean of blob `loss` or None).
    With `save_dir`, each prediction is saved there as `<id>.png`."""
    import torch  # scoring builds no autograd graph, whichever backend runs

    n_cl = net.blobs[layer].channels
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
    hist = np.zeros((n_cl, n_cl), dtype=np.int64)
    total_loss = 0.0
    has_loss = bool(loss) and loss in net.blobs
    with torch.no_grad():
        for image_id in progress(dataset, desc=f"scoring {layer}", unit="img", leave=False):
            net.forward()
            pred = _argmax_labels(net.blobs[layer])
            hist += fast_hist(net.blobs[gt].data[0, 0].astype(np.int64), pred, n_cl)
            if save_dir:
                save_label_png(Path(save_dir) / f"{image_id}.png", pred.astype(np.uint8))
            if has_loss:
                total_loss += float(net.blobs[loss].data.flat[0])
    mean_loss = total_loss / len(dataset) if has_loss and len(dataset) else None
    return hist, mean_loss


def seg_tests(solver, save_format, dataset: Sequence[str], layer: str = "score",
              gt: str = "label", loss: str | None = "loss",
              names: Sequence[str] | None = None, results: str | os.PathLike | None = None,
              net_index: int = 0) -> SegScores:
    """Score test net `net_index` with the train net's current weights."""
    log.info(">>> Begin seg tests")
    net = solver.test_nets[net_index]
    net.share_with(solver.net)
    return do_seg_tests(net, solver.iter, save_format, dataset, layer, gt, loss=loss,
                        names=names, results=results)


def do_seg_tests(net, iter: int, save_format, dataset: Sequence[str], layer: str = "score",
                 gt: str = "label", loss: str | None = "loss",
                 names: Sequence[str] | None = None,
                 results: str | os.PathLike | None = None) -> SegScores:
    """Score `net` over `dataset` and log the metrics. `save_format` (e.g.
    'preds-{}', False for none) names the prediction folder by iteration;
    the results JSON goes to `results`, else `scores.json` in that folder."""
    save_dir = save_format.format(iter) if save_format else None
    hist, mean_loss = compute_hist(net, save_dir, dataset, layer, gt, loss, names)
    scores = scores_from_hist(hist, names, mean_loss, iter)
    if mean_loss is not None:
        log.info(">>> Iteration %d loss %.6g", iter, mean_loss)
    log.info(">>> Iteration %d overall accuracy %.4f", iter, scores.overall_acc)
    log.info(">>> Iteration %d mean accuracy %.4f", iter, scores.mean_acc)
    log.info(">>> Iteration %d mean IU %.4f", iter, scores.mean_iu)
    log.info(">>> Iteration %d fwavacc %.4f", iter, scores.fwavacc)
    log.info(">>> Iteration %d per-class IU %s", iter, ", ".join(
        f"{name} {value:.3f}" for name, value in scores.per_class_iu.items()
        if np.isfinite(value)))
    if results is None and save_dir:
        results = Path(save_dir) / "scores.json"
    if results is not None:
        write_json(results, scores.as_dict())
    return scores


def write_json(path: str | os.PathLike, document) -> None:
    """Write JSON atomically (temp file beside it, then rename)."""
    write_text(path, json.dumps(document, indent=1) + "\n")
