"""Export of a narrow FCN-8s to .pt / .npz / .safetensors / .onnx.

The net and weights are the golden FCN-8s (channel counts / 16) whose outputs
BVLC Caffe computed; the deploy form drops its label input and loss.  Each
exported file is loaded by its own library (torch, numpy, safetensors,
onnxruntime) and checked against BVLC's numbers or against the caffemodel's
blobs as read from the file format.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from torchcaffe.caffemodel import read_caffemodel
from torchcaffe.errors import CaffeError
from torchcaffe.proto import caffe_pb2
from weights.export import ONNX_OPSET, export
from weights.torch_module import CaffeModule

from golden_sets import COMPACT, materialize

SOURCE = COMPACT / "nets" / "fcn8s_w16"  # BVLC Caffe's outputs, in the committed copy


@pytest.fixture(scope="module")
def golden():
    return np.load(SOURCE.with_suffix(".npz"))


@pytest.fixture(scope="module")
def net_files(tmp_path_factory):
    """The golden FCN-8s folder with its caffemodel unpacked."""
    return materialize(SOURCE.parent, tmp_path_factory.mktemp("golden-nets")) / SOURCE.name


@pytest.fixture(scope="module")
def deploy(golden, net_files, tmp_path_factory):
    """The golden train-style net without label and loss: a deploy net with output 'score'."""
    net = caffe_pb2.NetParameter()
    text_format.Merge(net_files.with_suffix(".prototxt").read_text(), net)
    layers = [layer for layer in net.layer if layer.name not in ("label", "loss")]
    del net.layer[:]
    net.layer.extend(layers)
    net.ClearField("force_backward")
    path = tmp_path_factory.mktemp("deploy") / "deploy.prototxt"
    path.write_text(text_format.MessageToString(net))
    return path


@pytest.fixture(scope="module")
def weights(net_files):
    return net_files.with_suffix(".caffemodel")


def file_blobs(weights):
    return {f"{layer.name}.{i}": blob for layer in read_caffemodel(weights)
            for i, blob in enumerate(layer.blobs)}


def test_torch_module_reproduces_bvlc_score(weights, golden, deploy):
    module = CaffeModule(deploy, weights).eval()
    assert module.input_names == ["data"] and module.output_names == ["score"]
    with torch.no_grad():
        (score,) = module(torch.from_numpy(golden["in/data"]))
    want = golden["out/score"]
    np.testing.assert_allclose(score.numpy(), want, rtol=0, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("suffix", [".pt", ".npz", ".safetensors"])
def test_tensor_formats_hold_the_caffemodel_blobs(weights, deploy, tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    out = tmp_path / f"fcn8s{suffix}"
    result = export(deploy, weights, out)
    assert result.path == out and result.max_error <= 1e-4
    if suffix == ".pt":
        loaded = {k: v.numpy() for k, v in torch.load(out, weights_only=True).items()}
    elif suffix == ".npz":
        loaded = dict(np.load(out))
    else:
        from safetensors.numpy import load_file
        loaded = load_file(out)
    expected = file_blobs(weights)
    assert set(loaded) == set(expected)
    assert "fc6.0" in loaded and "upscore8.0" in loaded and "upscore8.1" not in loaded
    for key, blob in expected.items():
        np.testing.assert_array_equal(loaded[key], blob, err_msg=key)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left


def test_onnx_export_runs_in_onnxruntime_like_bvlc(weights, golden, deploy, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "fcn8s.onnx"
    result = export(deploy, weights, out)
    assert result.format == "onnx" and result.max_error <= 1e-4
    model = onnx.load(out)
    assert model.opset_import[0].version == ONNX_OPSET
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["data"]
    assert [o.name for o in session.get_outputs()] == ["score"]
    (score,) = session.run(None, {"data": golden["in/data"]})
    want = golden["out/score"]
    np.testing.assert_allclose(score, want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_failed_check_leaves_no_file(weights, deploy, tmp_path, monkeypatch):
    import weights.export as export_module

    def corrupt(state, path):  # write wrong values: the check must catch them
        torch.save({k: v + 1 for k, v in state.items()}, path)

    monkeypatch.setitem(export_module.WRITERS, "pt", corrupt)
    with pytest.raises(CaffeError, match="output 'score' differs"):
        export(deploy, weights, tmp_path / "bad.pt")
    assert list(tmp_path.iterdir()) == []


def test_unknown_suffix_is_refused(weights, deploy, tmp_path):
    with pytest.raises(CaffeError, match=r"\.h5.*suffix"):
        export(deploy, weights, tmp_path / "w.h5")
