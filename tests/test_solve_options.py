"""`--iters`: one count for every stage, or one per stage of the chain run."""
import json

import pytest

from data_layers import synthetic
from solvers import solve
from solvers.run_dir import read_metrics
from torchcaffe.errors import CaffeError
from test_staged import WIDTH, random_base

CHAIN = ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s"]


@pytest.mark.parametrize("text, counts", [("1000", 1000), ("1800,900,300", (1800, 900, 300)),
                                          (" 7 , 5 ", (7, 5))])
def test_parse_iters(text, counts):
    assert solve.parse_iters(text) == counts


@pytest.mark.parametrize("text", ["", "10,", "1e3", "x,2", "0", "5,-1"])
def test_parse_iters_rejects(text):
    with pytest.raises(CaffeError, match="--iters"):
        solve.parse_iters(text)


def test_stage_iters():
    assert solve.stage_iters(None, CHAIN) == [None, None, None]
    assert solve.stage_iters(40, CHAIN) == [40, 40, 40]
    assert solve.stage_iters((30, 20, 10), CHAIN) == [30, 20, 10]
    assert solve.stage_iters((30, 20), CHAIN[1:]) == [30, 20]
    with pytest.raises(CaffeError, match=r"2 counts \(30,20\) for 3 stages "
                                         r"\(voc-fcn32s, voc-fcn16s, voc-fcn8s\)"):
        solve.stage_iters((30, 20), CHAIN)


def test_count_mismatch_stops_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        solve.main(["voc-fcn8s", "--stages", "16s,8s", "--iters", "4,3,2", "--out", str(out),
                    "--width", str(WIDTH)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "3 counts (4,3,2) for 2 stages (voc-fcn16s, voc-fcn8s)" in err
    assert not out.exists()  # no model folder was written


def test_per_stage_counts_reach_each_stage(tmp_path):
    data = tmp_path / "data"
    synthetic.generate(data, seed=2, train=4, val=1, height=40, width=48)
    out = tmp_path / "run"
    assert solve.main(["voc-fcn8s", "--iters", "3,1,2", "--test-interval", "2",
                       "--width", str(WIDTH), "--weights", str(random_base(tmp_path)),
                       "--data", str(data), "--out", str(out),
                       "--save-predictions", "none"]) == 0
    scores = json.loads((out / "scores.json").read_text())["stages"]
    assert {name: s["iters"] for name, s in scores.items()} == dict(zip(CHAIN, [3, 1, 2]))
    # seg tests every 2 iterations and at each stage's end; steps run on across stages
    tests = [(m["stage"], m["iter"], m["step"])
             for m in read_metrics(out / "metrics.jsonl") if m["kind"] == "test"]
    assert tests == [("voc-fcn32s", 2, 2), ("voc-fcn32s", 3, 3), ("voc-fcn16s", 1, 4),
                     ("voc-fcn8s", 2, 6)]
    for name, count in zip(CHAIN, [3, 1, 2]):
        assert (out / name / "snapshot" / f"train_iter_{count}.solverstate").is_file()


@pytest.mark.parametrize("flag, make, message", [
    ("--weights", None, "--weights {path}: no such file"),
    ("--weights", b"\x0a\xff", "not a valid NetParameter"),
    ("--resume", None, "--resume {path}: no such file"),
])
def test_bad_files_stop_before_anything_is_written(tmp_path, capsys, flag, make, message):
    path = tmp_path / "given.caffemodel"
    if make is not None:
        path.write_bytes(make)
    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        solve.main(["voc-fcn8s", flag, str(path), "--data", str(data), "--out", str(out),
                    "--width", str(WIDTH)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert message.format(path=path) in err and "Traceback" not in err
    assert not out.exists()


def test_weights_that_fit_no_base_net_stop_before_anything_is_written(tmp_path, capsys):
    from caffe_backend import caffe

    deploy = tmp_path / "tiny.prototxt"
    deploy.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { '
                      'dim: 1 dim: 3 dim: 4 dim: 4 } } }\nlayer { name: "conv1_1" type: '
                      '"Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 '
                      'kernel_size: 1 } }\n')
    weights = tmp_path / "tiny.caffemodel"
    caffe.Net(str(deploy), caffe.TEST).save(str(weights))
    out = tmp_path / "run"
    with pytest.raises(SystemExit):
        solve.main(["voc-fcn8s", "--weights", str(weights), "--data", str(tmp_path),
                    "--out", str(out), "--width", str(WIDTH)])
    err = capsys.readouterr().err
    assert "fits neither base net of voc-fcn32s (vgg16fcn or vgg16)" in err
    assert "conv1_1" in err
    assert not out.exists()
