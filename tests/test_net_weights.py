"""Weights in and out of a Net: save -> copy_from round trip through a real
caffemodel file, partial copies, errors naming file and layer, the
(file, weights, phase) constructors and share_with."""
import numpy as np
import pytest

import torchcaffe as caffe
from torchcaffe.caffemodel import read_caffemodel, write_caffemodel
from torchcaffe.errors import CaffeError
from torchcaffe.prototxt import parse_net_text

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
"""


@pytest.fixture
def prototxt(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return str(path)


def params_of(net):
    return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}


def test_save_then_copy_from_round_trip(tmp_path, prototxt):
    source = caffe.Net(prototxt, caffe.TEST)
    path = tmp_path / "w.caffemodel"
    source.save(str(path))
    layers = {layer.name: layer for layer in read_caffemodel(path)}
    assert [layer.type for layer in layers.values()] == ["Input", "InnerProduct", "ReLU",
                                                        "InnerProduct"]
    np.testing.assert_array_equal(layers["ip1"].blobs[1], source.params["ip1"][1].data)

    target = caffe.Net(prototxt, caffe.TEST)  # other random weights
    assert not np.array_equal(target.params["ip1"][0].data, source.params["ip1"][0].data)
    target.copy_from(str(path))
    for name, arrays in params_of(source).items():
        for got, want in zip(target.params[name], arrays):
            np.testing.assert_array_equal(got.data, want)
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    np.testing.assert_array_equal(source.forward(data=x)["ip2"], target.forward(data=x)["ip2"])
    # the positional and keyword constructors load weights too
    for net in (caffe.Net(prototxt, str(path), caffe.TEST),
                caffe.Net(prototxt, caffe.TEST, weights=str(path)),
                caffe.Net(prototxt, phase=caffe.TEST, weights=str(path))):
        np.testing.assert_array_equal(net.params["ip2"][0].data, source.params["ip2"][0].data)


def write_layers(path, blobs_by_layer):
    """A caffemodel holding only the named layers of NET, with these blobs."""
    net = parse_net_text(NET)
    keep = [layer for layer in net.layer if layer.name in blobs_by_layer]
    del net.layer[:]
    net.layer.extend(keep)
    write_caffemodel(path, net, blobs_by_layer)


def test_copy_from_keeps_layers_the_file_lacks(tmp_path, prototxt):
    net = caffe.Net(prototxt, caffe.TEST)
    kept = params_of(net)["ip1"]
    new_w = np.arange(8, dtype=np.float32).reshape(2, 4)
    path = tmp_path / "partial.caffemodel"
    write_layers(path, {"ip2": [new_w, np.ones(2, np.float32)]})
    net.copy_from(str(path))
    np.testing.assert_array_equal(net.params["ip2"][0].data, new_w)
    np.testing.assert_array_equal(net.params["ip2"][1].data, [1, 1])
    for blob, before in zip(net.params["ip1"], kept):
        np.testing.assert_array_equal(blob.data, before)


def test_copy_from_shape_mismatch_names_file_and_layer(tmp_path, prototxt):
    net = caffe.Net(prototxt, caffe.TEST)
    path = tmp_path / "bad.caffemodel"
    write_layers(path, {"ip2": [np.zeros((3, 4), np.float32), np.zeros(2, np.float32)]})
    with pytest.raises(CaffeError, match=r"bad\.caffemodel.*'ip2'.*shape mismatch"):
        net.copy_from(str(path))
    write_layers(path, {"ip1": [np.zeros((4, 3), np.float32)]})
    with pytest.raises(CaffeError, match=r"bad\.caffemodel, layer 'ip1'.*1 blobs.*2"):
        net.copy_from(str(path))


def test_share_with_shares_data_not_diff(prototxt):
    train = caffe.Net(prototxt, caffe.TRAIN)
    test = caffe.Net(prototxt, caffe.TEST)
    test.share_with(train)
    train.params["ip2"][0].data[...] = 1.0
    np.testing.assert_array_equal(test.params["ip2"][0].data, np.ones((2, 4)))
    train.params["ip2"][0].data_tensor.mul_(3)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(test.forward(data=x)["ip2"], train.forward(data=x)["ip2"])
    train.params["ip2"][0].diff[...] = 5
    assert not test.params["ip2"][0].diff.any()
