"""A whole staged run, 32s -> 16s -> 8s, on a tiny synthetic set with
narrow nets: each stage starts from the last one's final weights and runs
at a learning rate exactly 100x lower."""
import json
from pathlib import Path

import numpy as np
import pytest

from data_layers import synthetic
from solvers import solve as solve_mod
from solvers.run_dir import read_metrics
from torchcaffe.caffemodel import read_caffemodel, write_caffemodel
from torchcaffe.net import TEST, Net
from torchcaffe.prototxt import read_net_prototxt

WIDTH = 1 / 32


def random_base(tmp_path) -> Path:
    """A narrow vgg16fcn base net with random weights, as a caffemodel."""
    deploy = tmp_path / "vgg16fcn.prototxt"
    deploy.write_text(solve_mod._deploy_text("vgg16fcn", WIDTH))
    net = Net(str(deploy), TEST)
    rng = np.random.RandomState(0)
    blobs = {}
    for name, params in net.params.items():
        blobs[name] = [(rng.randn(*p.shape) * (0.05 if i == 0 else 0.01)).astype(np.float32)
                       for i, p in enumerate(params)]
    path = tmp_path / "vgg16-fcn-narrow.caffemodel"
    write_caffemodel(path, read_net_prototxt(deploy), blobs)
    return path


def weights(path) -> dict[str, list[np.ndarray]]:
    return {layer.name: layer.blobs for layer in read_caffemodel(path)}


def test_voc_32s_16s_8s(tmp_path, monkeypatch):
    data = tmp_path / "data"
    synthetic.generate(data, seed=1, train=5, val=2, height=40, width=48)
    base = random_base(tmp_path)
    out = tmp_path / "run"
    initial = []  # each stage's params right before its first update
    real_schedule = solve_mod._run_schedule

    def schedule(solver, *args):
        initial.append({name: [b.data.copy() for b in blobs]
                        for name, blobs in solver.net.params.items()})
        return real_schedule(solver, *args)
    monkeypatch.setattr(solve_mod, "_run_schedule", schedule)
    opts = solve_mod.StageOptions(iters=3, test_interval=2, width=WIDTH)
    results = solve_mod.run_chain("voc-fcn8s", out, weights=base, data_dir=data, opts=opts)

    assert [r.name for r in results] == ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s"]
    # rates: the solvers' own base_lr, each exactly 100x below the last
    lrs = [r.lr for r in results]
    assert lrs[0] == pytest.approx(1e-10, rel=1e-6)
    assert lrs[0] / lrs[1] == pytest.approx(100, rel=1e-6)
    assert lrs[1] / lrs[2] == pytest.approx(100, rel=1e-6)
    train = [m for m in read_metrics(out / "metrics.jsonl") if m["kind"] == "train"]
    assert {m["stage"]: m["lr"] for m in train} == dict(zip([r.name for r in results], lrs))

    # each stage starts from the last stage's final weights (the chain's first
    # from the base net), with bilinear kernels in its upsampling layers
    for index, (r, start) in enumerate(zip(results, initial)):
        source = weights(base) if index == 0 else weights(results[index - 1].final)
        assert r.init == (str(base) if index == 0 else str(results[index - 1].final))
        carried = [name for name in start if name in source and "up" not in name]
        assert {"conv1_1", "fc6", "fc7"} <= set(carried)
        if index:
            assert "score_fr" in carried
        for name in carried:
            for got, want in zip(start[name], source[name]):
                np.testing.assert_array_equal(got, want.reshape(got.shape), err_msg=name)
        for name in (n for n in start if "up" in n):
            kernel = start[name][0]
            assert kernel[0, 0].sum() > 0 and kernel[0, 1].sum() == 0  # diagonal bilinear

    # run directory contents
    for name in ("train.log", "metrics.jsonl", "scores.json", "curves.png"):
        assert (out / name).is_file(), name
    scores = json.loads((out / "scores.json").read_text())
    assert list(scores["stages"]) == ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s"]
    for r in results:
        assert (r.folder / "solve.py").is_file()
        assert (r.folder / "best.caffemodel").is_file()
        assert (r.folder / "snapshot" / "train_iter_3.solverstate").is_file()
        assert sorted(p.name for p in (r.folder / "scores").iterdir()) == [
            "iter_2.json", "iter_3.json"]
        assert len(list((r.folder / "predictions-iter3").glob("*.png"))) == 2
    tests = [m for m in read_metrics(out / "metrics.jsonl") if m["kind"] == "test"]
    assert [(m["stage"], m["iter"]) for m in tests] == [
        (n, i) for n in ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s") for i in (2, 3)]
    assert "Iteration" in (out / "train.log").read_text()


def test_stage_list_and_data_dirs(tmp_path):
    assert solve_mod.stage_chain("voc-fcn16s") == ["voc-fcn32s", "voc-fcn16s"]
    assert solve_mod.stage_chain("voc-fcn8s", "16s,8s") == ["voc-fcn16s", "voc-fcn8s"]
    assert solve_mod.stage_chain("voc-fcn8s-atonce") == ["voc-fcn8s-atonce"]
    with pytest.raises(Exception, match="no stage '4s'"):
        solve_mod.stage_chain("voc-fcn8s", "4s")
    with pytest.raises(Exception, match="chain order"):
        solve_mod.stage_chain("voc-fcn8s", "8s,32s")
    assert str(solve_mod._after_data("../../data/pascal")) == "pascal"
    assert str(solve_mod._after_data("../data/sbdd/dataset")) == "sbdd/dataset"
