"""The reference FCN nets (full size, from netspec) run forward and backward
with their own Python data layers reading tiny fixture datasets.

The fixtures (`dataset_fixtures`) are laid out under one data root as the
release's are; the prototxts are written to files, their data directories
pointed at that root by the solver driver's `point_data_layers`, and loaded
by path, so the data-layer modules (voc_layers, nyud_layers, ...) resolve
as the release's nets name them.

Hand values: the prototxts' default fillers make every weight 0, so every
score is 0 and the softmax uniform. A SoftmaxWithLoss then equals log(classes)
per counted pixel (normalize: false sums over pixels; AlexNet's normalize:
true averages), and its bottom's diff is 1/classes - [class == label] on
counted pixels and 0 on void (255) ones, divided by the count when
normalized. The counted pixels follow from each fixture's label pattern.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import torchcaffe as caffe
from dataset_fixtures import (
    SIFTFLOW_GEOMETRIC_ROW, SIFTFLOW_SEMANTIC_ROW, write_context, write_nyud, write_sbd, write_siftflow, write_voc,
)

netspec_models = pytest.importorskip("netspec.models")
netspec_writer = pytest.importorskip("netspec.writer")
solve = pytest.importorskip("solvers.solve")

# odd sizes on purpose: each net's crops must bring its score back to exactly this
HEIGHT, WIDTH = 61, 83
PIXELS = HEIGHT * WIDTH


def pixels_in_columns(row: tuple[int, ...], counted) -> int:
    """Counted pixels of a label whose every row repeats `row` along the width."""
    return HEIGHT * sum(1 for j in range(WIDTH) if counted(row[j % len(row)]))


# Counted (non-void) label pixels of each fixture, from the writers' patterns:
SBD_COUNTED = PIXELS  # SBD has no void; pixel (1, 1) is background, counted
VOC_COUNTED = PIXELS - WIDTH  # the first row is void
NYUD_COUNTED = PIXELS - 1  # stored 0 at (0, 0) is void
SIFTFLOW_SEM_COUNTED = pixels_in_columns(SIFTFLOW_SEMANTIC_ROW, lambda v: v != 0)
SIFTFLOW_GEO_COUNTED = pixels_in_columns(SIFTFLOW_GEOMETRIC_ROW, lambda v: v > 0)
CONTEXT_COUNTED = PIXELS  # the 59-class task maps everything else to background


@dataclass(frozen=True)
class Loss:
    classes: int
    label: str  # the label top the loss reads
    counted: int  # its non-void pixels
    normalized: bool = False


@dataclass(frozen=True)
class Case:
    model: str
    losses: dict[str, Loss]  # loss top -> what it sees
    split: str = "train"  # "train": the model's train net; "test": its val / test net


VOC = {"loss": Loss(21, "label", SBD_COUNTED)}  # the VOC train nets learn from SBD
CASES = [
    Case("voc-fcn32s", VOC),
    Case("voc-fcn16s", VOC),
    Case("voc-fcn8s", VOC),
    Case("voc-fcn8s-atonce", VOC),
    Case("voc-fcn-alexnet", {"loss": Loss(21, "label", SBD_COUNTED, normalized=True)}),
    Case("nyud-fcn32s-color-d", {"loss": Loss(40, "label", NYUD_COUNTED)}),
    Case("nyud-fcn32s-color-hha", {"loss": Loss(40, "label", NYUD_COUNTED)}),
    Case("siftflow-fcn16s", {"loss": Loss(33, "sem", SIFTFLOW_SEM_COUNTED),
                             "loss_geo": Loss(3, "geo", SIFTFLOW_GEO_COUNTED)}),
    Case("pascalcontext-fcn32s", {"loss": Loss(60, "label", CONTEXT_COUNTED)}),
    # the val net: VOCSegDataLayer on VOC2011's seg11valid, in the TEST phase
    Case("voc-fcn8s", {"loss": Loss(21, "label", VOC_COUNTED)}, split="test"),
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Every fixture dataset under one root, in the release's relative dirs."""
    root = tmp_path_factory.mktemp("data")
    size = (HEIGHT, WIDTH)
    write_sbd(root / "sbdd", size=size)
    write_voc(root / "pascal", size=size)
    write_context(root, size=size)
    write_nyud(root, size=size)
    write_siftflow(root, size=size)
    return root


def write_net(case: Case, data_root: Path, folder: Path) -> tuple[Path, int]:
    """The case's net as a prototxt file reading under `data_root`; also its phase."""
    model = netspec_models.NETS[case.model]
    dataset = model.dataset
    train = case.split == "train"
    split, file_name = ((dataset.train_split, dataset.train_file) if train
                        else (dataset.test_split, dataset.test_file))
    net_param = model.net_proto(split)
    solve.point_data_layers(net_param, data_root)
    path = folder / case.model / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(netspec_writer.to_prototxt(net_param))
    return path, caffe.TRAIN if train else caffe.TEST


def expected_score_diff(label: np.ndarray, loss: Loss) -> np.ndarray:
    """d loss / d score at all-zero scores: 1/C - one_hot(label), 0 on void."""
    counted = label != 255
    diff = np.where(counted, 1.0 / loss.classes, 0.0)
    classes = np.arange(loss.classes).reshape(1, -1, 1, 1)
    diff = diff - (counted & (label == classes))
    return diff / loss.counted if loss.normalized else diff


@pytest.mark.parametrize("case", CASES, ids=[f"{c.model}-{c.split}" for c in CASES])
def test_reference_net_with_its_data_layer(case, data_root, tmp_path):
    prototxt, phase = write_net(case, data_root, tmp_path)
    net = caffe.Net(str(prototxt), phase)
    dataset = netspec_models.NETS[case.model].dataset
    assert net.layers[0].type == "Python"  # the data layer itself, not a stand-in

    net.forward()
    for top, channels in dataset.image_channels:
        assert net.blobs[top].shape == (1, channels, HEIGHT, WIDTH), top
    if case.model == "nyud-fcn32s-color-d":  # early fusion: BGR + depth into conv1_1_bgrd
        assert net.blobs["data"].shape == (1, 4, HEIGHT, WIDTH)
    for loss_top, loss in case.losses.items():
        label = net.blobs[loss.label].data
        assert label.shape == (1, 1, HEIGHT, WIDTH)
        assert np.count_nonzero(label != 255) == loss.counted, loss.label
        score = net.bottom_names[loss_top][0]
        assert net.blobs[score].shape == (1, loss.classes, HEIGHT, WIDTH), score
        expected = math.log(loss.classes) * (1 if loss.normalized else loss.counted)
        assert float(net.blobs[loss_top].data) == pytest.approx(expected, rel=1e-4), loss_top  # float32 sums

    net.backward()
    for loss_top, loss in case.losses.items():
        score = net.bottom_names[loss_top][0]
        np.testing.assert_allclose(net.blobs[score].diff, expected_score_diff(net.blobs[loss.label].data, loss),
                                   rtol=0, atol=1e-6, err_msg=score)
    for layer, blobs in net.params.items():
        for blob in blobs:
            assert blob.diff.shape == blob.data.shape, layer
            assert np.isfinite(blob.diff).all(), layer
