"""Read and write .caffemodel files (binary `NetParameter` with layer blobs).

Reading walks the protobuf wire format by hand (see `torchcaffe.wire`): layer
names, types and blob shapes are decoded, and each blob's packed floats are
copied once from the file into a float32 array. Files in the old V1 (`layers`,
enum types) and V0 (`layers { layer { ... } }`) formats are read as Caffe
upgrades them on load: the same layer names, types as new-style strings.

Legacy blob shapes: a blob that stores `num/channels/height/width` instead of
`shape` is returned 4-d, `[num, channels, height, width]`, exactly as Caffe's
`Blob::FromProto` shapes it, and `LayerBlobs.legacy_shape` marks it. Caffe then
lets such a blob fill any target of at most 4 axes whose shape, padded on the
left with 1s to 4 axes, is equal (an InnerProduct weight `[6, 80]` accepts
`1 1 6 80`); `blob_for_target` applies that rule for `Net.copy_from`.

Values: `double_data`, when present, is used instead of `data` and cast to
float32 (Caffe's float nets do the same); stored gradients (`diff`) are
skipped, since Caffe clears them before every step.

Writing emits the current format (`layer`, field 100), every blob with
`shape` set and `data` packed, which BVLC Caffe reads directly.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from torchcaffe.errors import CaffeError
from torchcaffe.upgrade import MIXED_FORMATS, upgrade_net_param, v0_type_to_v1, v1_type_name
from torchcaffe.atomic import atomic_output
from torchcaffe.wire import (LEN, VARINT, MappedFile, WireError,
                             encode_blob_field, expect_wire_type, iter_fields, len_prefix,
                             parse_blob, parts_size, read_string)

log = logging.getLogger(__name__)

# NetParameter fields: number -> (name, allowed wire types)
_NET_LAYER, _NET_LAYERS = 100, 2
_NET_FIELDS = {
    1: ("name", (LEN,)),
    3: ("input", (LEN,)),
    4: ("input_dim", (VARINT, LEN)),
    5: ("force_backward", (VARINT,)),
    6: ("state", (LEN,)),
    7: ("debug_info", (VARINT,)),
    8: ("input_shape", (LEN,)),
    _NET_LAYERS: ("layers", (LEN,)),
    _NET_LAYER: ("layer", (LEN,)),
}
# name, type and blobs field numbers of each layer format
_LAYER_FIELDS = {"layer": (1, 2, 7), "V1 layers": (4, 5, 6), "V0 layer": (1, 2, 50)}
_V1_V0_PAYLOAD = 1  # V1LayerParameter.layer: a V0LayerParameter


class LayerBlobs(NamedTuple):
    """One layer of a caffemodel: its name, type (new-style string) and blobs."""
    name: str
    type: str
    blobs: list[np.ndarray]
    # per blob: True where its shape came from legacy num/channels/height/width
    legacy_shape: tuple[bool, ...] = ()


def _file_error(path, message: str, layer: str | None = None) -> CaffeError:
    where = f"{os.fspath(path)}" + (f", layer '{layer}'" if layer is not None else "")
    return CaffeError(f"caffemodel {where}: {message}")


@dataclass
class _RawLayer:
    name: str = ""
    type: str | int | None = None  # string, or a V1 enum value
    v0_span: tuple[int, int] | None = None  # V1 wrapper's V0 payload
    layouts: list = field(default_factory=list)


def _read_layer(mf: MappedFile, start: int, end: int, fmt: str, path) -> _RawLayer:
    """Decode one layer message: name, type, V0 payload and blob layouts."""
    name_no, type_no, blobs_no = _LAYER_FIELDS[fmt]
    layer, blob_spans, buf = _RawLayer(), [], mf.buf
    try:
        for number, wire_type, value, nxt in iter_fields(buf, start, end):
            if number == name_no:
                expect_wire_type(f"{fmt}.name", wire_type, LEN)
                layer.name = read_string(buf, value, nxt, f"{fmt}.name")
            elif number == type_no:
                if fmt == "V1 layers":
                    expect_wire_type("layers.type", wire_type, VARINT)
                    layer.type = value
                else:
                    expect_wire_type(f"{fmt}.type", wire_type, LEN)
                    layer.type = read_string(buf, value, nxt, f"{fmt}.type")
            elif number == blobs_no:
                expect_wire_type(f"{fmt}.blobs", wire_type, LEN)
                blob_spans.append((value, nxt))
            elif fmt == "V1 layers" and number == _V1_V0_PAYLOAD:
                expect_wire_type("layers.layer", wire_type, LEN)
                layer.v0_span = (value, nxt)
    except WireError as exc:
        raise _file_error(path, f"not a valid {fmt} message: {exc}", layer.name or None) from None
    for i, (b_start, b_end) in enumerate(blob_spans):
        try:
            layer.layouts.append(parse_blob(buf, b_start, b_end))
        except WireError as exc:
            raise _file_error(path, f"blob {i}: {exc}", layer.name) from None
    return layer


def _materialize(mf: MappedFile, name: str, layouts, path) -> tuple[list, tuple]:
    blobs = []
    for i, layout in enumerate(layouts):
        try:
            blobs.append(mf.blob_array(layout))
        except WireError as exc:
            raise _file_error(path, f"blob {i} {exc}", name) from None
    return blobs, tuple(layout.legacy_shape for layout in layouts)


def read_caffemodel(path: str | os.PathLike) -> list[LayerBlobs]:
    """Every layer of a caffemodel, in file order, with its blobs as float32 arrays.

    Raises CaffeError naming the file (and layer) for truncated or corrupt
    files, files that are not a NetParameter (or hold no layer at all), and
    blobs whose value count disagrees with their shape.
    """
    try:
        mf = MappedFile(path)
    except OSError as exc:
        raise CaffeError(f"cannot open caffemodel {os.fspath(path)}: {exc.strerror}") from None
    with mf:
        try:
            new_layers, v1_layers = [], []
            for number, wire_type, value, nxt in iter_fields(mf.buf, 0, mf.size):
                if number in _NET_FIELDS:
                    field_name, allowed = _NET_FIELDS[number]
                    expect_wire_type(f"NetParameter.{field_name}", wire_type, *allowed)
                if number == _NET_LAYER:
                    new_layers.append(_read_layer(mf, value, nxt, "layer", path))
                elif number == _NET_LAYERS:
                    v1_layers.append(_read_layer(mf, value, nxt, "V1 layers", path))
        except WireError as exc:
            raise _file_error(path, f"not a valid NetParameter: {exc} "
                              "(truncated, or not a caffemodel?)") from None
        if not new_layers and not v1_layers:
            raise _file_error(path, "no layers found (is it a caffemodel?)")
        if v1_layers:
            if new_layers:
                raise CaffeError(MIXED_FORMATS.format(source=f"caffemodel {os.fspath(path)}"))
            decoded = _upgrade_legacy_layers(mf, v1_layers, path)
        else:
            decoded = new_layers
        result = []
        for raw in decoded:
            blobs, legacy = _materialize(mf, raw.name, raw.layouts, path)
            result.append(LayerBlobs(raw.name, raw.type or "", blobs, legacy))
        return result


def _upgrade_legacy_layers(mf: MappedFile, v1_layers: list[_RawLayer], path) -> list[_RawLayer]:
    """V1 or V0 layers with names, types and blobs as Caffe's UpgradeNetAsNeeded leaves them."""
    if not any(raw.v0_span for raw in v1_layers):
        for raw in v1_layers:
            raw.type = _v1_type(raw.type, raw.name, path)
        return v1_layers
    out = []
    for raw in v1_layers:
        if raw.v0_span is None:
            # a V1 wrapper without V0 payload in a V0 net: Caffe keeps only its
            # bottoms/tops, so it has no name, type or blobs
            out.append(_RawLayer(type=""))
            continue
        v0 = _read_layer(mf, *raw.v0_span, "V0 layer", path)
        if v0.type == "padding":  # folded into the next conv/pool by the upgrade
            continue
        if v0.type is not None:
            try:
                v0.type = v1_type_name(v0_type_to_v1(v0.type))
            except CaffeError as exc:
                raise _file_error(path, str(exc), v0.name) from None
        out.append(v0)
    return out


def _v1_type(raw_type: int | None, name: str, path) -> str:
    if raw_type is None:
        return ""
    try:
        return v1_type_name(raw_type)
    except CaffeError:
        # protobuf keeps an unknown enum value as an unknown field, so Caffe
        # sees no type at all
        log.warning("%s: layer '%s' has unknown V1 type %d", os.fspath(path), name, raw_type)
        return ""


def blob_for_target(layer: LayerBlobs, index: int, target_shape: Sequence[int]) -> np.ndarray:
    """Blob `index` of `layer`, shaped for a target param blob of `target_shape`.

    Caffe's rule (Blob::ShapeEquals): a blob with a current-format shape must
    match exactly; a legacy 4-d blob matches a target of at most 4 axes whose
    shape padded on the left with 1s equals it. Raises CaffeError with Caffe's
    advice otherwise.
    """
    array = layer.blobs[index]
    target = tuple(int(d) for d in target_shape)
    legacy = bool(layer.legacy_shape[index]) if index < len(layer.legacy_shape) else False
    if legacy:
        ok = len(target) <= 4 and (1,) * (4 - len(target)) + target == array.shape
    else:
        ok = target == array.shape
    if not ok:
        raise CaffeError(
            f"Cannot copy param {index} weights from layer '{layer.name}'; shape mismatch. "
            f"Source param shape is {list(array.shape)}"
            f"{' (legacy num/channels/height/width)' if legacy else ''}; target param "
            f"shape is {list(target)}. To learn this layer's parameters from scratch rather "
            "than copying from a saved net, rename the layer.")
    return array.reshape(target)


def write_caffemodel(path: str | os.PathLike, net_param,
                     blobs_by_layer: Mapping[str, Sequence[np.ndarray]]) -> None:
    """Write `net_param` (a NetParameter without blobs) with the given blobs.

    Each layer named in `blobs_by_layer` gets those arrays as its blobs
    (float32, `shape` set, `data` packed); legacy `layers` are upgraded first.
    The file is written atomically.
    """
    if len(net_param.layers):
        net_param = upgrade_net_param(net_param)
    layer_names = {layer.name for layer in net_param.layer}
    unknown = set(blobs_by_layer) - layer_names
    if unknown:
        raise CaffeError(f"writing caffemodel {os.fspath(path)}: blobs given for layers "
                         f"not in the net: {sorted(unknown)}")
    header = type(net_param)()
    header.CopyFrom(net_param)
    header.ClearField("layer")
    with atomic_output(path) as out:
        out.write(header.SerializeToString())
        for layer in net_param.layer:
            if len(layer.blobs):
                raise CaffeError(f"writing caffemodel {os.fspath(path)}: layer '{layer.name}' "
                                 "already carries blobs in its definition; pass them in "
                                 "blobs_by_layer instead")
            body = layer.SerializeToString()
            blob_parts = []
            for array in blobs_by_layer.get(layer.name, ()):
                blob_parts += encode_blob_field(_LAYER_FIELDS["layer"][2], array)
            out.write(len_prefix(_NET_LAYER, len(body) + parts_size(blob_parts)))
            out.write(body)
            for part in blob_parts:
                out.write(part)
