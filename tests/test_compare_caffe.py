"""`make compare-caffe` (solvers.compare_caffe) without a BVLC Caffe: the
skip line, the table from two runs' files, and the Dropout-free nets it
trains. The comparison itself runs in test_pycaffe_backend when a BVLC
pycaffe is given."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from solvers import compare_caffe
from solvers.solve import emit_model, remove_dropout
from torchcaffe.prototxt import read_net_prototxt

ROOT = Path(__file__).resolve().parents[1]


def test_without_a_pycaffe_it_skips_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(compare_caffe.PYTHONPATH_ENV, None)
    if subprocess.run([sys.executable, "-c", "import caffe"], env=env, cwd=tmp_path,
                      capture_output=True).returncode == 0:
        pytest.skip("a pycaffe is importable as `caffe` here")
    done = subprocess.run([sys.executable, "-m", "solvers.compare_caffe",
                           "--out", str(tmp_path / "out")],
                          env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("compare-caffe: skipped, no BVLC pycaffe")
    assert "--caffe-pythonpath <caffe>/python" in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_named_folder_without_pycaffe_is_an_error_naming_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    nowhere = tmp_path / "nowhere"
    done = subprocess.run([sys.executable, "-m", "solvers.compare_caffe", "--caffe-pythonpath",
                           str(nowhere), "--out", str(tmp_path / "out")],
                          env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"compare-caffe: error: {nowhere}: not BVLC Caffe's python/ "
                                   "folder (no caffe/__init__.py in it)")
    assert not (tmp_path / "out").exists()


def _fake_run(folder: Path, ious: list[float], losses: list[float]) -> None:
    """rows.json and metrics.jsonl as a run of the two stages leaves them."""
    stages = ["voc-fcn32s", "voc-fcn16s"]
    rows = [{"model": m, "iters": 2, "lr": 1e-8, "overall_acc": 80.0, "mean_acc": 50.0,
             "mean_iu": iu, "fwavacc": 70.0, "boundary_mean_iu": 30.0}
            for m, iu in zip(stages, ious)]
    (folder / "run").mkdir(parents=True)
    (folder / "rows.json").write_text(json.dumps(rows))
    records = [{"kind": "train", "stage": m, "iter": i, "step": 2 * s + i, "loss": loss + i}
               for s, (m, loss) in enumerate(zip(stages, losses)) for i in (1, 2)]
    (folder / "run" / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n")


def test_the_table_gives_every_run_and_its_difference_from_torchcaffe(tmp_path):
    _fake_run(tmp_path / "torchcaffe", ious=[40.0, 60.5], losses=[1000.0, 500.0])
    _fake_run(tmp_path / "pycaffe", ious=[40.25, 60.0], losses=[1000.0, 499.0])
    _fake_run(tmp_path / "nudged", ious=[40.0, 61.5], losses=[1000.0, 500.0])
    result = compare_caffe.compare(tmp_path)
    # BVLC: mean IU 40 vs 40.25 and 60.5 vs 60; final loss (iteration 2) 1002 vs
    # 1002, 502 vs 501; loss curve 1001/1001, 1002/1002, 501/500, 502/501
    bvlc, nudged = result["largest"]["pycaffe"], result["largest"]["nudged"]
    assert bvlc["mean_iu"] == pytest.approx(0.5) and nudged["mean_iu"] == pytest.approx(1.0)
    assert bvlc["final_loss"] == pytest.approx(1 / 502) and nudged["final_loss"] == 0
    assert bvlc["loss_curve"] == pytest.approx([0, 0, 1 / 501, 1 / 502])
    assert result["steps"] == [1, 2, 3, 4]
    table = compare_caffe.comparison_table(result).splitlines()
    assert table[0] == ("| stage | iters | lr | metric | torchcaffe | BVLC Caffe | difference "
                        "| torchcaffe, base 1 ulp off | difference |")
    assert "| FCN-16s | 2 | 1e-08 | mean IU | 60.50 | 60.00 | -0.50 | 61.50 | +1.00 |" in table
    assert "| FCN-32s | 2 | 1e-08 | mean IU | 40.00 | 40.25 | +0.25 | 40.00 | +0.00 |" in table
    assert ("| FCN-16s | 2 | 1e-08 | final train loss | 502 | 501 | -1 (0.002) | 502 | +0 (0) |"
            in table)
    assert "largest difference in mean IU 0.50 points" in compare_caffe.summary(result)


def test_reference_nets_without_dropout(tmp_path):
    emit_model("voc-fcn32s", tmp_path, None, width=1 / 16, dropout=False)
    for name in ("train", "val", "deploy"):
        net = read_net_prototxt(tmp_path / f"{name}.prototxt")
        layers = {layer.name: layer for layer in net.layer}
        assert not any(layer.type == "Dropout" for layer in net.layer)
        # the release's drop6 / drop7 work in place on fc6 / fc7
        assert list(layers["fc7"].bottom) == ["fc6"] and list(layers["score_fr"].bottom) == ["fc7"]


def test_a_dropout_with_its_own_top_is_bridged():
    from torchcaffe.proto import caffe_pb2
    from google.protobuf import text_format

    net = text_format.Parse(
        'layer { name: "a" type: "ReLU" bottom: "x" top: "y" }'
        'layer { name: "d" type: "Dropout" bottom: "y" top: "z" }'
        'layer { name: "b" type: "ReLU" bottom: "z" top: "w" }'
        'layer { name: "c" type: "Eltwise" bottom: "w" bottom: "z" top: "v" }',
        caffe_pb2.NetParameter())
    remove_dropout(net)
    assert [(layer.name, list(layer.bottom)) for layer in net.layer] == [
        ("a", ["x"]), ("b", ["y"]), ("c", ["w", "y"])]
