"""Images as Caffe's OpenCV calls see them, computed with Pillow and numpy.

`decode` gives an H x W x C uint8 array in OpenCV's channel order (BGR,
BGRA, or one gray channel), as `cv::imread` / `cv::imdecode` do with
IMREAD_COLOR (`color=True`), IMREAD_GRAYSCALE (`color=False`) or
IMREAD_UNCHANGED (`color=None`, Caffe's "native" decode). JPEG pixels are
libjpeg's in both libraries; a JPEG read as gray is libjpeg's own luma
output (Pillow's draft mode), as OpenCV's; gray from other colour files
uses the integer weights OpenCV's decoders use.

`resize_linear` is `cv::resize` with its default INTER_LINEAR: half-pixel
centres, edge pixels clamped, weights in 1/2048 steps, OpenCV's fixed-point
rounding. (Pillow's BILINEAR is no substitute when shrinking: it filters
over the whole footprint, tens of levels away from OpenCV.)
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import CaffeError

_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS


def _gray(image: Image.Image) -> np.ndarray:
    """IMREAD_GRAYSCALE: a JPEG's own luma from libjpeg; from a colour PNG,
    libpng's rgb_to_gray (weights 0.299 / 0.587 in 1/32768 steps, rounded
    down); from other colour files, OpenCV's cvtColor (1/16384 steps, rounded)."""
    if image.format == "JPEG":
        image.draft("L", image.size)
    if image.mode in ("1", "L", "LA", "I;16") or image.format == "JPEG":
        return np.asarray(image.convert("L"))
    r, g, b = (c.astype(np.int32) for c in np.moveaxis(np.asarray(image.convert("RGB")), 2, 0))
    if image.format == "PNG":
        gray = (r * 9797 + g * 19234 + b * 3737) >> 15
    else:
        gray = (r * 4899 + g * 9617 + b * 1868 + 8192) >> 14
    return gray.astype(np.uint8)


def _bgr(rgb: Image.Image) -> np.ndarray:
    # Pillow's raw encoder swaps the channels while copying out
    return np.frombuffer(rgb.tobytes("raw", "BGR"), np.uint8).reshape(rgb.height, rgb.width, 3)


def _to_opencv_order(image: Image.Image, color: bool | None) -> np.ndarray:
    if color is False:
        array = _gray(image)
    elif color is True:
        array = _bgr(image.convert("RGB"))
    else:
        mode = image.mode
        if mode in ("1", "L"):
            array = np.asarray(image.convert("L"))
        elif mode in ("LA", "RGBA", "PA") or "transparency" in image.info:
            array = np.asarray(image.convert("RGBA"))[:, :, [2, 1, 0, 3]]
        elif mode in ("RGB", "YCbCr", "CMYK", "P"):
            array = _bgr(image.convert("RGB"))
        else:
            raise CaffeError(f"image mode {mode} is not 8-bit (Caffe's data layers need unsigned bytes)")
    if array.ndim == 2:
        array = array[:, :, None]
    return array


def decode(data: bytes, color: bool | None = True, source: str = "image") -> np.ndarray:
    """Decode image bytes (JPEG, PNG, ...) to H x W x C uint8 in OpenCV order."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _to_opencv_order(image, color)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CaffeError(f"{source}: cannot decode the image ({exc})") from None


def read(path: str | os.PathLike, color: bool | None = True) -> np.ndarray:
    """Read an image file as `cv::imread` would (see `decode`)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CaffeError(f"could not open or find the image {os.fspath(path)} ({exc.strerror})") from None
    return decode(data, color, os.fspath(path))


def read_image_list(path: str | os.PathLike) -> list[tuple[str, int]]:
    """An image list file: 'path label' per line, the label after the last
    space (ImageData's and convert_imageset's format); blank lines skipped."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise CaffeError(f"image list {path}: {exc.strerror}") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        name, _, label = line.rpartition(" ")
        try:
            entries.append((name, int(label)))
        except ValueError:
            raise CaffeError(f"image list {path}, line {number}: expected 'path label', "
                             f"got {line!r}") from None
    return entries


def encode(image: np.ndarray, extension: str) -> bytes:
    """Encode an H x W x C uint8 array in OpenCV order as 'jpg' or 'png'
    (`cv::imencode`; JPEG quality 95, OpenCV's default)."""
    ext = extension.lower().lstrip(".")
    channels = image.shape[2]
    if channels == 1:
        pil = Image.fromarray(image[:, :, 0], "L")
    elif channels == 3:
        pil = Image.fromarray(np.ascontiguousarray(image[:, :, ::-1]), "RGB")
    elif channels == 4:
        pil = Image.fromarray(np.ascontiguousarray(image[:, :, [2, 1, 0, 3]]), "RGBA")
    else:
        raise CaffeError(f"cannot encode an image of {channels} channels")
    out = io.BytesIO()
    if ext in ("jpg", "jpeg"):
        pil.save(out, "JPEG", quality=95)
    elif ext == "png":
        pil.save(out, "PNG")
    else:
        raise CaffeError(f"unknown image encoding '{extension}' (use jpg or png)")
    return out.getvalue()


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Per output index: the two source indices and their integer weights,
    rounded each on its own from float32 fractions as OpenCV does."""
    scale = 1.0 / (dst / src)
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5
    left = np.floor(pos).astype(np.int64)
    frac = (pos - left).astype(np.float32)
    frac[left < 0] = 0
    left[left < 0] = 0
    at_end = left >= src - 1
    frac[at_end] = 0
    left[at_end] = src - 1
    right = np.minimum(left + 1, src - 1)
    one = np.float32(1 << _COEF_BITS)
    weights = (np.rint((np.float32(1) - frac) * one).astype(np.int64),
               np.rint(frac * one).astype(np.int64))
    return left, right, weights


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`cv::resize(image, Size(width, height))` with INTER_LINEAR on uint8:
    within one level of OpenCV 5 on under 1% of pixels (OpenCV's vector and
    scalar code paths round the vertical pass differently; this is the
    vector path's rounding)."""
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.copy()
    y0, y1, wy = _linear_taps(src_h, height)
    x0, x1, wx = _linear_taps(src_w, width)
    pixels = image.astype(np.int64)
    rows = pixels[:, x0] * wx[0][None, :, None] + pixels[:, x1] * wx[1][None, :, None]
    top, bottom = rows[y0] >> 4, rows[y1] >> 4
    out = (((wy[0][:, None, None] * top) >> 16) + ((wy[1][:, None, None] * bottom) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)
