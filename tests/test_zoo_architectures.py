"""The Model Zoo deploy nets of `netspec.zoo` (LeNet, CIFAR-10 quick,
CaffeNet, AlexNet, R-CNN ILSVRC13, Flickr style, GoogLeNet, ResNet-50 / 101
/ 152). LeNet's, CIFAR-10 quick's and CaffeNet's equal BVLC's own deploy
files as protobuf messages (so BVLC's outputs for those files, checked in
test_golden_zoo.py, are theirs). Every net builds and runs forward; its
parameter count and the parameter shapes of key layers are derived here from
the architecture tables (AlexNet paper, Szegedy et al. Table 1, He et al.
Table 1), so the released caffemodels load by name and shape."""
import math

import numpy as np
import pytest
from google.protobuf import text_format

import torchcaffe
from golden_sets import file_params
from netspec.zoo import ZOO_NETS
from test_golden_zoo import seeded_blob
from torchcaffe.proto import caffe_pb2


def fill_seeded(net, seed: int = 7) -> None:
    """Plausible values for every blob (He-scaled weights, BatchNorm
    statistics near 0 / 1), by the golden zoo weight rule."""
    k = 0
    for layer, blobs in net.params.items():
        layer_type = net.layer_dict[layer].type
        for index, blob in enumerate(blobs):
            blob.data[...] = seeded_blob(seed, k, layer_type, index, blob.shape)
            k += 1


def run_forward(net, output: str = "prob") -> np.ndarray:
    torchcaffe.set_mode_cpu()
    fill_seeded(net)
    image = np.random.default_rng(0).standard_normal(net.blobs["data"].shape)
    net.blobs["data"].data[...] = image.astype(np.float32)
    return net.forward()[output]


def param_count(net, skip_types=()) -> int:
    return sum(math.prod(blob.shape) for layer, blobs in net.params.items()
               if net.layer_dict[layer].type not in skip_types for blob in blobs)


def build(name: str, batch: int = 1) -> torchcaffe.Net:
    return torchcaffe.Net(ZOO_NETS[name].deploy(batch=batch), torchcaffe.TEST)


def param_shapes(net, layer: str) -> list[tuple]:
    return [tuple(blob.shape) for blob in net.params[layer]]


# ---------------------------------------------------------------- AlexNet family

# (kernel, input channels per group, outputs) of conv1..conv5 (groups 1, 2, 1, 2, 2)
# and the fc layers: pool5 is 256 x 6 x 6 at a 227 input
ALEXNET_CONVS = [(11, 3, 96), (5, 48, 256), (3, 256, 384), (3, 192, 384), (3, 192, 256)]
ALEXNET_FCS = [(256 * 6 * 6, 4096), (4096, 4096)]
# net -> (last layer, its outputs, the net's output blob)
ALEXNET_FAMILY = {"bvlc_reference_caffenet": ("fc8", 1000, "prob"),
                  "bvlc_alexnet": ("fc8", 1000, "prob"),
                  "bvlc_reference_rcnn_ilsvrc13": ("fc-rcnn", 200, "fc-rcnn"),
                  "finetune_flickr_style": ("fc8_flickr", 20, "prob")}


def alexnet_learnable(classes: int) -> int:
    """Weights and biases: k*k*c_in*c_out + c_out per conv, in*out + out per fc."""
    convs = sum(k * k * c_in * c_out + c_out for k, c_in, c_out in ALEXNET_CONVS)
    fcs = sum(n_in * n_out + n_out for n_in, n_out in ALEXNET_FCS + [(4096, classes)])
    return convs + fcs


def test_alexnet_count_is_the_published_one():
    assert alexnet_learnable(1000) == 60_965_224


# BVLC's own deploy files, whose outputs tests/test_golden_zoo.py checks
@pytest.mark.parametrize("path", file_params(*(f"zoo/{name}.prototxt" for name in (
    "lenet", "cifar10_quick", "bvlc_reference_caffenet"))))
def test_deploy_is_the_released_file(path):
    released = caffe_pb2.NetParameter()
    text_format.Merge(path.read_text(), released)
    assert ZOO_NETS[path.stem].deploy() == released


def test_alexnet_family_differences_from_caffenet():
    caffenet = ZOO_NETS["bvlc_reference_caffenet"].deploy()
    alexnet = ZOO_NETS["bvlc_alexnet"].deploy()
    assert [layer.name for layer in caffenet.layer][2:6] == ["relu1", "pool1", "norm1", "conv2"]
    assert [layer.name for layer in alexnet.layer][2:6] == ["relu1", "norm1", "pool1", "conv2"]
    assert alexnet.layer[1].param[1].lr_mult == 2 and not caffenet.layer[1].param
    rcnn = ZOO_NETS["bvlc_reference_rcnn_ilsvrc13"].deploy()
    # legacy net-level input, no Input layer and no softmax, as released
    assert list(rcnn.input) == ["data"] and list(rcnn.input_shape[0].dim) == [10, 3, 227, 227]
    assert rcnn.layer[0].name == "conv1" and rcnn.layer[-1].name == "fc-rcnn"
    flickr = ZOO_NETS["finetune_flickr_style"].deploy()
    assert [layer.name for layer in flickr.layer][-2:] == ["fc8_flickr", "prob"]


@pytest.mark.parametrize("name", ALEXNET_FAMILY)
def test_alexnet_family_builds_runs_and_has_released_shapes(name):
    last, classes, output = ALEXNET_FAMILY[name]
    net = build(name)
    assert param_count(net) == alexnet_learnable(classes)
    assert param_shapes(net, "conv1") == [(96, 3, 11, 11), (96,)]
    assert param_shapes(net, "conv2") == [(256, 48, 5, 5), (256,)]  # group 2
    assert param_shapes(net, "fc6") == [(4096, 9216), (4096,)]
    assert param_shapes(net, last) == [(classes, 4096), (classes,)]
    assert net.blobs["pool5"].shape == (1, 256, 6, 6)
    out = run_forward(net, output)
    assert out.shape == (1, classes) and np.isfinite(out).all()
    if output == "prob":
        assert abs(float(out.sum()) - 1) < 1e-5


# ---------------------------------------------------------------- GoogLeNet

def test_googlenet_deploy_builds_and_runs():
    net = build("bvlc_googlenet")
    # conv1 9,472; conv2 4,160 + 110,784; inception 3a..5b 5,849,136 (each
    # module: in x (1x1 + 3x3 reduce + 5x5 reduce + pool proj) + reduce x 9 x
    # 3x3 + reduce x 25 x 5x5 + biases); classifier 1,025,000
    assert param_count(net) == 6_998_552
    assert param_shapes(net, "inception_3a/3x3") == [(128, 96, 3, 3), (128,)]
    assert net.blobs["inception_5b/output"].shape == (1, 1024, 7, 7)
    prob = run_forward(net)
    assert prob.shape == (1, 1000)
    assert np.isfinite(prob).all() and abs(float(prob.sum()) - 1) < 1e-5


# ---------------------------------------------------------------- ResNets

# He et al. Table 1: blocks per stage; bottleneck widths 64, 128, 256, 512
RESNET_TABLE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def resnet_counts(depth: int) -> tuple[int, int, int]:
    """(learnable values, BatchNorm layers, BatchNorm channels).

    Learnable: bias-free convolutions (7x7x3x64 conv1; per bottleneck
    c_in x w + 9 w^2 + w x 4w, plus c_in x 4w for the first block's
    projection shortcut), fc1000 (2048 x 1000 + 1000) and Scale's gamma and
    beta (2 per BatchNorm channel). BatchNorm's stored mean and variance
    (one each per channel) and its scale factor (one per layer) are counted
    apart."""
    convs, bn_layers, channels, c_in = 7 * 7 * 3 * 64, 1, 64, 64
    for blocks, w in zip(RESNET_TABLE[depth], (64, 128, 256, 512)):
        for b in range(blocks):
            convs += c_in * w + 9 * w * w + w * 4 * w
            bn_layers, channels = bn_layers + 3, channels + 6 * w
            if b == 0:
                convs += c_in * 4 * w
                bn_layers, channels = bn_layers + 1, channels + 4 * w
            c_in = 4 * w
    return convs + 2048 * 1000 + 1000 + 2 * channels, bn_layers, channels


@pytest.mark.parametrize("depth, published", [(50, 25_557_032), (101, 44_549_160),
                                              (152, 60_192_808)])
def test_resnet_counts_are_the_published_ones(depth, published):
    assert resnet_counts(depth)[0] == published


# depth -> (a block deep in stage 4, the last block of stage 3)
RESNET_NAMES = {50: ("res4f", "res3d"), 101: ("res4b22", "res3b3"), 152: ("res4b35", "res3b7")}


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_resnet_deploy_with_legacy_inputs_has_released_shapes(depth):
    deploy = ZOO_NETS[f"ResNet-{depth}"].deploy()
    text = text_format.MessageToString(deploy)
    assert "input_dim: 224" in text and 'type: "Input"' not in text
    net = torchcaffe.Net(deploy, torchcaffe.TEST)
    assert net.inputs == ["data"] and net.blobs["data"].shape == (1, 3, 224, 224)
    learnable, bn_layers, bn_channels = resnet_counts(depth)
    assert param_count(net, skip_types=("BatchNorm",)) == learnable
    assert param_count(net) == learnable + 2 * bn_channels + bn_layers
    assert sum(layer.type == "BatchNorm" for layer in net.layers) == bn_layers
    deep, stage3_last = RESNET_NAMES[depth]
    block = deep[len("res"):]
    assert param_shapes(net, "conv1") == [(64, 3, 7, 7)]
    assert param_shapes(net, "bn_conv1") == [(64,), (64,), (1,)]
    assert param_shapes(net, "scale_conv1") == [(64,), (64,)]
    assert param_shapes(net, deep + "_branch2a") == [(256, 1024, 1, 1)]
    assert param_shapes(net, deep + "_branch2b") == [(256, 256, 3, 3)]
    assert param_shapes(net, deep + "_branch2c") == [(1024, 256, 1, 1)]
    assert param_shapes(net, f"bn{block}_branch2c") == [(1024,), (1024,), (1,)]
    assert param_shapes(net, f"scale{block}_branch2a") == [(256,), (256,)]
    assert param_shapes(net, "res5a_branch1") == [(2048, 1024, 1, 1)]
    assert param_shapes(net, "fc1000") == [(1000, 2048), (1000,)]
    # the stride 2 of stage 4 sits on res4a's 1x1 branch2a, as released
    assert net.blobs[stage3_last].shape == (1, 512, 28, 28)
    assert net.blobs["res4a_branch2a"].shape == (1, 256, 14, 14)
    assert net.blobs["res5c"].shape == (1, 2048, 7, 7)


# a full-size forward of ResNet-50; ResNet-101 / 152 (4.5 and 7 times the
# work) run at a quarter of the channels, the same layers and geometry
@pytest.mark.parametrize("depth, width", [(50, 1.0), (101, 0.25), (152, 0.25)])
def test_resnet_forward(depth, width):
    net = torchcaffe.Net(ZOO_NETS[f"ResNet-{depth}"].deploy(width), torchcaffe.TEST)
    assert net.blobs["res5c"].shape == (1, round(2048 * width), 7, 7)
    prob = run_forward(net)
    assert prob.shape == (1, 1000)
    assert np.isfinite(prob).all() and abs(float(prob.sum()) - 1) < 1e-5
