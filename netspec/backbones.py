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

from .blocks import LEARNED, conv_relu, dropout, max_pool

L = caffe.layers

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
          fully_conv=True, dropout_fc=True, width=1.0):
    """VGG16 up to fc7. `first_pad` 100 lets an FCN see any input size
    (1 keeps the ILSVRC geometry); `first_conv` renames conv1_1 when its
    input channels differ from the base net's (e.g. conv1_1_bgrd)."""
    top = bottom
    pools = {}
    for block, (channels, depth) in enumerate(VGG16_BLOCKS, start=1):
        for i in range(1, depth + 1):
            first = (block, i) == (1, 1)
            conv_name = first_conv if first else f"conv{block}_{i}"
            relu_name = f"relu{block}_{i}"
            n[conv_name + suffix], n[relu_name + suffix] = conv_relu(
                top, narrow(channels, width), pad=first_pad if first else 1)
            top = n[relu_name + suffix]
        pools[f"pool{block}"] = n[f"pool{block}{suffix}"] = max_pool(top)
        top = pools[f"pool{block}"]
    out = _fc_layers(n, top, suffix, fc6_kernel=7, fully_conv=fully_conv,
                     dropout_fc=dropout_fc, fc_width=narrow(FC_WIDTH, width),
                     conv_fc=lambda b, k, w: conv_relu(b, w, ks=k, pad=0))
    return Features(out, pools)


def _fc_layers(n, bottom, suffix, *, fc6_kernel, fully_conv, dropout_fc, fc_width, conv_fc,
               param_specs=True):
    """fc6 / relu6 / [drop6] / fc7 / relu7 / [drop7]; as convolutions (made
    by `conv_fc(bottom, kernel, width)`) or as InnerProduct layers (with the
    learning-rate param specs unless `param_specs` is False)."""
    top = bottom
    for index, kernel in ((6, fc6_kernel), (7, 1)):
        if fully_conv:
            fc, relu = conv_fc(top, kernel, fc_width)
        else:
            fc = L.InnerProduct(top, num_output=fc_width, **_learned(param_specs))
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


def alexnet(n, bottom, *, fcn_release=True, pool_first=None, param_specs=True,
            fully_conv=True, dropout_fc=True, width=1.0):
    """AlexNet up to fc7.

    `fcn_release=True` is FCN-AlexNet as the FCN release has it: conv1 pad
    100, pool before LRN (CaffeNet order), every conv field written out and
    no param specs. `fcn_release=False` is bvlc_alexnet's deploy net: LRN
    before pool, learning-rate param specs, only non-default conv fields.
    `pool_first` overrides the order (True with `fcn_release=False` and
    `param_specs=False` is bvlc_reference_caffenet's deploy net).
    """
    if pool_first is None:
        pool_first = fcn_release

    def conv(bottom_, kernel, width, stride=1, pad=0, group=1):
        if fcn_release:
            c = L.Convolution(bottom_, kernel_size=kernel, stride=stride,
                              num_output=width, pad=pad, group=group)
        else:
            given = dict(stride=stride, pad=pad, group=group)
            kwargs = {k: v for k, v in given.items() if v != (1 if k != "pad" else 0)}
            c = L.Convolution(bottom_, num_output=width, kernel_size=kernel,
                              **_learned(param_specs), **kwargs)
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
            top = _alexnet_pool_norm(n, top, index, pool_first=pool_first)
            pools[f"pool{index}"] = n[f"pool{index}"]
    out = _fc_layers(n, top, "", fc6_kernel=6, fully_conv=fully_conv,
                     dropout_fc=dropout_fc, fc_width=narrow(FC_WIDTH, width),
                     conv_fc=lambda b, k, w: conv(b, k, w), param_specs=param_specs)
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
               name: str = "fc8", classes: int = ILSVRC_CLASSES, softmax: bool = True,
               param_specs: bool = True):
    """The last layer (fc8 over the ILSVRC classes for the base nets) and,
    unless `softmax` is False, its `prob` softmax."""
    if fully_conv:
        n[name] = L.Convolution(features.out, num_output=classes, kernel_size=fc8_kernel,
                                **_learned(param_specs))
    else:
        n[name] = L.InnerProduct(features.out, num_output=classes, **_learned(param_specs))
    if softmax:
        n.prob = L.Softmax(n[name])


def _learned(param_specs: bool) -> dict:
    """The learning-rate param specs as layer kwargs, or none."""
    return dict(param=LEARNED) if param_specs else {}
