"""The reference FCN nets (full size, from netspec) build and run forward and
backward on a small input. The Python data layer is replaced by Input layers
of the shapes it would produce (its tops and channel counts from netspec's
dataset description), so no dataset is needed. With the prototxts' default
zero weights every score is 0, so each SoftmaxWithLoss equals its hand value:
log(classes) per labelled pixel (normalize: false sums over pixels; AlexNet's
normalize: true averages)."""
import math

import numpy as np
import pytest

import torchcaffe as caffe
from torchcaffe.proto import caffe_pb2

netspec_models = pytest.importorskip("netspec.models")

HEIGHT, WIDTH = 64, 80
NETS = {
    # name: {loss top: (classes, normalized)}
    "voc-fcn32s": {"loss": (21, False)},
    "voc-fcn16s": {"loss": (21, False)},
    "voc-fcn8s": {"loss": (21, False)},
    "voc-fcn8s-atonce": {"loss": (21, False)},
    "voc-fcn-alexnet": {"loss": (21, True)},
    "nyud-fcn32s-color-d": {"loss": (40, False)},
    "nyud-fcn32s-color-hha": {"loss": (40, False)},
    "siftflow-fcn16s": {"loss": (33, False), "loss_geo": (3, False)},
}


def train_net_with_inputs(name: str) -> tuple[caffe_pb2.NetParameter, dict]:
    """The train net with its data layer swapped for Input layers; also the
    input shapes."""
    model = netspec_models.NETS[name]
    dataset = model.dataset
    net = model.net_proto(dataset.train_split)
    channels = dict(dataset.image_channels)
    data_layers = [layer for layer in net.layer if layer.type == "Python"]
    assert len(data_layers) == 1 and tuple(data_layers[0].top) == dataset.tops
    shapes = {top: (1, channels.get(top, 1), HEIGHT, WIDTH) for top in dataset.tops}
    inputs = caffe_pb2.LayerParameter(name="input", type="Input", top=list(dataset.tops))
    for top in dataset.tops:
        inputs.input_param.shape.add().dim[:] = shapes[top]
    layers = [inputs] + [layer for layer in net.layer if layer.type != "Python"]
    del net.layer[:]
    net.layer.extend(layers)
    return net, shapes


@pytest.mark.parametrize("name", list(NETS))
def test_reference_net_runs_forward_and_backward(name):
    param, shapes = train_net_with_inputs(name)
    net = caffe.Net(param, phase=caffe.TRAIN)
    rng = np.random.default_rng(0)
    losses = NETS[name]
    labels = {top for top in shapes if shapes[top][1] == 1 and top not in dict(
        netspec_models.NETS[name].dataset.image_channels)}
    for top, shape in shapes.items():
        if top in labels:
            net.blobs[top].data[...] = rng.integers(0, 3, shape)
        else:
            net.blobs[top].data[...] = rng.uniform(-100, 100, shape)
    net.forward()
    for loss_top, (classes, normalized) in losses.items():
        score = net.bottom_names[loss_top][0]
        assert net.blobs[score].shape == (1, classes, HEIGHT, WIDTH), score
        expected = math.log(classes) * (1 if normalized else HEIGHT * WIDTH)
        assert net.blobs[loss_top].data == pytest.approx(expected, rel=1e-4)  # float32 sums
    net.backward()
    for layer, blobs in net.params.items():
        for blob in blobs:
            assert blob.diff.shape == blob.data.shape
            assert np.isfinite(blob.diff).all(), layer
