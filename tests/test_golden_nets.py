"""Whole nets against outputs BVLC Caffe computed (../shared/golden/nets and
legacy/): the 1/16-width FCN-32s/16s/8s/8s-at-once with their caffemodels,
forward values of every recorded blob (Split tops included), then backward
from the loss: the data diff and every param diff."""
import json
from pathlib import Path

import numpy as np
import pytest

import torchcaffe as caffe

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"
NET_CASES = sorted(p.stem for p in (GOLDEN / "nets").glob("*.npz")) if GOLDEN.is_dir() else []


def assert_close(actual, expected, what, rtol=1e-4):
    """Within `rtol` of the largest magnitude of the expected array."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.abs(expected).max()), 1e-30)
    err = float(np.abs(actual - expected).max()) / scale
    assert err <= rtol, f"{what}: max error {err:.3g} of the largest magnitude {scale:.3g}"


def load_case(folder, name):
    if not GOLDEN.is_dir():
        pytest.skip("golden folder absent")
    case = np.load(GOLDEN / folder / f"{name}.npz")
    return case, json.loads(str(case["meta"]))


@pytest.mark.parametrize("name", NET_CASES)
def test_fcn_net_matches_caffe(name):
    case, meta = load_case("nets", name)
    folder = GOLDEN / "nets"
    assert meta["phase"] == "TEST"
    net = caffe.Net(str(folder / f"{name}.prototxt"), str(folder / meta["weights"]), caffe.TEST)
    for key in case.files:
        if key.startswith("in/"):
            net.blobs[key[3:]].data[...] = case[key]
    net.forward()
    outs = [k for k in case.files if k.startswith("out/")]
    assert outs
    for key in outs:
        assert_close(net.blobs[key[4:]].data, case[key], key)

    net.backward()
    assert_close(net.blobs["data"].diff, case["diff/data"], "diff/data")
    pdiffs = [k for k in case.files if k.startswith("pdiff/")]
    assert pdiffs
    for key in pdiffs:
        _, layer, index = key.split("/")
        assert_close(net.params[layer][int(index)].diff, case[key], key)
    # the label feeds only the loss, which never sends it a diff
    assert not net.blobs["label"].diff.any()


def test_v1_caffemodel_loads_as_caffe_loads_it():
    case, meta = load_case("legacy", "tiny_v1")
    folder = GOLDEN / "legacy"
    net = caffe.Net(str(folder / meta["deploy"]), caffe.TEST, weights=str(folder / meta["weights"]))
    params = [k for k in case.files if k.startswith("param/")]
    assert params
    for key in params:
        _, layer, index = key.split("/")
        np.testing.assert_array_equal(net.params[layer][int(index)].data, case[key], err_msg=key)
    out = net.forward(data=case["in/data"])
    assert_close(out["fc6"], case["out/fc6"], "out/fc6")
