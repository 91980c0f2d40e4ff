"""The demo's pieces: its scenes, the edge-band score, overlays and the
function-preserving rescaling of the base net."""
from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
import scipy.io
import torch

from data_layers import demo_scenes
from solvers import boundary, overlays
from solvers.score import scores_from_hist


# -- scenes -----------------------------------------------------------------------------

def _digest(root):
    """Images and label PNGs (a .mat header carries its creation time)."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.suffix in (".jpg", ".png")}


def test_scenes_have_every_class_thin_parts_and_are_seeded(tmp_path):
    splits = demo_scenes.generate(tmp_path / "a", seed=3, train=12, val=2, height=128,
                                  width=128)
    demo_scenes.generate(tmp_path / "b", seed=3, train=12, val=2, height=128, width=128)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    seen, thinnest = set(), {}
    for image_id in splits["train"]:
        mat = tmp_path / "a" / "sbdd" / "dataset" / "cls" / f"{image_id}.mat"
        label = scipy.io.loadmat(mat)["GTcls"][0]["Segmentation"][0]
        for cls in set(np.unique(label).tolist()) - {0}:
            seen.add(cls)
            # thinnest run of the class along rows or columns
            mask = label == cls
            runs = [len(run) for line in np.concatenate([mask, mask.T])
                    for run in np.split(line, np.flatnonzero(np.diff(line)) + 1) if run[0]]
            thinnest[cls] = min(thinnest.get(cls, 99), min(runs))
    assert seen == set(demo_scenes.CLASS_LABELS)
    # legs, necks, arms and wings: parts far below the 16 / 32 pixel strides
    # (cars are the one class without them)
    car = demo_scenes.VOC_CLASSES.index("car")
    assert max(v for k, v in thinnest.items() if k != car) <= 8, thinnest


# -- edge bands -------------------------------------------------------------------------

def test_band_mask_by_hand():
    label = np.zeros((12, 16), dtype=np.uint8)
    label[2:10, 2:10] = 5               # an 8 x 8 object
    label[1, 1:11] = 255                # part of its void ring
    band = boundary.band_mask(label, width=1)
    assert band[2, 2] and band[3, 3]    # on and next to the edge
    assert not band[5, 5]               # 3 pixels inside: beyond a 1-pixel band
    assert band[10, 5] and band[11, 5]  # background just outside
    assert not band[1, 5]               # void never counts
    assert not band[5, 14]              # far background
    assert boundary.band_mask(label, width=3)[5, 5]


def test_band_hist_scores_only_the_band():
    truth = np.zeros((12, 16), dtype=np.uint8)
    truth[2:10, 2:10] = 5
    blob = np.zeros_like(truth)
    blob[3:9, 3:9] = 5                  # right inside, one pixel short at every edge
    hist = boundary.band_hist([(truth, blob)], 21, width=1)
    assert hist.sum() == boundary.band_mask(truth, 1).sum()
    iu = scores_from_hist(hist).per_class_iu
    # within the band the object is 8*8 - 4*4 = 48 pixels, 6*6 - 4*4 = 20 of them found
    assert iu["bottle"] == pytest.approx(20 / 48)


# -- overlays ---------------------------------------------------------------------------

def test_overlay_blends_objects_and_outlines_them():
    rgb = np.full((4, 6, 3), 100, dtype=np.uint8)
    label = np.zeros((4, 6), dtype=np.uint8)
    label[:, 2:5] = 7                   # 3 columns of class 7
    drawn = overlays.overlay(rgb, label, {7: (200, 0, 0)})
    np.testing.assert_array_equal(drawn[:, :2], rgb[:, :2])   # background untouched
    np.testing.assert_array_equal(drawn[:, 5], rgb[:, 5])
    assert (drawn[:, 3] == (150, 50, 50)).all()               # inside: half and half
    assert (drawn[:, 2] == (200, 0, 0)).all() and (drawn[:, 4] == (200, 0, 0)).all()
    assert overlays.overlay(rgb, label, {7: (200, 0, 0)}, scale=3).shape == (12, 18, 3)


def test_overlay_sheet_checks_its_rows():
    tile = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="one tile per title"):
        overlays.overlay_sheet([[tile, tile]], ["a", "b", "c"])


# -- base net scaling -------------------------------------------------------------------

def test_scale_features_reaches_the_targets_and_keeps_the_features(tmp_path):
    from PIL import Image

    from caffe_backend import caffe
    from netspec.models import NETS
    from netspec.writer import to_prototxt
    from solvers import demo_base

    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(to_prototxt(NETS["voc-fcn32s"].prototxts(width=1 / 32)["deploy.prototxt"]))
    net = caffe.Net(str(deploy), caffe.TEST)
    rng = np.random.RandomState(0)
    for name, blobs in net.params.items():
        if name.startswith(("conv", "fc")):
            weight, bias = blobs
            fan_in = np.prod(weight.data.shape[1:])
            weight.data[...] = rng.randn(*weight.data.shape) * np.sqrt(2.0 / fan_in)
            bias.data[...] = rng.uniform(0, 1, bias.data.shape)
    images = []
    for i in range(2):
        images.append(tmp_path / f"{i}.jpg")
        Image.fromarray(rng.randint(0, 256, (40, 48, 3)).astype(np.uint8)).save(images[-1])
    blobs = list(demo_base.FEATURE_RMS)
    torch.manual_seed(0)
    before = demo_base.feature_rms(net, images, blobs)
    pool4_before = net.blobs["pool4"].data.copy()
    demo_base.scale_features(net, before)
    after = demo_base.feature_rms(net, images, blobs)
    for name in blobs:
        assert after[name] == pytest.approx(demo_base.FEATURE_RMS[name], rel=1e-4)
    # the same features up to one positive factor
    ratio = demo_base.FEATURE_RMS["pool4"] / before["pool4"]
    np.testing.assert_allclose(net.blobs["pool4"].data, pool4_before * ratio, rtol=1e-3,
                               atol=1e-3 * demo_base.FEATURE_RMS["pool4"])


# -- the shipped base net ---------------------------------------------------------------

def test_make_base_writes_a_base_and_its_record_that_the_demo_accepts(tmp_path):
    import json

    from caffe_backend import caffe
    from netspec.models import NETS
    from netspec.writer import to_prototxt
    from solvers import demo_base
    from torchcaffe.errors import CaffeError

    threads, handlers = torch.get_num_threads(), list(logging.getLogger().handlers)
    try:
        assert demo_base.main(["--quick", "--out", str(tmp_path / "base")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert logging.getLogger().handlers == handlers  # its console handler is gone again
    weights = tmp_path / "base" / demo_base.BASE_FILE
    record = json.loads(demo_base.record_path(weights).read_text())
    assert record["recipe"]["iters"] == demo_base.QUICK_RECIPE.iters
    assert record["sha1"] == hashlib.sha1(weights.read_bytes()).hexdigest()
    assert demo_base.shipped_base(weights)[0] == weights
    # it holds conv1_1 .. fc7 of the narrow base net, and loads into it
    deploy = tmp_path / "vgg16fcn.prototxt"
    deploy.write_text(to_prototxt(NETS["vgg16fcn"].prototxts(
        width=demo_base.QUICK_RECIPE.width)["deploy.prototxt"]))
    net = caffe.Net(str(deploy), caffe.TEST, weights=str(weights))
    assert {"conv1_1", "conv5_3", "fc6", "fc7"} <= set(net.params)
    # a changed caffemodel, or one without its record, is refused by name
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(CaffeError, match="sha1 .* differs"):
        demo_base.shipped_base(weights)
    record_file = demo_base.record_path(weights)
    record_file.write_text(json.dumps({"sha1": record["sha1"], "recipe": {"layers": 3}}))
    with pytest.raises(CaffeError, match="not a base-net record"):
        demo_base.shipped_base(weights)
    record_file.unlink()
    with pytest.raises(CaffeError, match="base net is missing"):
        demo_base.shipped_base(weights)


def test_the_shipped_base_is_the_one_its_recipe_makes_now():
    """The shipped caffemodel matches its record, and the record names the
    recipe and feature targets the code holds now (a change to either without
    remaking the base net fails here)."""
    from dataclasses import asdict

    from solvers import demo_base

    _, record = demo_base.shipped_base()
    assert record["recipe"] == asdict(demo_base.SHIPPED_RECIPE)
    assert record["feature_rms"] == demo_base.FEATURE_RMS
    assert record["pretrain_net"] == demo_base.PRETRAIN_NET


def test_make_base_refuses_an_unusable_destination_before_pretraining(tmp_path, capsys):
    from solvers import demo_base

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as stop:
        demo_base.main(["--quick", "--out", str(blocker / "base")])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert str(blocker) in err and "pretrain" not in err  # refused before pretraining


def test_demo_checks_its_base_before_writing_or_replacing_anything(tmp_path, capsys):
    from solvers import demo

    with pytest.raises(SystemExit) as stop:
        demo.main(["--quick", "--out", str(tmp_path / "out"), "--base",
                   str(tmp_path / "missing.caffemodel")])
    assert stop.value.code == 1
    assert "missing.caffemodel" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
