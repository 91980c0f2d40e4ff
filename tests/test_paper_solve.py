"""FCN-GoogLeNet and FCN-32s-fixed through the solve driver on the synthetic
set with narrow nets: the base net's weights arrive by transplant (GoogLeNet
from its classifier form, whose loss3/classifier is dropped), training runs,
scoring runs; FCN-32s-fixed changes nothing but its score layer."""
import json

import numpy as np
import pytest

from data_layers import synthetic
from solvers import solve
from test_staged import WIDTH, random_base, weights  # noqa: F401 (fixture)
from torchcaffe.caffemodel import write_caffemodel
from torchcaffe.net import TEST, Net
from torchcaffe.prototxt import read_net_prototxt


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(root, seed=4, train=3, val=2, height=40, width=48)
    return root


def random_googlenet(tmp_path, width):
    """bvlc_googlenet's classifier form, narrow, random weights."""
    deploy = tmp_path / "googlenet.prototxt"
    deploy.write_text(solve._deploy_text("googlenet", width))
    net = Net(str(deploy), TEST)
    rng = np.random.RandomState(1)
    blobs = {name: [(rng.randn(*p.shape) * 0.05).astype(np.float32) for p in params]
             for name, params in net.params.items()}
    path = tmp_path / "googlenet-narrow.caffemodel"
    write_caffemodel(path, read_net_prototxt(deploy), blobs)
    return path, blobs


def run(model, base, data, out, width, *extra):
    """One iteration of `model` from `base`, then a seg test on two images."""
    return solve.main([model, "--iters", "1", "--width", str(width), "--weights", str(base),
                       "--data", str(data), "--out", str(out), "--save-predictions", "none",
                       "--test-images", "2", *extra])


def test_fcn_googlenet_trains_from_the_classifier(tmp_path, data):
    base, blobs = random_googlenet(tmp_path, 0.0625)
    out = tmp_path / "run"
    assert run("voc-fcn-googlenet", base, data, out, 0.0625) == 0
    scores = json.loads((out / "scores.json").read_text())["stages"]["voc-fcn-googlenet"]
    assert scores["iters"] == 1 and scores["tests"]
    final = weights(out / "voc-fcn-googlenet" / "final.caffemodel")
    assert "loss3/classifier" not in final
    for name in ("conv1/7x7_s2", "inception_4c/5x5", "inception_5b/pool_proj"):
        # transplanted, then one step at 5e-5: still the base's values, nearly
        np.testing.assert_allclose(final[name][0].reshape(blobs[name][0].shape),
                                   blobs[name][0], atol=1e-3)
    assert np.abs(final["score_fr"][0]).max() > 0  # zero-initialised, then learned


def test_fcn32s_fixed_learns_only_the_score_layer(tmp_path, data):
    base = random_base(tmp_path)
    out = tmp_path / "run"
    assert run("voc-fcn32s-fixed", base, data, out, WIDTH, "--lr-scale", "1e6") == 0
    final = weights(out / "voc-fcn32s-fixed" / "final.caffemodel")
    start = weights(base)
    for name in ("conv1_1", "conv5_3", "fc6", "fc7"):
        for got, want in zip(final[name], start[name]):
            np.testing.assert_array_equal(got.reshape(want.shape), want)
    assert np.abs(final["score_fr"][0]).max() > 0
