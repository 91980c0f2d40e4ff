"""The built-in demo end to end (--quick), and the driver hooks it relies on:
the learning-rate scale and console logging around the progress bars."""
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from PIL import Image

from data_layers import demo_scenes
from solvers import demo, overlays, solve
from torchcaffe.errors import CaffeError
from torchcaffe.proto import caffe_pb2

REFERENCE_LRS = (1e-10, 1e-12, 1e-14)  # voc-fcn32s / 16s / 8s in the FCN release
STAGES = ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s")


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """Two --quick demos with the same seed, in different folders."""
    threads = torch.get_num_threads()
    outs = [tmp_path_factory.mktemp(f"demo{i}") / "out" for i in range(2)]
    try:
        for out in outs:
            assert demo.main(["--quick", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return outs


def read_solver(path: Path):
    param = caffe_pb2.SolverParameter()
    text_format.Parse(path.read_text(), param)
    return param


def table_rows(markdown: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith("| FCN-")]


def test_results_table(quick_runs):
    out = quick_runs[0]
    document = json.loads((out / "results.json").read_text())
    rows = document["stages"]
    assert [r["model"] for r in rows] == list(STAGES)
    for row in rows:
        assert row["iters"] == demo.QUICK.iters
        for key, _ in demo.METRICS:
            assert 0.0 <= row[key] <= 100.0, (row["model"], key)
    # results.md carries the same table: 3 stage rows, 4 metrics + boundary IU
    markdown = (out / "results.md").read_text()
    md_rows = table_rows(markdown)
    assert [r[0] for r in md_rows] == ["FCN-32s", "FCN-16s", "FCN-8s"]
    for md, row in zip(md_rows, rows):
        metrics = [float(v) for v in md[3:]]
        assert len(metrics) == 5 and all(0.0 <= v <= 100.0 for v in metrics)
        expected = [row[k] for k, _ in demo.METRICS] + [row["boundary_mean_iu"]]
        assert metrics == pytest.approx(expected, abs=0.051)
    # and the per-class table: one line per class, one column per stage
    for name in demo_scenes.CLASS_NAMES:
        cells = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
        values = [c.strip() for c in cells.strip("|").split("|")[1:]]
        assert values == [demo._fmt(row["per_class_iu"][name]) for row in rows]


def test_rates_are_the_references_scaled_and_100x_apart(quick_runs):
    out = quick_runs[0]
    rows = json.loads((out / "results.json").read_text())["stages"]
    lrs = [row["lr"] for row in rows]
    # solver.prototxt base_lr is a float32 field, hence rel 1e-6
    for lr, reference in zip(lrs, REFERENCE_LRS):
        assert lr == pytest.approx(reference * demo.QUICK.lr_scale, rel=1e-6)
    assert lrs[0] / lrs[1] == pytest.approx(100.0, rel=1e-6)
    assert lrs[1] / lrs[2] == pytest.approx(100.0, rel=1e-6)
    for name, lr in zip(STAGES, lrs):
        solver = read_solver(out / "run" / name / "solver.prototxt")
        assert solver.base_lr == pytest.approx(lr, rel=1e-7)
        # the rest of the reference solver is untouched
        assert solver.momentum == pytest.approx(0.99)
        assert solver.weight_decay == pytest.approx(0.0005)
        assert solver.lr_policy == "fixed"
    train = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    seen = {m["stage"]: m["lr"] for m in train if m["kind"] == "train"}
    assert seen == dict(zip(STAGES, lrs))
    # the loss really is the unnormalized one
    net = (out / "run" / "voc-fcn8s" / "train.prototxt").read_text()
    assert re.search(r"loss_param\s*{[^}]*normalize: false", net)


def test_overlays_and_curves(quick_runs):
    out = quick_runs[0]
    config, scale = demo.QUICK, 2
    voc = out / "data" / "pascal" / "VOC2011"
    val = (voc / "ImageSets" / "Segmentation" / "seg11valid.txt").read_text().split()
    sheet = np.array(Image.open(out / "overlays.png").convert("RGB")).astype(int)
    tile_h, tile_w = config.height * scale, config.width * scale
    columns, gap = 5, overlays.GAP  # image, truth, 32s, 16s, 8s
    assert sheet.shape[1] == columns * (tile_w + gap) + gap
    header = overlays.FONT_SIZE + 2 * gap
    # one row per held-out scene; the first: the image, then the truth over it
    image = np.array(Image.open(voc / "JPEGImages" / f"{val[0]}.jpg").convert("RGB")).astype(int)
    label = np.array(Image.open(voc / "SegmentationClass" / f"{val[0]}.png"))
    image_tile = sheet[header:header + tile_h, gap:gap + tile_w]
    truth_tile = sheet[header:header + tile_h, 2 * gap + tile_w:2 * (gap + tile_w)]
    np.testing.assert_array_equal(image_tile[::scale, ::scale], image)
    background = (label == 0) | (label == 255)  # void is drawn as background
    assert background.any() and (~background).any()
    np.testing.assert_array_equal(truth_tile[::scale, ::scale][background], image[background])
    # an object pixel is halfway between the image and its class colour
    colours = demo.display_colours()
    rows, cols = np.nonzero(~background)
    for r, c in zip(rows[::50], cols[::50]):
        expected = (image[r, c] + np.array(colours[label[r, c]])) / 2
        got = truth_tile[r * scale:(r + 1) * scale, c * scale:(c + 1) * scale]
        # inside: the blend; on the outline: the colour itself
        assert (np.abs(got - expected).max() <= 1
                or (got == np.array(colours[label[r, c]])).all(axis=-1).any())
    # the legend below the last row shows every class colour
    legend = sheet[header + len(val) * (tile_h + gap):]
    for colour in colours.values():
        assert (legend == np.array(colour)).all(axis=-1).any(), colour
    curves = Image.open(out / "curves.png")
    assert curves.format == "PNG" and curves.size == (1000, 700)


def test_same_seed_same_results(quick_runs):
    first, second = (json.loads((out / "results.json").read_text()) for out in quick_runs)
    assert first == second


def test_relative_out_prints_the_table_and_caffe_log_lines(tmp_path, capsys, monkeypatch):
    # a relative --out, as `make demo` gives it: the stages run inside their
    # model folders, so every path must survive the change of directory
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        demo.main(["--quick", "--out", "out", "--iters", "2"])
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    assert "| FCN-8s |" in captured.out
    # the console gets Caffe's glog lines (I<mmdd> <time> <pid> <file>:<line>] ...)
    assert re.search(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ solver\.py:\d+\] Iteration 0 ",
                     captured.err, re.M)
    assert "INFO" not in captured.err  # not Python logging's default format
    assert "Iteration" in (tmp_path / "out" / "run" / "train.log").read_text()


def test_console_around_bars_keeps_the_console_level(capsys):
    root = logging.getLogger()
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    root.addHandler(console)
    previous = root.level
    root.setLevel(logging.INFO)
    try:
        with solve.console_around_bars():
            logging.getLogger("solvers.test").info("quiet line")
            logging.getLogger("solvers.test").warning("loud line")
    finally:
        root.removeHandler(console)
        root.setLevel(previous)
    err = capsys.readouterr().err
    assert "loud line" in err and "quiet line" not in err


def test_lr_scale_is_checked(tmp_path):
    with pytest.raises(CaffeError, match="lr-scale"):
        solve.emit_model("voc-fcn32s", tmp_path / "m", None, width=1 / 32, lr_scale=0.0)
    solve.emit_model("voc-fcn16s", tmp_path / "m", None, width=1 / 32, lr_scale=250.0)
    assert read_solver(tmp_path / "m" / "solver.prototxt").base_lr == pytest.approx(
        1e-12 * 250.0, rel=1e-6)
    with pytest.raises(SystemExit):
        solve.main(["voc-fcn8s", "--here", "--lr-scale", "10"])


def test_per_stage_iters(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        assert demo.main(["--quick", "--out", str(tmp_path / "out"), "--iters", "3,2,1"]) == 0
        with pytest.raises(SystemExit) as exit_info:
            demo.main(["--quick", "--out", str(tmp_path / "bad"), "--iters", "3,2"])
    finally:
        torch.set_num_threads(threads)
    assert exit_info.value.code == 2
    assert "2 counts (3,2) for 3 stages (voc-fcn32s, voc-fcn16s, voc-fcn8s)" in (
        capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["iters"] for row in document["stages"]] == [3, 2, 1]
    assert document["config"]["test_interval"] == 1  # no stage may skip its tests
    assert "3 / 2 / 1 iterations (32s / 16s / 8s)" in (tmp_path / "out" / "results.md").read_text()
