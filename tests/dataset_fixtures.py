"""Tiny datasets in each release's real on-disk layout, for the data-layer and
reference-net tests.

Each writer takes the folder its dataset lives in (the layout a data root
gives: `sbdd/dataset`, `pascal/VOC2011`, `pascal/VOC2010` + `pascal-context`,
`nyud`, `sift-flow`) and an image size (default 4 x 5). Every image of a set
has its own label values, so a sequence of labels tells which ids a layer
read; the label patterns, void pixels included, are given per writer so a
test can count by hand what a loss sees.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

H, W = 4, 5
Size = tuple[int, int]

VOC_IDS = ["2008_000001", "2008_000002", "2008_000003", "2008_000004", "2008_000005"]
# SIFT Flow keeps every file one folder further down, under this name
SIFTFLOW_SUBFOLDER = "spatial_envelope_256x256_static_8outdoorcategories"


def solid_rgb(value: int, size: Size = (H, W)) -> np.ndarray:
    """An RGB image whose channels differ (R > G > B) and vary a little per
    pixel: a ramp 0, 1, 2, ... in row-major order, repeating every 50 pixels."""
    height, width = size
    ramp = (np.arange(height * width) % 50).reshape(height, width)
    return np.stack([200 + ramp, 100 + ramp, 10 + value + ramp], axis=-1).astype(np.uint8)


def tiled(pattern: np.ndarray, size: Size) -> np.ndarray:
    """`pattern` repeated over rows and columns and cut to `size`."""
    reps = (-(-size[0] // pattern.shape[0]), -(-size[1] // pattern.shape[1]))
    return np.tile(pattern, reps)[: size[0], : size[1]]


def write_voc(root: Path, ids=VOC_IDS, size: Size = (H, W)) -> Path:
    """`root`/VOC2011 with splits train and seg11valid (both list `ids`).
    Image k (from 1) is labelled k everywhere but its first row, void (255)."""
    voc = root / "VOC2011"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "SegmentationClass").mkdir()
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    for k, image_id in enumerate(ids, 1):
        Image.fromarray(solid_rgb(k, size)).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=100)
        label = np.full(size, k, dtype=np.uint8)
        label[0, :] = 255  # a void border row
        png = Image.fromarray(label)
        png.putpalette([c for i in range(256) for c in (i, 255 - i, i // 2)])
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    for split in ("train", "seg11valid"):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return voc


def write_sbd(root: Path, ids=VOC_IDS[:3], size: Size = (H, W)) -> Path:
    """`root`/dataset (SBD) with split train. Image k (from 1) is class k
    everywhere but pixel (1, 1), background 0; SBD has no void."""
    sbd = root / "dataset"
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    for k, image_id in enumerate(ids, 1):
        Image.fromarray(solid_rgb(k, size)).save(sbd / "img" / f"{image_id}.jpg", quality=100)
        seg = np.full(size, k, dtype=np.uint8)
        seg[1, 1] = 0
        scipy.io.savemat(sbd / "cls" / f"{image_id}.mat",
                         {"GTcls": {"Segmentation": seg, "CategoriesPresent": np.array([k])}})
    (sbd / "train.txt").write_text("\n".join(ids) + "\n")
    return sbd


def write_nyud(root: Path, size: Size = (H, W)) -> Path:
    """`root`/nyud with images 5001, 5002 in splits trainval and test. Image
    k's stored segmentation is 10 k except the first three pixels of row 0:
    0 (void), 1 and 40. HHA is the colour image with its channels reversed;
    depth is 100 x (ramp mod 600) + 500 k, in millimetres."""
    height, width = size
    nyud = root / "nyud"
    for sub in ("data/images", "data/depth", "data/hha", "segmentation"):
        (nyud / sub).mkdir(parents=True)
    for k, image_id in enumerate(["5001", "5002"], 1):
        rgb = solid_rgb(k, size)
        Image.fromarray(rgb).save(nyud / "data" / "images" / f"img_{image_id}.png")
        Image.fromarray(rgb[:, :, ::-1].copy()).save(nyud / "data" / "hha" / f"img_{image_id}.png")
        ramp = (np.arange(height * width, dtype=np.int32) % 600).reshape(size)
        depth = (ramp * 100 + 500 * k).astype(np.uint16)
        Image.fromarray(depth).save(nyud / "data" / "depth" / f"img_{image_id}.png")
        seg = np.full(size, 10 * k, dtype=np.uint16)
        seg[0, 0], seg[0, 1], seg[0, 2] = 0, 1, 40
        scipy.io.savemat(nyud / "segmentation" / f"img_{image_id}.mat", {"segmentation": seg})
    for split in ("trainval", "test"):
        (nyud / f"{split}.txt").write_text("5001\n5002\n")
    return nyud


# stored SIFT Flow labels of one row; columns repeat them
SIFTFLOW_SEMANTIC_ROW = (0, 1, 2, 33, 17)  # 0 is void
SIFTFLOW_GEOMETRIC_ROW = (-1, 0, 1, 2, 3)  # -1 and 0 are void


def write_siftflow(root: Path, size: Size = (H, W)) -> Path:
    """`root`/sift-flow with image coast_arnat59 in splits trainval and test;
    every row of its labels repeats SIFTFLOW_SEMANTIC_ROW / _GEOMETRIC_ROW."""
    sf = root / "sift-flow"
    for sub in ("Images", "SemanticLabels", "GeoLabels"):
        (sf / sub / SIFTFLOW_SUBFOLDER).mkdir(parents=True)
    image_id = "coast_arnat59"
    Image.fromarray(solid_rgb(0, size)).save(sf / "Images" / SIFTFLOW_SUBFOLDER / f"{image_id}.jpg", quality=100)
    sem = tiled(np.array([SIFTFLOW_SEMANTIC_ROW], dtype=np.float64), size)
    geo = tiled(np.array([SIFTFLOW_GEOMETRIC_ROW], dtype=np.int16), size)
    scipy.io.savemat(sf / "SemanticLabels" / SIFTFLOW_SUBFOLDER / f"{image_id}.mat", {"S": sem})
    scipy.io.savemat(sf / "GeoLabels" / SIFTFLOW_SUBFOLDER / f"{image_id}.mat", {"S": geo})
    for split in ("trainval", "test"):
        (sf / f"{split}.txt").write_text(f"{image_id}\n")
    return sf


def write_context(root: Path, size: Size = (H, W)) -> tuple[Path, Path]:
    """`root`/pascal/VOC2010 (image 2008_000002 in splits train and val) and
    `root`/pascal-context, whose label map tiles a 4 x 5 block of codes;
    returns the two folders the layer's voc_dir and context_dir name."""
    voc = root / "pascal" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    ctx = root / "pascal-context"
    (ctx / "trainval").mkdir(parents=True)
    # the full list numbers classes from 1; three names differ from the task file's
    (ctx / "labels.txt").write_text(
        "1: accordion\n2: aeroplane\n3: air conditioner\n4: table\n5: bedclothes\n6: cloth\n7: sky\n8: potted plant\n"
    )
    (ctx / "59_labels.txt").write_text(
        "1: aeroplane\n2: diningtable\n3: bedcloth\n4: clothes\n5: sky\n6: pottedplant\n"
    )
    image_id = "2008_000002"
    Image.fromarray(solid_rgb(3, size)).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=100)
    codes = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 400], [2, 2, 2, 2, 2], [7, 7, 7, 7, 7]], dtype=np.uint16)
    scipy.io.savemat(ctx / "trainval" / f"{image_id}.mat", {"LabelMap": tiled(codes, size)})
    for split in ("train", "val"):
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text(f"{image_id}\n")
    return root / "pascal", ctx
