"""Label maps of a model's dataset, read by the model's own data layer.

`read_labels(model, data_dir)` yields the label top of every image of a
split, as training and scoring see it; `median_frequency_weights` turns the
train split's class counts into class-balancing weights.
"""
from __future__ import annotations

import ast
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from caffe_backend import caffe
from data_layers.palette import VOID
from torchcaffe.errors import CaffeError


def _task(model: str, label_top: str | None):
    from solvers.solve import seg_tasks

    tasks = seg_tasks(model)
    if label_top is None:
        return tasks[0]
    for task in tasks:
        if task.gt == label_top:
            return task
    raise CaffeError(f"label top '{label_top}': {model} scores the label tops "
                     f"{', '.join(t.gt for t in tasks)}")


def _classes(deploy, score_top: str) -> int:
    """Classes of the score top: the outputs of the layer its Crop reads."""
    producers = {top: layer for layer in deploy.layer for top in layer.top}
    layer = producers[score_top]
    while layer.type == "Crop":
        layer = producers[layer.bottom[0]]
    return layer.convolution_param.num_output


def read_labels(model: str, data_dir: Path, split: str | None = None,
                label_top: str | None = None, images: int | None = None,
                training: bool = False):
    """(classes, class names, count, iterator of H x W label maps) of `model`'s
    dataset, read by its own Python data layer from `data_dir`: `split`, or
    by default the model's test split (its train split when `training`)."""
    from netspec.datasets import data_layer
    from netspec.models import NETS
    from netspec.writer import to_prototxt
    from solvers.solve import point_data_layers, python_data_layer

    if model not in NETS or not hasattr(NETS[model], "dataset"):
        raise CaffeError(f"unknown model '{model}' (a model with a dataset; see "
                         "python -m netspec --list)")
    if not data_dir.is_dir():
        raise CaffeError(f"--data {data_dir}: no such folder (the dataset root)")
    dataset = NETS[model].dataset
    task = _task(model, label_top)
    classes = _classes(NETS[model].net_proto(None), task.layer)
    n = caffe.NetSpec()
    data_layer(n, dataset, split or (dataset.train_split if training else dataset.test_split))
    proto = n.to_proto()
    point_data_layers(proto, data_dir.resolve())
    # every image once, in file order, training split or not
    python = proto.layer[0].python_param
    python.param_str = repr({**ast.literal_eval(python.param_str), "randomize": False})
    work = tempfile.TemporaryDirectory(prefix="fcn-upper-bound-")
    path = Path(work.name) / "labels.prototxt"
    path.write_text(to_prototxt(proto))
    net = caffe.Net(str(path), caffe.TEST)
    layer = python_data_layer(net)
    count = len(layer.indices) if images is None else min(images, len(layer.indices))

    def labels():
        with work:
            for _ in range(count):
                net.forward()
                yield net.blobs[task.gt].data[0, 0].astype(np.int64)

    return classes, task.classes, count, labels()


def median_frequency_weights(model: str, data_dir: Path) -> tuple[float, ...]:
    """Class weights median(f) / f_c from the pixel frequencies f_c of the
    classes in the model's train split (median over the classes present; an
    absent class gets weight 0: it has no pixels to weigh)."""
    classes, _, count, labels = read_labels(model, data_dir, training=True)
    counts = np.zeros(classes, dtype=np.int64)
    for label in tqdm(labels, total=count, desc="class counts", unit="img"):
        counted = label[label != VOID]
        counts += np.bincount(counted, minlength=classes)[:classes]
    present = counts > 0
    if not present.any():
        raise CaffeError(f"{model}: the train split has no labelled pixels to balance")
    freq = counts / counts.sum()
    median = float(np.median(freq[present]))
    return tuple(float(median / f) if f > 0 else 0.0 for f in freq)
