"""Learning curves: parsing metrics.jsonl and Caffe-style logs, drawing a PNG."""
import json
import math

from PIL import Image

from solvers.curves import curves_figure, plot_curves, read_curves


def test_curves_from_metrics_and_log(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [
        {"kind": "train", "stage": "a", "iter": 20, "step": 20, "loss": 3.0, "lr": 1e-10},
        {"kind": "test", "stage": "a", "task": "seg", "iter": 20, "step": 20, "mean_iu": 0.2},
        {"kind": "train", "stage": "b", "iter": 20, "step": 40, "loss": float("nan")},
        {"kind": "test", "stage": "b", "task": "seg", "iter": 20, "step": 40, "mean_iu": 0.3},
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"torn')
    curves = read_curves(metrics)
    assert curves.loss[0] == (20, 3.0)
    assert curves.loss[1][0] == 40 and math.isnan(curves.loss[1][1])  # drawn as a gap
    assert curves.mean_iu == [(20, 0.2), (40, 0.3)]
    assert curves.stage_starts == [(0, "a"), (20, "b")]
    out = plot_curves(metrics, tmp_path / "c.png")
    assert Image.open(out).size == (1000, 700)

    log = tmp_path / "train.log"
    log.write_text("I0101 solver.cpp] Iteration 20 (1.5 iter/s, 13s/20 iters), loss = 12.5\n"
                   "INFO solvers.score: >>> Iteration 20 mean IU 0.4125\n"
                   "INFO torchcaffe.solver: Iteration 40 (2 iter/s, 10s/20 iters), loss = 9\n")
    curves = read_curves(log)
    assert curves.loss == [(20, 12.5), (40, 9.0)]
    assert curves.mean_iu == [(20, 0.4125)]
    plot_curves(log, tmp_path / "d.png")


def test_curves_figure_axes(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [
        {"kind": "train", "stage": "32s", "iter": 10, "step": 10, "loss": 900.0},
        {"kind": "train", "stage": "32s", "iter": 20, "step": 20, "loss": 30.0},
        {"kind": "test", "stage": "32s", "task": "seg", "iter": 20, "step": 20, "mean_iu": 0.05},
        {"kind": "train", "stage": "16s", "iter": 10, "step": 30, "loss": 20.0},
        {"kind": "test", "stage": "16s", "task": "seg", "iter": 10, "step": 30, "mean_iu": 0.5},
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    loss_axes, iu_axes = curves_figure(read_curves(metrics)).axes
    # mean IU in percent on an axis from 0 (a flat low line must not read as 0)
    assert iu_axes.get_ylim() == (0.0, 100.0)
    curves = [line for line in iu_axes.lines if line.get_linestyle() == "-"]
    assert [list(line.get_ydata()) for line in curves] == [[5.0], [50.0]]
    # one legend entry per stage, a dashed boundary where 16s starts
    assert [t.get_text() for t in iu_axes.get_legend().get_texts()] == ["32s", "16s"]
    boundaries = [line.get_xdata()[0] for line in loss_axes.lines if line.get_linestyle() == "--"]
    assert boundaries == [20]
    # a loss spanning decades is drawn on a log axis
    assert loss_axes.get_yscale() == "log"
