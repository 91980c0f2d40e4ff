"""The demo's base net: the stand-in for ILSVRC VGG16, made in seconds.

No ILSVRC weights exist offline, so the demo builds the narrow VGG16
classifier with seeded MSRA weights, casts it to the fully convolutional
form as `python -m weights prepare-base vgg16` does (`surgery.transplant`),
pretrains it from scratch on separate synthetic scenes as an FCN-8s with a
normalized loss and Adam, and keeps conv1_1 .. fc7.

One property of the real base net matters to the staged recipe and does not
come out of a short pretraining: ILSVRC VGG16's pool3 / pool4 activations
are far larger than its fc7 (the release's at-once FCN-8s multiplies them
by 0.0001 / 0.01 before scoring them, to train every score layer at one
rate). The staged recipe relies on it: the skip score layers of FCN-16s /
8s start from zero at 1/100 and 1/10000 of the 32s rate, and a score
layer's step grows with the square of its input. `scale_features` gives
the base net such a profile without changing what it computes: a ReLU
layer's weights times `a` and its bias times the running product scale
every later activation by that product, and max pooling commutes with
positive scales, so every feature map is the same up to one positive factor
(targets: FEATURE_RMS, measured on the pretraining scenes). The targets sit
below the sizes at which the unnormalized loss with momentum 0.99 diverges
at each stage's rate.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from caffe_backend import caffe
from data_layers.seg_data import VOC_MEAN_BGR
from solvers.solve import point_data_layers, working_directory
from torchcaffe.atomic import write_text
from torchcaffe.progress import progress

log = logging.getLogger(__name__)

PRETRAIN_NET = "voc-fcn8s"
PRETRAIN_LR = 2e-3
#: root-mean-square activation of each stage's output after scale_features;
#: the layers of a stage are conv<k>_* up to pool<k> (fc6, fc7 for fc7)
FEATURE_RMS = {"pool3": 3500.0, "pool4": 500.0, "pool5": 60.0, "fc7": 10.0}
STAGE_LAYERS = {"pool3": ("conv1_", "conv2_", "conv3_"), "pool4": ("conv4_",),
                "pool5": ("conv5_",), "fc7": ("fc6", "fc7")}


def _netspec_prototxts(name: str, width: float) -> dict:
    from netspec.models import NETS

    return NETS[name].prototxts(width=width)


def _write_prototxt(path: Path, message) -> Path:
    from netspec.writer import to_prototxt

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, to_prototxt(message))
    return path


def seeded_classifier(folder: Path, width: float, seed: int) -> Path:
    """The narrow VGG16 classifier with MSRA weights and zero biases drawn by
    Caffe's RNG seeded with `seed` (its init.prototxt names the fillers)."""
    net = _netspec_prototxts("vgg16", width)["deploy.prototxt"]
    for layer in net.layer:
        param = (layer.convolution_param if layer.type == "Convolution"
                 else layer.inner_product_param if layer.type == "InnerProduct" else None)
        if param is not None:
            param.weight_filler.type = "msra"
            param.bias_filler.type = "constant"
    init = _write_prototxt(folder / "vgg16" / "init.prototxt", net)
    caffe.set_random_seed(seed)
    weights = folder / "vgg16" / "msra.caffemodel"
    caffe.Net(str(init), caffe.TEST).save(str(weights))
    return weights


def cast_base(folder: Path, width: float, classifier_weights: Path) -> tuple[Path, Path]:
    """Classifier weights -> fully convolutional form, as prepare-base does;
    returns (vgg16fcn deploy, its weights)."""
    from weights.prepare import cast_to_fcn

    deploys = {name: _write_prototxt(folder / name / "deploy.prototxt",
                                     _netspec_prototxts(name, width)["deploy.prototxt"])
               for name in ("vgg16", "vgg16fcn")}
    output = folder / "vgg16fcn" / "msra.caffemodel"
    report = cast_to_fcn(deploys["vgg16"], deploys["vgg16fcn"], classifier_weights, output)
    log.info("base net cast: %s", report.summary())
    return deploys["vgg16fcn"], output


def base_description(width: float, seed: int, scenes: int, scene_seed: int, iters: int) -> str:
    scales = ", ".join(f"{blob} {rms:g}" for blob, rms in FEATURE_RMS.items())
    return (f"the VGG16 classifier at width {width:g} with MSRA weights (Caffe's RNG, "
            f"seed {seed}), cast to the fully convolutional form as prepare-base does, then "
            f"pretrained from scratch for {iters} iterations on {scenes} separate synthetic "
            f"scenes (seed {scene_seed}) as an FCN-8s with a normalized loss and Adam (lr "
            f"{PRETRAIN_LR:g}), in place of ILSVRC training; only conv1_1 .. fc7 are kept, "
            f"every score layer starts from zero as in the reference; its layers are then "
            f"rescaled, without changing what they compute, to root-mean-square activations "
            f"{scales} on those scenes, the ILSVRC VGG16's profile of large skip inputs and "
            "a small fc7")


def pretrain_base(folder: Path, deploy: Path, weights: Path, data_dir: Path, width: float,
                  iters: int, seed: int) -> Path:
    """Train the backbone on the pretraining scenes, keep conv1_1 .. fc7.

    The net is FCN-8s (skips give the early layers a short path to the loss)
    with a per-pixel normalized loss and Adam: a from-scratch recipe, in
    place of ILSVRC training. Its score layers are then discarded; what is
    saved has the layers of `deploy` (vgg16fcn)."""
    from surgery import interp, transplant

    work = folder / "pretrain"
    for file_name, message in _netspec_prototxts(PRETRAIN_NET, width).items():
        if hasattr(message, "layer"):
            point_data_layers(message, data_dir)
            for layer in message.layer:
                if layer.type == "SoftmaxWithLoss":
                    layer.loss_param.normalize = True
        else:
            message.type, message.base_lr, message.max_iter = "Adam", PRETRAIN_LR, iters
            message.momentum, message.momentum2 = 0.9, 0.999
            message.ClearField("snapshot")
            message.ClearField("snapshot_prefix")
        _write_prototxt(work / file_name, message)
    caffe.set_random_seed(seed)
    with working_directory(work):
        solver = caffe.get_solver("solver.prototxt")
        transplant(solver.net, caffe.Net(str(deploy), caffe.TEST, weights=str(weights)))
        interp(solver.net, [k for k in solver.net.params if "up" in k])
        chunk = 10
        with progress(total=iters, desc="pretrain backbone", unit="it",
                      dynamic_ncols=True) as bar:
            while solver.iter < iters:
                solver.step(min(chunk, iters - solver.iter))
                bar.update(solver.iter - bar.n)
                if hasattr(solver, "smoothed_loss"):  # torchcaffe's; not in pycaffe
                    bar.set_postfix(loss=f"{solver.smoothed_loss:.3g}")
    base = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))  # fc8 stays as cast
    report = transplant(base, solver.net)
    log.info("pretrained backbone: %s", report.summary())
    trained = caffe.Net(str(work / "deploy.prototxt"), caffe.TEST)  # pad 100: any scene size
    transplant(trained, solver.net)
    images = sorted((data_dir / "sbdd" / "dataset" / "img").glob("*.jpg"))
    measured = feature_rms(trained, images, list(FEATURE_RMS))
    factors = scale_features(base, measured)
    log.info("feature RMS before scaling %s; layer factors %s",
             {k: round(v, 4) for k, v in measured.items()},
             {k: round(v, 4) for k, v in factors.items()})
    output = folder / "vgg16-fcn.caffemodel"
    base.save(str(output))
    return output


def feature_rms(net, images: Sequence[Path], blobs: Sequence[str]) -> dict[str, float]:
    """Root-mean-square of each blob over forwards of the image files (the
    net's input reshaped to each)."""
    import torch

    mean = np.asarray(VOC_MEAN_BGR, dtype=np.float32)
    squares = dict.fromkeys(blobs, 0.0)
    with torch.no_grad():
        for path in images:
            with Image.open(path) as image:
                bgr = np.asarray(image.convert("RGB"), dtype=np.float32)[:, :, ::-1] - mean
            net.blobs["data"].reshape(1, 3, *bgr.shape[:2])
            net.blobs["data"].data[...] = bgr.transpose(2, 0, 1)
            net.forward()
            for name in blobs:
                squares[name] += float(np.mean(np.square(net.blobs[name].data, dtype=np.float64)))
    return {name: (total / len(images)) ** 0.5 for name, total in squares.items()}


def scale_features(net, measured: dict[str, float]) -> dict[str, float]:
    """Scale `net`'s layers in place so that the stage outputs whose RMS is
    `measured` get FEATURE_RMS; returns the factor of each layer."""
    factors, running, done = {}, 1.0, 1.0
    for stage, prefixes in STAGE_LAYERS.items():
        layers = [name for name in net.params if name.startswith(prefixes)]
        per_layer = (FEATURE_RMS[stage] / measured[stage] / done) ** (1 / len(layers))
        for name in layers:
            running *= per_layer
            weight, bias = net.params[name]
            weight.data[...] *= per_layer
            bias.data[...] *= running
            factors[name] = per_layer
        done = running
    return factors
