"""PASCAL-Context data layer (module `pascalcontext_layers` of the reference nets).

`PASCALContextSegDataLayer` reads the VOC 2010 images and the PASCAL-Context
annotations:

- `voc_dir` (e.g. `../data/pascal`) must hold `VOC2010/`: ids from
  `VOC2010/ImageSets/Main/<split>.txt` (train / val), images
  `VOC2010/JPEGImages/<id>.jpg`
- `context_dir` (e.g. `../data/pascal-context`) holds `trainval/<id>.mat`
  (variable `LabelMap`, codes of the full label set), `labels.txt` (the
  full set, lines `<code>: <name>`) and `59_labels.txt` (the 59-class task,
  lines `<k>: <name>`)

The label top follows the 59-class task: the class listed k-th (from 1) in
`59_labels.txt` becomes k, everything else (unlabelled pixels and the other
classes) becomes 0, background; there is no void. Names are compared with
spaces removed, and the three names the task file spells differently from
the full list (diningtable, bedcloth, clothes) are matched as table,
bedclothes, cloth, as the reference does. The mean is the reference's, fixed.
Order, seeding, prefetch and resuming: `seg_data`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_layers.seg_data import Param, SegDataLayer, load_bgr, load_mat
from torchcaffe.errors import CaffeError
from torchcaffe.regular_file import read_regular_bytes

MEAN_BGR = np.array((104.007, 116.669, 122.679), dtype=np.float32)
#: task-file name -> full-list name, where the two files disagree
TASK_NAME_IN_FULL_LIST = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}


def read_label_names(path: Path, layer: str) -> list[tuple[int, str]]:
    """The `(code, name)` pairs of a `<code>: <name>` file, names without spaces."""
    try:
        lines = read_regular_bytes(path).decode("utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise CaffeError(f"{layer}: cannot read the label list {path}: {exc.strerror or exc}") from None
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        code, sep, name = line.partition(":")
        if not sep or not code.strip().isdigit() or not name.strip():
            raise CaffeError(f"{layer}: {path} line {number} is not '<number>: <name>': {line!r}")
        entries.append((int(code), name.replace(" ", "").strip()))
    return entries


def context_to_task_table(full: list[tuple[int, str]], task: list[tuple[int, str]],
                          full_path: Path, layer: str) -> np.ndarray:
    """A lookup table from full-set codes to 59-task classes (0 for the rest)."""
    code_of = {name: code for code, name in full}
    table = np.zeros(max(code_of.values()) + 1, dtype=np.uint8)
    for k, (_, name) in enumerate(task, 1):
        full_name = TASK_NAME_IN_FULL_LIST.get(name, name)
        if full_name not in code_of:
            raise CaffeError(f"{layer}: task class '{name}' is not in the full label list {full_path}")
        table[code_of[full_name]] = k
    return table


class PASCALContextSegDataLayer(SegDataLayer):
    """PASCAL-Context, 59-class task: image and label per forward."""

    PARAMS = {"voc_dir": Param(str), "context_dir": Param(str)}

    def configure(self, params):
        layer = type(self).__name__
        self.voc_dir = Path(params["voc_dir"]) / "VOC2010"
        self.context_dir = Path(params["context_dir"])
        full_path = self.context_dir / "labels.txt"
        self.table = context_to_task_table(
            read_label_names(full_path, layer),
            read_label_names(self.context_dir / "59_labels.txt", layer),
            full_path, layer,
        )

    def split_path(self) -> Path:
        return self.voc_dir / "ImageSets" / "Main" / f"{self.split}.txt"

    def top_names(self) -> list[str]:
        return ["data", "label"]

    def load_top(self, name: str, image_id: str) -> np.ndarray:
        layer = type(self).__name__
        if name == "data":
            return load_bgr(self.voc_dir / "JPEGImages" / f"{image_id}.jpg", image_id, MEAN_BGR, layer)
        path = self.context_dir / "trainval" / f"{image_id}.mat"
        codes = load_mat(path, image_id, "LabelMap", layer)
        if codes.ndim != 2:
            raise CaffeError(f"{layer}: image '{image_id}': LabelMap in {path} is not 2-D (shape {codes.shape})")
        codes = codes.astype(np.int64)
        known = (codes >= 0) & (codes < len(self.table))
        label = np.where(known, self.table[np.where(known, codes, 0)], 0).astype(np.uint8)
        return label[np.newaxis]
