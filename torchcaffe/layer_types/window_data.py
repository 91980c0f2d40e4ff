"""Caffe's WindowData layer (R-CNN fine-tuning): windows sampled from a
window file, cut out of their images, warped to crop_size and labelled.

Window file, whitespace-separated, repeated per image:

    # image_index
    image_path
    channels height width
    num_windows
    class_index overlap x1 y1 x2 y2      (num_windows lines, inclusive pixel box)

A window with overlap >= fg_threshold is foreground (its class must be
positive); one with overlap < bg_threshold is background (label 0); the rest
are unused. Each batch takes int(batch_size * fg_fraction) foreground
windows after batch_size minus that many background ones, each drawn at
random with replacement. A window is grown by context_pad (in output
pixels) and, in crop_mode "square", to a square; the part inside the image
is warped (INTER_LINEAR) and placed where it falls in the crop_size x
crop_size output, the rest stays 0. Mirror flips at random (both phases).
Pixel values are (pixel - mean) * window_data_param.scale, as BVLC's layer
computes them (transform_param gives crop_size, mirror and the mean).

Training on N processes, each rank draws its windows from its own generator
(seeded from random_seed + rank, as in Caffe): the layer samples with
replacement and has no order to share out, so the ranks' batches are
independent draws rather than interleaved shares.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np

from .. import image_io
from ..datum import read_mean_file
from ..errors import CaffeError, LayerError
from .base import register
from .data import (PrefetchingLayer, check_same, checked_generator_state, generator_state,
                   layer_rng, state_fields)


def _round(value: float) -> int:
    """C's round(): halves away from zero."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def parse_window_file(path: str, root: str, fg_threshold: float, bg_threshold: float, error):
    """(images [(path, (channels, height, width))], fg windows, bg windows);
    a window is (image index, label, x1, y1, x2, y2)."""
    try:
        with open(path) as f:
            tokens = f.read().split()
    except OSError as exc:
        raise error(f"window_data_param.source {path}: {exc.strerror}") from None
    if not tokens:
        raise error(f"window file {path} is empty")
    images, fg, bg = [], [], []
    pos = 0

    def take(kind, what):
        nonlocal pos
        if pos >= len(tokens):
            raise error(f"window file {path}: ends where {what} was expected (image {len(images)})")
        token = tokens[pos]
        pos += 1
        try:
            return kind(token)
        except ValueError:
            raise error(f"window file {path}: expected {what}, got {token!r} "
                        f"(image {len(images)})") from None

    while pos < len(tokens):
        if take(str, "'#'") != "#":
            raise error(f"window file {path}: expected '#' before image {len(images)}")
        index = take(int, "the image index")
        image_path = root + take(str, "the image path")
        size = (take(int, "channels"), take(int, "height"), take(int, "width"))
        images.append((image_path, size))
        for _ in range(take(int, "the number of windows")):
            label = take(int, "a class index")
            overlap = np.float32(take(float, "an overlap"))
            box = tuple(take(int, "a box coordinate") for _ in range(4))
            if overlap >= np.float32(fg_threshold):
                if label <= 0:
                    raise error(f"window file {path}: foreground window of image {index} has "
                                f"class {label} (must be positive)")
                fg.append((index, label) + box)
            elif overlap < np.float32(bg_threshold):
                bg.append((index, 0) + box)
    return images, fg, bg


class _WindowBatches:
    """Runs on the prefetch thread: holds no reference to its layer."""

    def __init__(self, images, fg, bg, batch_size, fg_fraction, crop_size, context_pad,
                 square, mirror, scale, mean, mean_values, cache, rng, error):
        self.images, self.fg, self.bg = images, fg, bg
        self.batch_size = batch_size
        self.num_fg = int(np.float32(batch_size) * np.float32(fg_fraction))
        self.crop_size = crop_size
        self.context_pad = context_pad
        self.square = square
        self.mirror = mirror
        self.scale = np.float32(scale)
        self.mean = mean
        self.mean_values = mean_values
        self.cache = cache
        self.rng = rng
        self.error = error
        self.channels = images[0][1][0]

    def read(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self.images):
            raise self.error(f"window refers to image index {index}, the file lists "
                             f"{len(self.images)} images")
        path = self.images[index][0]
        try:
            if self.cache is not None:
                return image_io.decode(self.cache[index], True, path)
            return image_io.read(path, True)
        except CaffeError as exc:
            raise self.error(str(exc)) from None

    def placement(self, box, image_shape, do_mirror):
        """Caffe's window geometry: the clipped box in the image, the size it
        is warped to and its offset in the output."""
        x1, y1, x2, y2 = box
        crop = self.crop_size
        rows, cols = image_shape
        out_size = (crop, crop)
        pad_h = pad_w = 0
        if self.context_pad > 0 or self.square:
            f32 = np.float32
            context_scale = f32(crop) / f32(crop - 2 * self.context_pad)
            half_height = f32((y2 - y1 + 1) / 2.0)
            half_width = f32((x2 - x1 + 1) / 2.0)
            center_x = f32(x1) + half_width
            center_y = f32(y1) + half_height
            if self.square:
                half_width = half_height = max(half_height, half_width)
            x1 = _round(float(center_x - half_width * context_scale))
            x2 = _round(float(center_x + half_width * context_scale))
            y1 = _round(float(center_y - half_height * context_scale))
            y2 = _round(float(center_y + half_height * context_scale))
            unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
            pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
            pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
            scale_x = f32(crop) / f32(unclipped_w)
            scale_y = f32(crop) / f32(unclipped_h)
            width = _round(float(f32(x2 - x1 + 1) * scale_x))
            height = _round(float(f32(y2 - y1 + 1) * scale_y))
            pad_h = _round(float(f32(pad_y1) * scale_y))
            pad_w = _round(float(f32(pad_x2 if do_mirror else pad_x1) * scale_x))
            out_size = (min(height, crop - pad_h), min(width, crop - pad_w))
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows):
            raise self.error(f"window ({box}) lies outside its {rows}x{cols} image")
        return (y1, y2, x1, x2), out_size, (pad_h, pad_w)

    def state(self) -> dict:
        """Windows are drawn with replacement: the generator is the position."""
        return {"windows": [len(self.fg), len(self.bg)], "rng": generator_state(self.rng)}

    def restorer(self, state) -> Callable[[], None]:
        windows, rng = state_fields(state, ("windows", "rng"), "WindowData")
        check_same(windows, [len(self.fg), len(self.bg)], "foreground and background windows")
        rng = checked_generator_state(self.rng, rng, "rng")

        def restore():
            self.rng.bit_generator.state = rng
        return restore

    def next_batch(self):
        crop = self.crop_size
        data = np.zeros((self.batch_size, self.channels, crop, crop), np.float32)
        labels = np.empty((self.batch_size,), np.float32)
        item = 0
        for pool, count in ((self.bg, self.batch_size - self.num_fg), (self.fg, self.num_fg)):
            for _ in range(count):
                index, label, *box = pool[int(self.rng.integers(len(pool)))]
                do_mirror = self.mirror and bool(self.rng.integers(2))
                image = self.read(index)
                if image.shape[2] != self.channels:
                    raise self.error(f"image {self.images[index][0]} has {image.shape[2]} "
                                     f"channels, the window file says {self.channels}")
                (y1, y2, x1, x2), (height, width), (pad_h, pad_w) = self.placement(
                    box, image.shape[:2], do_mirror)
                warped = image_io.resize_linear(image[y1:y2 + 1, x1:x2 + 1], height, width)
                if do_mirror:
                    warped = warped[:, ::-1]
                pixels = warped.transpose(2, 0, 1).astype(np.float32)
                target = (slice(None), slice(pad_h, pad_h + height), slice(pad_w, pad_w + width))
                if self.mean is not None:
                    off = (self.mean.shape[2] - crop) // 2
                    pixels -= self.mean[:, off + pad_h:off + pad_h + height,
                                        off + pad_w:off + pad_w + width]
                elif self.mean_values is not None:
                    pixels -= self.mean_values.reshape(-1, 1, 1)
                data[item][target] = pixels * self.scale
                labels[item] = label
                item += 1
        return [data, labels]


@register("WindowData")
class WindowDataLayer(PrefetchingLayer):
    num_tops = 2

    def setup(self, bottom_shapes, generator):
        p = self.param.window_data_param
        t = self.param.transform_param
        error = functools.partial(LayerError, self.name, self.type)
        batch_size = self.positive(p.batch_size, "window_data_param.batch_size")
        crop_size = self.positive(t.crop_size, "transform_param.crop_size")
        if p.crop_mode not in ("warp", "square"):
            raise self.error(f"window_data_param.crop_mode must be 'warp' or 'square', got {p.crop_mode!r}")
        if 2 * p.context_pad >= crop_size:
            raise self.error(f"context_pad {p.context_pad} leaves nothing of crop_size {crop_size}")
        images, fg, bg = parse_window_file(p.source, p.root_folder, p.fg_threshold,
                                           p.bg_threshold, error)
        if not fg or not bg:
            raise self.error(f"window file {p.source} has {len(fg)} foreground and {len(bg)} "
                             "background windows; both kinds are needed")
        channels = images[0][1][0]
        mean = mean_values = None
        if t.HasField("mean_file"):
            if len(t.mean_value):
                raise self.error("transform_param: cannot specify mean_file and mean_value at the same time")
            with self.naming_errors():
                mean = read_mean_file(t.mean_file)
            if mean.shape[0] != channels or min(mean.shape[1:]) < crop_size:
                raise self.error(f"mean file {t.mean_file} is {'x'.join(map(str, mean.shape))}; "
                                 f"windows need {channels} channels of at least {crop_size}x{crop_size}")
        elif len(t.mean_value):
            if len(t.mean_value) not in (1, channels):
                raise self.error(f"transform_param: give 1 mean_value or one per channel ({channels})")
            mean_values = np.broadcast_to(np.asarray(t.mean_value, np.float32), (channels,)).copy()
        cache = None
        if p.cache_images:
            cache = []
            for path, _ in images:
                try:
                    with open(path, "rb") as f:
                        cache.append(f.read())
                except OSError as exc:
                    raise self.error(f"could not open or find the image {path} ({exc.strerror})") from None
        batches = _WindowBatches(images, fg, bg, batch_size, p.fg_fraction, crop_size,
                                 p.context_pad, p.crop_mode == "square", t.mirror, p.scale,
                                 mean, mean_values, cache, layer_rng(generator), error)
        self.start(batches, [(batch_size, channels, crop_size, crop_size), (batch_size,)])
