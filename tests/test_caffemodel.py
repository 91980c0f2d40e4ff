"""caffemodel reading and writing against BVLC-written files and the reference decoder.

The reference decoder is protobuf's own `caffe_pb2.NetParameter.ParseFromString`
(independent of the hand-written wire walker under test); byte-level checks
use tags computed by hand from caffe.proto's field numbers.
"""
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from torchcaffe.caffemodel import LayerBlobs, blob_for_target, read_caffemodel, write_caffemodel
from torchcaffe.errors import CaffeError
from torchcaffe.proto import caffe_pb2
from torchcaffe.prototxt import parse_net_text

from golden_sets import file_params, unpacked


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def reference_decode(path) -> caffe_pb2.NetParameter:
    net = caffe_pb2.NetParameter()
    net.ParseFromString(Path(path).read_bytes())
    return net


def reference_values(blob) -> np.ndarray:
    if len(blob.double_data):
        return np.array(blob.double_data, np.float64).astype(np.float32)
    return np.array(blob.data, np.float32)


def small_net() -> caffe_pb2.NetParameter:
    return text_format.Parse("""
        name: "small"
        layer { name: "data" type: "Input" top: "data"
                input_param { shape { dim: 1 dim: 3 dim: 5 dim: 5 } } }
        layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
                param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
                convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
        layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
        layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
                inner_product_param { num_output: 2 } }
        """, caffe_pb2.NetParameter())


def small_blobs(rng) -> dict:
    return {
        "conv": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
                 rng.standard_normal(4).astype(np.float32)],
        "fc": [rng.standard_normal((2, 100)).astype(np.float32),
               rng.standard_normal(2).astype(np.float32)],
    }


# --------------------------------------------------------------------------- golden files

GOLDEN_MODELS = ["nets/fcn32s_w16.caffemodel", "nets/fcn16s_w16.caffemodel",
                 "nets/fcn8s_w16.caffemodel", "nets/fcn8s_atonce_w16.caffemodel",
                 "solver/sgd_fixed_init.caffemodel", "solver/sgd_fixed_iter_3.caffemodel",
                 "solver/adam_init.caffemodel"]


@pytest.mark.parametrize("path", file_params(*GOLDEN_MODELS))
def test_caffe_written_models_match_reference_decoder(path, tmp_path):
    path = unpacked(path, tmp_path)
    layers = read_caffemodel(path)
    reference = reference_decode(path)
    assert [l.name for l in layers] == [l.name for l in reference.layer]
    assert [l.type for l in layers] == [l.type for l in reference.layer]
    assert sum(len(l.blobs) for l in layers) > 0
    for ours, ref in zip(layers, reference.layer):
        assert len(ours.blobs) == len(ref.blobs), ours.name
        for array, blob in zip(ours.blobs, ref.blobs):
            assert array.dtype == np.float32
            assert array.shape == tuple(blob.shape.dim)
            np.testing.assert_array_equal(array.ravel(), reference_values(blob))
        assert ours.legacy_shape == (False,) * len(ours.blobs)


@pytest.mark.parametrize("path", file_params("legacy/tiny_v1.caffemodel"))
def test_legacy_v1_model_loads_to_caffe_params(path, tmp_path):
    truth = np.load(path.parent / "tiny_v1.npz")
    path = unpacked(path, tmp_path)
    layers = {l.name: l for l in read_caffemodel(path)}
    assert {n: l.type for n, l in layers.items()} == {
        "conv1": "Convolution", "relu1": "ReLU", "pool1": "Pooling", "fc6": "InnerProduct"}
    params = [k for k in truth.files if k.startswith("param/")]
    assert params
    for key in params:
        _, layer, index = key.split("/")
        expected = truth[key]
        array = blob_for_target(layers[layer], int(index), expected.shape)
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, expected)
    # the stored fc6 weight is legacy 1 x 1 x 6 x 80; Caffe accepts it for a 6 x 80 blob
    fc6 = layers["fc6"]
    assert fc6.blobs[0].shape == (1, 1, 6, 80) and fc6.legacy_shape == (True, True)
    with pytest.raises(CaffeError, match="fc6"):
        blob_for_target(fc6, 0, (80, 6))
    with pytest.raises(CaffeError, match="shape mismatch"):
        blob_for_target(fc6, 0, (1, 1, 1, 6, 80))


def test_current_format_blob_needs_exact_shape():
    layer = LayerBlobs("fc", "InnerProduct", [np.zeros((6, 80), np.float32)], (False,))
    assert blob_for_target(layer, 0, (6, 80)).shape == (6, 80)
    with pytest.raises(CaffeError, match="'fc'"):
        blob_for_target(layer, 0, (1, 1, 6, 80))


# --------------------------------------------------------------------------- writing

def test_round_trip_and_reference_decoder(tmp_path):
    rng = np.random.default_rng(0)
    net, blobs = small_net(), small_blobs(rng)
    path = tmp_path / "small.caffemodel"
    write_caffemodel(path, net, blobs)
    assert os.listdir(tmp_path) == ["small.caffemodel"]  # no temp file left behind

    layers = read_caffemodel(path)
    assert [(l.name, l.type, len(l.blobs)) for l in layers] == [
        ("data", "Input", 0), ("conv", "Convolution", 2), ("relu", "ReLU", 0),
        ("fc", "InnerProduct", 2)]
    for layer in layers:
        for array, expected in zip(layer.blobs, blobs.get(layer.name, [])):
            np.testing.assert_array_equal(array, expected)

    reference = reference_decode(path)
    assert reference.name == "small" and not reference.layers
    for ref_layer, src_layer in zip(reference.layer, net.layer):
        stripped = caffe_pb2.LayerParameter()
        stripped.CopyFrom(ref_layer)
        stripped.ClearField("blobs")
        assert stripped == src_layer  # every layer field survives
        for blob, expected in zip(ref_layer.blobs, blobs.get(ref_layer.name, [])):
            assert blob.HasField("shape") and tuple(blob.shape.dim) == expected.shape
            assert not blob.HasField("num") and not blob.double_data
            np.testing.assert_array_equal(np.array(blob.data, np.float32), expected.ravel())

    # data is packed: tag (5 << 3 | 2), byte length, raw little-endian floats
    raw = path.read_bytes()
    for arrays in blobs.values():
        for array in arrays:
            assert b"\x2a" + varint(array.nbytes) + array.astype("<f4").tobytes() in raw


def test_write_converts_to_float32_and_keeps_empty_blob(tmp_path):
    net = text_format.Parse('layer { name: "s" type: "Scale" }', caffe_pb2.NetParameter())
    values = np.array([0.1, -2.5, 1e-40], np.float64)
    path = tmp_path / "s.caffemodel"
    write_caffemodel(path, net, {"s": [values, np.zeros((0, 3), np.float32)]})
    (layer,) = read_caffemodel(path)
    np.testing.assert_array_equal(layer.blobs[0], values.astype(np.float32))
    assert layer.blobs[1].shape == (0, 3)


def test_write_upgrades_v1_definition(tmp_path):
    net = text_format.Parse("""
        name: "old"
        layers { name: "ip" type: INNER_PRODUCT bottom: "x" top: "ip" blobs_lr: 1 blobs_lr: 2
                 inner_product_param { num_output: 3 } }
        """, caffe_pb2.NetParameter())
    path = tmp_path / "old.caffemodel"
    write_caffemodel(path, net, {"ip": [np.ones((3, 4), np.float32)]})
    reference = reference_decode(path)
    assert not reference.layers and reference.layer[0].type == "InnerProduct"
    assert [p.lr_mult for p in reference.layer[0].param] == [1, 2]


def test_write_rejects_unknown_layer_and_keeps_old_file(tmp_path):
    path = tmp_path / "keep.caffemodel"
    path.write_bytes(b"old")
    with pytest.raises(CaffeError, match="nosuch"):
        write_caffemodel(path, small_net(), {"nosuch": [np.zeros(1)]})
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keep.caffemodel"]


# --------------------------------------------------------------------------- legacy formats

def test_v1_file_equals_its_new_format_twin(tmp_path):
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((5, 12)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    kernel = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)

    v1 = caffe_pb2.NetParameter(name="twin")
    conv = v1.layers.add(name="conv", type=caffe_pb2.V1LayerParameter.CONVOLUTION,
                         blobs_lr=[1, 2], weight_decay=[1, 0])
    conv.blobs.add(num=2, channels=3, height=2, width=2, data=kernel.ravel())
    v1.layers.add(name="relu", type=caffe_pb2.V1LayerParameter.RELU)
    fc = v1.layers.add(name="fc", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    fc.blobs.add(num=1, channels=1, height=5, width=12, data=weight.ravel())
    fc.blobs.add(num=1, channels=1, height=1, width=5, data=bias)
    v1.layers.add(name="loss", type=caffe_pb2.V1LayerParameter.SOFTMAX_LOSS)

    new = caffe_pb2.NetParameter(name="twin")
    for name, type_, arrays in [("conv", "Convolution", [kernel]), ("relu", "ReLU", []),
                                ("fc", "InnerProduct", [weight, bias]),
                                ("loss", "SoftmaxWithLoss", [])]:
        layer = new.layer.add(name=name, type=type_)
        for array in arrays:
            layer.blobs.add(shape=caffe_pb2.BlobShape(dim=array.shape), data=array.ravel())

    (tmp_path / "v1.caffemodel").write_bytes(v1.SerializeToString())
    (tmp_path / "new.caffemodel").write_bytes(new.SerializeToString())
    old_layers = read_caffemodel(tmp_path / "v1.caffemodel")
    new_layers = read_caffemodel(tmp_path / "new.caffemodel")
    assert [(l.name, l.type) for l in old_layers] == [(l.name, l.type) for l in new_layers]
    for old, twin in zip(old_layers, new_layers):
        for i, array in enumerate(twin.blobs):
            np.testing.assert_array_equal(blob_for_target(old, i, array.shape), array)
    assert old_layers[2].blobs[0].shape == (1, 1, 5, 12)


def test_v0_file_upgrades_types_and_drops_padding_layers(tmp_path):
    v0 = caffe_pb2.NetParameter(name="v0", input=["data"])
    pad = v0.layers.add(bottom=["data"], top=["pad1"])
    pad.layer.name, pad.layer.type, pad.layer.pad = "pad1", "padding", 2
    conv = v0.layers.add(bottom=["pad1"], top=["conv1"])
    conv.layer.name, conv.layer.type = "conv1", "conv"
    conv.layer.blobs.add(num=1, channels=1, height=1, width=3, data=[1, 2, 3])
    pool = v0.layers.add(bottom=["conv1"], top=["pool1"])
    pool.layer.name, pool.layer.type = "pool1", "pool"
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(v0.SerializeToString())
    layers = read_caffemodel(path)
    assert [(l.name, l.type) for l in layers] == [("conv1", "Convolution"), ("pool1", "Pooling")]
    np.testing.assert_array_equal(layers[0].blobs[0].ravel(), [1, 2, 3])

    conv.layer.type = "nonsense"
    path.write_bytes(v0.SerializeToString())
    with pytest.raises(CaffeError, match="conv1.*nonsense"):
        read_caffemodel(path)


# --------------------------------------------------------------------------- encodings

def blob_message(body: bytes) -> bytes:
    """A caffemodel with one layer "L" whose single blob message is `body`."""
    layer = b"\x0a\x01L" + b"\x3a" + varint(len(body)) + body  # name, blobs (7)
    return b"\xa2\x06" + varint(len(layer)) + layer  # field 100, length-delimited


def shape_field(*dims) -> bytes:
    packed = b"".join(varint(d) for d in dims)
    inner = b"\x0a" + varint(len(packed)) + packed
    return b"\x3a" + varint(len(inner)) + inner


def test_double_data_is_cast_to_float_and_wins_over_data(tmp_path):
    doubles = np.array([0.1, 1 / 3, -2.0**-130, 1e39], np.float64)
    net = caffe_pb2.NetParameter()
    net.layer.add(name="d").blobs.add(shape=caffe_pb2.BlobShape(dim=[2, 2]), double_data=doubles)
    net.layer.add(name="both").blobs.add(shape=caffe_pb2.BlobShape(dim=[4]),
                                         data=[9, 9, 9, 9], double_data=doubles)
    path = tmp_path / "d.caffemodel"
    path.write_bytes(net.SerializeToString())
    with np.errstate(over="ignore"):
        expected = doubles.astype(np.float32)
    d, both = read_caffemodel(path)
    assert d.blobs[0].dtype == np.float32 and d.blobs[0].shape == (2, 2)
    np.testing.assert_array_equal(d.blobs[0].ravel(), expected)
    np.testing.assert_array_equal(both.blobs[0], expected)


def test_unpacked_and_split_float_encodings(tmp_path):
    values = np.arange(1, 8, dtype=np.float32) / 7
    packed = lambda v: b"\x2a" + varint(v.nbytes) + v.astype("<f4").tobytes()  # noqa: E731
    unpacked = lambda v: b"".join(b"\x2d" + struct.pack("<f", x) for x in v)  # noqa: E731
    # repeated fields concatenate: unpacked run, packed chunk, unpacked run
    body = unpacked(values[:3]) + packed(values[3:5]) + shape_field(7) + unpacked(values[5:])
    path = tmp_path / "u.caffemodel"
    path.write_bytes(blob_message(body))
    (layer,) = read_caffemodel(path)
    np.testing.assert_array_equal(layer.blobs[0], values)
    reference = reference_decode(path).layer[0].blobs[0]
    np.testing.assert_array_equal(np.array(reference.data, np.float32), values)

    doubles = np.array([0.5, 0.25, 2.0])
    body = b"".join(b"\x41" + struct.pack("<d", x) for x in doubles) + shape_field(3)
    path.write_bytes(blob_message(body))
    np.testing.assert_array_equal(read_caffemodel(path)[0].blobs[0], doubles.astype(np.float32))


def test_unpacked_shape_dims_and_negative_legacy_fields(tmp_path):
    # BlobShape.dim given one varint field per dim (unpacked)
    inner = b"\x08\x02\x08\x03"
    body = b"\x3a" + varint(len(inner)) + inner + b"\x2a\x18" + np.arange(6, dtype="<f4").tobytes()
    path = tmp_path / "s.caffemodel"
    path.write_bytes(blob_message(body))
    assert read_caffemodel(path)[0].blobs[0].shape == (2, 3)
    # a negative legacy dimension (10-byte varint) is refused
    body = b"\x08" + varint((1 << 64) - 1) + b"\x2a\x00"
    path.write_bytes(blob_message(body))
    with pytest.raises(CaffeError, match="negative"):
        read_caffemodel(path)


def test_unknown_fields_of_every_wire_type_are_skipped(tmp_path):
    unknown = 2000  # a field number no message of caffe.proto uses
    junk = (varint(unknown << 3 | 0) + varint(300)
            + varint(unknown << 3 | 1) + b"\x01" * 8
            + varint(unknown << 3 | 2) + b"\x03abc"
            + varint(unknown << 3 | 5) + b"\x02" * 4)
    values = np.array([1.5, -2.5], np.float32)
    body = junk + shape_field(2) + junk + b"\x2a\x08" + values.tobytes() + junk
    layer = b"\x0a\x01L" + junk + b"\x12\x04Conv" + b"\x3a" + varint(len(body)) + body + junk
    data = junk + b"\x0a\x03net" + b"\xa2\x06" + varint(len(layer)) + layer + junk
    path = tmp_path / "j.caffemodel"
    path.write_bytes(data)
    (ours,) = read_caffemodel(path)
    assert (ours.name, ours.type) == ("L", "Conv")
    np.testing.assert_array_equal(ours.blobs[0], values)
    np.testing.assert_array_equal(reference_decode(path).layer[0].blobs[0].data, values)


def test_file_over_64_mb(tmp_path):
    count = 17 * 1024 * 1024  # 68 MiB of floats, past protobuf's old default limit
    values = np.arange(count, dtype=np.float32)
    net = text_format.Parse('layer { name: "big" type: "InnerProduct" }', caffe_pb2.NetParameter())
    path = tmp_path / "big.caffemodel"
    write_caffemodel(path, net, {"big": [values.reshape(17, 1024, 1024)]})
    assert path.stat().st_size > 64 * 1024 * 1024
    (layer,) = read_caffemodel(path)
    assert layer.blobs[0].shape == (17, 1024, 1024)
    np.testing.assert_array_equal(layer.blobs[0].ravel(), values)


# --------------------------------------------------------------------------- bad input

def test_truncated_files_name_the_file(tmp_path):
    rng = np.random.default_rng(2)
    good = tmp_path / "good.caffemodel"
    write_caffemodel(good, small_net(), small_blobs(rng))
    raw = good.read_bytes()
    for cut in (len(raw) - 1, len(raw) - 401, len(raw) // 2, 20, 3):
        bad = tmp_path / f"cut{cut}.caffemodel"
        bad.write_bytes(raw[:cut])
        with pytest.raises(CaffeError, match=f"cut{cut}.caffemodel"):
            read_caffemodel(bad)


def test_garbage_and_other_files_are_refused(tmp_path):
    jpeg = tmp_path / "photo.caffemodel"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" + bytes(range(256)) * 8)
    text = tmp_path / "net.caffemodel"
    text.write_bytes(b'name: "net"\nlayer { name: "a" type: "ReLU" }\n')
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    state = caffe_pb2.SolverState(iter=3, learned_net="x.caffemodel")
    solverstate = tmp_path / "x.solverstate"
    solverstate.write_bytes(state.SerializeToString())
    for path in (jpeg, text, empty, solverstate):
        with pytest.raises(CaffeError, match=path.name):
            read_caffemodel(path)
    with pytest.raises(CaffeError, match="missing.caffemodel"):
        read_caffemodel(tmp_path / "missing.caffemodel")


def test_wrong_wire_type_in_layer_is_refused(tmp_path):
    layer = b"\x0a\x01L" + b"\x38\x05"  # blobs (field 7) as a varint
    path = tmp_path / "w.caffemodel"
    path.write_bytes(b"\xa2\x06" + varint(len(layer)) + layer)
    with pytest.raises(CaffeError, match="w.caffemodel.*blobs"):
        read_caffemodel(path)


def test_value_count_must_match_shape(tmp_path):
    net = caffe_pb2.NetParameter()
    net.layer.add(name="conv").blobs.add(shape=caffe_pb2.BlobShape(dim=[2, 3]), data=[1] * 5)
    path = tmp_path / "n.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(CaffeError, match=r"n.caffemodel, layer 'conv'.*5 values.*\[2, 3\]"):
        read_caffemodel(path)


def test_mixed_layer_formats_are_refused_as_in_caffe(tmp_path):
    # Caffe's UpgradeV1Net fails fatally on a net holding both 'layer' and 'layers'
    net = caffe_pb2.NetParameter()
    net.layer.add(name="new_style", type="ReLU")
    net.layers.add(name="old_style", type=caffe_pb2.V1LayerParameter.TANH)
    path = tmp_path / "mixed.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(CaffeError, match=r"mixed\.caffemodel: has both 'layer' and legacy 'layers'"):
        read_caffemodel(path)
    text = 'layer { name: "a" type: "ReLU" } layers { name: "b" type: TANH }'
    with pytest.raises(CaffeError, match=r"mixed\.prototxt: has both"):
        parse_net_text(text, "mixed.prototxt")
