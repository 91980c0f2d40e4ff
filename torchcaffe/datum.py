"""Caffe's dataset records: `Datum` (one image and label of a DB) and the
mean image stored as a `BlobProto` binaryproto.

Pixels move as Caffe's io.cpp moves them: a raw Datum holds C x H x W bytes
(or floats), planar, in OpenCV's channel order; an encoded Datum holds the
image file's bytes and is decoded (with `image_io`) to H x W x C first.
"""
from __future__ import annotations

import os

import numpy as np
from google.protobuf.message import DecodeError

from . import image_io
from .atomic import atomic_output
from .errors import CaffeError
from .proto import caffe_pb2


def parse_datum(value: bytes, where: str) -> caffe_pb2.Datum:
    """A Datum from a DB record; `where` names the DB and key for errors."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except DecodeError as exc:
        raise CaffeError(f"{where}: not a Datum record ({exc})") from None
    return datum


def datum_pixels(datum: caffe_pb2.Datum, where: str, color: bool | None = None) -> np.ndarray:
    """C x H x W pixels of a Datum: uint8 for byte data and decoded images,
    float32 for float_data. `color` applies to encoded Datums only: True /
    False force colour / gray, None keeps the file's channels (Caffe's
    force_color / force_gray / native decode)."""
    if datum.encoded:
        return image_io.decode(datum.data, color, where).transpose(2, 0, 1)
    shape = (datum.channels, datum.height, datum.width)
    count = int(np.prod(shape))
    if min(shape) <= 0:
        raise CaffeError(f"{where}: Datum has shape {list(shape)} (channels, height, width "
                         "must be positive)")
    if datum.data:
        if len(datum.data) != count:
            raise CaffeError(f"{where}: Datum data has {len(datum.data)} bytes, its shape "
                             f"{list(shape)} needs {count}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    if len(datum.float_data) != count:
        raise CaffeError(f"{where}: Datum float_data has {len(datum.float_data)} values, its "
                         f"shape {list(shape)} needs {count}")
    return np.asarray(datum.float_data, dtype=np.float32).reshape(shape)


def image_datum(image: np.ndarray, label: int) -> caffe_pb2.Datum:
    """A raw Datum of an H x W x C uint8 image (Caffe's CVMatToDatum)."""
    height, width, channels = image.shape
    return caffe_pb2.Datum(channels=channels, height=height, width=width, label=label,
                           data=np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes())


def encoded_datum(data: bytes, label: int) -> caffe_pb2.Datum:
    return caffe_pb2.Datum(data=data, label=label, encoded=True)


def read_mean_file(path: str | os.PathLike) -> np.ndarray:
    """The mean image of a binaryproto as float32 C x H x W (Caffe reads the
    BlobProto's first item: num must be 1)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as exc:
        raise CaffeError(f"mean file {path}: {exc.strerror}") from None
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(content)
    except DecodeError as exc:
        raise CaffeError(f"mean file {path}: not a BlobProto ({exc})") from None
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    if len(shape) > 4:
        raise CaffeError(f"mean file {path}: shape {list(shape)} has more than 4 axes")
    shape = (1,) * (4 - len(shape)) + shape
    values = blob.data if len(blob.data) else blob.double_data
    if shape[0] != 1 or len(values) != int(np.prod(shape)):
        raise CaffeError(f"mean file {path}: expected one C x H x W image, got shape "
                         f"{list(shape)} with {len(values)} values")
    return np.asarray(values, dtype=np.float32).reshape(shape[1:])


def write_mean_file(path: str | os.PathLike, mean: np.ndarray) -> None:
    """Write a C x H x W mean as Caffe's compute_image_mean does (legacy
    num=1/channels/height/width fields, float data)."""
    channels, height, width = mean.shape
    blob = caffe_pb2.BlobProto(num=1, channels=channels, height=height, width=width)
    blob.data.extend(np.asarray(mean, dtype=np.float32).ravel().tolist())
    with atomic_output(path) as out:
        out.write(blob.SerializeToString())
