"""pycaffe's `caffe.io`: blob / datum protos <-> arrays, image loading and
resizing, and the Transformer that prepares images for a net's inputs.

Images are float32 arrays H x W x K with values in [0, 1] (as pycaffe's
`load_image` gives them); `Transformer.preprocess` turns one into the
K x H x W array a net input takes: resize, transpose, channel swap, raw
scale, mean subtraction, input scale, in that order. Images are read with
Pillow and resized with scipy (pycaffe uses scikit-image; see
`resize_image` for how the two agree).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import zoom

from .errors import CaffeError
from .proto import caffe_pb2

# scikit-image's rgb2gray weights (ITU-R 709 luma), which pycaffe's load_image uses
_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721], np.float32)


# ---------------------------------------------------------------- protos and arrays

def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """The data (or diff) of a BlobProto as an array of its shape: the legacy
    num/channels/height/width when any is set, else `shape.dim`."""
    values = np.array(blob.diff if return_diff else blob.data)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if int(np.prod(shape, dtype=np.int64)) != values.size:
        raise ValueError(f"BlobProto has {values.size} values but shape {list(shape)} "
                         f"(count {int(np.prod(shape, dtype=np.int64))})")
    return values.reshape(shape)


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None) -> caffe_pb2.BlobProto:
    """A BlobProto with `arr`'s shape and values (and `diff` when given, of the same shape)."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(arr.astype(float).ravel())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ValueError(f"diff shape {list(diff.shape)} differs from data shape "
                             f"{list(arr.shape)}")
        blob.diff.extend(diff.astype(float).ravel())
    return blob


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    """A serialized BlobProtoVector of the arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(serialized: bytes) -> list[np.ndarray]:
    """The arrays of a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(serialized)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr: np.ndarray, label: int | None = None) -> caffe_pb2.Datum:
    """A Datum of a C x H x W array: uint8 arrays as bytes in `data`, any
    other dtype as `float_data`; the label only when given."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f"array_to_datum needs a 3-d (C x H x W) array, got shape "
                         f"{list(arr.shape)}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).ravel())
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum: caffe_pb2.Datum) -> np.ndarray:
    """The C x H x W array of a Datum (uint8 from `data`, else float from
    `float_data`); the label is `datum.label`."""
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    return np.array(datum.float_data, dtype=float).reshape(shape)


# ---------------------------------------------------------------- images

def load_image(filename, color: bool = True) -> np.ndarray:
    """An image file as float32 in [0, 1]: H x W x 3 RGB when `color` (gray
    images are repeated over the channels, alpha is dropped), else H x W x 1
    intensity (colour images converted with scikit-image's luma weights)."""
    from PIL import Image

    try:
        with Image.open(filename) as image:
            image.load()
    except OSError as exc:
        raise CaffeError(f"cannot read image {filename}: {exc}") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, np.float32) / (65535.0 if image.mode.startswith("I;16")
                                                  else float(np.iinfo(np.int32).max))
    elif image.mode == "F":
        pixels = np.asarray(image, np.float32)
    else:
        if image.mode not in ("L", "RGB"):
            image = image.convert("L" if image.mode in ("1", "LA") else "RGB")
        pixels = np.asarray(image, np.float32) / 255.0
    if pixels.ndim == 3 and not color:
        pixels = pixels @ _GRAY_WEIGHTS
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
        if color:
            pixels = np.tile(pixels, (1, 1, 3))
    return pixels.astype(np.float32, copy=False)


def resize_image(im: np.ndarray, new_dims, interp_order: int = 1) -> np.ndarray:
    """`im` (H x W x K) resized to `new_dims` (height, width), float32.

    With 1 or 3 channels this samples as pycaffe's scikit-image call does:
    the image is scaled to [0, 1], pixel centres are aligned, and beyond the
    border it is 0 (so upsampled borders darken towards the image minimum,
    as in pycaffe); no anti-aliasing. Other channel counts zoom the array
    as scipy.ndimage.zoom does by default, as in pycaffe."""
    im = np.asarray(im)
    new_dims = tuple(int(d) for d in new_dims)
    factors = tuple(np.array(new_dims, float) / np.array(im.shape[:2])) + (1.0,)
    if im.shape[-1] in (1, 3):
        low, high = float(im.min()), float(im.max())
        if high <= low:  # constant image: nothing to interpolate
            return np.full(new_dims + (im.shape[-1],), low, np.float32)
        unit = (im - low) / (high - low)
        resized = zoom(unit, factors, order=interp_order, mode="grid-constant", cval=0.0,
                       grid_mode=True, output=np.float64)
        return (resized * (high - low) + low).astype(np.float32)
    return zoom(im, factors, order=interp_order).astype(np.float32)


def oversample(images, crop_dims) -> np.ndarray:
    """Ten crops per image (four corners, centre, and their mirror images),
    as a (10 N) x h x w x K float32 array."""
    shape = np.array(images[0].shape)
    crop_h, crop_w = (int(d) for d in crop_dims)
    corners = [(i, j) for i in (0, shape[0] - crop_h) for j in (0, shape[1] - crop_w)]
    centre = (int(shape[0] / 2.0 - crop_h / 2.0), int(shape[1] / 2.0 - crop_w / 2.0))
    origins = corners + [centre]
    crops = np.empty((10 * len(images), crop_h, crop_w, shape[-1]), np.float32)
    index = 0
    for image in images:
        views = [image[i:i + crop_h, j:j + crop_w, :] for i, j in origins]
        for view in views:
            crops[index] = view
            index += 1
        for view in views:
            crops[index] = view[:, ::-1, :]
            index += 1
    return crops


# ---------------------------------------------------------------- preprocessing

class Transformer:
    """Prepares H x W x K images for a net's inputs.

    `Transformer({name: blob shape})`, e.g. `Transformer({'data':
    net.blobs['data'].data.shape})`; then per input `set_transpose`,
    `set_channel_swap`, `set_raw_scale`, `set_mean`, `set_input_scale`, and
    `preprocess(name, image)` / `deprocess(name, array)`."""

    def __init__(self, inputs: dict):
        self.inputs = {name: tuple(shape) for name, shape in inputs.items()}
        self.transpose: dict = {}
        self.channel_swap: dict = {}
        self.raw_scale: dict = {}
        self.mean: dict = {}
        self.input_scale: dict = {}

    def _check_input(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise CaffeError(f"Transformer: '{in_}' is not one of the net inputs "
                             f"{sorted(self.inputs)}")

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """An H' x W' x K image as the K x H x W array for input `in_`."""
        self._check_input(in_)
        caffe_in = np.asarray(data).astype(np.float32, copy=False)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            caffe_in = caffe_in * self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in = caffe_in - self.mean[in_]
        if in_ in self.input_scale:
            caffe_in = caffe_in * self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """The inverse of preprocess (without the resize); singleton axes dropped."""
        self._check_input(in_)
        image = np.array(data, copy=True).squeeze()
        if in_ in self.input_scale:
            image = image / self.input_scale[in_]
        if in_ in self.mean:
            image = image + self.mean[in_]
        if in_ in self.raw_scale:
            image = image / self.raw_scale[in_]
        if in_ in self.channel_swap:
            image = image[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            image = image.transpose(np.argsort(self.transpose[in_]))
        return image

    def set_transpose(self, in_: str, order) -> None:
        """Axis order from the image to the input, e.g. (2, 0, 1): HxWxC -> CxHxW."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise CaffeError(f"Transformer.set_transpose('{in_}'): order {tuple(order)} "
                             f"needs {len(self.inputs[in_]) - 1} axes")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order) -> None:
        """Channel order after the transpose, e.g. (2, 1, 0): RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise CaffeError(f"Transformer.set_channel_swap('{in_}'): order {tuple(order)} "
                             f"needs {self.inputs[in_][1]} channels")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        """Multiply the raw image before the mean is subtracted (255 for
        [0, 1] images fed to nets trained on [0, 255])."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """The mean to subtract: one value per channel, or C x H x W (H x W
        for one channel), resized to the input when its size differs."""
        self._check_input(in_)
        mean = np.asarray(mean)
        channels, spatial = self.inputs[in_][1], self.inputs[in_][2:]
        if mean.ndim == 1:
            if mean.shape[0] != channels:
                raise CaffeError(f"Transformer.set_mean('{in_}'): {mean.shape[0]} mean "
                                 f"values for {channels} input channels")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if mean.ndim == 2:
                mean = mean[np.newaxis]
            if mean.ndim != 3:
                raise CaffeError(f"Transformer.set_mean('{in_}'): mean of shape "
                                 f"{list(mean.shape)}; give C values or a C x H x W array")
            if mean.shape != self.inputs[in_][1:]:
                low, high = mean.min(), mean.max()
                unit = (mean - low) / (high - low) if high > low else mean - low
                mean = resize_image(unit.transpose(1, 2, 0), spatial).transpose(2, 0, 1) \
                    * (high - low) + low
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        """Multiply the preprocessed input (after the mean is subtracted)."""
        self._check_input(in_)
        self.input_scale[in_] = scale
