"""Export of Model Zoo nets: CaffeNet (grouped convolutions, LRN,
InnerProduct) and ResNet-50 (BatchNorm's three stored blobs, Scale, Eltwise,
7x7 average pooling) at 1/16 of their channels, to .pt / .npz /
.safetensors / .onnx.

The exporter checks each file against the runtime itself; here each file is
also read back by its own library and compared with the blobs of the
caffemodel as the caffemodel reader gives them, and the ONNX graph is run by
onnxruntime on a new input and compared with the torchcaffe Net's forward.
"""
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

import torchcaffe
from netspec.zoo import ZOO_NETS
from test_export import file_blobs, load_exported
from test_zoo_architectures import fill_seeded
from weights.export import export

WIDTH = 1 / 16
LOGITS = {"bvlc_reference_caffenet": "fc8", "ResNet-50": "fc1000"}


def write_net(folder: Path, proto) -> tuple[Path, Path]:
    """deploy.prototxt and a caffemodel of seeded weights for it."""
    deploy = folder / "deploy.prototxt"
    deploy.write_text(text_format.MessageToString(proto))
    net = torchcaffe.Net(str(deploy), torchcaffe.TEST)
    fill_seeded(net)
    weights = folder / "seeded.caffemodel"
    net.save(str(weights))
    return deploy, weights


@pytest.fixture(scope="module", params=list(LOGITS))
def zoo_net(request, tmp_path_factory):
    """(name, deploy, caffemodel) of a narrow zoo net whose output is its
    logits: with seeded weights the softmax saturates to 0 / 1 and would hide
    any difference."""
    proto = ZOO_NETS[request.param].deploy(WIDTH, batch=1)
    assert proto.layer[-1].type == "Softmax"
    del proto.layer[-1]
    return (request.param, *write_net(tmp_path_factory.mktemp(request.param), proto))


@pytest.mark.parametrize("suffix", [".pt", ".npz", ".safetensors"])
def test_tensor_formats_hold_the_caffemodel_blobs(zoo_net, tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    name, deploy, weights = zoo_net
    result = export(deploy, weights, tmp_path / f"net{suffix}")
    assert result.max_error <= 1e-4
    loaded = load_exported(result.path)
    expected = file_blobs(weights)
    assert set(loaded) == set(expected)
    for key, blob in expected.items():
        np.testing.assert_array_equal(loaded[key], blob, err_msg=key)
    if name == "ResNet-50":  # BatchNorm: mean, variance, scale factor; Scale: gamma, beta
        assert [loaded[f"bn_conv1.{i}"].shape for i in range(3)] == [(4,), (4,), (1,)]
        assert "scale_conv1.1" in loaded and "res2a_branch2a.1" not in loaded


def test_onnx_runs_in_onnxruntime_like_the_runtime(zoo_net, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    name, deploy, weights = zoo_net
    result = export(deploy, weights, tmp_path / "net.onnx")
    assert result.max_error <= 1e-4
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [LOGITS[name]]
    net = torchcaffe.Net(str(deploy), str(weights), torchcaffe.TEST)
    image = np.random.default_rng(5).uniform(-128, 128, net.blobs["data"].shape)
    net.blobs["data"].data[...] = image
    want = net.forward()[LOGITS[name]]
    (got,) = session.run(None, {"data": image.astype(np.float32)})
    assert np.abs(want).max() > 1 and want.std() > 0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_batch_statistics_leave_the_exported_blobs_as_stored(tmp_path):
    """A BatchNorm with `use_global_stats: false` updates its running sums on
    every forward, as in Caffe; the exported file still holds the
    caffemodel's blobs, not those of the exporter's own check forwards."""
    n = torchcaffe.NetSpec()
    n.data = torchcaffe.layers.Input(shape=dict(dim=[2, 3, 5, 5]))
    n.conv = torchcaffe.layers.Convolution(n.data, num_output=4, kernel_size=3)
    n.bn = torchcaffe.layers.BatchNorm(n.conv, use_global_stats=False)
    deploy, weights = write_net(tmp_path, n.to_proto())
    for suffix in (".npz", ".onnx"):
        if suffix == ".onnx":
            pytest.importorskip("onnxruntime")
        export(deploy, weights, tmp_path / f"net{suffix}")
    loaded = load_exported(tmp_path / "net.npz")
    for key, blob in file_blobs(weights).items():
        np.testing.assert_array_equal(loaded[key], blob, err_msg=key)
