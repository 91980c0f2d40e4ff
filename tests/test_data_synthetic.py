"""The synthetic VOC / SBD-layout set: layout, determinism, labels."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from data_layers.palette import voc_palette
from data_layers.synthetic import CLASS_LABELS, generate, main


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_splits(tmp_path):
    splits = generate(tmp_path, seed=0, train=5, val=3, height=24, width=32)
    voc = tmp_path / "pascal" / "VOC2011"
    sbd = tmp_path / "sbdd" / "dataset"
    lists = voc / "ImageSets" / "Segmentation"
    assert (lists / "train.txt").read_text().split() == splits["train"]
    assert (lists / "val.txt").read_text().split() == splits["val"]
    assert (lists / "seg11valid.txt").read_text().split() == splits["val"]
    assert (sbd / "train.txt").read_text().split() == splits["train"]
    assert not set(splits["train"]) & set(splits["val"])
    for image_id in splits["train"] + splits["val"]:
        assert Image.open(voc / "JPEGImages" / f"{image_id}.jpg").size == (32, 24)
    assert sorted(p.stem for p in (sbd / "cls").glob("*.mat")) == splits["train"]
    assert sorted(p.stem for p in (sbd / "img").glob("*.jpg")) == splits["train"]
    assert not list(tmp_path.rglob(".*"))  # no temporary files left behind


def test_same_seed_same_bytes_other_seed_other_scenes(tmp_path):
    generate(tmp_path / "a", seed=7, train=3, val=2)
    generate(tmp_path / "b", seed=7, train=3, val=2)
    generate(tmp_path / "c", seed=8, train=3, val=2)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    a, c = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "c")
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if k.endswith(".png"))


def test_labels_are_voc_palette_pngs_with_the_classes_and_void_rings(tmp_path):
    splits = generate(tmp_path, seed=0, train=30, val=2)
    voc = tmp_path / "pascal" / "VOC2011"
    sbd = tmp_path / "sbdd" / "dataset"
    seen = set()
    for image_id in splits["train"]:
        png = Image.open(voc / "SegmentationClass" / f"{image_id}.png")
        assert png.mode == "P"
        assert png.getpalette()[:21 * 3] == voc_palette()[:21].reshape(-1).tolist()
        voc_label = np.array(png)
        sbd_label = scipy.io.loadmat(sbd / "cls" / f"{image_id}.mat")["GTcls"][0]["Segmentation"][0]
        assert sbd_label.shape == voc_label.shape == (64, 80)
        assert set(np.unique(sbd_label)) <= {0, *CLASS_LABELS}  # SBD: no void
        seen |= set(np.unique(sbd_label).tolist())
        # VOC = SBD except a void ring: every object pixel survives, void only
        # replaces background next to an object
        objects = sbd_label > 0
        np.testing.assert_array_equal(voc_label[objects], sbd_label[objects])
        void = voc_label == 255
        assert void.any() and not (void & objects).any()
        near_object = np.zeros_like(objects)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                near_object |= np.roll(np.roll(objects, dy, 0), dx, 1)
        assert (near_object[void]).all()
    assert seen == {0, *CLASS_LABELS}


def test_thin_and_small_objects_are_present(tmp_path):
    splits = generate(tmp_path, seed=0, train=30, val=2)
    sbd = tmp_path / "sbdd" / "dataset"
    thinnest, smallest = 99, 10**6
    for image_id in splits["train"]:
        label = scipy.io.loadmat(sbd / "cls" / f"{image_id}.mat")["GTcls"][0]["Segmentation"][0]
        bottle, bird = label == 5, label == 3
        if bottle.any():  # a bar's width is its smaller extent
            rows, cols = np.nonzero(bottle)
            thinnest = min(thinnest, min(np.ptp(rows), np.ptp(cols)) + 1)
        if bird.any():
            smallest = min(smallest, int(bird.sum()))
    assert thinnest <= 2 and smallest <= 10


def test_cli_writes_the_set(tmp_path, capsys):
    main(["--out", str(tmp_path), "--seed", "1", "--train", "2", "--val", "1", "--height", "20", "--width", "24"])
    assert "2 train / 1 val" in capsys.readouterr().out
    assert (tmp_path / "pascal/VOC2011/ImageSets/Segmentation/seg11valid.txt").read_text().split() == ["synth00002"]


def test_mat_files_carry_no_creation_time(tmp_path, monkeypatch):
    """scipy stamps the time into a .mat header; ours must not, or the same
    seed gives other bytes a second later."""
    import time

    import scipy.io

    from data_layers.files import save_mat

    save_mat(tmp_path / "a.mat", {"S": np.eye(3)})
    monkeypatch.setattr(time, "asctime", lambda *args: "Thu Jan  1 00:00:00 2099")
    save_mat(tmp_path / "b.mat", {"S": np.eye(3)})
    assert (tmp_path / "a.mat").read_bytes() == (tmp_path / "b.mat").read_bytes()
    np.testing.assert_array_equal(scipy.io.loadmat(tmp_path / "b.mat")["S"], np.eye(3))
