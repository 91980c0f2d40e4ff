"""Learning curves as a PNG: training loss and test mean IU against iteration.

Input: a run's metrics.jsonl (train records: step, loss; test records:
step, mean_iu) or a training log with Caffe's display lines
("Iteration N (...), loss = L") and the seg tests' ">>> Iteration N mean
IU X" lines. Drawn with matplotlib (Agg): loss above, held-out mean IU in
percent below, one colour per stage, stage boundaries as dashed lines.

    python -m solvers.curves runs/voc-fcn8s/metrics.jsonl -o curves.png
"""
from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from solvers.run_dir import read_metrics
from torchcaffe.atomic import atomic_path

_DISPLAY = re.compile(r"Iteration (\d+) \([^)]*\), loss = ([-+0-9.eEinfa]+)")
_MEAN_IU = re.compile(r">>> Iteration (\d+) mean IU ([-+0-9.eEinfa]+)")
#: matplotlib's default colour cycle ("tab10"), one colour per stage
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
         "#7f7f7f", "#bcbd22", "#17becf")


@dataclass
class Curves:
    loss: list[tuple[int, float]] = field(default_factory=list)
    mean_iu: list[tuple[int, float]] = field(default_factory=list)
    stage_starts: list[tuple[int, str]] = field(default_factory=list)


def read_curves(path: str | os.PathLike) -> Curves:
    """Curves from a metrics.jsonl, or from a training log (any other name)."""
    path = Path(path)
    curves = Curves()
    if path.suffix == ".jsonl":
        stage = None
        for record in read_metrics(path):
            step = record.get("step")
            if record.get("stage") != stage and step is not None:
                stage = record.get("stage")
                curves.stage_starts.append((step - record.get("iter", step), str(stage)))
            value = record.get("loss") if record.get("kind") == "train" else record.get("mean_iu")
            if step is None or value is None:
                continue
            if record.get("kind") == "train":
                curves.loss.append((step, float(value)))
            elif record.get("kind") == "test" and record.get("task") in (None, "seg", "sem"):
                curves.mean_iu.append((step, float(value)))
        return curves
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if m := _DISPLAY.search(line):
            curves.loss.append((int(m[1]), float(m[2])))
        elif m := _MEAN_IU.search(line):
            curves.mean_iu.append((int(m[1]), float(m[2])))
    return curves


def _stage_spans(curves: Curves, last_step: float) -> list[tuple[float, float, str]]:
    """(first step, last step, name) of each stage; one unnamed span when none is known."""
    starts = curves.stage_starts or [(0, "")]
    ends = [s for s, _ in starts[1:]] + [last_step]
    return [(start, end, name) for (start, name), end in zip(starts, ends)]


def _in_span(points, start, end, first: bool):
    return [(x, y) for x, y in points if (start <= x if first else start < x) and x <= end]


DPI = 100


def curves_figure(curves: Curves, size: tuple[int, int] = (1000, 700)):
    """The matplotlib figure (`size` in pixels at DPI) of the loss and
    held-out mean-IU curves: one colour per stage, stage boundaries as
    dashed lines, mean IU in percent on an axis from 0 to 100."""
    from matplotlib.figure import Figure

    xs = [x for x, _ in curves.loss + curves.mean_iu] + [s for s, _ in curves.stage_starts]
    last = max(xs, default=1)
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    loss_axes, iu_axes = figure.subplots(2, 1, sharex=True)
    colours = TAB10
    for index, (start, end, name) in enumerate(_stage_spans(curves, last)):
        colour = colours[index % len(colours)]
        label = name or None
        loss = _in_span(curves.loss, start, end, first=index == 0)
        if loss:
            loss_axes.plot(*zip(*loss), color=colour, linewidth=1.5, label=label)
        iu = _in_span(curves.mean_iu, start, end, first=index == 0)
        if iu:
            iu_axes.plot([x for x, _ in iu], [100.0 * y for _, y in iu], color=colour,
                         marker="o", markersize=4, linewidth=1.5, label=label)
        if index:
            for axes in (loss_axes, iu_axes):
                axes.axvline(start, color="0.5", linestyle="--", linewidth=1)
    positive = [y for _, y in curves.loss if math.isfinite(y) and y > 0]
    if positive and max(positive) > 20 * min(positive):
        loss_axes.set_yscale("log")
    loss_axes.set_ylabel("training loss")
    loss_axes.set_title("training loss (mean over each display interval)")
    iu_axes.set_ylim(0, 100)
    iu_axes.set_ylabel("mean IU (%)")
    iu_axes.set_title("held-out mean IU")
    iu_axes.set_xlabel("iteration (all stages)")
    iu_axes.set_xlim(0, last)
    for axes in (loss_axes, iu_axes):
        axes.grid(True, color="0.9")
        if axes.get_legend_handles_labels()[1]:
            axes.legend(loc="best", title="stage")
        if not axes.lines:
            axes.text(0.5, 0.5, "no data", transform=axes.transAxes, ha="center")
    figure.tight_layout()
    return figure


def plot_curves(source: str | os.PathLike, out: str | os.PathLike,
                size: tuple[int, int] = (1000, 700)) -> Path:
    """Draw the curves of `source` (see read_curves) into the PNG `out`."""
    figure = curves_figure(read_curves(source), size)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m solvers.curves", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="metrics.jsonl or a training log")
    parser.add_argument("-o", "--out", default="curves.png", help="PNG to write")
    args = parser.parse_args(argv)
    print(plot_curves(args.source, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
