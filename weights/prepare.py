"""Cast an ILSVRC classifier's weights into the fully convolutional base net.

The classifier weights (VGG16's are in the old V1 format, fc6 an InnerProduct
4096 x 25088) are loaded into the classifier deploy net, then transplanted by
layer name into the fully convolutional net, where fc6 / fc7 / fc8 are
convolutions: fc6 4096 x 512 x 7 x 7, fc7 4096 x 4096 x 1 x 1, fc8 1000 x
4096 x 1 x 1 (the same numbers in flat order).  The result is what the FCN
solvers start from (`vgg16-fcn.caffemodel`, `alexnet-fcn.caffemodel`).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from surgery import TransplantReport, transplant
from torchcaffe.errors import CaffeError
from torchcaffe.atomic import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseNet:
    classifier: str  # netspec name of the classifier deploy net (InnerProduct fc6/7/8)
    fcn: str  # netspec name of its fully convolutional form
    weights: str  # registry name of the ILSVRC weights
    output: str  # file name of the cast weights


BASES = {
    "vgg16": BaseNet("vgg16", "vgg16fcn", "vgg16-ilsvrc", "vgg16-fcn.caffemodel"),
    # netspec's `alexnet` is bvlc_alexnet's deploy net; CaffeNet's weights
    # (`--weights bvlc_reference_caffenet`, pooling before LRN as the release's
    # FCN-AlexNet has it) have the same shapes and cast alike
    "alexnet": BaseNet("alexnet", "alexnetfcn", "bvlc_alexnet", "alexnet-fcn.caffemodel"),
    # bvlc_googlenet: loss3/classifier becomes a 1x1 convolution; FCN-GoogLeNet
    # takes every layer but that one
    "googlenet": BaseNet("googlenet", "googlenetfcn", "bvlc_googlenet",
                         "googlenet-fcn.caffemodel"),
}


def cast_to_fcn(classifier_deploy, fcn_deploy, weights, output) -> TransplantReport:
    """Load `weights` into the classifier net, transplant into the FCN net, save `output`.

    Refused (nothing written) when an FCN layer would be left without weights
    or a blob does not fit; the report says what was copied and coerced.
    """
    from caffe_backend import caffe, net_with_weights

    for path in (classifier_deploy, fcn_deploy, weights):
        if not Path(path).is_file():
            raise CaffeError(f"prepare: no such file {os.fspath(path)}")
    classifier = net_with_weights(classifier_deploy, weights, caffe.TEST)
    fcn = caffe.Net(os.fspath(fcn_deploy), caffe.TEST)
    report = transplant(fcn, classifier)
    if report.untouched:
        raise CaffeError(f"prepare: {os.fspath(weights)} has no weights for the layers "
                         f"{report.untouched} of {os.fspath(fcn_deploy)}")
    for move in report.coerced:
        log.info("cast %s %s -> %s", move.layer, move.old_shape, move.new_shape)
    with atomic_path(output) as tmp:
        fcn.save(str(tmp))
    return report


def deploy_path(net_name: str, nets_dir: Path) -> Path:
    """models/<net>/deploy.prototxt, written by netspec when it is missing."""
    path = nets_dir / net_name / "deploy.prototxt"
    if not path.is_file():
        log.info("writing %s with netspec", path)
        result = subprocess.run([sys.executable, "-m", "netspec", "--out", os.fspath(nets_dir),
                                 net_name], capture_output=True, text=True)
        if result.returncode != 0 or not path.is_file():
            raise CaffeError(f"prepare: netspec could not write {path}: "
                             f"{result.stderr.strip() or 'no file written'}")
    return path


def prepare_base(name: str, *, weights=None, out_dir="models/ilsvrc-nets",
                 nets_dir="models", progress: bool = True) -> Path:
    """Produce `<out_dir>/<name>-fcn.caffemodel`, downloading the ILSVRC weights
    into `out_dir` when `weights` (a path or registry name) is not a file."""
    from weights.download import download
    from weights.registry import REGISTRY

    if name not in BASES:
        raise CaffeError(f"prepare-base: unknown base net {name!r}; choose from {sorted(BASES)}")
    base = BASES[name]
    out_dir, nets_dir = Path(out_dir), Path(nets_dir)
    source = weights or base.weights
    if not Path(source).is_file() and source not in REGISTRY and "://" not in source:
        raise CaffeError(f"prepare-base: --weights {source}: no such file (nor a registry "
                         "name: `python -m weights list` shows those)")
    if not Path(source).is_file():
        source = download(source, out_dir, progress=progress)
    output = out_dir / base.output
    report = cast_to_fcn(deploy_path(base.classifier, nets_dir), deploy_path(base.fcn, nets_dir),
                         source, output)
    log.info("%s: %s -> %s", name, report.summary(), output)
    return output
