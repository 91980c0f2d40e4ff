"""The demo's base net: the stand-in for ILSVRC VGG16, shipped with the repo.

No ILSVRC weights exist offline, so `python -m solvers.demo_base` makes the
demo's base net as the paper's is made, in miniature and on synthetic data:
the narrow VGG16 classifier with seeded MSRA weights is cast to the fully
convolutional form as `python -m weights prepare-base vgg16` does
(`surgery.transplant`), then pretrained from scratch on separate synthetic
scenes (its own seed; the demo's scenes are never seen) as a dense window
classifier, i.e. an FCN-32s, with a normalized loss and Adam; conv1_1 .. fc7
are kept. It takes several minutes, so the result is shipped
(`solvers/pretrained/`, with a JSON record of its recipe and sha1) and the
demo starts from it, as the FCN release starts from downloaded VGG16
weights.

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
(targets: FEATURE_RMS, measured on the pretraining scenes).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from caffe_backend import caffe
from data_layers import demo_scenes
from data_layers.seg_data import VOC_MEAN_BGR
from solvers.solve import point_data_layers, working_directory
from torchcaffe.atomic import atomic_output, write_text
from torchcaffe.errors import CaffeError
from torchcaffe.progress import progress

log = logging.getLogger(__name__)

#: the net the backbone is pretrained as: a dense classifier of 224-pixel
#: windows at stride 32 whose scores are upsampled to the pixels
PRETRAIN_NET = "voc-fcn32s"
#: root-mean-square activation of each stage's output after scale_features;
#: the layers of a stage are conv<k>_* up to pool<k> (fc6, fc7 for fc7)
FEATURE_RMS = {"pool3": 700.0, "pool4": 200.0, "pool5": 40.0, "fc7": 10.0}
STAGE_LAYERS = {"pool3": ("conv1_", "conv2_", "conv3_"), "pool4": ("conv4_",),
                "pool5": ("conv5_",), "fc7": ("fc6", "fc7")}


@dataclass(frozen=True)
class BaseRecipe:
    """How a base net is made (`make_base`)."""
    width: float        # channel multiplier of VGG16
    scenes: int         # pretraining scenes
    size: int           # their side in pixels
    iters: int          # pretraining iterations (batch 1)
    lr: float           # Adam's rate
    seed: int = 0       # Caffe's RNG: the MSRA fillers and the dropout masks
    scene_seed: int = 10**6  # the pretraining scenes; the demo's use 0, 1, ...


SHIPPED_RECIPE = BaseRecipe(width=1 / 16, scenes=400, size=160, iters=3000, lr=1e-3)
QUICK_RECIPE = BaseRecipe(width=1 / 32, scenes=4, size=96, iters=4, lr=1e-3)
SHIPPED = Path(__file__).with_name("pretrained") / "demo-vgg16fcn.caffemodel"
BASE_FILE = "vgg16-fcn.caffemodel"


def record_path(weights: Path) -> Path:
    """The JSON record written beside a base net's caffemodel."""
    return Path(weights).with_suffix(".json")


def sha1(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def shipped_base(weights: Path = SHIPPED) -> tuple[Path, dict]:
    """The shipped base net and its record, checked against each other."""
    record_file = record_path(weights)
    for path in (weights, record_file):
        if not path.is_file():
            raise CaffeError(f"{path}: the demo's base net is missing; remake it with "
                             "`python -m solvers.demo_base`")
    try:
        record = json.loads(record_file.read_text())
        expected = record["sha1"]
        BaseRecipe(**record["recipe"])
        record["pretrain_net"], dict(record["feature_rms"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CaffeError(f"{record_file}: not a base-net record ({exc!r})") from None
    if sha1(weights) != expected:
        raise CaffeError(f"{weights}: sha1 {sha1(weights)} differs from the {expected} "
                         f"recorded in {record_file}; remake it with "
                         "`python -m solvers.demo_base`")
    return weights, record


def describe(record: dict) -> str:
    """The base net in words, for the demo's results."""
    recipe = BaseRecipe(**record["recipe"])
    scales = ", ".join(f"{blob} {rms:g}" for blob, rms in record["feature_rms"].items())
    return (f"the VGG16 classifier at width {recipe.width:g} with MSRA weights (Caffe's RNG, "
            f"seed {recipe.seed}), cast to the fully convolutional form as prepare-base does, "
            f"then pretrained from scratch for {recipe.iters} iterations on {recipe.scenes} "
            f"separate synthetic scenes of {recipe.size} x {recipe.size} (seed "
            f"{recipe.scene_seed}) as a dense window classifier ({record['pretrain_net']}, "
            f"normalized loss, Adam, lr {recipe.lr:g}) in place of ILSVRC training "
            f"(`python -m solvers.demo_base`); only conv1_1 .. fc7 are kept, every score "
            f"layer starts from zero as in the reference; its layers are rescaled, without "
            f"changing what they compute, to root-mean-square activations {scales} on those "
            "scenes, the ILSVRC VGG16's profile of large skip inputs and a small fc7")


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


def pretrain(folder: Path, deploy: Path, weights: Path, data_dir: Path,
             recipe: BaseRecipe) -> tuple[Path, object]:
    """Train the cast classifier on the pretraining scenes as PRETRAIN_NET
    with a per-pixel normalized loss and Adam (a from-scratch recipe, in
    place of ILSVRC training); returns (that net's deploy prototxt, the
    solver)."""
    from surgery import interp, transplant

    work = folder / "pretrain"
    for file_name, message in _netspec_prototxts(PRETRAIN_NET, recipe.width).items():
        if hasattr(message, "layer"):
            point_data_layers(message, data_dir)
            for layer in message.layer:
                if layer.type == "SoftmaxWithLoss":
                    layer.loss_param.normalize = True
        else:
            message.type, message.base_lr, message.max_iter = "Adam", recipe.lr, recipe.iters
            message.momentum, message.momentum2 = 0.9, 0.999
            message.ClearField("snapshot")
            message.ClearField("snapshot_prefix")
        _write_prototxt(work / file_name, message)
    caffe.set_random_seed(recipe.seed)
    with working_directory(work):
        solver = caffe.get_solver("solver.prototxt")
        transplant(solver.net, caffe.Net(str(deploy), caffe.TEST, weights=str(weights)))
        interp(solver.net, [k for k in solver.net.params if "up" in k])
        chunk = 10
        with progress(total=recipe.iters, desc="pretrain backbone", unit="it",
                      dynamic_ncols=True) as bar:
            while solver.iter < recipe.iters:
                solver.step(min(chunk, recipe.iters - solver.iter))
                bar.update(solver.iter - bar.n)
                if hasattr(solver, "smoothed_loss"):  # torchcaffe's; not in pycaffe
                    bar.set_postfix(loss=f"{solver.smoothed_loss:.3g}")
    return work / "deploy.prototxt", solver


def make_base(folder: Path, recipe: BaseRecipe) -> Path:
    """Make a base net under `folder` by `recipe`: `folder`/vgg16-fcn.caffemodel
    (the layers of vgg16fcn, conv1_1 .. fc7 pretrained and rescaled) and its
    JSON record (recipe, feature sizes, sha1)."""
    from surgery import transplant

    started = time.perf_counter()
    folder = Path(folder).resolve()  # the pretraining runs inside its own folder
    data_dir = folder / "data-pretrain"
    demo_scenes.generate(data_dir, seed=recipe.scene_seed, train=recipe.scenes, val=1,
                         height=recipe.size, width=recipe.size)
    classifier = seeded_classifier(folder, recipe.width, recipe.seed)
    deploy, cast = cast_base(folder, recipe.width, classifier)
    trained_deploy, solver = pretrain(folder, deploy, cast, data_dir, recipe)
    base = caffe.Net(str(deploy), caffe.TEST, weights=str(cast))  # fc8 stays as cast
    log.info("pretrained backbone: %s", transplant(base, solver.net).summary())
    trained = caffe.Net(str(trained_deploy), caffe.TEST)  # pad 100: any scene size
    transplant(trained, solver.net)
    images = sorted((data_dir / "sbdd" / "dataset" / "img").glob("*.jpg"))
    measured = feature_rms(trained, images, list(FEATURE_RMS))
    factors = scale_features(base, measured)
    log.info("feature RMS before scaling %s; layer factors %s",
             {k: round(v, 4) for k, v in measured.items()},
             {k: round(v, 4) for k, v in factors.items()})
    output = folder / BASE_FILE
    base.save(str(output))
    import torch

    write_text(record_path(output), json.dumps({
        "recipe": asdict(recipe), "pretrain_net": PRETRAIN_NET,
        "final_smoothed_loss": getattr(solver, "smoothed_loss", None),
        "feature_rms": FEATURE_RMS, "feature_rms_before_scaling": measured,
        "layer_factors": factors, "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "sha1": sha1(output)}, indent=1) + "\n")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m solvers.demo_base",
        description="Make the demo's base net (several minutes on one CPU thread) and its "
                    "JSON record; by default the shipped one, in solvers/pretrained/.")
    parser.add_argument("--out", type=Path, help="folder for the caffemodel and record "
                                                 "(default: replace the shipped one)")
    parser.add_argument("--quick", action="store_true", help="a tiny base in seconds (tests)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1, as the shipped one was made)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    import torch

    torch.set_num_threads(args.threads)
    from torchcaffe import glog

    console = glog.console_handler()
    root = logging.getLogger()
    root.addHandler(console)  # removed again below: main() may be called from Python
    recipe = QUICK_RECIPE if args.quick else SHIPPED_RECIPE
    target = (args.out / BASE_FILE) if args.out else SHIPPED
    try:  # the destination is checked before minutes of pretraining
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(target.parent, os.W_OK):
            raise PermissionError(f"{target.parent}: not writable")
        with tempfile.TemporaryDirectory(prefix="demo-base-") as work:
            made = make_base(Path(work), recipe)
            # the record last: a caffemodel without its matching record is refused
            for source, destination in ((made, target),
                                        (record_path(made), record_path(target))):
                with atomic_output(destination) as stream:
                    stream.write(source.read_bytes())
    except (OSError, CaffeError) as exc:
        parser.exit(1, f"demo_base: error: {exc}\n")
    finally:
        root.removeHandler(console)
    print(f"{target}: sha1 {sha1(target)} ({json.loads(record_path(target).read_text())['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
