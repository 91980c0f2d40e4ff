"""Caffe's Softmax and Accuracy layers and its losses: SoftmaxWithLoss,
EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss, InfogainLoss,
MultinomialLogisticLoss, ContrastiveLoss."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf.message import DecodeError

from ..proto import caffe_pb2
from .base import CaffeLayer, register
from .common import canonical_axis, legacy_shape

FLT_MIN = 1.1754943508222875e-38
# Caffe's floor under probabilities before their log (kLOG_THRESHOLD)
LOG_THRESHOLD = 1e-20

# LossParameter.NormalizationMode
_FULL, _VALID, _BATCH_SIZE, _NONE = 0, 1, 2, 3


def _normalization_mode(loss_param, default: int) -> int:
    """`normalization` when set, else the legacy `normalize` (true: VALID,
    false: BATCH_SIZE), else the layer's default."""
    if loss_param.HasField("normalization"):
        return loss_param.normalization
    if loss_param.HasField("normalize"):
        return _VALID if loss_param.normalize else _BATCH_SIZE
    return default


def _normalizer(mode: int, outer: int, inner: int, valid_count: torch.Tensor) -> torch.Tensor:
    """Caffe's get_normalizer, at least 1, as a 0-d float32 tensor on the
    device of `valid_count` (the number of counted positions)."""
    if mode == _VALID:
        return valid_count.to(torch.float32).clamp_min(1.0)
    value = {_FULL: outer * inner, _BATCH_SIZE: outer, _NONE: 1}[mode]
    return torch.tensor(max(1.0, float(value)), dtype=torch.float32, device=valid_count.device)


def _check_label_range(layer: CaffeLayer, labels: torch.Tensor, classes: int) -> None:
    """Labels (ignored ones already replaced) must index one of the classes."""
    low, high = torch.aminmax(labels)
    if bool((low < 0) | (high >= classes)):
        bad = (low if low < 0 else high).item()
        raise layer.error(f"label {bad} is outside 0..{classes - 1} and is not the ignore_label")


def _check_label_count(layer: CaffeLayer, shape, label_shape) -> None:
    """One label per prediction: outer x inner of the scores around the axis."""
    if math.prod(label_shape) != layer.outer * layer.inner:
        raise layer.error(
            f"label count {math.prod(label_shape)} (shape {list(label_shape)}) must equal the "
            f"number of predictions {layer.outer * layer.inner} (scores {list(shape)}, "
            f"axis {layer.axis})")


@register("Softmax")
class SoftmaxLayer(CaffeLayer):
    num_bottoms = 1
    num_tops = 1

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        self.axis = canonical_axis(self, self.param.softmax_param.axis, len(shape))
        return [shape]

    def forward(self, bottoms):
        return [F.softmax(bottoms[0], dim=self.axis)]


def _split_axis(shape, axis: int) -> tuple[int, int, int]:
    """(outer, extent, inner) of a blob around `axis`."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def _caffe_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum as BVLC Caffe's CPU loss loop forms it: one float32
    accumulator, element by element in row-major order. With an
    unnormalised loss over many pixels this differs from a pairwise sum in
    the 5th digit, and Caffe's numbers are the reference. On the GPU (where
    Caffe itself reduces in parallel) torch's sum is used."""
    if values.is_cuda:
        return values.sum()
    running = np.cumsum(values.reshape(-1).numpy(), dtype=np.float32)
    return torch.from_numpy(running[-1:].copy()).reshape(())


class _SoftmaxLoss(torch.autograd.Function):
    """Mean negative log-likelihood with Caffe's gradient: (p - onehot) at
    counted positions, 0 at ignored ones, times top diff / normalizer."""

    @staticmethod
    def forward(ctx, scores, labels, valid, normalizer):
        # scores (outer, C, inner); labels (outer, 1, inner) int64 in range;
        # valid (outer, 1, inner) bool; normalizer: 0-d float tensor
        prob = torch.softmax(scores, dim=1)
        picked = prob.gather(1, labels)
        terms = -torch.log(picked.clamp_min(FLT_MIN)) * valid
        loss = _caffe_sum(terms) / normalizer
        ctx.save_for_backward(prob, picked, labels, valid, normalizer)
        ctx.mark_non_differentiable(prob)
        return loss, prob

    @staticmethod
    def backward(ctx, grad_loss, grad_prob):
        prob, picked, labels, valid, normalizer = ctx.saved_tensors
        # Caffe's arithmetic: p * w off the label, (p - 1) * w at it, with
        # w = top diff / normalizer at counted positions and 0 at ignored ones
        weight = valid * (grad_loss / normalizer)
        grad = prob * weight
        grad.scatter_(1, labels, (picked - 1) * weight)
        return grad, None, None, None


@register("SoftmaxWithLoss")
class SoftmaxWithLossLayer(CaffeLayer):
    """Softmax over `axis` (default 1) and the normalised negative
    log-likelihood of the labels; an optional second top holds the
    probabilities (no gradient flows back through it, as in Caffe)."""

    is_loss = True
    num_bottoms = 2
    num_tops = (1, 2)

    def setup(self, bottom_shapes, generator):
        loss = self.param.loss_param
        self.ignore_label = loss.ignore_label if loss.HasField("ignore_label") else None
        self.normalization = _normalization_mode(loss, _VALID)
        self.want_prob = len(self.param.top) > 1

    def reshape(self, bottom_shapes):
        shape, label_shape = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.axis = canonical_axis(self, self.param.softmax_param.axis, len(shape))
        self.outer, self.classes, self.inner = _split_axis(shape, self.axis)
        _check_label_count(self, shape, label_shape)
        tops = [()]
        if len(self.param.top) > 1:
            tops.append(shape)
        return tops

    def forward(self, bottoms):
        scores, labels = bottoms
        scores3 = scores.reshape(self.outer, self.classes, self.inner)
        labels = labels.detach().reshape(self.outer, 1, self.inner).to(torch.int64)
        if self.ignore_label is None:
            valid = torch.ones_like(labels, dtype=torch.bool)
        else:
            valid = labels != self.ignore_label
        labels = torch.where(valid, labels, 0)
        _check_label_range(self, labels, self.classes)
        normalizer = _normalizer(self.normalization, self.outer, self.inner, valid.sum())
        loss, prob = _SoftmaxLoss.apply(scores3, labels, valid, normalizer)
        tops = [loss]
        if self.want_prob:
            tops.append(prob.detach().reshape(scores.shape))
        return tops


@register("Accuracy")
class AccuracyLayer(CaffeLayer):
    """Fraction of counted positions whose label is among the top_k scores
    (a tie with the label's score counts against it, as in Caffe); a second
    top holds the accuracy per class."""

    num_bottoms = 2
    num_tops = (1, 2)

    def setup(self, bottom_shapes, generator):
        p = self.param.accuracy_param
        self.top_k = p.top_k
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None

    def reshape(self, bottom_shapes):
        shape, label_shape = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.axis = canonical_axis(self, self.param.accuracy_param.axis, len(shape))
        self.outer, self.classes, self.inner = _split_axis(shape, self.axis)
        if self.top_k > self.classes:
            raise self.error(f"top_k {self.top_k} exceeds the {self.classes} classes")
        _check_label_count(self, shape, label_shape)
        tops = [()]
        if len(self.param.top) > 1:
            tops.append((self.classes,))
        return tops

    def forward(self, bottoms):
        scores = bottoms[0].detach().reshape(self.outer, self.classes, self.inner)
        labels = bottoms[1].detach().reshape(self.outer, 1, self.inner).to(torch.int64)
        valid = torch.ones_like(labels, dtype=torch.bool)
        if self.ignore_label is not None:
            valid = labels != self.ignore_label
        labels = torch.where(valid, labels, 0)
        if bool(((labels < 0) | (labels >= self.classes)).any()):
            raise self.error(f"labels must lie in 0..{self.classes - 1} (or be the ignore_label)")
        true_score = scores.gather(1, labels)
        # classes scoring at least the label's, the label itself included
        rank = (scores >= true_score).sum(dim=1, keepdim=True) - 1
        hit = (rank < self.top_k) & valid
        count = valid.sum()
        accuracy = hit.sum().to(scores.dtype) / count.clamp_min(1).to(scores.dtype)
        tops = [accuracy]
        if len(self.param.top) > 1:
            per_class_count = torch.zeros(self.classes, dtype=scores.dtype, device=scores.device)
            per_class_hits = torch.zeros_like(per_class_count)
            flat_labels = labels[valid]
            per_class_count.index_add_(0, flat_labels, torch.ones_like(flat_labels, dtype=scores.dtype))
            per_class_hits.index_add_(0, flat_labels, hit[valid].to(scores.dtype))
            tops.append(per_class_hits / per_class_count.clamp_min(1))
        return tops


# ---------------------------------------------------------------- other losses

class _LossLayer(CaffeLayer):
    """Caffe's LossLayer: a scalar top, and bottoms 0 and 1 that agree on
    their first axis (the batch)."""

    is_loss = True
    num_bottoms = 2
    num_tops = 1

    def check_batch(self, bottom_shapes) -> None:
        first, second = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if not first or not second or first[0] != second[0]:
            raise self.error(f"bottoms 0 {list(first)} and 1 {list(second)} must have the "
                             "same first dimension (the batch)")

    def ignore_label(self) -> int | None:
        loss = self.param.loss_param
        return loss.ignore_label if loss.HasField("ignore_label") else None


def _labels_per_item(layer: _LossLayer, labels: torch.Tensor, num: int, classes: int) -> torch.Tensor:
    """One class index per item, as an (num, 1) int64 tensor (Caffe truncates
    float labels toward zero)."""
    labels = labels.detach().reshape(num, 1).to(torch.int64)
    _check_label_range(layer, labels, classes)
    return labels


@register("EuclideanLoss")
class EuclideanLossLayer(_LossLayer):
    """sum((a - b)^2) / N / 2; both bottoms take a gradient."""

    def allow_force_backward(self, bottom_index: int) -> bool:
        return True

    def reshape(self, bottom_shapes):
        self.check_batch(bottom_shapes)
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if math.prod(a[1:]) != math.prod(b[1:]):
            raise self.error(f"bottoms {list(a)} and {list(b)} must have the same number "
                             "of values per item")
        return [()]

    def forward(self, bottoms):
        a, b = bottoms
        diff = a - b.reshape(a.shape)
        return [diff.square().sum() / a.shape[0] / 2]


class _SigmoidCrossEntropy(torch.autograd.Function):
    """Caffe's overflow-free cross-entropy of sigmoid(x) against targets,
    summed as its CPU loop does; gradient (sigmoid(x) - t) at counted
    positions, times top diff / normalizer."""

    @staticmethod
    def forward(ctx, x, target, valid, normalizer):
        positive = (x >= 0).to(x.dtype)
        terms = x * (target - positive) - torch.log(1 + torch.exp(x - 2 * x * positive))
        loss = -_caffe_sum(torch.where(valid, terms, 0)) / normalizer
        ctx.save_for_backward(x, target, valid, normalizer)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        x, target, valid, normalizer = ctx.saved_tensors
        grad = torch.where(valid, torch.sigmoid(x) - target, 0)
        return grad * (grad_loss / normalizer), None, None, None


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(_LossLayer):
    """Cross-entropy of sigmoid(bottom 0) against targets in [0, 1] (bottom
    1, same count); targets whose integer part is the ignore_label count
    nowhere. Default normalization BATCH_SIZE, as Caffe's."""

    def setup(self, bottom_shapes, generator):
        self.ignore = self.ignore_label()
        self.normalization = _normalization_mode(self.param.loss_param, _BATCH_SIZE)

    def reshape(self, bottom_shapes):
        self.check_batch(bottom_shapes)
        shape, target_shape = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if math.prod(shape) != math.prod(target_shape):
            raise self.error(f"inputs {list(shape)} and targets {list(target_shape)} must "
                             "have the same count")
        self.outer = shape[0]
        self.inner = math.prod(shape[1:])
        return [()]

    def forward(self, bottoms):
        x = bottoms[0]
        target = bottoms[1].detach().reshape(x.shape)
        if self.ignore is None:
            valid = torch.ones_like(target, dtype=torch.bool)
        else:
            valid = torch.trunc(target) != self.ignore
        normalizer = _normalizer(self.normalization, self.outer, self.inner, valid.sum())
        return [_SigmoidCrossEntropy.apply(x, target, valid, normalizer)]


@register("HingeLoss")
class HingeLossLayer(_LossLayer):
    """One-vs-all hinge: with t = -1 at the item's label and +1 elsewhere,
    sum(max(0, 1 + t * x)) / N (L1) or the sum of its squares / N (L2)."""

    def reshape(self, bottom_shapes):
        self.check_batch(bottom_shapes)
        shape, label_shape = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        self.num = shape[0]
        self.dim = math.prod(shape[1:])
        if math.prod(label_shape) != self.num:
            raise self.error(f"needs one label per item: {math.prod(label_shape)} labels "
                             f"(shape {list(label_shape)}) for {self.num} items")
        return [()]

    def forward(self, bottoms):
        x = bottoms[0].reshape(self.num, self.dim)
        labels = _labels_per_item(self, bottoms[1], self.num, self.dim)
        is_label = torch.zeros_like(x, dtype=torch.bool).scatter_(1, labels, True)
        # relu's gradient is 0 at 0, as Caffe's sign(0)
        margins = F.relu(1 + torch.where(is_label, -x, x))
        if self.param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L2:
            margins = margins.square()
        return [margins.sum() / self.num]


class _MultinomialLogisticLoss(torch.autograd.Function):
    """-mean(log(max(p_label, 1e-20))); Caffe's gradient -1 / max(p, 1e-20)
    also below the floor, where calculus has 0."""

    @staticmethod
    def forward(ctx, prob, labels):
        picked = prob.gather(1, labels).clamp_min(LOG_THRESHOLD)
        num = prob.shape[0]
        ctx.save_for_backward(picked, labels)
        ctx.prob_shape = prob.shape
        return -_caffe_sum(torch.log(picked)) / num

    @staticmethod
    def backward(ctx, grad_loss):
        picked, labels = ctx.saved_tensors
        scale = -grad_loss / ctx.prob_shape[0]
        grad = torch.zeros(ctx.prob_shape, dtype=picked.dtype, device=picked.device)
        return grad.scatter_(1, labels, scale / picked), None


@register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(_LossLayer):
    """Negative log of the probability (bottom 0, N x classes) at each item's
    label (bottom 1, N x 1 x 1 x 1), floored at 1e-20."""

    def reshape(self, bottom_shapes):
        self.check_batch(bottom_shapes)
        shape = tuple(bottom_shapes[0])
        if legacy_shape(self, bottom_shapes[1], "label (bottom 1)")[1:] != (1, 1, 1):
            raise self.error(f"label (bottom 1) of shape {list(bottom_shapes[1])} must hold "
                             "one value per item (channels, height and width 1)")
        self.num, self.dim = shape[0], math.prod(shape[1:])
        return [()]

    def forward(self, bottoms):
        prob = bottoms[0].reshape(self.num, self.dim)
        labels = _labels_per_item(self, bottoms[1], self.num, self.dim)
        return [_MultinomialLogisticLoss.apply(prob, labels)]


class _InfogainLoss(torch.autograd.Function):
    """-sum_l H[label, l] * log(max(p_l, 1e-20)) over counted positions, over
    the normalizer; Caffe's gradient p * rowsum(H)[label] - H[label] (which
    ignores the floor) at counted positions, times top diff / normalizer."""

    @staticmethod
    def forward(ctx, scores, labels, valid, infogain, normalizer):
        # scores (outer, C, inner); labels, valid (outer, 1, inner); infogain (C, C)
        prob = torch.softmax(scores, dim=1)
        rows = infogain[labels[:, 0]]                                  # (outer, inner, C)
        log_prob = torch.log(prob.clamp_min(LOG_THRESHOLD)).transpose(1, 2)
        # Caffe sums position by position, then class by class
        terms = torch.where(valid.transpose(1, 2), rows * log_prob, 0)
        loss = -_caffe_sum(terms) / normalizer
        ctx.save_for_backward(prob, labels, valid, infogain, normalizer)
        ctx.mark_non_differentiable(prob)
        return loss, prob

    @staticmethod
    def backward(ctx, grad_loss, grad_prob):
        prob, labels, valid, infogain, normalizer = ctx.saved_tensors
        row_sums = infogain.sum(dim=1)
        grad = prob * row_sums[labels] - infogain[labels[:, 0]].transpose(1, 2)
        grad = torch.where(valid, grad, 0) * (grad_loss / normalizer)
        return grad, None, None, None, None


def _read_blob_values(layer: CaffeLayer, field: str, path: str) -> torch.Tensor:
    """The values of a binary BlobProto file, flat, as float32."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise layer.error(f"{field} '{path}' cannot be read: {e.strerror}") from None
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(raw)
    except DecodeError:
        raise layer.error(f"{field} '{path}' is not a binary BlobProto file") from None
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        count = blob.num * blob.channels * blob.height * blob.width
    else:
        count = math.prod(blob.shape.dim)
    values = blob.double_data if len(blob.double_data) else blob.data
    if len(values) != count:
        raise layer.error(f"{field} '{path}' holds {len(values)} values for a blob "
                          f"shape of {count}")
    return torch.tensor(np.asarray(values, dtype=np.float32))


@register("InfogainLoss")
class InfogainLossLayer(_LossLayer):
    """Softmax over `axis`, then the infogain-weighted log-loss with the
    C x C matrix H: a third bottom, or infogain_loss_param.source (a binary
    BlobProto, read relative to the current directory). A second top holds
    the probabilities."""

    num_bottoms = (2, 3)
    num_tops = (1, 2)

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0  # never to the labels or H

    def setup(self, bottom_shapes, generator):
        loss = self.param.loss_param
        if loss.HasField("normalize"):
            raise self.error("loss_param.normalize is deprecated for this layer; use "
                             "loss_param.normalization")
        self.normalization = loss.normalization
        self.ignore = self.ignore_label()
        self.infogain = None
        if len(bottom_shapes) < 3:
            p = self.param.infogain_loss_param
            if not p.HasField("source"):
                raise self.error("infogain_loss_param.source must name the H matrix file "
                                 "when H is not given as a third bottom")
            self.infogain = _read_blob_values(self, "infogain_loss_param.source", p.source)

    def reshape(self, bottom_shapes):
        self.check_batch(bottom_shapes)
        shape = tuple(bottom_shapes[0])
        self.axis = canonical_axis(self, self.param.infogain_loss_param.axis, len(shape),
                                   "infogain_loss_param.axis")
        self.outer, self.classes, self.inner = _split_axis(shape, self.axis)
        _check_label_count(self, shape, bottom_shapes[1])
        h_count = (math.prod(bottom_shapes[2]) if len(bottom_shapes) > 2
                   else self.infogain.numel())
        if h_count != self.classes ** 2:
            raise self.error(f"H has {h_count} values; it must be {self.classes} x "
                             f"{self.classes} for the {self.classes} classes")
        tops = [()]
        if len(self.param.top) > 1:
            tops.append(shape)
        return tops

    def forward(self, bottoms):
        scores = bottoms[0]
        if len(bottoms) > 2:
            infogain = bottoms[2].detach()
        else:
            self.infogain = infogain = self.infogain.to(scores.device)
        infogain = infogain.reshape(self.classes, self.classes)
        labels = bottoms[1].detach().reshape(self.outer, 1, self.inner).to(torch.int64)
        if self.ignore is None:
            valid = torch.ones_like(labels, dtype=torch.bool)
        else:
            valid = labels != self.ignore
        labels = torch.where(valid, labels, 0)
        _check_label_range(self, labels, self.classes)
        normalizer = _normalizer(self.normalization, self.outer, self.inner, valid.sum())
        loss, prob = _InfogainLoss.apply(scores.reshape(self.outer, self.classes, self.inner),
                                         labels, valid, infogain, normalizer)
        tops = [loss]
        if len(self.param.top) > 1:
            tops.append(prob.detach().reshape(scores.shape))
        return tops


class _ContrastiveLoss(torch.autograd.Function):
    """sum over pairs of d^2 (similar) or max(margin - d, 0)^2 (dissimilar;
    legacy: max(margin - d^2, 0)), / N / 2. Caffe's gradient divides by
    d + 1e-4 rather than d for dissimilar pairs."""

    @staticmethod
    def forward(ctx, a, b, similar, margin: float, legacy: bool):
        diff = a - b
        dist_sq = diff.square().sum(dim=1)
        if legacy:
            dissimilar = (margin - dist_sq).clamp_min(0)
        else:
            dissimilar = (margin - dist_sq.sqrt()).clamp_min(0).square()
        terms = torch.where(similar, dist_sq, dissimilar)
        ctx.save_for_backward(diff, dist_sq, similar)
        ctx.constants = (margin, legacy)
        return _caffe_sum(terms) / a.shape[0] / 2

    @staticmethod
    def backward(ctx, grad_loss):
        diff, dist_sq, similar = ctx.saved_tensors
        margin, legacy = ctx.constants
        alpha = grad_loss / diff.shape[0]
        if legacy:
            beyond = margin - dist_sq
            beta = -alpha.expand_as(dist_sq)
        else:
            dist = dist_sq.sqrt()
            beyond = margin - dist
            beta = -alpha * beyond / (dist + 1e-4)
        coefficient = torch.where(similar, alpha, torch.where(beyond > 0, beta, 0))
        grad_a = coefficient[:, None] * diff
        return grad_a, -grad_a, None, None, None


@register("ContrastiveLoss")
class ContrastiveLossLayer(_LossLayer):
    """Pairs a, b (N x C x 1 x 1) with a similarity label y (N x 1 x 1 x 1;
    nonzero integer part: similar)."""

    num_bottoms = 3

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def reshape(self, bottom_shapes):
        self.check_batch(bottom_shapes)
        a = legacy_shape(self, bottom_shapes[0], "bottom 0")
        b = legacy_shape(self, bottom_shapes[1], "bottom 1")
        y = legacy_shape(self, bottom_shapes[2], "bottom 2 (similarity)")
        if a[1] != b[1] or a[2:] != (1, 1) or b[2:] != (1, 1):
            raise self.error(f"bottoms 0 {list(bottom_shapes[0])} and 1 "
                             f"{list(bottom_shapes[1])} must both be N x C x 1 x 1")
        if y != (a[0], 1, 1, 1):
            raise self.error(f"bottom 2 {list(bottom_shapes[2])} must hold one similarity "
                             f"label per pair ({a[0]} x 1 x 1 x 1)")
        self.num, self.channels = a[0], a[1]
        return [()]

    def forward(self, bottoms):
        p = self.param.contrastive_loss_param
        a = bottoms[0].reshape(self.num, self.channels)
        b = bottoms[1].reshape(self.num, self.channels)
        similar = bottoms[2].detach().reshape(self.num).to(torch.int64) != 0
        return [_ContrastiveLoss.apply(a, b, similar, float(p.margin), p.legacy_version)]
