"""Score heads: FCN-32s / 16s / 8s skip architectures and their losses.

A head turns backbone features into class scores at input resolution:
score_fr (1x1) on fc7, then for 16s and 8s the 2x-upsampled scores are
fused (Eltwise SUM) with 1x1 scores of pool4 and pool3, each cropped into
alignment by coordinate mapping, and a last Deconvolution upsamples to the
input, cropped to it. Layer names follow the reference release; `suffix`
names a task of a multi-task net (SIFT Flow's `_sem` / `_geo`).
"""
from __future__ import annotations

from dataclasses import dataclass

from caffe_backend import caffe, coord_map

from .blocks import FIXED, fuse, score, upsample

L = caffe.layers

# final upsampling (kernel, stride) for each output stride
FINAL_UPSAMPLING = {32: (64, 32), 16: (32, 16), 8: (16, 8)}
# "at-once" training scales the skip inputs so they start on fc7's scale
AT_ONCE_SKIP_SCALE = {"pool4": 0.01, "pool3": 0.0001}


@dataclass(frozen=True)
class Head:
    """FCN scoring head with output stride 32, 16 or 8."""

    classes: int
    stride: int = 32
    suffix: str = ""
    scale_skips: bool = False       # FCN-8s at-once
    final_kernel: int | None = None  # FCN-AlexNet upsamples with 63 (not 64)

    def __post_init__(self):
        if self.stride not in FINAL_UPSAMPLING:
            raise ValueError(f"head stride {self.stride}: choose from {sorted(FINAL_UPSAMPLING)}")

    def __call__(self, n, features, reference):
        """Add the head to `n`; returns the score top, cropped to `reference`."""
        s = self.suffix
        n[f"score_fr{s}"] = score(features.out, self.classes)
        top = n[f"score_fr{s}"]
        # the skips, coarsest first: upscore2 + pool4, upscore_pool4 + pool3
        skips = {32: (), 16: ("pool4",), 8: ("pool4", "pool3")}[self.stride]
        for i, pool in enumerate(skips):
            up_name = "upscore2" if i == 0 else f"upscore_{skips[i - 1]}"
            n[up_name + s] = upsample(top, self.classes, 4, 2)
            skip_in = features.pools[pool]
            if self.scale_skips:
                n[f"scale_{pool}{s}"] = L.Scale(
                    skip_in, filler=dict(type="constant", value=AT_ONCE_SKIP_SCALE[pool]),
                    param=FIXED)
                skip_in = n[f"scale_{pool}{s}"]
            n[f"score_{pool}{s}"] = score(skip_in, self.classes)
            n[f"score_{pool}{s}c"] = coord_map.crop(n[f"score_{pool}{s}"], n[up_name + s])
            n[f"fuse_{pool}{s}"] = fuse(n[up_name + s], n[f"score_{pool}{s}c"])
            top = n[f"fuse_{pool}{s}"]
        kernel, stride = FINAL_UPSAMPLING[self.stride]
        final_name = "upscore" if self.stride == 32 else f"upscore{self.stride}"
        n[final_name + s] = upsample(top, self.classes, self.final_kernel or kernel, stride)
        n[f"score{s}"] = coord_map.crop(n[final_name + s], reference)
        return n[f"score{s}"]


def softmax_loss(score_top, label_top, *, normalize=False):
    """SoftmaxWithLoss ignoring label 255; `normalize=False` sums over pixels
    (hence the FCNs' tiny learning rates)."""
    return L.SoftmaxWithLoss(score_top, label_top,
                             loss_param=dict(normalize=normalize, ignore_label=255))


@dataclass(frozen=True)
class Task:
    """One output of a net: its head, the label top it learns from and the
    name of its loss layer."""

    head: Head
    label: str = "label"
    loss: str = "loss"
    normalize: bool = False


def stream_score(n, features, classes, suffix):
    """score_fr<suffix>: one stream's 1x1 scores, before late fusion."""
    n[f"score_fr{suffix}"] = score(features.out, classes)
    return n[f"score_fr{suffix}"]


def late_fusion(n, stream_scores, classes, reference, weights=(0.5, 0.5)):
    """Average the streams' scores (NYUD color + HHA: Eltwise SUM with
    coefficients), then upsample 32x and crop to `reference`."""
    n.score_fused = L.Eltwise(*stream_scores, operation=caffe.params.Eltwise.SUM,
                              coeff=list(weights))
    kernel, stride = FINAL_UPSAMPLING[32]
    n.upscore = upsample(n.score_fused, classes, kernel, stride)
    n.score = coord_map.crop(n.upscore, reference)
    return n.score
