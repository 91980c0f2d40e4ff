"""Caffe's Softmax, SoftmaxWithLoss and Accuracy layers."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .base import CaffeLayer, register
from .common import canonical_axis

FLT_MIN = 1.1754943508222875e-38

# LossParameter.NormalizationMode
_FULL, _VALID, _BATCH_SIZE, _NONE = 0, 1, 2, 3


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
        if not loss.HasField("normalization") and loss.HasField("normalize"):
            self.normalization = _VALID if loss.normalize else _BATCH_SIZE
        else:
            self.normalization = loss.normalization
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

    def _normalizer(self, valid_count: torch.Tensor) -> torch.Tensor:
        if self.normalization == _FULL:
            value = float(self.outer * self.inner)
        elif self.normalization == _VALID:
            return valid_count.to(torch.float32).clamp_min(1.0)
        elif self.normalization == _BATCH_SIZE:
            value = float(self.outer)
        else:
            value = 1.0
        return torch.tensor(max(1.0, value), dtype=torch.float32, device=valid_count.device)

    def _check_labels(self, labels: torch.Tensor) -> None:
        low, high = torch.aminmax(labels)
        if bool((low < 0) | (high >= self.classes)):
            bad = (low if low < 0 else high).item()
            raise self.error(f"label {bad} is outside 0..{self.classes - 1} and is not the ignore_label")

    def forward(self, bottoms):
        scores, labels = bottoms
        scores3 = scores.reshape(self.outer, self.classes, self.inner)
        labels = labels.detach().reshape(self.outer, 1, self.inner).to(torch.int64)
        if self.ignore_label is None:
            valid = torch.ones_like(labels, dtype=torch.bool)
        else:
            valid = labels != self.ignore_label
        labels = torch.where(valid, labels, 0)
        self._check_labels(labels)
        normalizer = self._normalizer(valid.sum())
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
