"""SIFT Flow data layer (module `siftflow_layers` of the reference nets).

`SIFTFlowSegDataLayer` reads the SIFT Flow folder (`siftflow_dir`, e.g.
`../data/sift-flow`): ids from `<split>.txt` (trainval / test), and per id,
under the subfolder `spatial_envelope_256x256_static_8outdoorcategories` of
each, the image `Images/.../<id>.jpg`, the semantic labels
`SemanticLabels/.../<id>.mat` and the geometric labels
`GeoLabels/.../<id>.mat` (variable `S` in both).

Three tops: data (BGR minus SIFT Flow's own mean), sem (33 classes 1-33
shifted to 0-32; the unlabelled 0 becomes void 255) and geo (sky /
horizontal / vertical 1-3 shifted to 0-2; the void -1 becomes 255).
Order, seeding, prefetch and resuming: `seg_data`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_layers.seg_data import Param, SegDataLayer, as_label, load_bgr, load_mat

MEAN_BGR = np.array((114.578, 115.294, 108.353), dtype=np.float32)
SUBFOLDER = "spatial_envelope_256x256_static_8outdoorcategories"
LABEL_FOLDERS = {"sem": "SemanticLabels", "geo": "GeoLabels"}


class SIFTFlowSegDataLayer(SegDataLayer):
    """SIFT Flow: image, semantic label and geometric label per forward."""

    PARAMS = {"siftflow_dir": Param(str)}

    def configure(self, params):
        self.siftflow_dir = Path(params["siftflow_dir"])

    def split_path(self) -> Path:
        return self.siftflow_dir / f"{self.split}.txt"

    LABEL_TOPS = ("sem", "geo")

    def top_names(self) -> list[str]:
        return ["data", "sem", "geo"]

    def load_top(self, name: str, image_id: str) -> np.ndarray:
        layer = type(self).__name__
        if name == "data":
            path = self.siftflow_dir / "Images" / SUBFOLDER / f"{image_id}.jpg"
            return load_bgr(path, image_id, MEAN_BGR, layer)
        path = self.siftflow_dir / LABEL_FOLDERS[name] / SUBFOLDER / f"{image_id}.mat"
        values = load_mat(path, image_id, "S", layer)
        if name == "geo":
            values = np.where(values == -1, 0, values)  # void -1 joins the unlabelled 0
        label = as_label(values, path, image_id, layer)
        label -= 1  # uint8 wraps: 0 -> 255 (void), class k -> k - 1
        return label
