"""Caffe's DataTransformer: crop, mirror, mean subtraction and scaling of
one image, in data_transformer.cpp's order and float arithmetic.

top = (pixel - mean) * scale, taken from a crop_size window (TRAIN: a random
offset; TEST: the centre, rounded down) and flipped left-right when mirror
is on and a coin says so (both phases). Random choices are drawn per image
in Caffe's order: the mirror coin first (only when mirror is set), then the
row offset, then the column offset (only for TRAIN crops).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .datum import read_mean_file
from .errors import CaffeError

TRAIN = 0


class DataTransformer:
    def __init__(self, param, phase: int, rng: np.random.Generator,
                 error: Callable[[str], CaffeError]):
        """`param` is a caffe_pb2.TransformationParameter; `error` makes the
        layer's exception for a message."""
        self.error = error
        self.scale = np.float32(param.scale)
        self.crop_size = int(param.crop_size)
        self.mirror = bool(param.mirror)
        self.phase = phase
        self.rng = rng
        if param.force_color and param.force_gray:
            raise error("transform_param: cannot set both force_color and force_gray")
        # how encoded images decode: forced colour / gray, or the file's own channels
        self.color: bool | None = True if param.force_color else (False if param.force_gray else None)
        self.mean: np.ndarray | None = None
        self.mean_file = param.mean_file if param.HasField("mean_file") else None
        if self.mean_file is not None:
            if len(param.mean_value):
                raise error("transform_param: cannot specify mean_file and mean_value at the same time")
            try:
                self.mean = read_mean_file(self.mean_file)
            except CaffeError as exc:
                raise error(f"transform_param.mean_file: {exc}") from None
        self.mean_values = np.asarray(param.mean_value, dtype=np.float32)

    def output_shape(self, pixels_shape: tuple[int, int, int], where: str) -> tuple[int, int, int]:
        """C x H x W of the transformed image (Caffe's InferBlobShape)."""
        channels, height, width = pixels_shape
        if height < self.crop_size or width < self.crop_size:
            raise self.error(f"{where}: image of {height}x{width} is smaller than "
                             f"crop_size {self.crop_size}")
        if self.crop_size:
            return channels, self.crop_size, self.crop_size
        return channels, height, width

    def __call__(self, pixels: np.ndarray, where: str) -> np.ndarray:
        """Transform C x H x W pixels (uint8 or float32) to float32."""
        channels, height, width = pixels.shape
        _, out_h, out_w = self.output_shape(pixels.shape, where)
        do_mirror = self.mirror and bool(self.rng.integers(2))
        if self.mean is not None and self.mean.shape != pixels.shape:
            raise self.error(f"{where}: mean file {self.mean_file} is {'x'.join(map(str, self.mean.shape))}"
                             f" (CxHxW) but the image is {channels}x{height}x{width}; Caffe "
                             "needs the mean at the image's full size")
        if len(self.mean_values) not in (0, 1, channels):
            raise self.error(f"transform_param: give 1 mean_value or one per channel ({channels}), "
                             f"got {len(self.mean_values)}")
        h_off = w_off = 0
        if self.crop_size:
            if self.phase == TRAIN:
                h_off = int(self.rng.integers(height - self.crop_size + 1))
                w_off = int(self.rng.integers(width - self.crop_size + 1))
            else:
                h_off = (height - self.crop_size) // 2
                w_off = (width - self.crop_size) // 2
        window = (slice(None), slice(h_off, h_off + out_h), slice(w_off, w_off + out_w))
        # one copy to a contiguous C x H x W buffer first (a decoded image is an
        # H x W x C buffer seen as C x H x W): per-channel arithmetic is fast there
        out = np.array(pixels[window], dtype=np.float32, order="C")
        if self.mean is not None:
            out -= self.mean[window]
        elif len(self.mean_values):
            out -= self.mean_values.reshape(-1, 1, 1)
        if self.scale != 1:  # x * 1 is x: skipping the pass changes no value
            out *= self.scale
        if do_mirror:
            out = out[:, :, ::-1]
        return out
