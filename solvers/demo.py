"""The whole FCN recipe on a built-in default, in a few minutes on a CPU.

    python -m solvers.demo [--out demo] [--seed 0] [--quick]

1. Data: synthetic scenes in the VOC2011 + SBD layouts
   (`data_layers.demo_scenes`: five classes told apart by colour and
   texture, each with parts a few pixels wide) under `<out>/data`; the
   held-out scenes are the seg11valid split, drawn from the same seed after
   the training scenes (the settings below were chosen on other seeds'
   scenes).
2. Base net: the shipped stand-in for ILSVRC VGG16 (`solvers/pretrained/`,
   made by `python -m solvers.demo_base`: the narrow VGG16 classifier with
   seeded MSRA weights, cast to the fully convolutional form as prepare-base
   does, pretrained from scratch on separate scenes of another seed and
   scaled to ILSVRC VGG16's profile of feature magnitudes; conv1_1 .. fc7).
3. Staged fine-tuning 32s -> 16s -> 8s with the reference nets (narrowed by
   a width multiplier) and the reference solvers (unnormalized pixel-sum
   loss, momentum 0.99, weight decay 5e-4, score layers from zero, fixed
   bilinear upsampling, each stage from the previous one's weights at 1/100
   of its rate) through `solvers.solve.run_chain`. Only the absolute rate is
   scaled (`--lr-scale`, every stage alike).
4. Results under `<out>/`: `results.md` / `results.json` (per stage the
   paper's four metrics, the mean IU of 3-pixel bands around object edges
   and the IU of every class), `overlays.png` (image | truth | 32s | 16s |
   8s for every held-out scene, classes blended over the image and
   outlined, with a legend), `curves.png` (training loss per stage and
   held-out mean IU); the full run (prototxts, weights, logs) in `<out>/run/`.

Everything is seeded and torch runs on one CPU thread (`--threads`): the
same command gives the same results.json on one machine.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from caffe_backend import caffe
from data_layers import demo_scenes
from data_layers.files import save_image
from data_layers.palette import VOC_CLASSES
from solvers.boundary import band_hist
from solvers.curves import plot_curves
from solvers import demo_base
from solvers.overlays import GAP, legend_strip, overlay, overlay_sheet, void_as_background
from solvers.score import scores_from_hist, write_json
from solvers.solve import StageOptions, parse_iters, run_chain, stage_iters
from torchcaffe import glog
from torchcaffe.atomic import write_text
from torchcaffe.errors import CaffeError
from torchcaffe.floats import float32_text

log = logging.getLogger(__name__)

CHAIN = ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s")
STRIDE_NAMES = {"voc-fcn32s": "FCN-32s", "voc-fcn16s": "FCN-16s", "voc-fcn8s": "FCN-8s"}
METRICS = (("overall_acc", "pixel acc."), ("mean_acc", "mean acc."),
           ("mean_iu", "mean IU"), ("fwavacc", "f.w. IU"))


@dataclass(frozen=True)
class DemoConfig:
    train: int          # training scenes
    val: int            # held-out scenes (the seg11valid split), all drawn in overlays.png
    height: int         # scene size in pixels
    width: int
    net_width: float    # channel multiplier of the VGG16 backbone
    iters: int | tuple[int, ...]  # iterations of every stage, or 32s / 16s / 8s
    test_interval: int  # seg tests every N iterations (and at each stage's end)
    lr_scale: float     # every stage's reference base_lr times this


# The reference rates (1e-10 / 1e-12 / 1e-14) fit a sum of per-pixel losses
# over ~500 x 500 inputs, ILSVRC VGG16 features and 100000 iterations per
# stage; LR_SCALE multiplies all three alike, so the stages keep the
# reference's exact 1/100 steps.
LR_SCALE = 1e2
DEFAULT = DemoConfig(train=40, val=12, height=160, width=160, net_width=1 / 16,
                     iters=(300, 500, 300), test_interval=100, lr_scale=LR_SCALE)
QUICK = DemoConfig(train=4, val=2, height=96, width=96, net_width=1 / 16, iters=4,
                   test_interval=2, lr_scale=LR_SCALE)


# ---------------------------------------------------------------- results

def stage_row(result, data_dir: Path, ids: Sequence[str]) -> dict:
    """The final seg test of one stage in percent: the paper's four metrics,
    IU per class and the mean IU of the edge bands (`solvers.boundary`)."""
    final = result.scores[-1]
    row = {"model": result.name, "iters": result.iters, "lr": result.lr}
    for key, _ in METRICS:
        row[key] = _percent(final[key])
    row["per_class_iu"] = {name: _percent(final["per_class_iu"][name])
                           for name in demo_scenes.CLASS_NAMES}
    predictions = result.folder / f"predictions-iter{result.iters}"
    hist = band_hist(((_voc_label(data_dir, i), _png(predictions / f"{i}.png")) for i in ids),
                     len(VOC_CLASSES))
    row["boundary_mean_iu"] = 100.0 * scores_from_hist(hist).mean_iu
    return row


def _percent(fraction: float | None) -> float | None:
    """None (a class neither in the truth nor predicted) stays None."""
    return None if fraction is None else 100.0 * fraction


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def _voc_label(data_dir: Path, image_id: str) -> np.ndarray:
    return _png(data_dir / "pascal" / "VOC2011" / "SegmentationClass" / f"{image_id}.png")


def _fmt(value, digits=1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _stage(row: dict) -> str:
    return STRIDE_NAMES.get(row["model"], row["model"])


def results_table(rows: Sequence[dict]) -> str:
    """The paper's table per stage, plus the edge-band mean IU."""
    labels = [label for _, label in METRICS] + ["boundary IU"]
    lines = ["| stage | iters | lr | " + " | ".join(labels) + " |",
             "|" + "---|" * (3 + len(labels))]
    for row in rows:
        values = [row[key] for key, _ in METRICS] + [row["boundary_mean_iu"]]
        lines.append(f"| {_stage(row)} | {row['iters']} | {float32_text(row['lr'])} | "
                     + " | ".join(map(_fmt, values)) + " |")
    return "\n".join(lines)


def class_table(rows: Sequence[dict]) -> str:
    """IU of every class (rows) at every stage (columns)."""
    lines = ["| class | " + " | ".join(map(_stage, rows)) + " |",
             "|" + "---|" * (1 + len(rows))]
    for name in demo_scenes.CLASS_NAMES:
        lines.append(f"| {name} | " + " | ".join(_fmt(row["per_class_iu"][name]) for row in rows)
                     + " |")
    return "\n".join(lines)


def findings(rows: Sequence[dict]) -> str:
    """What the numbers show, in words computed from them."""
    names = [_stage(r) for r in rows]
    ius = [r["mean_iu"] for r in rows]
    bands = [r["boundary_mean_iu"] for r in rows]
    text = ["Mean IU " + ", ".join(f"{n} {_fmt(v)}" for n, v in zip(names, ius)) + "; "
            "mean IU of the 3-pixel bands around object edges "
            + ", ".join(f"{n} {_fmt(v)}" for n, v in zip(names, bands)) + "."]
    steps = [b - a for a, b in zip(ius, ius[1:])]
    if steps and all(d > 0 for d in steps):
        text.append("Each finer stride scores higher, as in the paper.")
    elif steps:
        text.append("The finer strides do not all score higher here ("
                    + ", ".join(f"{b} - {a} = {d:+.1f}" for a, b, d in
                                zip(names, names[1:], steps)) + ").")
    band_steps = [b - a for a, b in zip(bands, bands[1:])]
    if band_steps and bands[-1] > bands[0]:
        text.append(f"The skips sharpen the edges: the band IU gains {bands[-1] - bands[0]:.1f} "
                    f"points from {names[0]} to {names[-1]}, the whole-image mean IU "
                    f"{ius[-1] - ius[0]:.1f}.")
    last = rows[-1]["per_class_iu"]
    objects = [k for k in demo_scenes.CLASS_NAMES if k != "background" and last[k] is not None]
    missed = [k for k in objects if not any(r["per_class_iu"][k] for r in rows)]
    if missed:
        text.append("Never found (IU 0 at every stage): " + ", ".join(missed) + ".")
    for row in rows:
        if objects and not any(row["per_class_iu"][k] for k in objects):
            text.append(f"{_stage(row)} finds no object (IU 0 for every object class).")
    if objects:
        weakest = min(objects, key=lambda k: last[k])
        text.append(f"At {names[-1]} the lowest IU of an object class is {last[weakest]:.1f} "
                    f"({weakest}).")
    return " ".join(text)


def write_results(out: Path, config: DemoConfig, rows: list[dict], base: str) -> dict:
    tables = {"stages": results_table(rows), "classes": class_table(rows)}
    summary = findings(rows)
    write_json(out / "results.json", {"config": asdict(config), "base_net": base,
                                      "stages": rows, "findings": summary})
    lrs = " / ".join(float32_text(r["lr"]) for r in rows)
    iters = " / ".join(str(r["iters"]) for r in rows)
    write_text(out / "results.md", "\n".join([
        "# FCN demo: staged 32s -> 16s -> 8s on synthetic scenes", "",
        f"{config.train} training / {config.val} held-out scenes of {config.height} x "
        f"{config.width} pixels with {len(demo_scenes.KINDS)} object classes; VGG16 "
        f"backbone at width {config.net_width:g}; {iters} iterations (32s / 16s / 8s) at "
        f"learning rates {lrs} (the reference's 1e-10 / 1e-12 / 1e-14 times "
        f"{config.lr_scale:g}; unnormalized loss, momentum 0.99, weight decay 5e-4, score "
        "layers from zero, fixed bilinear upsampling).", "", f"Base net: {base}.", "",
        "Scores (percent) of each stage's final weights on the held-out scenes; boundary IU "
        "is the mean IU over pixels within 3 pixels of a ground-truth edge:", "",
        tables["stages"], "", "IU per class:", "", tables["classes"], "", summary, "",
        "Files: overlays.png (image | ground truth | 32s | 16s | 8s for every held-out scene, "
        "classes blended over the image and outlined, legend below), curves.png (training "
        "loss and held-out mean IU per stage), run/ (prototxts, weights, logs, predictions).",
        ""]))
    return {**tables, "findings": summary}


# ---------------------------------------------------------------- pictures

#: overlay colour of each class, none close to the class's own paint
DISPLAY_COLOURS = {"bird": (0, 215, 255), "bottle": (255, 0, 200), "car": (255, 140, 0),
                   "dog": (40, 220, 40), "person": (230, 20, 20)}


def display_colours() -> dict[int, tuple[int, int, int]]:
    """Label index -> overlay RGB of every object class."""
    return {VOC_CLASSES.index(name): colour for name, colour in DISPLAY_COLOURS.items()}


def overlay_figure(data_dir: Path, ids: Sequence[str], predictions: Sequence[Path],
                   titles: Sequence[str], scale: int = 2) -> Image.Image:
    """image | ground truth | one column per prediction folder, every class
    blended over the image and outlined; a legend of the class colours."""
    colours = display_colours()
    voc = data_dir / "pascal" / "VOC2011"
    rows = []
    for image_id in ids:
        rgb = np.array(Image.open(voc / "JPEGImages" / f"{image_id}.jpg").convert("RGB"))
        labels = [void_as_background(_voc_label(data_dir, image_id))]
        labels += [_png(folder / f"{image_id}.png") for folder in predictions]
        rows.append([rgb.repeat(scale, 0).repeat(scale, 1)]
                    + [overlay(rgb, label, colours, scale) for label in labels])
    names = {label: VOC_CLASSES[label] for label in colours}
    width = len(titles) * (rows[0][0].shape[1] + GAP) + GAP
    return overlay_sheet(rows, titles, legend_strip(names, colours, width))


# ---------------------------------------------------------------- the demo

@dataclass(frozen=True)
class DemoInputs:
    """What the staged training starts from: the scenes and the base net."""
    data: Path                  # the VOC2011 + SBD layout data root
    splits: dict[str, list[str]]
    base: Path                  # the base net's caffemodel
    described: str              # the base net in words, for results.md


def checked_base(base: Path, config: DemoConfig) -> tuple[Path, dict]:
    """The base net and its record, checked against each other and against
    the demo's width."""
    weights, record = demo_base.shipped_base(base)
    made_width = record["recipe"]["width"]
    if made_width != config.net_width:
        raise CaffeError(f"{weights}: a base net of width {made_width:g}, the demo's nets "
                         f"have width {config.net_width:g}")
    return weights, record


def prepare_inputs(out: Path, config: DemoConfig, seed: int = 0,
                   base: Path = demo_base.SHIPPED) -> DemoInputs:
    """The demo's scenes (`out`/data) and its base net, checked against its
    record."""
    weights, record = checked_base(base, config)
    data = out / "data"
    splits = demo_scenes.generate(data, seed=seed, train=config.train, val=config.val,
                                  height=config.height, width=config.width)
    return DemoInputs(data, splits, weights, demo_base.describe(record))


def stage_options(config: DemoConfig, **overrides) -> StageOptions:
    """The staged training's options (`overrides`: other StageOptions fields)."""
    return StageOptions(iters=config.iters, test_interval=config.test_interval,
                        save_predictions="final", width=config.net_width,
                        lr_scale=config.lr_scale, **overrides)


def run_demo(out: Path, config: DemoConfig, seed: int = 0,
             base: Path = demo_base.SHIPPED) -> dict:
    out = Path(out).resolve()  # stages run inside their model folders
    checked_base(base, config)  # before anything of an earlier run is replaced
    out.mkdir(parents=True, exist_ok=True)
    if (out / "run").exists():  # its metrics.jsonl would grow across runs
        log.warning("replacing the previous run in %s", out / "run")
        shutil.rmtree(out / "run")
    inputs = prepare_inputs(out, config, seed, base)
    data, splits, described = inputs.data, inputs.splits, inputs.described
    caffe.set_random_seed(seed)  # dropout masks of the training
    results = run_chain(CHAIN[-1], out / "run", weights=inputs.base, data_dir=data,
                        opts=stage_options(config))
    rows = [stage_row(result, data, splits["val"]) for result in results]
    report = write_results(out, config, rows, described)
    folders = [r.folder / f"predictions-iter{r.iters}" for r in results]
    save_image(out / "overlays.png", overlay_figure(
        data, splits["val"], folders, ["image", "ground truth"] + [_stage(r) for r in rows]))
    plot_curves(out / "run" / "metrics.jsonl", out / "curves.png")
    return {**report, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m solvers.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo"),
                        help="output folder (default demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, weights, dropout")
    parser.add_argument("--quick", action="store_true",
                        help="a few iterations on a tiny set (for CI)")
    parser.add_argument("--iters", help="iterations of every stage, or per stage as "
                                        "32s,16s,8s (e.g. 1800,900,300) (override)")
    parser.add_argument("--lr-scale", type=float, help=f"override the rate scale ({LR_SCALE:g})")
    parser.add_argument("--base", type=Path, default=demo_base.SHIPPED,
                        help="the base net's caffemodel, with its JSON record beside it (made "
                             "by python -m solvers.demo_base; default the shipped one)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: reproducible, and fastest on a "
                             "busy machine)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    try:
        iters = None if args.iters is None else stage_iters(parse_iters(args.iters), CHAIN)
    except CaffeError as exc:
        parser.error(str(exc))
    # the console gets Caffe's lines and the progress bars; the run's train.log gets everything
    console = glog.console_handler()
    root = logging.getLogger()
    root.addHandler(console)
    config = QUICK if args.quick else DEFAULT
    if iters is not None:
        config = replace(config, iters=iters[0] if len(set(iters)) == 1 else tuple(iters),
                         test_interval=min(config.test_interval, *iters))
    if args.lr_scale is not None:
        config = replace(config, lr_scale=args.lr_scale)
    import torch
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        outcome = run_demo(args.out, config, args.seed, args.base)
    except CaffeError as exc:
        parser.exit(1, f"demo: error: {exc}\n")
    finally:
        root.removeHandler(console)
    print(outcome["stages"])
    print()
    print(outcome["classes"])
    print()
    print(outcome["findings"])
    print(f"results in {args.out}/ (results.md, overlays.png, curves.png) after "
          f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
