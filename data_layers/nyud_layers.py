"""NYUDv2 data layer (module `nyud_layers` of the reference nets).

`NYUDSegDataLayer` reads the NYUDv2 folder in the release's layout
(`nyud_dir`, e.g. `../data/nyud`): ids from `<split>.txt` (train / val /
trainval / test), and per id

- color: `data/images/img_<id>.png`, float BGR minus the NYUD colour mean
- depth: `data/depth/img_<id>.png`, log(depth) minus the mean log-depth,
  one channel
- hha: `data/hha/img_<id>.png` (Gupta et al.'s HHA encoding), minus its
  mean, channels as stored
- label: `segmentation/img_<id>.mat` variable `segmentation`, the 40-class
  task shifted down by one: classes 0-39, and the void 0 becomes 255

`tops` (required) lists which of these the layer gives, in top order, e.g.
`['color', 'depth', 'label']`. The means are the reference's, fixed.
Order, seeding, prefetch and resuming: `seg_data`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_layers.seg_data import Param, SegDataLayer, as_label, load_bgr, load_channels, load_gray, load_mat
from torchcaffe.errors import CaffeError

MEAN_BGR = np.array((116.190, 97.203, 92.318), dtype=np.float32)
MEAN_HHA = np.array((132.431, 94.076, 118.477), dtype=np.float32)
MEAN_LOG_DEPTH = np.array((7.844,), dtype=np.float32)
TOPS = ("color", "depth", "hha", "label")


class NYUDSegDataLayer(SegDataLayer):
    """NYUDv2 RGB-D segmentation: the configured tops of one image per forward."""

    PARAMS = {"nyud_dir": Param(str), "tops": Param((list, tuple))}

    def configure(self, params):
        self.nyud_dir = Path(params["nyud_dir"])
        tops = list(params["tops"])
        if not tops or any(t not in TOPS for t in tops) or len(set(tops)) != len(tops):
            raise CaffeError(
                f"{type(self).__name__}: param_str key 'tops' must list distinct names from {list(TOPS)}, got {tops!r}"
            )
        self.tops = tops

    def split_path(self) -> Path:
        return self.nyud_dir / f"{self.split}.txt"

    def top_names(self) -> list[str]:
        return self.tops

    def load_top(self, name: str, image_id: str) -> np.ndarray:
        layer = type(self).__name__
        data = self.nyud_dir / "data"
        if name == "color":
            return load_bgr(data / "images" / f"img_{image_id}.png", image_id, MEAN_BGR, layer)
        if name == "hha":
            return load_channels(data / "hha" / f"img_{image_id}.png", image_id, MEAN_HHA, layer)
        if name == "depth":
            return self._log_depth(data / "depth" / f"img_{image_id}.png", image_id)
        path = self.nyud_dir / "segmentation" / f"img_{image_id}.mat"
        label = as_label(load_mat(path, image_id, "segmentation", layer), path, image_id, layer)
        label -= 1  # uint8 wraps: void 0 -> 255, class k -> k - 1
        return label

    def _log_depth(self, path: Path, image_id: str) -> np.ndarray:
        depth = load_gray(path, image_id, type(self).__name__)
        if (depth <= 0).any():
            # the release's depth maps are filled; a hole would become -inf
            raise CaffeError(
                f"{type(self).__name__}: image '{image_id}': {path} has {(depth <= 0).sum()} depth "
                "values <= 0, whose log is undefined (use the filled depth maps)"
            )
        log_depth = np.log(depth)
        log_depth -= MEAN_LOG_DEPTH
        return log_depth[np.newaxis]
