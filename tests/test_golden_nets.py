"""Whole nets against outputs BVLC Caffe computed (golden nets/ and legacy/):
the 1/16-width FCN-32s/16s/8s (and 8s-at-once in the full set) with their
Caffe-written caffemodels, forward values of every recorded blob (Split tops
included), then backward from the loss: the data diff and every param diff.

The compact copy stores each net without its large fixed bilinear upsampler
(meta `compact.bilinear_set_by_test`); the test sets it from the kernel's
formula, and `test_caffe_upsamplers_are_the_bilinear_formula` checks on the
full set that Caffe's stored kernels are exactly that formula."""
import json

import numpy as np
import pytest

import torchcaffe as caffe
from golden_sets import (assert_close, bilinear_upsampling, case_params, file_params,
                         materialize, unpacked)

RTOL = 1e-4


@pytest.mark.parametrize("folder, name", case_params("nets"))
def test_fcn_net_matches_caffe(folder, name, tmp_path):
    case = np.load(folder / f"{name}.npz")
    meta = json.loads(str(case["meta"]))
    assert meta["phase"] == "TEST"
    local = materialize(folder, tmp_path / "nets")
    net = caffe.Net(str(local / f"{name}.prototxt"), str(local / meta["weights"]), caffe.TEST)
    for layer in meta.get("compact", {}).get("bilinear_set_by_test", []):
        weight = net.params[layer][0]
        weight.data[...] = bilinear_upsampling(weight.data.shape)
    for key in case.files:
        if key.startswith("in/"):
            net.blobs[key[3:]].data[...] = case[key]
    net.forward()
    outs = [k for k in case.files if k.startswith("out/")]
    assert "out/loss" in outs
    for key in outs:
        assert_close(net.blobs[key[4:]].data, case[key], key, RTOL)

    net.backward()
    assert_close(net.blobs["data"].diff, case["diff/data"], "diff/data", RTOL)
    pdiffs = [k for k in case.files if k.startswith("pdiff/")]
    assert pdiffs
    for key in pdiffs:
        _, layer, index = key.split("/")
        assert_close(net.params[layer][int(index)].diff, case[key], key, RTOL)
    # the label feeds only the loss, which never sends it a diff
    assert not net.blobs["label"].diff.any()


@pytest.mark.parametrize("folder, name", case_params("nets"))
def test_caffe_upsamplers_are_the_bilinear_formula(folder, name, tmp_path):
    """Every upsampling kernel Caffe stored equals the formula the compact
    copy relies on (where the kernel is stored at all)."""
    from torchcaffe.caffemodel import read_caffemodel
    model = unpacked(next(folder.glob(f"{name}.caffemodel*")), tmp_path)
    upsamplers = [layer for layer in read_caffemodel(str(model))
                  if layer.type == "Deconvolution" and layer.blobs]
    if not upsamplers:
        meta = json.loads(str(np.load(folder / f"{name}.npz")["meta"]))
        assert "compact" in meta, "a full-set net stores its upsamplers"
        pytest.skip("the compact copy keeps this net's only upsampler as its formula")
    for layer in upsamplers:
        np.testing.assert_array_equal(layer.blobs[0], bilinear_upsampling(layer.blobs[0].shape),
                                      err_msg=layer.name)


@pytest.mark.parametrize("path", file_params("legacy/tiny_v1.npz"))
def test_v1_caffemodel_loads_as_caffe_loads_it(path, tmp_path):
    case = np.load(path)
    meta = json.loads(str(case["meta"]))
    legacy = materialize(path.parent, tmp_path / "legacy")
    net = caffe.Net(str(legacy / meta["deploy"]), caffe.TEST, weights=str(legacy / meta["weights"]))
    params = [k for k in case.files if k.startswith("param/")]
    assert params
    for key in params:
        _, layer, index = key.split("/")
        np.testing.assert_array_equal(net.params[layer][int(index)].data, case[key], err_msg=key)
    out = net.forward(data=case["in/data"])
    assert_close(out["fc6"], case["out/fc6"], "out/fc6", RTOL)
