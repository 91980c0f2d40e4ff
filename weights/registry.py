"""Where the reference weights live: the FCN Model Zoo and the ILSVRC base nets.

URLs are those of the FCN release's `<model>/caffemodel-url` files and of
BVLC Caffe's `models/<name>/readme.md`; the VGG16 URL is the one the VGG
very-deep release (and the FCN release's ilsvrc-nets README) points to.
A sha1 or size is recorded only where a published source states it; the
rest are None ("unknown"), and a download of those is checked for
completeness (Content-Length) but not for content.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from torchcaffe.errors import CaffeError

ZOO_HOST = "http://dl.caffe.berkeleyvision.org"


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    net: str  # the netspec model (models/<net>/) whose nets these weights fit
    description: str
    sha1: str | None = None  # None: not published
    size: int | None = None  # bytes; None: not published

    @property
    def filename(self) -> str:
        return urlsplit(self.url).path.rsplit("/", 1)[-1]


def _zoo(name: str, net: str, description: str, sha1: str | None = None) -> WeightFile:
    return WeightFile(name, f"{ZOO_HOST}/{name}.caffemodel", net, description, sha1)


_FILES = [
    # FCN Model Zoo (all in the current `layer` format)
    _zoo("fcn32s-heavy-pascal", "voc-fcn32s", "FCN-32s, PASCAL VOC (SBD train), 21 classes"),
    _zoo("fcn16s-heavy-pascal", "voc-fcn16s", "FCN-16s, PASCAL VOC (SBD train), 21 classes"),
    # sha1 as published in OpenCV's dnn test-data download list
    _zoo("fcn8s-heavy-pascal", "voc-fcn8s", "FCN-8s, PASCAL VOC (SBD train), 21 classes",
         sha1="c449ea74dd7d83751d1357d6a8c323fcf4038962"),
    _zoo("fcn8s-atonce-pascal", "voc-fcn8s-atonce",
         "FCN-8s trained all at once, PASCAL VOC, 21 classes"),
    _zoo("fcn-alexnet-pascal", "voc-fcn-alexnet", "FCN-AlexNet, PASCAL VOC, 21 classes"),
    _zoo("nyud-fcn32s-color-heavy", "nyud-fcn32s-color", "FCN-32s on NYUDv2 color, 40 classes"),
    _zoo("nyud-fcn32s-hha-heavy", "nyud-fcn32s-hha", "FCN-32s on NYUDv2 HHA, 40 classes"),
    _zoo("nyud-fcn32s-color-hha-heavy", "nyud-fcn32s-color-hha",
         "FCN-32s late fusion of color and HHA, NYUDv2, 40 classes"),
    _zoo("siftflow-fcn32s-heavy", "siftflow-fcn32s",
         "FCN-32s on SIFT Flow, semantic (33) + geometric (3) heads"),
    _zoo("siftflow-fcn16s-heavy", "siftflow-fcn16s",
         "FCN-16s on SIFT Flow, semantic (33) + geometric (3) heads"),
    _zoo("siftflow-fcn8s-heavy", "siftflow-fcn8s",
         "FCN-8s on SIFT Flow, semantic (33) + geometric (3) heads"),
    _zoo("pascalcontext-fcn32s-heavy", "pascalcontext-fcn32s",
         "FCN-32s on PASCAL-Context, 59 classes + background"),
    _zoo("pascalcontext-fcn16s-heavy", "pascalcontext-fcn16s",
         "FCN-16s on PASCAL-Context, 59 classes + background"),
    _zoo("pascalcontext-fcn8s-heavy", "pascalcontext-fcn8s",
         "FCN-8s on PASCAL-Context, 59 classes + background"),
    # ILSVRC classifiers, the base nets `prepare-base` casts to fully convolutional form
    WeightFile(
        "vgg16-ilsvrc",
        "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel",
        "vgg16", "VGG16 ILSVRC-2014 classifier (old V1 layer format; fc6 is 4096 x 25088)",
        size=553432081),
    WeightFile(
        "bvlc_reference_caffenet", f"{ZOO_HOST}/bvlc_reference_caffenet.caffemodel",
        "alexnet", "BVLC CaffeNet (AlexNet with pooling before LRN, as FCN-AlexNet has it)",
        sha1="4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"),
    WeightFile(
        "bvlc_alexnet", f"{ZOO_HOST}/bvlc_alexnet.caffemodel",
        "alexnet", "BVLC AlexNet (LRN before pooling; same parameter shapes as CaffeNet)",
        sha1="9116a64c0fbe4459d18f4bb6b56d647b63920377"),
    WeightFile(
        "bvlc_googlenet", f"{ZOO_HOST}/bvlc_googlenet.caffemodel",
        "googlenet", "BVLC GoogLeNet (main branch and auxiliary classifiers; FCN-GoogLeNet "
        "uses the main branch)",
        sha1="405fc5acd08a3bb12de8ee5e23a96bec22f08204"),
]

REGISTRY: dict[str, WeightFile] = {f.name: f for f in _FILES}


def lookup(name: str) -> WeightFile:
    """The registry entry `name`, accepting the file name with `.caffemodel` too."""
    key = name.removesuffix(".caffemodel")
    if key not in REGISTRY:
        raise CaffeError(f"no weights named {name!r} in the registry; known: "
                         f"{', '.join(REGISTRY)} (or pass a URL)")
    return REGISTRY[key]
