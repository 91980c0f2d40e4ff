"""Feature extractors: VGG16 and AlexNet, in FCN form or classifier form.

`vgg16(n, bottom)` / `alexnet(n, bottom)` add the layers to NetSpec `n`
(names as in the reference nets, plus an optional suffix for multi-stream
nets) and return the `Features`: the last top and the pools the skip heads
read. The FCN form casts fc6/fc7 into convolutions ("fully convolutional");
the classifier form keeps them InnerProduct, as the ILSVRC base nets have
them, so their weights load by name and shape.
"""
from __future__ import annotations

from dataclasses import dataclass

from caffe_backend import caffe

from .blocks import FROZEN, LEARNED, conv_relu, dropout, max_pool

L = caffe.layers
P = caffe.params

# (width, number of 3x3 convs) per VGG16 block
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
FC_WIDTH = 4096
ILSVRC_CLASSES = 1000


def narrow(channels: int, width: float) -> int:
    """A backbone channel count scaled by the width multiplier (at least 1).
    width 1 is the reference net; smaller widths give the same topology for
    tests and demos that must run in seconds on a CPU."""
    return max(1, round(channels * width))


@dataclass
class Features:
    out: object                 # the last top (fc7 after its ReLU / Dropout)
    pools: dict[str, object]    # "pool3", "pool4", ... tops


def vgg16(n, bottom, *, suffix="", first_pad=100, first_conv="conv1_1",
          fully_conv=True, dropout_fc=True, width=1.0, frozen=False):
    """VGG16 up to fc7. `first_pad` 100 lets an FCN see any input size
    (1 keeps the ILSVRC geometry); `first_conv` renames conv1_1 when its
    input channels differ from the base net's (e.g. conv1_1_bgrd); `frozen`
    sets every learning rate to 0 (FCN-32s-fixed)."""
    param = FROZEN if frozen else LEARNED
    top = bottom
    pools = {}
    for block, (channels, depth) in enumerate(VGG16_BLOCKS, start=1):
        for i in range(1, depth + 1):
            first = (block, i) == (1, 1)
            conv_name = first_conv if first else f"conv{block}_{i}"
            relu_name = f"relu{block}_{i}"
            n[conv_name + suffix], n[relu_name + suffix] = conv_relu(
                top, narrow(channels, width), pad=first_pad if first else 1, param=param)
            top = n[relu_name + suffix]
        pools[f"pool{block}"] = n[f"pool{block}{suffix}"] = max_pool(top)
        top = pools[f"pool{block}"]
    out = _fc_layers(n, top, suffix, fc6_kernel=7, fully_conv=fully_conv,
                     dropout_fc=dropout_fc, fc_width=narrow(FC_WIDTH, width),
                     conv_fc=lambda b, k, w: conv_relu(b, w, ks=k, pad=0, param=param))
    return Features(out, pools)


def _fc_layers(n, bottom, suffix, *, fc6_kernel, fully_conv, dropout_fc, fc_width, conv_fc):
    """fc6 / relu6 / [drop6] / fc7 / relu7 / [drop7]; as convolutions (made
    by `conv_fc(bottom, kernel, width)`) or as InnerProduct layers."""
    top = bottom
    for index, kernel in ((6, fc6_kernel), (7, 1)):
        if fully_conv:
            fc, relu = conv_fc(top, kernel, fc_width)
        else:
            fc = L.InnerProduct(top, num_output=fc_width, param=LEARNED)
            relu = L.ReLU(fc, in_place=True)
        n[f"fc{index}{suffix}"], n[f"relu{index}{suffix}"] = fc, relu
        top = relu
        if dropout_fc:
            top = n[f"drop{index}{suffix}"] = dropout(top)
    return top


# AlexNet convs: name, kernel, width, stride, pad, group
ALEXNET_CONVS = (
    ("conv1", 11, 96, 4, 0, 1),
    ("conv2", 5, 256, 1, 2, 2),
    ("conv3", 3, 384, 1, 1, 1),
    ("conv4", 3, 384, 1, 1, 2),
    ("conv5", 3, 256, 1, 1, 2),
)
ALEXNET_POOLED = {"conv1": "1", "conv2": "2", "conv5": "5"}


def alexnet(n, bottom, *, fcn_release=True, fully_conv=True, dropout_fc=True, width=1.0):
    """AlexNet up to fc7.

    `fcn_release=True` is FCN-AlexNet as the FCN release has it: conv1 pad
    100, pool before LRN (CaffeNet order), every conv field written out and
    no param specs. `fcn_release=False` is bvlc_alexnet's deploy net: LRN
    before pool, learning-rate param specs, only non-default conv fields.
    """
    def conv(bottom_, kernel, width, stride=1, pad=0, group=1):
        if fcn_release:
            c = L.Convolution(bottom_, kernel_size=kernel, stride=stride,
                              num_output=width, pad=pad, group=group)
        else:
            given = dict(stride=stride, pad=pad, group=group)
            kwargs = {k: v for k, v in given.items() if v != (1 if k != "pad" else 0)}
            c = L.Convolution(bottom_, num_output=width, kernel_size=kernel,
                              param=LEARNED, **kwargs)
        return c, L.ReLU(c, in_place=True)

    top = bottom
    pools = {}
    for name, kernel, channels, stride, pad, group in ALEXNET_CONVS:
        if name == "conv1" and fcn_release:
            pad = 100
        index = name[len("conv"):]
        n[name], n[f"relu{index}"] = conv(top, kernel, narrow(channels, width), stride, pad, group)
        top = n[f"relu{index}"]
        if name in ALEXNET_POOLED:
            top = _alexnet_pool_norm(n, top, index, pool_first=fcn_release)
            pools[f"pool{index}"] = n[f"pool{index}"]
    out = _fc_layers(n, top, "", fc6_kernel=6, fully_conv=fully_conv,
                     dropout_fc=dropout_fc, fc_width=narrow(FC_WIDTH, width),
                     conv_fc=lambda b, k, w: conv(b, k, w))
    return Features(out, pools)


def _alexnet_pool_norm(n, bottom, index, *, pool_first):
    """3x3/2 max pool and (after conv1, conv2) LRN, in either order."""
    def pool(b):
        return max_pool(b, ks=3, stride=2)

    def norm(b):
        return L.LRN(b, local_size=5, alpha=1e-4, beta=0.75)

    if index == "5":
        n[f"pool{index}"] = pool(bottom)
        return n[f"pool{index}"]
    steps = ((f"pool{index}", pool), (f"norm{index}", norm))
    for name, make in steps if pool_first else steps[::-1]:
        n[name] = make(bottom)
        bottom = n[name]
    return bottom


def classifier(n, features: Features, *, fully_conv: bool, fc8_kernel: int = 1,
               name: str = "fc8"):
    """The classifier over the ILSVRC classes (`name`: fc8, GoogLeNet's
    loss3/classifier) and the `prob` softmax of the base nets."""
    if fully_conv:
        n[name] = L.Convolution(features.out, num_output=ILSVRC_CLASSES,
                                kernel_size=fc8_kernel, param=LEARNED)
    else:
        n[name] = L.InnerProduct(features.out, num_output=ILSVRC_CLASSES, param=LEARNED)
    n.prob = L.Softmax(n[name])


# GoogLeNet (bvlc_googlenet): per inception module the widths of its four
# branches, concatenated in this order: 1x1, 3x3 (reduce, out), 5x5 (reduce,
# out), pool projection
INCEPTIONS = (
    ("3a", 64, (96, 128), (16, 32), 32),
    ("3b", 128, (128, 192), (32, 96), 64),
    ("pool3", None, None, None, None),
    ("4a", 192, (96, 208), (16, 48), 64),
    ("4b", 160, (112, 224), (24, 64), 64),
    ("4c", 128, (128, 256), (24, 64), 64),
    ("4d", 112, (144, 288), (32, 64), 64),
    ("4e", 256, (160, 320), (32, 128), 128),
    ("pool4", None, None, None, None),
    ("5a", 256, (160, 320), (32, 128), 128),
    ("5b", 384, (192, 384), (48, 128), 128),
)
GOOGLENET_DROPOUT = 0.4  # before the classifier (after the final average pool)


def _lrn(bottom):
    return L.LRN(bottom, local_size=5, alpha=1e-4, beta=0.75)


def googlenet(n, bottom, *, first_pad=100, final_pool=False, dropout_fc=True, width=1.0):
    """GoogLeNet's main branch up to inception_5b (the auxiliary classifiers
    left out), layer names as bvlc_googlenet's, so its caffemodel loads by
    name. `first_pad` is conv1/7x7_s2's pad (the ILSVRC net has 3; an FCN
    100, as FCN-VGG16 / AlexNet have). The FCN discards the final average
    pool, as the paper does, and keeps the classifier's 0.4 dropout on its
    last features; `final_pool` keeps pool5/7x7_s1 (the classifier nets)."""
    def conv(name, bottom_, channels, kernel, stride=1, pad=0, relu=None):
        n[name], n[relu] = conv_relu(bottom_, narrow(channels, width), ks=kernel,
                                     stride=stride, pad=pad)
        return n[relu]

    top = conv("conv1/7x7_s2", bottom, 64, 7, stride=2, pad=first_pad, relu="conv1/relu_7x7")
    n["pool1/3x3_s2"] = max_pool(top, ks=3, stride=2)
    n["pool1/norm1"] = _lrn(n["pool1/3x3_s2"])
    top = conv("conv2/3x3_reduce", n["pool1/norm1"], 64, 1, relu="conv2/relu_3x3_reduce")
    top = conv("conv2/3x3", top, 192, 3, pad=1, relu="conv2/relu_3x3")
    n["conv2/norm2"] = _lrn(top)
    n["pool2/3x3_s2"] = max_pool(n["conv2/norm2"], ks=3, stride=2)
    top = n["pool2/3x3_s2"]
    pools = {}
    for name, one, three, five, proj in INCEPTIONS:
        if one is None:  # a 3x3 / 2 max pool between the stages
            pools[name] = n[f"{name}/3x3_s2"] = max_pool(top, ks=3, stride=2)
            top = pools[name]
            continue
        prefix = f"inception_{name}"
        branches = [
            conv(f"{prefix}/1x1", top, one, 1, relu=f"{prefix}/relu_1x1"),
            conv(f"{prefix}/3x3", conv(f"{prefix}/3x3_reduce", top, three[0], 1,
                                       relu=f"{prefix}/relu_3x3_reduce"),
                 three[1], 3, pad=1, relu=f"{prefix}/relu_3x3"),
            conv(f"{prefix}/5x5", conv(f"{prefix}/5x5_reduce", top, five[0], 1,
                                       relu=f"{prefix}/relu_5x5_reduce"),
                 five[1], 5, pad=2, relu=f"{prefix}/relu_5x5"),
        ]
        n[f"{prefix}/pool"] = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1)
        branches.append(conv(f"{prefix}/pool_proj", n[f"{prefix}/pool"], proj, 1,
                             relu=f"{prefix}/relu_pool_proj"))
        n[f"{prefix}/output"] = L.Concat(*branches)
        top = n[f"{prefix}/output"]
    if final_pool:
        n["pool5/7x7_s1"] = L.Pooling(top, pool=P.Pooling.AVE, kernel_size=7, stride=1)
        top = n["pool5/7x7_s1"]
        name = "pool5/drop_7x7_s1"
    else:
        name = "inception_5b/drop"
    if dropout_fc:
        n[name] = L.Dropout(top, dropout_ratio=GOOGLENET_DROPOUT, in_place=True)
        top = n[name]
    return Features(top, pools)
