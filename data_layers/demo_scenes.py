"""The demo's synthetic scenes: five object classes with thin parts.

Each class has its own colour, texture and silhouette, and every silhouette
mixes a body that a coarse (stride 32) prediction can find with parts a few
pixels wide that only a finer one can follow:

    dog      brown, dark spots     ellipse body, four legs, a tail
    person   pink, stripes         head, torso, arms and legs
    car      blue, checker         box body, a cabin on top
    bottle   green, plain          upright bar with a narrow neck
    bird     yellow, fine speckle  small body, two long thin wings

Backgrounds are muted gratings, so colour and texture tell the classes
apart and shape tells object from background at the edges.

`generate(out, ...)` writes a set in the VOC2011 + SBD layouts (see
`data_layers.synthetic`) that the voc-fcn nets read unchanged.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from data_layers.palette import VOC_CLASSES
from data_layers.synthetic import with_void_rings, write_dataset


@dataclass(frozen=True)
class Kind:
    name: str
    color: tuple[int, int, int]  # mean RGB
    texture: str

    @property
    def label(self) -> int:
        return VOC_CLASSES.index(self.name)


KINDS = (
    Kind("dog", (150, 85, 35), "spots"),
    Kind("person", (235, 150, 150), "stripes"),
    Kind("car", (40, 70, 210), "checker"),
    Kind("bottle", (30, 190, 70), "plain"),
    Kind("bird", (245, 215, 20), "speckle"),
)
CLASS_LABELS = tuple(sorted(kind.label for kind in KINDS))
#: the scored classes in label order: background first
CLASS_NAMES = tuple(VOC_CLASSES[k] for k in (0, *CLASS_LABELS))
MARGIN = 3  # free pixels kept between objects, so void rings never touch another
SCALE = (1.6, 2.4)  # bodies are drawn at this random magnification
COUNT = (2, 5)  # objects per scene: at least the first, fewer than the second


class _Canvas:
    """Boolean mask drawing on an h x w grid."""

    def __init__(self, height: int, width: int):
        self.rows, self.cols = np.mgrid[:height, :width]
        self.mask = np.zeros((height, width), dtype=bool)

    def ellipse(self, cy, cx, ry, rx):
        self.mask |= ((self.rows - cy) / ry) ** 2 + ((self.cols - cx) / rx) ** 2 <= 1.0

    def box(self, top, left, height, width):
        self.mask |= ((self.rows >= top) & (self.rows < top + height)
                      & (self.cols >= left) & (self.cols < left + width))

    def stroke(self, y0, x0, y1, x1, thickness):
        """A straight bar `thickness` pixels wide from (y0, x0) to (y1, x1)."""
        dy, dx = y1 - y0, x1 - x0
        length2 = dy * dy + dx * dx
        t = np.clip(((self.rows - y0) * dy + (self.cols - x0) * dx) / length2, 0.0, 1.0)
        distance2 = (self.rows - y0 - t * dy) ** 2 + (self.cols - x0 - t * dx) ** 2
        self.mask |= distance2 <= (thickness / 2) ** 2


def _silhouette(name: str, rng: np.random.RandomState, scale: float) -> np.ndarray:
    """The mask of one object of class `name`, in its own bounding canvas.

    `scale` magnifies the body; the thin parts (legs, tail, arms, neck,
    wings) keep their width of a few pixels and grow only in length."""
    def size(low, high):  # a body dimension drawn in [low, high) and magnified
        return max(1, int(round(rng.randint(low, high) * scale)))

    if name == "dog":
        ry, rx = size(10, 15), size(17, 26)
        legs = size(10, 16)
        c = _Canvas(2 * ry + legs + 4, 2 * rx + 12)
        c.ellipse(ry + 2, rx + 6, ry, rx)
        for x in np.linspace(rx + 6 - 0.7 * rx, rx + 6 + 0.7 * rx, 4):
            c.box(ry + 2, int(x) - 2, ry + legs, rng.randint(4, 6))
        c.stroke(ry, 2 * rx + 5, 2, 2 * rx + 11, 3)  # tail
        return c.mask
    if name == "person":
        torso_h, torso_w, leg = size(22, 32), size(12, 17), size(14, 22)
        head = size(6, 9)
        width = torso_w + 16
        c = _Canvas(2 * head + torso_h + leg + 2, width)
        mid = width / 2
        c.ellipse(head, mid, head, head)
        top = 2 * head
        c.box(top, mid - torso_w / 2, torso_h, torso_w)
        c.stroke(top + 2, mid - torso_w / 2, top + torso_h * 0.8, 1, 4)  # arms
        c.stroke(top + 2, mid + torso_w / 2, top + torso_h * 0.8, width - 2, 4)
        c.box(top + torso_h, mid - torso_w / 2, leg, 5)  # legs
        c.box(top + torso_h, mid + torso_w / 2 - 5, leg, 5)
        return c.mask
    if name == "car":
        h, w = size(16, 24), size(40, 58)
        cab_h, cab_w = size(9, 14), w // 2
        c = _Canvas(h + cab_h, w)
        c.box(cab_h, 0, h, w)
        c.box(0, rng.randint(2, w - cab_w - 1), cab_h, cab_w)
        return c.mask
    if name == "bottle":
        body_h, body_w = size(28, 44), size(10, 15)
        neck_h, neck_w = size(10, 16), rng.randint(4, 7)
        c = _Canvas(body_h + neck_h, body_w)
        c.box(neck_h, 0, body_h, body_w)
        c.box(0, (body_w - neck_w) // 2, neck_h, neck_w)
        return c.mask
    # bird: a small body with two wings raised in a V
    r = size(7, 11)
    span = size(10, 16)
    c = _Canvas(2 * r + span, 2 * span + 2 * r)
    cy, cx = span + r, span + r
    c.ellipse(cy, cx, r, r * 1.4)
    lift = rng.uniform(0.5, 1.0) * span
    c.stroke(cy, cx, cy - lift, 2, 4)
    c.stroke(cy, cx, cy - lift, 2 * cx - 2, 4)
    return c.mask


def _texture(kind: Kind, rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    """An H x W x 3 float RGB texture for `kind`, colour jittered per object."""
    color = np.array(kind.color, dtype=np.float64) + rng.uniform(-15, 15, size=3)
    rows, cols = np.mgrid[:height, :width]
    if kind.texture == "spots":
        shade = np.where(ndimage.gaussian_filter(rng.randn(height, width), 1.5) > 0.15,
                         -50.0, 0.0)
    elif kind.texture == "stripes":
        shade = np.where((rows // 2) % 2 == 0, 30.0, -30.0)
    elif kind.texture == "checker":
        shade = np.where(((rows // 3) + (cols // 3)) % 2 == 0, 35.0, -35.0)
    elif kind.texture == "speckle":
        shade = 25.0 * rng.randn(height, width)
    else:
        shade = np.zeros((height, width))
    return color + shade[..., np.newaxis]


def _background(rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    """A muted grating over a random grey-ish base colour."""
    rows, cols = np.mgrid[:height, :width]
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 24)
    wave = np.sin((rows * np.sin(angle) + cols * np.cos(angle)) * 2 * np.pi / period)
    base = rng.uniform(80, 150) + rng.uniform(-20, 20, size=3)
    return base + rng.uniform(10, 30) * wave[..., np.newaxis]


def _place(kinds, rng, height, width, tries: int = 30):
    """Masks of objects of the given kinds at free random places, largest
    first (one that finds no place is skipped)."""
    occupied = np.zeros((height, width), dtype=bool)
    placed = []
    shapes = []
    for kind in kinds:
        scale = rng.uniform(*SCALE)
        shape = _silhouette(kind.name, rng, scale)
        while (shape.shape[0] > height or shape.shape[1] > width) and scale > 0.5:
            scale *= 0.75  # too large for a small scene: drawn smaller
            shape = _silhouette(kind.name, rng, scale)
        shapes.append((kind, shape[:, ::-1] if rng.rand() < 0.5 else shape))
    # the largest first: small ones still find room between them
    for kind, shape in sorted(shapes, key=lambda item: -item[1].size):
        h, w = shape.shape
        if h > height or w > width:
            continue
        for _attempt in range(tries):
            top, left = rng.randint(0, height - h + 1), rng.randint(0, width - w + 1)
            mask = np.zeros((height, width), dtype=bool)
            mask[top:top + h, left:left + w] = shape
            if not (ndimage.binary_dilation(mask, iterations=MARGIN) & occupied).any():
                occupied |= mask
                placed.append((kind, mask))
                break
    return placed


def _paint(rng, height, width, placed) -> tuple[np.ndarray, np.ndarray]:
    image = _background(rng, height, width)
    label = np.zeros((height, width), dtype=np.uint8)
    for kind, mask in placed:
        image[mask] = _texture(kind, rng, height, width)[mask]
        label[mask] = kind.label
    image += rng.normal(0.0, 6.0, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def render_scene(rng: np.random.RandomState, height: int, width: int):
    """One scene of COUNT objects of any classes: (RGB uint8, labels, labels
    with VOC's void rings)."""
    kinds = [KINDS[i] for i in rng.randint(len(KINDS), size=rng.randint(*COUNT))]
    placed = _place(kinds, rng, height, width)
    image, label = _paint(rng, height, width, placed)
    return image, label, with_void_rings(label, [mask for _, mask in placed])


def generate(out: str | os.PathLike, seed: int, train: int, val: int, height: int,
             width: int) -> dict[str, list[str]]:
    """Write the demo's scenes under `out` in the VOC2011 + SBD layouts."""
    return write_dataset(out, render_scene, CLASS_LABELS, seed=seed, train=train, val=val,
                         height=height, width=width)
