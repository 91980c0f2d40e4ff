"""The reference FCN models and the base nets, each a short declaration.

A `Model` says which dataset feeds it, which net it is (backbone + head)
and how it is solved; `NETS[name].prototxts()` gives its files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from caffe_backend import caffe

from . import backbones
from .datasets import (PASCAL_CONTEXT, SIFT_FLOW, Dataset, TrainingOptions, data_layer,
                       input_layer, nyud, voc)
from .heads import Head, Task, late_fusion, softmax_loss, stream_score
from .solver import Solver

L = caffe.layers

# ---------------------------------------------------------------- nets


@dataclass(frozen=True)
class SingleStream:
    """One backbone over the image, then one scoring head per task."""

    backbone: Callable
    tasks: tuple[Task, ...]
    early_fusion: bool = False  # concatenate the image tops into `data` first

    def __call__(self, n, images: dict, deploy: bool, width: float):
        if self.early_fusion:
            n.data = L.Concat(*images.values())
            image = n.data
        else:
            (image,) = images.values()
        features = self.backbone(n, image, dropout_fc=not deploy, width=width)
        for task in self.tasks:
            score = task.head(n, features, image)
            if not deploy:
                n[task.loss] = softmax_loss(score, n[task.label], normalize=task.normalize)


@dataclass(frozen=True)
class LateFusion:
    """One backbone per image top (layer names suffixed by the top), their
    scores averaged, one 32x upsampling (NYUD color + HHA)."""

    backbone: Callable
    classes: int

    def __call__(self, n, images: dict, deploy: bool, width: float):
        scores = []
        for name, image in images.items():
            features = self.backbone(n, image, suffix=name, dropout_fc=not deploy,
                                     width=width)
            scores.append(stream_score(n, features, self.classes, name))
        score = late_fusion(n, scores, self.classes, next(iter(images.values())))
        if not deploy:
            n.loss = softmax_loss(score, n.label)


def vgg16(n, image, **kwargs):
    return backbones.vgg16(n, image, **kwargs)


def vgg16_bgrd(n, image, **kwargs):
    """VGG16 over BGR + depth: conv1_1 has 4 input channels, hence its own name."""
    return backbones.vgg16(n, image, first_conv="conv1_1_bgrd", **kwargs)


def vgg16_frozen(n, image, **kwargs):
    """VGG16 that does not learn: FCN-32s-fixed tunes only its score layer."""
    return backbones.vgg16(n, image, frozen=True, **kwargs)


def fcn_alexnet(n, image, **kwargs):
    return backbones.alexnet(n, image, fcn_release=True, **kwargs)


def googlenet(n, image, **kwargs):
    return backbones.googlenet(n, image, **kwargs)


def single(classes, stride=32, **head_kwargs) -> tuple[Task, ...]:
    return (Task(Head(classes, stride, **head_kwargs)),)


def sift_flow_tasks(stride) -> tuple[Task, ...]:
    """Semantic (33 classes) and geometric (3 classes) heads; the semantic
    loss keeps the plain name `loss`."""
    return (Task(Head(33, stride, suffix="_sem"), label="sem", loss="loss"),
            Task(Head(3, stride, suffix="_geo"), label="geo", loss="loss_geo"))


# ---------------------------------------------------------------- models


CLASS_WEIGHTS_FILE = "class_weights.binaryproto"


def weighted_loss(train_net, weights, model: str):
    """Class balancing by weighting the loss: the train net's SoftmaxWithLoss
    becomes an InfogainLoss with H = diag(weights), whose loss is
    sum over pixels of w_label * -log p_label and whose gradient is
    w_label * (p - onehot): the class-weighted softmax loss, with the same
    ignore label and normalization (legacy `normalize: false` is BATCH_SIZE,
    `true` VALID; InfogainLoss takes only the new field). Returns H as a
    BlobProto (1 x 1 x K x K) for the file the layer reads."""
    from torchcaffe.proto import caffe_pb2

    losses = [layer for layer in train_net.layer if layer.type == "SoftmaxWithLoss"]
    if len(losses) != 1:
        raise ValueError(f"class balancing by loss weighting: {model} has {len(losses)} "
                         "softmax losses; it needs exactly one (use sampling instead)")
    layer = losses[0]
    layer.type = "InfogainLoss"
    loss = layer.loss_param
    if loss.HasField("normalize"):
        normalize = loss.normalize
        loss.ClearField("normalize")
        if not loss.HasField("normalization"):
            loss.normalization = (caffe_pb2.LossParameter.VALID if normalize
                                  else caffe_pb2.LossParameter.BATCH_SIZE)
    layer.infogain_loss_param.source = CLASS_WEIGHTS_FILE
    count = len(weights)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([1, 1, count, count])
    diagonal = [0.0] * (count * count)
    for index, weight in enumerate(weights):
        diagonal[index * count + index] = float(weight)
    blob.data.extend(diagonal)
    return blob


@dataclass(frozen=True)
class Model:
    name: str
    dataset: Dataset
    net: Callable
    solver: Solver

    def net_spec(self, split: str | None, width: float = 1.0,
                 options: TrainingOptions | None = None):
        """The NetSpec of the train / test net for a split, or of the deploy
        net for None; `width` scales the backbone's channel counts (1: the
        reference); `options` are the train data layer's studies."""
        n = caffe.NetSpec()
        if split is None:
            input_layer(n, self.dataset)
        else:
            data_layer(n, self.dataset, split, options)
        images = {name: n[name] for name, _ in self.dataset.image_channels}
        self.net(n, images, deploy=split is None, width=width)
        return n

    def net_proto(self, split: str | None, width: float = 1.0,
                  options: TrainingOptions | None = None):
        return self.net_spec(split, width, options).to_proto()

    def prototxts(self, width: float = 1.0, options: TrainingOptions | None = None) -> dict:
        """File name -> NetParameter / SolverParameter message; `options`
        (loss sampling, class balancing, mirror / jitter) change the train
        net's data layer and, for loss sampling, the solver's iter_size."""
        ds = self.dataset
        solver = self.solver.to_proto(ds.train_file, ds.test_file, ds.test_iter)
        if options is not None:
            solver.iter_size = options.iter_size(solver.iter_size)
        files = {
            ds.train_file: self.net_proto(ds.train_split, width, options),
            ds.test_file: self.net_proto(ds.test_split, width),
            "deploy.prototxt": self.net_proto(None, width),
            "solver.prototxt": solver,
        }
        if options is not None and options.class_weights and options.class_balance == "loss":
            files[CLASS_WEIGHTS_FILE] = weighted_loss(files[ds.train_file], options.class_weights,
                                                      self.name)
        return files


@dataclass(frozen=True)
class BaseNet:
    """An ILSVRC classifier (or its fully convolutional cast) used as the
    source of transplanted weights: deploy.prototxt only."""

    name: str
    build: Callable
    input_shape: tuple[int, int, int, int]
    net_name: str | None = None

    def net_spec(self, split: None = None, width: float = 1.0):
        """The NetSpec of the deploy net (a base net has no other)."""
        n = caffe.NetSpec()
        n.data = L.Input(shape=dict(dim=list(self.input_shape)))
        self.build(n, n.data, width)
        return n

    def prototxts(self, width: float = 1.0) -> dict:
        proto = self.net_spec(None, width).to_proto()
        if self.net_name:
            proto.name = self.net_name
        return {"deploy.prototxt": proto}


def _vgg16_base(fully_conv):
    def build(n, image, width):
        features = backbones.vgg16(n, image, first_pad=1, fully_conv=fully_conv, width=width)
        backbones.classifier(n, features, fully_conv=fully_conv)
    return build


def _alexnet_base(fully_conv):
    def build(n, image, width):
        features = backbones.alexnet(n, image, fcn_release=False, fully_conv=fully_conv,
                                     width=width)
        backbones.classifier(n, features, fully_conv=fully_conv)
    return build


MODELS = (
    Model("voc-fcn32s", voc(), SingleStream(vgg16, single(21, 32)),
          Solver(base_lr=1e-10, max_iter=100000)),
    Model("voc-fcn16s", voc(data_root="../../data"), SingleStream(vgg16, single(21, 16)),
          Solver(base_lr=1e-12, max_iter=100000)),
    Model("voc-fcn8s", voc(), SingleStream(vgg16, single(21, 8)),
          Solver(base_lr=1e-14, max_iter=100000)),
    Model("voc-fcn8s-atonce", voc(), SingleStream(vgg16, single(21, 8, scale_skips=True)),
          Solver(base_lr=1e-10, max_iter=300000)),
    Model("voc-fcn-alexnet", voc(),
          SingleStream(fcn_alexnet, (Task(Head(21, 32, final_kernel=63), normalize=True),)),
          Solver(base_lr=1e-4, max_iter=100000, momentum=0.9, iter_size=20)),
    Model("nyud-fcn32s-color", nyud("color"), SingleStream(vgg16, single(40)),
          Solver(base_lr=1e-10, max_iter=300000, snapshot=2000)),
    Model("nyud-fcn32s-hha", nyud("hha"), SingleStream(vgg16, single(40)),
          Solver(base_lr=1e-10, max_iter=300000, snapshot=2000)),
    Model("nyud-fcn32s-color-d", nyud("color", "depth"),
          SingleStream(vgg16_bgrd, single(40), early_fusion=True),
          Solver(base_lr=1e-10, max_iter=300000, snapshot=2000)),
    Model("nyud-fcn32s-color-hha", nyud("color", "hha"), LateFusion(vgg16, 40),
          Solver(base_lr=1e-12, max_iter=300000, snapshot=2000)),
    Model("siftflow-fcn32s", SIFT_FLOW, SingleStream(vgg16, sift_flow_tasks(32)),
          Solver(base_lr=1e-10, max_iter=300000, snapshot=None)),
    Model("siftflow-fcn16s", SIFT_FLOW, SingleStream(vgg16, sift_flow_tasks(16)),
          Solver(base_lr=1e-12, max_iter=300000, snapshot=None)),
    Model("siftflow-fcn8s", SIFT_FLOW, SingleStream(vgg16, sift_flow_tasks(8)),
          Solver(base_lr=1e-12, max_iter=300000, snapshot=None)),
    Model("pascalcontext-fcn32s", PASCAL_CONTEXT, SingleStream(vgg16, single(60, 32)),
          Solver(base_lr=1e-10, max_iter=300000)),
    Model("pascalcontext-fcn16s", PASCAL_CONTEXT, SingleStream(vgg16, single(60, 16)),
          Solver(base_lr=1e-12, max_iter=300000)),
    Model("pascalcontext-fcn8s", PASCAL_CONTEXT, SingleStream(vgg16, single(60, 8)),
          Solver(base_lr=1e-14, max_iter=300000)),
)

BASE_NETS = (
    BaseNet("vgg16", _vgg16_base(fully_conv=False), (1, 3, 224, 224)),
    BaseNet("vgg16fcn", _vgg16_base(fully_conv=True), (1, 3, 224, 224)),
    BaseNet("alexnet", _alexnet_base(fully_conv=False), (10, 3, 227, 227), net_name="AlexNet"),
    BaseNet("alexnetfcn", _alexnet_base(fully_conv=True), (10, 3, 227, 227)),
)

def _googlenet_base(fully_conv):
    """bvlc_googlenet's deploy net (main branch), or its classifier as a 1x1
    convolution over the final 7x7 average pool."""
    def build(n, image, width):
        features = backbones.googlenet(n, image, first_pad=3, final_pool=True, width=width)
        backbones.classifier(n, features, fully_conv=fully_conv, name="loss3/classifier")
    return build


# Nets of the paper's studies beyond the release: Table 1's FCN-GoogLeNet
# (Table 1 recipe: minibatch 20, fixed rate 5e-5, momentum 0.9; weight decay
# 2e-4, GoogLeNet's own ILSVRC setting; upsampling kernel 63, as FCN-AlexNet
# has: with 64 its odd-kernel pools leave the crop half a pixel off) and
# Table 2's FCN-32s-fixed
PAPER_MODELS = (
    Model("voc-fcn-googlenet", voc(),
          SingleStream(googlenet, (Task(Head(21, 32, final_kernel=63), normalize=True),)),
          Solver(base_lr=5e-5, max_iter=100000, momentum=0.9, iter_size=20,
                 weight_decay=0.0002)),
    Model("voc-fcn32s-fixed", voc(), SingleStream(vgg16_frozen, single(21, 32)),
          Solver(base_lr=1e-10, max_iter=100000)),
)

PAPER_BASE_NETS = (
    BaseNet("googlenet", _googlenet_base(fully_conv=False), (10, 3, 224, 224),
            net_name="GoogleNet"),
    BaseNet("googlenetfcn", _googlenet_base(fully_conv=True), (10, 3, 224, 224)),
)

NETS = {net.name: net for net in MODELS + BASE_NETS + PAPER_MODELS + PAPER_BASE_NETS}
