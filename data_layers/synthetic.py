"""A small synthetic segmentation set in the PASCAL VOC and SBD layouts.

Textured scenes with five of VOC's classes, each with its own shape, colour
and texture: large spotted blobs (dog), tall striped ellipses (person),
checkered boxes (car), 1-3 px wide bars (bottle) and specks a few pixels
across (bird). The thin and small objects are there so that the finer
strides of FCN-16s / 8s have something to gain. As in VOC, a one-pixel
void (255) ring surrounds every object in the VOC labels; the SBD labels,
like SBD's own, have none.

`generate(out, ...)` writes, under `out` (which then stands in for the
models' `../data`):

    pascal/VOC2011/JPEGImages/<id>.jpg                   train + val images
    pascal/VOC2011/SegmentationClass/<id>.png            VOC palette PNGs
    pascal/VOC2011/ImageSets/Segmentation/{train,val,seg11valid}.txt
    sbdd/dataset/img/<id>.jpg, sbdd/dataset/cls/<id>.mat (GTcls.Segmentation)
    sbdd/dataset/train.txt                               the train ids

so the voc-fcn nets (SBDD `train` / VOC `seg11valid`) read it unchanged
apart from their data dirs. Validation ids are not in SBD train, so
`seg11valid` equals `val`, as the real seg11valid is VOC val minus SBD train.
The output depends only on the arguments: each image is drawn from its own
`RandomState([seed, index])`.

    python -m data_layers.synthetic --out data --seed 0 --train 40 --val 12
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from data_layers.files import save_image, save_mat, write_lines
from data_layers.palette import VOC_CLASSES, VOID, save_label_png
from torchcaffe.progress import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectKind:
    name: str
    color: tuple[int, int, int]  # mean RGB
    texture: str  # spots, stripes, checker or plain

    @property
    def label(self) -> int:
        return VOC_CLASSES.index(self.name)


KINDS = (
    ObjectKind("dog", (150, 90, 40), "spots"),
    ObjectKind("person", (220, 165, 140), "stripes"),
    ObjectKind("car", (40, 70, 200), "checker"),
    ObjectKind("bottle", (30, 200, 60), "plain"),
    ObjectKind("bird", (240, 220, 30), "plain"),
)
#: the VOC class indices the set uses
CLASS_LABELS = tuple(sorted(kind.label for kind in KINDS))
MARGIN = 2  # free pixels kept between objects, so void rings never cover one


def _shape_mask(kind: str, rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    """A boolean mask of one object of `kind` at a random place."""
    rows, cols = np.mgrid[:height, :width]
    if kind == "dog":  # large ellipse
        ry, rx = rng.randint(6, max(7, height // 4) + 1), rng.randint(8, max(9, width // 4) + 1)
    elif kind == "person":  # tall ellipse
        ry, rx = rng.randint(9, max(10, height // 3) + 1), rng.randint(3, 7)
    elif kind == "bird":  # a speck
        ry = rx = rng.randint(1, 3)
    if kind in ("dog", "person", "bird"):
        cy, cx = rng.randint(0, height), rng.randint(0, width)
        return ((rows - cy) / (ry + 0.5)) ** 2 + ((cols - cx) / (rx + 0.5)) ** 2 <= 1.0
    if kind == "car":  # box
        h, w = rng.randint(6, 13), rng.randint(10, 25)
    else:  # bottle: a thin bar, upright or lying
        thickness, length = rng.randint(1, 4), rng.randint(12, max(13, min(height, width) * 2 // 3))
        h, w = (length, thickness) if rng.rand() < 0.6 else (thickness, length)
    top, left = rng.randint(-h // 2, height - h // 2), rng.randint(-w // 2, width - w // 2)
    return (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)


def _texture(kind: ObjectKind, rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    """An H x W x 3 float RGB texture for `kind`, colour jittered per object."""
    color = np.array(kind.color, dtype=np.float64) + rng.uniform(-15, 15, size=3)
    rows, cols = np.mgrid[:height, :width]
    if kind.texture == "spots":
        pattern = ndimage.gaussian_filter(rng.randn(height, width), 1.5) > 0.15
        shade = np.where(pattern, -45.0, 0.0)
    elif kind.texture == "stripes":
        shade = np.where((rows // 2) % 2 == 0, 25.0, -25.0)
    elif kind.texture == "checker":
        shade = np.where(((rows // 3) + (cols // 3)) % 2 == 0, 30.0, -30.0)
    else:
        shade = np.zeros((height, width))
    return color + shade[..., np.newaxis]


def _background(rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    """A muted grating over a random base colour."""
    rows, cols = np.mgrid[:height, :width]
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    wave = np.sin((rows * np.sin(angle) + cols * np.cos(angle)) * 2 * np.pi / period)
    base = rng.uniform(70, 150, size=3)
    return base + 20.0 * wave[..., np.newaxis]


def render_scene(rng: np.random.RandomState, height: int, width: int):
    """One scene: (RGB uint8 H x W x 3, labels without void, labels with VOC's void rings)."""
    image = _background(rng, height, width)
    label = np.zeros((height, width), dtype=np.uint8)
    occupied = np.zeros((height, width), dtype=bool)
    objects = []
    for _ in range(rng.randint(2, 6)):
        kind = KINDS[rng.randint(len(KINDS))]
        for _attempt in range(20):
            mask = _shape_mask(kind.name, rng, height, width)
            if mask.any() and not (ndimage.binary_dilation(mask, iterations=MARGIN) & occupied).any():
                break
        else:
            continue
        image[mask] = _texture(kind, rng, height, width)[mask]
        label[mask] = kind.label
        occupied |= mask
        objects.append(mask)
    image += rng.normal(0.0, 5.0, size=image.shape)
    voc_label = label.copy()
    for mask in objects:
        voc_label[ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool)) & ~mask] = VOID
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label, voc_label


def _save_jpeg(path: Path, rgb: np.ndarray) -> None:
    # full-resolution chroma: 4:2:0 subsampling would smear the 1 px bars
    save_image(path, Image.fromarray(rgb), quality=92, subsampling=0)


def generate(out: str | os.PathLike, seed: int = 0, train: int = 40, val: int = 12,
             height: int = 64, width: int = 80) -> dict[str, list[str]]:
    """Write the set under `out` (see the module docstring); returns the ids by split."""
    if train < 1 or val < 1 or height < 16 or width < 16:
        raise ValueError("need train >= 1, val >= 1 and images of at least 16 x 16")
    out = Path(out)
    voc = out / "pascal" / "VOC2011"
    sbd = out / "sbdd" / "dataset"
    splits = {
        "train": [f"synth{i:05d}" for i in range(train)],
        "val": [f"synth{i:05d}" for i in range(train, train + val)],
    }
    items = [(image_id, split) for split, ids in splits.items() for image_id in ids]
    scenes = progress(items, desc="synthetic scenes", unit="img")
    for index, (image_id, split) in enumerate(scenes):
        rgb, label, voc_label = render_scene(np.random.RandomState([seed, index]), height, width)
        _save_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", rgb)
        save_label_png(voc / "SegmentationClass" / f"{image_id}.png", voc_label)
        if split == "train":
            _save_jpeg(sbd / "img" / f"{image_id}.jpg", rgb)
            present = np.array([k for k in CLASS_LABELS if (label == k).any()], dtype=np.uint8)
            save_mat(sbd / "cls" / f"{image_id}.mat",
                     {"GTcls": {"Segmentation": label, "CategoriesPresent": present}})
    lists = voc / "ImageSets" / "Segmentation"
    write_lines(lists / "train.txt", splits["train"])
    write_lines(lists / "val.txt", splits["val"])
    write_lines(lists / "seg11valid.txt", splits["val"])
    write_lines(sbd / "train.txt", splits["train"])
    log.info("wrote %d train and %d val scenes under %s", train, val, out)
    return splits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m data_layers.synthetic",
        description="Write a small synthetic segmentation set in the VOC2011 and SBD layouts "
                    "(OUT/pascal/VOC2011, OUT/sbdd/dataset); OUT stands in for the models' ../data.",
    )
    parser.add_argument("--out", required=True, help="output folder (e.g. data)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scenes (default 0)")
    parser.add_argument("--train", type=int, default=40, help="number of training scenes (default 40)")
    parser.add_argument("--val", type=int, default=12, help="number of validation scenes (default 12)")
    parser.add_argument("--height", type=int, default=64, help="image height in pixels (default 64)")
    parser.add_argument("--width", type=int, default=80, help="image width in pixels (default 80)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        splits = generate(args.out, args.seed, args.train, args.val, args.height, args.width)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"{len(splits['train'])} train / {len(splits['val'])} val scenes in {args.out} "
          f"(classes {', '.join(VOC_CLASSES[k] for k in CLASS_LABELS)})")


if __name__ == "__main__":
    main()
