"""Protobuf wire format, by hand, for the big binary files Caffe writes.

A caffemodel or solverstate is mostly `BlobProto` payloads: long runs of packed
floats. Parsing those with the protobuf message classes builds one Python float
per value; here the file is memory-mapped, only the small fields are decoded,
and every float payload is copied once, straight from the file into an aligned
numpy array (`os.preadv`). Writing emits the payload bytes directly.

Only what Caffe's files need is here: varints, field iteration with skipping of
unknown fields, `BlobProto` decoding/encoding and an atomic file writer.
"""
from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from torchcaffe.errors import INT_MAX
from torchcaffe.regular_file import open_regular

# wire types
VARINT, I64, LEN, I32 = 0, 1, 2, 5
_WIRE_NAMES = {VARINT: "varint", I64: "64-bit", LEN: "length-delimited", I32: "32-bit",
               3: "group start", 4: "group end"}

# BlobProto field numbers (caffe.proto)
_BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
_BLOB_DATA, _BLOB_DIFF, _BLOB_SHAPE, _BLOB_DOUBLE_DATA, _BLOB_DOUBLE_DIFF = 5, 6, 7, 8, 9
_SHAPE_DIM = 1

_F32 = np.dtype("<f4")
_F64 = np.dtype("<f8")


class WireError(ValueError):
    """Malformed protobuf bytes; callers re-raise it as a CaffeError naming the file."""


def wire_type_name(wire_type: int) -> str:
    return _WIRE_NAMES.get(wire_type, f"invalid ({wire_type})")


# --------------------------------------------------------------------------- decoding

def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decode one varint at `pos`; return (value, position after it)."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def as_signed64(value: int) -> int:
    """int32/int64 fields store negatives as 64-bit two's complement varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def as_int32(value: int) -> int:
    """An int32 field's value as protobuf's C++ parser keeps it: the low 32
    bits of the varint, two's complement."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def check_count(shape: tuple[int, ...]) -> int:
    """The element count of `shape`; Caffe's Blob::Reshape CHECKs (no negative
    axis, at most INT_MAX elements) as WireError."""
    if any(d < 0 for d in shape):
        raise WireError(f"blob has a negative dimension in shape {list(shape)}")
    count = 1
    for d in shape:
        count *= d
    if count > INT_MAX:
        raise WireError(f"blob shape {list(shape)} has {count} elements: blob size exceeds "
                        f"INT_MAX ({INT_MAX})")
    return count


def read_field_value(buf, pos: int, end: int, number: int, wire_type: int) -> tuple[int, int]:
    """Read the value of a field whose tag was just read; return (value, next position).

    `value` is the integer for varints and the payload start for the other
    wire types (the payload ends at the next position). Groups and invalid
    wire types are rejected: Caffe's schema has none, so they mean the bytes
    are not a Caffe message.
    """
    if number == 0:
        raise WireError("field number 0")
    if wire_type == VARINT:
        return read_varint(buf, pos, end)
    if wire_type == LEN:
        length, pos = read_varint(buf, pos, end)
        value, pos = pos, pos + length
    elif wire_type == I32:
        value, pos = pos, pos + 4
    elif wire_type == I64:
        value, pos = pos, pos + 8
    else:
        raise WireError(f"field {number} has {wire_type_name(wire_type)} wire type")
    if pos > end:
        raise WireError(f"field {number} runs past the end of its message (truncated)")
    return value, pos


def iter_fields(buf, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field number, wire type, value, next position) for a message span."""
    pos = start
    while pos < end:
        tag, pos = read_varint(buf, pos, end)
        value, pos = read_field_value(buf, pos, end, tag >> 3, tag & 7)
        yield tag >> 3, tag & 7, value, pos


def expect_wire_type(name: str, wire_type: int, *allowed: int) -> None:
    if wire_type not in allowed:
        raise WireError(f"field '{name}' has {wire_type_name(wire_type)} wire type, expected "
                        + " or ".join(wire_type_name(w) for w in allowed))


def read_string(buf, start: int, end: int, name: str) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"field '{name}' is not UTF-8 text") from exc


@dataclass
class Segment:
    """Values of a repeated float/double field stored at `offset` in the file.

    `stride` is the item size for packed encoding; for the unpacked encoding
    each value is preceded by its tag byte, so the stride is item size + 1.
    """
    offset: int
    count: int
    stride: int


@dataclass
class BlobLayout:
    """Where one BlobProto's values lie in the file, and its shape."""
    shape: tuple[int, ...]
    legacy_shape: bool  # shape came from num/channels/height/width
    floats: list[Segment] = field(default_factory=list)
    doubles: list[Segment] = field(default_factory=list)


def _unpacked_run(buf, pos: int, end: int, tag_byte: int, item: int) -> int:
    """Count consecutive unpacked values (tag byte + item bytes) starting at `pos`.

    The first value is already known to be there; old writers emit every
    value this way, so the run is found with numpy instead of a Python loop.
    """
    stride = item + 1
    most = (end - pos + 1) // stride  # pos points at the first value, after its tag
    if most <= 1:
        return most
    tags = np.frombuffer(buf, np.uint8, (most - 2) * stride + 1, pos + item)[::stride]
    breaks = np.flatnonzero(tags != tag_byte)
    return most if breaks.size == 0 else int(breaks[0]) + 1


def _shape_dims(buf, start: int, end: int) -> list[int]:
    dims: list[int] = []
    for number, wire_type, value, nxt in iter_fields(buf, start, end):
        if number != _SHAPE_DIM:
            continue
        if wire_type == VARINT:
            dims.append(as_signed64(value))
        elif wire_type == LEN:
            pos = value
            while pos < nxt:
                dim, pos = read_varint(buf, pos, nxt)
                dims.append(as_signed64(dim))
        else:
            expect_wire_type("BlobShape.dim", wire_type, VARINT, LEN)
    return dims


def parse_blob(buf, start: int, end: int) -> BlobLayout:
    """Locate a BlobProto's shape and value payloads without copying them."""
    legacy = [0, 0, 0, 0]
    has_legacy = False
    dims: list[int] = []
    floats: list[Segment] = []
    doubles: list[Segment] = []
    pos = start
    while pos < end:
        tag, pos = read_varint(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if number in (_BLOB_DATA, _BLOB_DOUBLE_DATA):
            item, unpacked_type, segments, name = (
                (4, I32, floats, "BlobProto.data") if number == _BLOB_DATA
                else (8, I64, doubles, "BlobProto.double_data"))
            if wire_type == LEN:
                length, pos = read_varint(buf, pos, end)
                if pos + length > end:
                    raise WireError(f"'{name}' runs past the end of its blob (truncated)")
                if length % item:
                    raise WireError(f"'{name}' holds {length} bytes, not a multiple of {item}")
                segments.append(Segment(pos, length // item, item))
                pos += length
            elif wire_type == unpacked_type:
                count = _unpacked_run(buf, pos, end, tag, item)
                if count == 0 or pos + count * (item + 1) - 1 > end:
                    raise WireError(f"'{name}' runs past the end of its blob (truncated)")
                segments.append(Segment(pos, count, item + 1))
                pos += count * (item + 1) - 1
            else:
                expect_wire_type(name, wire_type, LEN, unpacked_type)
            continue
        value, pos = read_field_value(buf, pos, end, number, wire_type)
        if number in _BLOB_LEGACY_DIMS:
            expect_wire_type("BlobProto.num/channels/height/width", wire_type, VARINT)
            legacy[number - 1] = as_int32(value)
            has_legacy = True
        elif number == _BLOB_SHAPE:
            expect_wire_type("BlobProto.shape", wire_type, LEN)
            dims.extend(_shape_dims(buf, value, pos))  # repeated messages merge
        elif number in (_BLOB_DIFF, _BLOB_DOUBLE_DIFF):
            # gradients are not loaded (Caffe clears diffs before every step)
            expect_wire_type("BlobProto.diff", wire_type, LEN, I32 if number == _BLOB_DIFF else I64)
    # Caffe's Blob::FromProto: any legacy field present means a 4-d legacy shape
    shape = tuple(legacy) if has_legacy else tuple(dims)
    check_count(shape)
    return BlobLayout(shape, has_legacy, floats, doubles)


class MappedFile:
    """A read-only memory map of a file plus its descriptor for bulk copies."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file: BinaryIO = open_regular(self.path)
        self.size = os.fstat(self._file.fileno()).st_size
        # mmap refuses empty files; an empty bytes object parses the same way
        self.buf = (mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
                    if self.size else b"")

    def close(self) -> None:
        if isinstance(self.buf, mmap.mmap):
            self.buf.close()
        self._file.close()

    def __enter__(self) -> "MappedFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_into(self, out: np.ndarray, offset: int) -> None:
        view = memoryview(out).cast("B")
        fd = self._file.fileno()
        done = 0
        while done < len(view):
            if hasattr(os, "preadv"):
                got = os.preadv(fd, [view[done:]], offset + done)
            else:  # platforms without preadv
                self._file.seek(offset + done)
                got = self._file.readinto(view[done:])
            if not got:
                raise WireError("is cut short: the file ends inside its values (truncated)")
            done += got

    def _segment_values(self, seg: Segment, dtype: np.dtype, out: np.ndarray) -> None:
        if seg.stride == dtype.itemsize:
            self._read_into(out, seg.offset)
            return
        # unpacked: every value sits after a one-byte tag
        raw = np.frombuffer(self.buf, np.uint8, seg.count * seg.stride - 1, seg.offset)
        rows = np.lib.stride_tricks.as_strided(raw, (seg.count, dtype.itemsize), (seg.stride, 1))
        out.view(np.uint8).reshape(seg.count, dtype.itemsize)[:] = rows
        del raw, rows  # release the export of the map before it can be closed

    def blob_array(self, layout: BlobLayout) -> np.ndarray:
        """The blob's values as a new float32 array of the blob's shape.

        As Caffe's Blob::FromProto: `double_data` wins when present and is
        cast to float; otherwise `data`. The value count must equal the
        shape's.
        """
        segments, dtype = (layout.doubles, _F64) if layout.doubles else (layout.floats, _F32)
        total = sum(s.count for s in segments)
        count = check_count(layout.shape)
        if total != count:
            raise WireError(f"holds {total} values but its shape {list(layout.shape)} "
                            f"needs {count}")
        out = np.empty(total, dtype)
        pos = 0
        for seg in segments:
            self._segment_values(seg, dtype, out[pos:pos + seg.count])
            pos += seg.count
        with np.errstate(over="ignore"):  # doubles beyond float range become inf, as in C++
            return out.astype(np.float32, copy=False).reshape(layout.shape)


# --------------------------------------------------------------------------- encoding

def encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_tag(number: int, wire_type: int) -> bytes:
    return encode_varint(number << 3 | wire_type)


def len_prefix(number: int, length: int) -> bytes:
    """Tag and length of a length-delimited field whose payload follows."""
    return encode_tag(number, LEN) + encode_varint(length)


def encode_blob(array: np.ndarray) -> list:
    """BlobProto pieces for `array`: `shape` set, values packed in `data` as float32.

    Returns a list of bytes-like parts (the value payload is a view of the
    float32 array, so a large blob is never copied into a bytes object).
    """
    values = np.ascontiguousarray(array, dtype=_F32)
    parts: list = []
    if values.size:
        parts += [len_prefix(_BLOB_DATA, values.nbytes), memoryview(values).cast("B")]
    dims = b"".join(encode_varint(int(d)) for d in values.shape)
    shape_msg = len_prefix(_SHAPE_DIM, len(dims)) + dims if dims else b""
    parts.append(len_prefix(_BLOB_SHAPE, len(shape_msg)) + shape_msg)
    return parts


def parts_size(parts: list) -> int:
    return sum(len(p) for p in parts)


def encode_blob_field(number: int, array: np.ndarray) -> list:
    """A BlobProto of `array` as message field `number`: tag, length, blob parts."""
    parts = encode_blob(array)
    return [len_prefix(number, parts_size(parts)), *parts]
