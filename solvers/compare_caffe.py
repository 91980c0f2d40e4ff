"""The demo's staged run on BVLC Caffe and on torchcaffe, side by side.

    python -m solvers.compare_caffe --caffe-pythonpath <caffe>/python [--out compare]

A reduced demo (`solvers.demo`: the same scenes, seed and solvers, fewer
iterations per stage) is trained twice from one base net: once on BVLC's
pycaffe and once on torchcaffe, each in a fresh process (`FCN_CAFFE`
selects the runtime). The nets have no Dropout layers, since each runtime
draws its masks from its own generator; nothing else in the run is random
(the data layers' order comes from their own seeded generator, the score
layers start from zero). Both start from the demo's shipped base net.

The recipe (momentum 0.99, a loss summed over pixels) amplifies any
rounding difference from one iteration to the next, so float tolerance is
measured, not assumed: a third run, on torchcaffe from the same base net
with every weight moved by one float32 ulp, shows how far two runs drift
apart from a difference of that size. BVLC Caffe and torchcaffe agree
within float tolerance when they differ by no more than that.

Printed (and written to `<out>/comparison.md` / `.json`): per stage and
metric the values of the three runs and the differences from torchcaffe's,
each stage's final training loss, the largest differences, how the
relative loss difference grows over the iterations, and `<out>/curves.png`
with the runs' learning curves overlaid. Without an importable BVLC
pycaffe it says so in one line and exits 0.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

from solvers.run_dir import read_metrics
from solvers.score import write_json
from torchcaffe.atomic import atomic_path, write_text
from torchcaffe.floats import float32_text

log = logging.getLogger(__name__)

#: the runs: (folder, backend, base net key in inputs.json, label)
RUNS = {"torchcaffe": ("torchcaffe", "base", "torchcaffe"),
        "pycaffe": ("pycaffe", "base", "BVLC Caffe"),
        "nudged": ("torchcaffe", "nudged_base", "torchcaffe, base 1 ulp off")}
PYTHONPATH_ENV = "FCN_PYCAFFE_PYTHONPATH"
ITERS = (100, 300, 200)  # 32s / 16s / 8s: a few hundred, where the demo runs 100 / 500 / 300
METRICS = (("overall_acc", "pixel acc."), ("mean_acc", "mean acc."), ("mean_iu", "mean IU"),
           ("fwavacc", "f.w. IU"), ("boundary_mean_iu", "boundary IU"))


def reduced_config(iters=ITERS):
    from solvers.demo import DEFAULT

    return replace(DEFAULT, iters=tuple(iters), test_interval=min(DEFAULT.test_interval, *iters))


def child_env(backend: str, caffe_pythonpath: Path | None) -> dict:
    """The environment of a run on `backend`: one CPU thread for either
    runtime's math (torch, OpenBLAS), BVLC's python/ first on the path."""
    env = {**os.environ, "FCN_CAFFE": backend, "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "GLOG_minloglevel": "1"}
    if backend == "pycaffe" and caffe_pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(caffe_pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def pycaffe_missing(caffe_pythonpath: Path | None) -> str | None:
    """Why no BVLC pycaffe can run here, or None."""
    probe = subprocess.run([sys.executable, "-c", "from caffe_backend import caffe"],
                           env=child_env("pycaffe", caffe_pythonpath), capture_output=True,
                           text=True)
    if probe.returncode == 0:
        return None
    lines = [line for line in probe.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {probe.returncode}"


# ---------------------------------------------------------------- one backend's run

def train_once(prepared: Path, out: Path, seed: int, base_key: str = "base") -> None:
    """The staged run on this process's backend from the prepared inputs
    (the base net under `base_key` in inputs.json); writes `out`/rows.json
    (the demo's table rows) beside `out`/run."""
    import torch

    from caffe_backend import caffe
    from solvers.demo import CHAIN, stage_options, stage_row
    from solvers.solve import run_chain

    torch.set_num_threads(1)
    inputs = json.loads((prepared / "inputs.json").read_text())
    config = reduced_config(inputs["iters"])
    caffe.set_random_seed(seed)
    data = Path(inputs["data"])
    results = run_chain(CHAIN[-1], out / "run", weights=Path(inputs[base_key]), data_dir=data,
                        opts=stage_options(config, dropout=False))
    rows = [stage_row(result, data, inputs["val"]) for result in results]
    write_json(out / "rows.json", rows)


# ---------------------------------------------------------------- the comparison

def prepare(out: Path, config, seed: int) -> Path:
    """Scenes and base net, once, on torchcaffe (this process's backend)."""
    from solvers.demo import prepare_inputs

    inputs = prepare_inputs(out, config, seed)
    nudged = nudge(inputs.base, out / "base-nudged.caffemodel")
    write_json(out / "inputs.json", {"data": str(inputs.data), "val": inputs.splits["val"],
                                     "base": str(inputs.base), "nudged_base": str(nudged),
                                     "iters": list(config.iters)})
    return out


def nudge(weights: Path, out: Path) -> Path:
    """A copy of the caffemodel with every value moved up by one float32 ulp."""
    import numpy as np

    from torchcaffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter.FromString(weights.read_bytes())
    for layer in net.layer:
        for blob in layer.blobs:
            values = np.asarray(blob.data, dtype=np.float32)
            del blob.data[:]
            blob.data.extend(np.nextafter(values, np.float32(np.inf)).tolist())
    with atomic_path(out) as tmp:
        Path(tmp).write_bytes(net.SerializeToString())
    return out


def run_once(run: str, prepared: Path, out: Path, seed: int,
             caffe_pythonpath: Path | None) -> float:
    """Train run `run` (see RUNS) in a fresh process; returns its wall time."""
    backend, base_key, label = RUNS[run]
    started = time.perf_counter()
    log_path = out / f"{run}.log"
    out.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as console:
        done = subprocess.run([sys.executable, "-m", "solvers.compare_caffe", "--train-once",
                               str(prepared), "--base-key", base_key, "--out", str(out / run),
                               "--seed", str(seed)],
                              env=child_env(backend, caffe_pythonpath), stdout=console,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        raise RuntimeError(f"the {label} run failed (exit {done.returncode}); "
                           f"the end of {log_path}:\n" + "\n".join(tail))
    return time.perf_counter() - started


def final_losses(metrics: Path) -> dict[str, float]:
    """Each stage's last training loss (the mean over its last display interval)."""
    last = {}
    for record in read_metrics(metrics):
        if record.get("kind") == "train" and record.get("loss") is not None:
            last[record["stage"]] = float(record["loss"])
    return last


def loss_curve(metrics: Path) -> dict[int, float]:
    return {r["step"]: float(r["loss"]) for r in read_metrics(metrics)
            if r.get("kind") == "train" and r.get("loss") is not None}


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def compare(out: Path, runs: Sequence[str] = tuple(RUNS)) -> dict:
    """The runs' rows and losses; each run's differences from torchcaffe's
    and the largest of them."""
    from solvers.demo import STRIDE_NAMES

    rows = {r: json.loads((out / r / "rows.json").read_text()) for r in runs}
    losses = {r: final_losses(out / r / "run" / "metrics.jsonl") for r in runs}
    curves = {r: loss_curve(out / r / "run" / "metrics.jsonl") for r in runs}
    stages = []
    for index, ours in enumerate(rows["torchcaffe"]):
        name = ours["model"]
        values = {key: [rows[r][index][key] for r in runs] for key, _ in METRICS}
        values["final_loss"] = [losses[r][name] for r in runs]
        stages.append({"stage": STRIDE_NAMES.get(name, name), "model": name,
                       "iters": ours["iters"], "lr": ours["lr"], "values": values})
    steps = sorted(curves["torchcaffe"])
    largest = {}
    for column, run in enumerate(runs[1:], 1):
        largest[run] = {
            "mean_iu": max(abs(s["values"]["mean_iu"][0] - s["values"]["mean_iu"][column])
                           for s in stages),
            "final_loss": max(relative(s["values"]["final_loss"][0],
                                       s["values"]["final_loss"][column]) for s in stages),
            "loss_curve": [relative(curves["torchcaffe"][k], curves[run][k]) for k in steps],
        }
    return {"runs": list(runs), "stages": stages, "steps": steps, "largest": largest}


def _number(value: float | None, key: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.6g}" if key == "final_loss" else f"{value:.2f}"


def _difference(a, b, key: str) -> str:
    if a is None or b is None:
        return "n/a"
    if key == "final_loss":
        return f"{b - a:+.3g} ({relative(a, b):.2g})"
    return f"{b - a:+.2f}"


def comparison_table(result: dict) -> str:
    """Per stage and metric: torchcaffe's value, then each other run's value
    and its difference from torchcaffe's (final loss: also relative)."""
    labels = dict(METRICS) | {"final_loss": "final train loss"}
    others = [RUNS[r][2] for r in result["runs"][1:]]
    header = ["stage", "iters", "lr", "metric", "torchcaffe"]
    for label in others:
        header += [label, "difference"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for stage in result["stages"]:
        for key, (ours, *theirs) in stage["values"].items():
            cells = [stage["stage"], str(stage["iters"]), float32_text(stage["lr"]),
                     labels[key], _number(ours, key)]
            for value in theirs:
                cells += [_number(value, key), _difference(ours, value, key)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def growth(result: dict, run: str) -> str:
    """The relative loss difference from torchcaffe's at a few points."""
    curve = result["largest"][run]["loss_curve"]
    picks = sorted({0, 1, 2, 4, len(curve) // 2, len(curve) - 1} & set(range(len(curve))))
    return ", ".join(f"{result['steps'][i]}: {curve[i]:.1g}" for i in picks)


def summary(result: dict) -> str:
    text = []
    for run in result["runs"][1:]:
        largest = result["largest"][run]
        text.append(f"{RUNS[run][2]} against torchcaffe: largest difference in mean IU "
                    f"{largest['mean_iu']:.2f} points, in a stage's final training loss "
                    f"{largest['final_loss']:.2g} (relative); the relative difference of the "
                    f"training loss by iteration: {growth(result, run)}.")
    return "\n".join(text)


def curves_figure(out: Path, runs: Sequence[str] = tuple(RUNS)):
    """The runs' loss and mean-IU curves on shared axes."""
    from matplotlib.figure import Figure

    from solvers.curves import read_curves

    figure = Figure(figsize=(10, 7), dpi=100)
    loss_axes, iu_axes = figure.subplots(2, 1, sharex=True)
    styles = {"torchcaffe": dict(color="#1f77b4", linewidth=2.5, alpha=0.6),
              "pycaffe": dict(color="#d62728", linewidth=1.2, linestyle="--"),
              "nudged": dict(color="0.35", linewidth=1.0, linestyle=":")}
    for run in runs:
        curves = read_curves(out / run / "run" / "metrics.jsonl")
        label, style = RUNS[run][2], styles[run]
        loss_axes.plot(*zip(*curves.loss), label=label, **style)
        iu_axes.plot([x for x, _ in curves.mean_iu], [100 * y for _, y in curves.mean_iu],
                     marker="o", markersize=4, label=label, **style)
    for start, _ in curves.stage_starts[1:]:
        for axes in (loss_axes, iu_axes):
            axes.axvline(start, color="0.75", linestyle="-", linewidth=0.8)
    loss_axes.set_yscale("log")
    loss_axes.set_ylabel("training loss")
    loss_axes.set_title("training loss, 32s -> 16s -> 8s (stage boundaries in grey)")
    iu_axes.set_ylim(0, 100)
    iu_axes.set_ylabel("held-out mean IU (%)")
    iu_axes.set_xlabel("iteration (all stages)")
    for axes in (loss_axes, iu_axes):
        axes.grid(True, color="0.9")
        axes.legend(loc="best")
    figure.tight_layout()
    return figure


def write_report(out: Path, result: dict, config, seconds: dict[str, float],
                 caffe_pythonpath: Path | None) -> str:
    times = ", ".join(f"{RUNS[r][2]} {seconds[r]:.0f} s" for r in result["runs"])
    text = "\n".join([
        f"Reduced demo without Dropout: {' / '.join(map(str, config.iters))} iterations "
        f"(32s / 16s / 8s), {config.train} training and {config.val} held-out scenes of "
        f"{config.height} x {config.width}, width {config.net_width:g}; the demo's base net "
        f"for BVLC Caffe and torchcaffe, and the same base net moved by one float32 ulp for a second torchcaffe "
        f"run. Wall time, one thread each: {times}.", "",
        comparison_table(result), "", summary(result), "",
        f"Learning curves of the runs: {out / 'curves.png'}"])
    write_text(out / "comparison.md", text + "\n")
    write_json(out / "comparison.json", {**result, "config": asdict(config), "seconds": seconds,
                                         "caffe_pythonpath": str(caffe_pythonpath)})
    with atomic_path(out / "curves.png") as tmp:
        curves_figure(out, result["runs"]).savefig(tmp, format="png", dpi=100,
                                                   metadata={"Software": None})
    return text


def run_comparison(out: Path, caffe_pythonpath: Path | None, config, seed: int) -> str:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log.info("compare-caffe: preparing scenes and the base net (torchcaffe)")
    prepared = prepare(out / "inputs", config, seed)
    seconds = {}
    for run in ("pycaffe", "torchcaffe", "nudged"):
        log.info("compare-caffe: training the %s run (log: %s)", RUNS[run][2],
                 out / f"{run}.log")
        seconds[run] = run_once(run, prepared, out, seed, caffe_pythonpath)
    return write_report(out, compare(out, ("torchcaffe", "pycaffe", "nudged")), config, seconds,
                        caffe_pythonpath)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m solvers.compare_caffe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caffe-pythonpath", type=Path,
                        default=os.environ.get(PYTHONPATH_ENV) or None,
                        help=f"BVLC Caffe's python/ folder (default: ${PYTHONPATH_ENV}, else "
                             "a pycaffe importable as `caffe`)")
    parser.add_argument("--out", type=Path, default=Path("compare"),
                        help="output folder (default compare)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iters", default=",".join(map(str, ITERS)),
                        help="iterations of 32s,16s,8s (default %(default)s)")
    parser.add_argument("--train-once", type=Path, metavar="PREPARED", help=argparse.SUPPRESS)
    parser.add_argument("--base-key", default="base", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.train_once is not None:  # one run, in its own process: its log gets everything
        train_once(args.train_once, args.out, args.seed, args.base_key)
        return 0
    for handler in logging.getLogger().handlers:  # the console: this module's steps, warnings
        handler.addFilter(lambda record: record.levelno >= logging.WARNING
                          or record.name == __name__)
    try:
        iters = [int(n) for n in args.iters.split(",")]
    except ValueError:
        parser.error(f"--iters {args.iters}: give three counts, e.g. 100,300,200")
    if len(iters) != 3 or min(iters) < 1:
        parser.error("--iters takes three positive counts (32s,16s,8s)")
    given = args.caffe_pythonpath
    if given is not None and not (given / "caffe" / "__init__.py").is_file():
        # a path the user named is not "no pycaffe here": say what is wrong with it
        parser.exit(1, f"compare-caffe: error: {given}: not BVLC Caffe's python/ folder "
                       "(no caffe/__init__.py in it)\n")
    missing = pycaffe_missing(given)
    if missing is not None:
        print(f"compare-caffe: skipped, no BVLC pycaffe importable ({missing}); give "
              f"--caffe-pythonpath <caffe>/python or set {PYTHONPATH_ENV}")
        return 0
    config = reduced_config(iters)
    try:
        print(run_comparison(args.out, args.caffe_pythonpath, config, args.seed))
    except RuntimeError as exc:
        parser.exit(1, f"compare-caffe: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
