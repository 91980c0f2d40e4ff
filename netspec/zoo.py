"""Model Zoo deploy nets: Caffe's LeNet and CIFAR-10 quick examples, the
CaffeNet family, AlexNet, GoogLeNet and the ResNets.

Each net has the layer names, layer order and parameter shapes of its
released deploy file, so the released caffemodel loads by layer name
(`Net(deploy, caffemodel, TEST)` / `copy_from`). The CaffeNet family
shares the AlexNet backbone of the FCN nets; AlexNet and GoogLeNet are the
FCN base nets. `ZOO_NETS[name].deploy()` gives the NetParameter;
`python -m netspec <name>` writes it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from caffe_backend import caffe

from . import backbones
from .backbones import narrow
from .blocks import max_pool
from .models import NETS as BASE_NETS

L = caffe.layers
P = caffe.params

ILSVRC_SHAPE = (10, 3, 227, 227)
RESNET_SHAPE = (1, 3, 224, 224)


@dataclass(frozen=True)
class ZooNet:
    """A deploy net: `build(n, data, width)` adds every layer after the input.

    `inputs` is how the released file declares its input: an Input layer
    ("layer"), or the legacy net-level `input:` with `input_shape {}`
    ("input_shape") or with `input_dim:` fields ("input_dim"); Caffe reads all
    three alike."""

    name: str
    net_name: str
    build: Callable
    input_shape: tuple[int, int, int, int]
    inputs: str = "layer"

    def deploy(self, width: float = 1.0, batch: int | None = None):
        """The NetParameter; `width` scales the channel counts (1: the
        released net), `batch` replaces the released batch size."""
        shape = list(self.input_shape)
        if batch is not None:
            shape[0] = batch
        n = caffe.NetSpec()
        n.data = L.Input(shape=dict(dim=shape))
        self.build(n, n.data, width)
        proto = n.to_proto()
        proto.name = self.net_name
        if self.inputs != "layer":
            del proto.layer[0]
            proto.input.append("data")
            if self.inputs == "input_dim":
                proto.input_dim.extend(shape)
            else:
                proto.input_shape.add(dim=shape)
        return proto

    def prototxts(self, width: float = 1.0) -> dict:
        return {"deploy.prototxt": self.deploy(width)}


# ---------------------------------------------------------------- Caffe's examples

# the examples learn biases at twice the weights' rate, without decay settings
EXAMPLE_PARAMS = [dict(lr_mult=1), dict(lr_mult=2)]
ZERO = dict(type="constant")


def lenet_classifier(n, data):
    """LeNet (examples/mnist) up to `ip2`, its fillers as in lenet_train_test."""
    filled = dict(param=EXAMPLE_PARAMS, weight_filler=dict(type="xavier"), bias_filler=ZERO)
    top = data
    for index, outputs in ((1, 20), (2, 50)):
        n[f"conv{index}"] = L.Convolution(top, num_output=outputs, kernel_size=5, stride=1,
                                          **filled)
        top = n[f"pool{index}"] = max_pool(n[f"conv{index}"])
    n.ip1 = L.InnerProduct(top, num_output=500, **filled)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, **filled)
    return n.ip2


# the examples are small enough to run as released: `width` leaves them alone
def lenet(n, data, width):
    n.prob = L.Softmax(lenet_classifier(n, data))


# conv1..conv3 of CIFAR-10 quick: outputs, pooling after it, its weight filler's std
CIFAR10_QUICK_CONVS = ((32, P.Pooling.MAX, 1e-4), (32, P.Pooling.AVE, 0.01),
                       (64, P.Pooling.AVE, 0.01))


def cifar10_quick_classifier(n, data, *, fillers: bool):
    """CIFAR-10 quick (examples/cifar10) up to `ip2`; `fillers` as in
    cifar10_quick_train_test (the deploy file has none). conv1 pools before
    its ReLU, the others after."""
    def filled(std):
        return dict(weight_filler=dict(type="gaussian", std=std), bias_filler=ZERO) \
            if fillers else {}

    top = data
    for index, (outputs, pool, std) in enumerate(CIFAR10_QUICK_CONVS, start=1):
        conv = n[f"conv{index}"] = L.Convolution(top, num_output=outputs, pad=2, kernel_size=5,
                                                 stride=1, param=EXAMPLE_PARAMS, **filled(std))
        pool_args = dict(pool=pool, kernel_size=3, stride=2)
        if index == 1:
            n.pool1 = L.Pooling(conv, **pool_args)
            top = n.relu1 = L.ReLU(n.pool1, in_place=True)
        else:
            n[f"relu{index}"] = L.ReLU(conv, in_place=True)
            top = n[f"pool{index}"] = L.Pooling(n[f"relu{index}"], **pool_args)
    n.ip1 = L.InnerProduct(top, num_output=64, param=EXAMPLE_PARAMS, **filled(0.1))
    n.ip2 = L.InnerProduct(n.ip1, num_output=10, param=EXAMPLE_PARAMS, **filled(0.1))
    return n.ip2


def cifar10_quick(n, data, width):
    n.prob = L.Softmax(cifar10_quick_classifier(n, data, fillers=False))


# ---------------------------------------------------------------- CaffeNet family

def caffenet(last: str = "fc8", classes: int = backbones.ILSVRC_CLASSES, softmax: bool = True):
    """CaffeNet (pool before LRN, no param specs) with its last layer named
    `last` over `classes` outputs."""
    def build(n, data, width):
        features = backbones.alexnet(n, data, fcn_release=False, pool_first=True,
                                     param_specs=False, fully_conv=False, width=width)
        backbones.classifier(n, features, fully_conv=False, name=last, classes=classes,
                             softmax=softmax, param_specs=False)
    return build


# ---------------------------------------------------------------- ResNets

# bottleneck width per stage (conv2_x .. conv5_x); a block's output is 4x its width
RESNET_WIDTHS = (64, 128, 256, 512)
# blocks per stage, He et al. Table 1
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def resnet_block_names(stage: int, blocks: int, depth: int) -> list[str]:
    """`res<stage><letter>` (res2a, res2b, ...), except that ResNet-101 / 152
    number the long middle stages' later blocks: res4a, res4b1 ... res4b22."""
    if depth > 50 and stage in (3, 4):
        return [f"res{stage}a"] + [f"res{stage}b{i}" for i in range(1, blocks)]
    return [f"res{stage}{chr(ord('a') + b)}" for b in range(blocks)]


def _conv_bn(n, name: str, bottom, num_output: int, kernel: int, stride: int = 1,
             pad: int = 0, relu: bool = True):
    """Convolution without bias, BatchNorm with stored statistics and a Scale
    with bias, in place, named as in the released nets (res2a_branch2a ->
    bn2a_branch2a, scale2a_branch2a; conv1 -> bn_conv1, scale_conv1)."""
    suffix = name[len("res"):] if name.startswith("res") else "_" + name
    n[name] = L.Convolution(bottom, num_output=num_output, kernel_size=kernel, stride=stride,
                            pad=pad, bias_term=False)
    n["bn" + suffix] = L.BatchNorm(n[name], use_global_stats=True, in_place=True)
    n["scale" + suffix] = L.Scale(n[name], bias_term=True, in_place=True)
    if relu:
        n[name + "_relu"] = L.ReLU(n[name], in_place=True)
    return n[name]


def resnet(depth: int):
    """ResNet-50 / 101 / 152 as KaimingHe/deep-residual-networks releases
    them: the stride-2 of a stage's first block sits on its 1x1 branch2a."""
    def build(n, data, width):
        top = _conv_bn(n, "conv1", data, narrow(64, width), 7, 2, 3)
        top = n.pool1 = max_pool(top, ks=3, stride=2)
        for stage, blocks, channels in zip(range(2, 6), RESNET_BLOCKS[depth], RESNET_WIDTHS):
            inner = narrow(channels, width)
            for b, name in enumerate(resnet_block_names(stage, blocks, depth)):
                stride = 2 if b == 0 and stage > 2 else 1
                shortcut = (_conv_bn(n, name + "_branch1", top, 4 * inner, 1, stride, relu=False)
                            if b == 0 else top)
                branch = _conv_bn(n, name + "_branch2a", top, inner, 1, stride)
                branch = _conv_bn(n, name + "_branch2b", branch, inner, 3, pad=1)
                branch = _conv_bn(n, name + "_branch2c", branch, 4 * inner, 1, relu=False)
                n[name] = L.Eltwise(shortcut, branch)
                top = n[name + "_relu"] = L.ReLU(n[name], in_place=True)
        n.pool5 = L.Pooling(top, pool=P.Pooling.AVE, kernel_size=7, stride=1)
        n.fc1000 = L.InnerProduct(n.pool5, num_output=1000)
        n.prob = L.Softmax(n.fc1000)
    return build


ZOO_NETS = {net.name: net for net in (
    ZooNet("lenet", "LeNet", lenet, (64, 1, 28, 28)),
    ZooNet("cifar10_quick", "CIFAR10_quick_test", cifar10_quick, (1, 3, 32, 32)),
    ZooNet("bvlc_reference_caffenet", "CaffeNet", caffenet(), ILSVRC_SHAPE),
    # the FCN nets' ILSVRC base nets are these two zoo nets' deploy files
    ZooNet("bvlc_alexnet", "AlexNet", BASE_NETS["alexnet"].build, ILSVRC_SHAPE),
    ZooNet("bvlc_reference_rcnn_ilsvrc13", "R-CNN-ilsvrc13",
           caffenet("fc-rcnn", 200, softmax=False), ILSVRC_SHAPE, inputs="input_shape"),
    ZooNet("finetune_flickr_style", "FlickrStyleCaffeNet", caffenet("fc8_flickr", 20),
           ILSVRC_SHAPE),
    ZooNet("bvlc_googlenet", "GoogleNet", BASE_NETS["googlenet"].build, (10, 3, 224, 224)),
    *(ZooNet(f"ResNet-{depth}", f"ResNet-{depth}", resnet(depth), RESNET_SHAPE,
             inputs="input_dim") for depth in RESNET_BLOCKS),
)}
