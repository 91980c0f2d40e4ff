"""Learning curves as a PNG: training loss and test mean IU against iteration.

Input: a run's metrics.jsonl (train records: step, loss; test records:
step, mean_iu) or a training log with Caffe's display lines
("Iteration N (...), loss = L") and the seg tests' ">>> Iteration N mean
IU X" lines. Drawn with PIL (no plotting library needed): two panels, linear
axes, tick labels, stage boundaries as vertical lines when known.

    python -m solvers.curves runs/voc-fcn8s/metrics.jsonl -o curves.png
"""
from __future__ import annotations

import argparse
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from data_layers.files import save_image
from solvers.run_dir import read_metrics

_DISPLAY = re.compile(r"Iteration (\d+) \([^)]*\), loss = ([-+0-9.eEinfa]+)")
_MEAN_IU = re.compile(r">>> Iteration (\d+) mean IU ([-+0-9.eEinfa]+)")


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


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not high > low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _panel(draw: ImageDraw.ImageDraw, box, points, title: str, color, stages, x_range,
           font) -> None:
    left, top, right, bottom = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((left, top - 14), title, fill=(0, 0, 0), font=font)
    finite = [(x, y) for x, y in points if math.isfinite(y)]
    x0, x1 = x_range
    for start, name in stages:
        sx = left + (start - x0) / (x1 - x0 or 1) * (right - left)
        draw.line([(sx, top), (sx, bottom)], fill=(180, 180, 180))
        draw.text((sx + 3, top + 2), name, fill=(120, 120, 120), font=font)
    for tick in _ticks(x0, x1):
        tx = left + (tick - x0) / (x1 - x0 or 1) * (right - left)
        draw.line([(tx, bottom), (tx, bottom + 4)], fill=(0, 0, 0))
        draw.text((tx - 10, bottom + 6), f"{tick:g}", fill=(0, 0, 0), font=font)
    if not finite:
        draw.text((left + 10, (top + bottom) / 2), "no data", fill=(0, 0, 0), font=font)
        return
    ys = [y for _, y in finite]
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y0, y1 = y0 - 0.5 * (abs(y0) or 1), y1 + 0.5 * (abs(y1) or 1)
    for tick in _ticks(y0, y1):
        ty = bottom - (tick - y0) / (y1 - y0) * (bottom - top)
        draw.line([(left - 4, ty), (left, ty)], fill=(0, 0, 0))
        draw.text((4, ty - 6), f"{tick:.4g}", fill=(0, 0, 0), font=font)
    xy = [(left + (x - x0) / (x1 - x0 or 1) * (right - left),
           bottom - (y - y0) / (y1 - y0) * (bottom - top)) for x, y in finite]
    if len(xy) > 1:
        draw.line(xy, fill=color, width=2)
    for px, py in xy if len(xy) < 50 else xy[-1:]:
        draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)


def plot_curves(source: str | os.PathLike, out: str | os.PathLike,
                size: tuple[int, int] = (900, 600)) -> Path:
    """Draw the loss and mean-IU curves of `source` into the PNG `out`."""
    curves = read_curves(source)
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    xs = [x for x, _ in curves.loss + curves.mean_iu] + [s for s, _ in curves.stage_starts]
    x_range = (min(xs, default=0), max(xs, default=1))
    half = height // 2
    _panel(draw, (80, 30, width - 20, half - 30), curves.loss, "training loss", (200, 40, 40),
           curves.stage_starts, x_range, font)
    _panel(draw, (80, half + 20, width - 20, height - 30), curves.mean_iu, "test mean IU",
           (40, 90, 200), curves.stage_starts, x_range, font)
    draw.text((width // 2 - 20, height - 14), "iteration", fill=(0, 0, 0), font=font)
    save_image(out, image)
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
