"""PASCAL VOC and SBD data layers (module `voc_layers` of the reference nets).

- `VOCSegDataLayer` reads a VOC year folder (`voc_dir`, e.g.
  `../data/pascal/VOC2011`): ids from `ImageSets/Segmentation/<split>.txt`,
  images `JPEGImages/<id>.jpg`, labels `SegmentationClass/<id>.png` (palette
  PNGs: the pixel is the class, 0 background, 1-20 objects, 255 void).
- `SBDDSegDataLayer` reads SBD's `dataset` folder (`sbdd_dir`, e.g.
  `../data/sbdd/dataset`): ids from `<split>.txt`, images `img/<id>.jpg`,
  labels `GTcls.Segmentation` of `cls/<id>.mat`.

Both need `mean` (BGR, e.g. (104.00699, 116.66877, 122.67892)) and give two
tops: data (1 x 3 x H x W, float, BGR minus mean) and label (1 x 1 x H x W,
the class indices). Order, seeding, prefetch and resuming: `seg_data`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_layers.seg_data import Param, SegDataLayer, as_label, load_bgr, load_label_png, load_mat, parse_mean
from torchcaffe.errors import CaffeError


class VOCSegDataLayer(SegDataLayer):
    """PASCAL VOC segmentation: image and label, one pair per forward."""

    PARAMS = {"voc_dir": Param(str), "mean": Param((tuple, list))}

    def configure(self, params):
        self.voc_dir = Path(params["voc_dir"])
        self.mean = parse_mean(params["mean"], type(self).__name__)

    def split_path(self) -> Path:
        return self.voc_dir / "ImageSets" / "Segmentation" / f"{self.split}.txt"

    def top_names(self) -> list[str]:
        return ["data", "label"]

    def load_top(self, name: str, image_id: str) -> np.ndarray:
        layer = type(self).__name__
        if name == "data":
            return load_bgr(self.voc_dir / "JPEGImages" / f"{image_id}.jpg", image_id, self.mean, layer)
        return load_label_png(self.voc_dir / "SegmentationClass" / f"{image_id}.png", image_id, layer)


class SBDDSegDataLayer(SegDataLayer):
    """SBD (the Semantic Boundaries Dataset's VOC segmentations): image and label."""

    PARAMS = {"sbdd_dir": Param(str), "mean": Param((tuple, list))}

    def configure(self, params):
        self.sbdd_dir = Path(params["sbdd_dir"])
        self.mean = parse_mean(params["mean"], type(self).__name__)

    def split_path(self) -> Path:
        return self.sbdd_dir / f"{self.split}.txt"

    def top_names(self) -> list[str]:
        return ["data", "label"]

    def load_top(self, name: str, image_id: str) -> np.ndarray:
        layer = type(self).__name__
        if name == "data":
            return load_bgr(self.sbdd_dir / "img" / f"{image_id}.jpg", image_id, self.mean, layer)
        path = self.sbdd_dir / "cls" / f"{image_id}.mat"
        return as_label(sbd_segmentation(load_mat(path, image_id, "GTcls", layer), path, image_id, layer),
                        path, image_id, layer)


def sbd_segmentation(gt: np.ndarray, path: Path, image_id: str, layer: str) -> np.ndarray:
    """The `Segmentation` field of an SBD `GTcls` / `GTinst` MATLAB struct."""
    try:
        return gt[0]["Segmentation"][0]
    except (IndexError, ValueError, KeyError, TypeError):
        raise CaffeError(
            f"{layer}: image '{image_id}': {path} has no struct field Segmentation in its ground truth"
        ) from None
