"""Caffe's limits and CHECKs, and faults a hostile or unlucky user meets:
each ends in one CaffeError naming the file and the layer or field, and
leaves nothing half-done."""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

import torchcaffe
from torchcaffe.atomic import atomic_output
from torchcaffe.caffemodel import read_caffemodel
from torchcaffe.errors import CaffeError, LayerError
from torchcaffe.lr_policy import learning_rate
from torchcaffe.proto import caffe_pb2
from torchcaffe.solverstate import read_solverstate
from torchcaffe.wire import encode_varint

from fuzz.campaigns import DEPLOY, TRAIN, sbd_layer, voc_layer, write_sbd, write_voc


def net_file(tmp_path: Path, text: str, name: str = "net.prototxt") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- blob size limits

def _model_with_blob(blob: caffe_pb2.BlobProto) -> bytes:
    net = caffe_pb2.NetParameter()
    net.layer.add(name="big", type="InnerProduct").blobs.add().CopyFrom(blob)
    return net.SerializeToString()


@pytest.mark.parametrize("blob", [
    caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[2**62, 4])),  # wraps int64
    caffe_pb2.BlobProto(num=65536, channels=65536, height=65536, width=65536),  # 2^64
    caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[2**31])),
], ids=["int64-wrap", "legacy-2^64", "2^31"])
def test_caffemodel_blob_over_int_max_is_refused(tmp_path, blob):
    path = tmp_path / "huge.caffemodel"
    path.write_bytes(_model_with_blob(blob))
    with pytest.raises(CaffeError, match=r"huge\.caffemodel, layer 'big'.*exceeds INT_MAX"):
        read_caffemodel(path)


def test_legacy_dims_are_int32_as_protobuf_reads_them(tmp_path):
    # num = 2^32 + 2 arrives as 2 in Caffe's int32 field; channels/height/width 1
    dims = b"".join(encode_varint(number << 3) + encode_varint(value)
                    for number, value in ((1, 2**32 + 2), (2, 1), (3, 1), (4, 1)))
    blob = dims + b"\x2a\x08" + np.float32([1, 2]).tobytes()
    layer = b"\x0a\x01a" + b"\x3a" + encode_varint(len(blob)) + blob
    path = tmp_path / "legacy.caffemodel"
    path.write_bytes(b"\xa2\x06" + encode_varint(len(layer)) + layer)
    (model,) = read_caffemodel(path)
    assert model.blobs[0].shape == (2, 1, 1, 1)
    np.testing.assert_array_equal(model.blobs[0].ravel(), [1, 2])


@pytest.mark.parametrize("edit, field", [
    ("num_output: 4", "num_output: 2147483647"),
    ("kernel_size: 3", "kernel_size: 3 pad: 1073741824"),
    ("dim: 6 dim: 6", "dim: 1073741824 dim: 6"),
])
def test_huge_layer_parameters_are_refused_naming_layer_and_file(tmp_path, edit, field):
    path = net_file(tmp_path, DEPLOY.replace(edit, field, 1), "huge.prototxt")
    with pytest.raises(LayerError, match=r"huge\.prototxt: layer '(conv|input)'.*INT_MAX"):
        torchcaffe.Net(path, torchcaffe.TEST)


# ---------------------------------------------------------------- Caffe's CHECKs at build

def test_loss_bottoms_must_share_the_first_axis(tmp_path):
    # equal counts (2*1*3*3 = 18 labels for 1x?): data 2x3x3x3 -> score 2x3x3x3, label 1x2x3x3
    text = TRAIN.replace("dim: 1 dim: 3 dim: 6 dim: 6", "dim: 2 dim: 3 dim: 6 dim: 6") \
                .replace("dim: 1 dim: 1 dim: 6 dim: 6", "dim: 1 dim: 2 dim: 6 dim: 6")
    with pytest.raises(LayerError, match="layer 'loss'.*same first dimension"):
        torchcaffe.Net(net_file(tmp_path, text), torchcaffe.TRAIN)


@pytest.mark.parametrize("split, message", [
    ('layer { name: "s" type: "Split" bottom: "prob" top: "prob" }', "in-place"),
    ('layer { name: "s" type: "Split" bottom: "prob" }', "at least one top"),
])
def test_split_in_place_or_without_tops_is_refused(tmp_path, split, message):
    with pytest.raises(LayerError, match=f"layer 's'.*{message}"):
        torchcaffe.Net(net_file(tmp_path, DEPLOY + split), torchcaffe.TEST)


@pytest.mark.parametrize("std", ["0", "-1", "nan"])
def test_gaussian_std_must_be_positive_and_the_error_names_layer_and_file(tmp_path, std):
    text = DEPLOY.replace("std: 0.1", f"std: {std}")
    with pytest.raises(LayerError, match=r"net\.prototxt: layer 'conv'.*std must be > 0"):
        torchcaffe.Net(net_file(tmp_path, text), torchcaffe.TEST)


def test_filler_errors_name_the_layer_and_clip_user_strings(tmp_path):
    text = DEPLOY.replace('type: "xavier"', f'type: "{"x" * 10**6}"')
    with pytest.raises(LayerError, match=r"layer 'ip'.*unknown filler type") as info:
        torchcaffe.Net(net_file(tmp_path, text), torchcaffe.TEST)
    assert len(str(info.value)) < 5000


def test_a_huge_type_string_gives_a_short_message(tmp_path):
    text = DEPLOY.replace('type: "ReLU"', f'type: "{"R" * 10**7}"')
    with pytest.raises(LayerError, match="unknown layer type") as info:
        torchcaffe.Net(net_file(tmp_path, text), torchcaffe.TEST)
    assert len(str(info.value)) < 5000


def test_empty_prototxt_is_refused(tmp_path):
    with pytest.raises(CaffeError, match=r"empty\.prototxt: the net defines no layers"):
        torchcaffe.Net(net_file(tmp_path, "", "empty.prototxt"), torchcaffe.TEST)


def test_cudnn_engine_is_reported(tmp_path, caplog):
    text = DEPLOY.replace("kernel_size: 3", "kernel_size: 3 engine: CUDNN")
    with caplog.at_level(logging.WARNING, logger="torchcaffe.net"):
        torchcaffe.Net(net_file(tmp_path, text), torchcaffe.TEST)
    assert "layer 'conv': convolution_param.engine CUDNN is ignored" in caplog.text


def test_a_fifo_is_refused_instead_of_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(CaffeError, match="pipe.*not a regular file"):
        torchcaffe.Net(str(tmp_path / "pipe"), torchcaffe.TEST)
    with pytest.raises(CaffeError, match="pipe.*not a regular file"):
        read_caffemodel(tmp_path / "pipe")


# ---------------------------------------------------------------- Python-layer host

@pytest.mark.parametrize("module, layer, message", [
    ("builtins", "object", r"creating builtins\.object failed.*AttributeError"),
    ("builtins", "input", "has no class 'input'"),
    ("sys", "exit", "has no class 'exit'"),
])
def test_python_layer_classes_that_are_no_layers(tmp_path, module, layer, message):
    text = (f'layer {{ name: "py" type: "Python" top: "t" '
            f'python_param {{ module: "{module}" layer: "{layer}" }} }}')
    with pytest.raises(LayerError, match=f"layer 'py'.*{message}"):
        torchcaffe.Net(net_file(tmp_path, text), torchcaffe.TEST)


class Exits(torchcaffe.Layer):
    def setup(self, bottom, top):
        raise SystemExit(3)


def test_system_exit_from_a_python_layer_is_a_named_error(tmp_path):
    text = (f'layer {{ name: "py" type: "Python" top: "t" '
            f'python_param {{ module: "{__name__}" layer: "Exits" }} }}')
    with pytest.raises(LayerError, match=r"layer 'py'.*Exits\.setup failed: SystemExit: 3"):
        torchcaffe.Net(net_file(tmp_path, text), torchcaffe.TEST)


# ---------------------------------------------------------------- lr policies

def test_lr_policies_give_cs_nan_and_inf_not_math_errors():
    poly = caffe_pb2.SolverParameter(base_lr=0.01, lr_policy="poly", power=0.5, max_iter=10)
    rate, _ = learning_rate(poly, 20, 0)  # (1 - 2) ^ 0.5 = NaN in C
    assert np.isnan(rate)
    exp = caffe_pb2.SolverParameter(base_lr=0.01, lr_policy="exp", gamma=10)
    assert learning_rate(exp, 2**31 - 1, 0)[0] == np.inf  # 10 ^ big overflows to inf
    step = caffe_pb2.SolverParameter(base_lr=1.0, lr_policy="step", gamma=0.5, stepsize=1)
    assert learning_rate(step, 2**31 - 1, 0)[0] == 0.0  # underflow: 0, as pow gives


# ---------------------------------------------------------------- restore

@pytest.fixture
def snapshot(tmp_path):
    (tmp_path / "train.prototxt").write_text(TRAIN)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{tmp_path / "train.prototxt"}" base_lr: 0.1 momentum: 0.9 '
                           f'lr_policy: "multistep" gamma: 0.1 stepvalue: 1 display: 0 max_iter: 5 '
                           f'snapshot_prefix: "{tmp_path / "train"}"')
    torchcaffe.set_random_seed(1)
    solver = torchcaffe.SGDSolver(str(solver_file))
    solver.step(2)
    model, state = solver.snapshot()
    solver.step(1)
    return solver, Path(model), Path(state)


def _fingerprint(solver):
    return (solver.iter, solver.current_step, [h.clone() for h in solver.history],
            [b.data.copy() for bs in solver.net.params.values() for b in bs])


def _assert_unchanged(solver, before):
    after = _fingerprint(solver)
    assert after[:2] == before[:2]
    assert all(np.array_equal(a, b) for a, b in zip(after[2], before[2]))
    assert all(np.array_equal(a, b) for a, b in zip(after[3], before[3]))


@pytest.mark.parametrize("field, value", [(1, -1), (4, -1), (1, 2**31), (4, 2**40)])
def test_solverstate_counters_outside_int32_or_negative_are_refused(snapshot, field, value):
    solver, _, state = snapshot
    state.write_bytes(state.read_bytes() + encode_varint(field << 3) + encode_varint(value))
    name = "iter" if field == 1 else "current_step"
    with pytest.raises(CaffeError, match=rf"solverstate .*train_iter_2\.solverstate: '{name}' is"):
        read_solverstate(state)
    before = _fingerprint(solver)
    with pytest.raises(CaffeError):
        solver.restore(str(state))
    _assert_unchanged(solver, before)


@pytest.mark.parametrize("sidecar", [
    '{"format": "torchcaffe-datastate", "nets": [], "torch_rng": {}}',
    '{"format": "torchcaffe-datastate", "nets": {}, "torch_rng": {"cpu": "!!!"}}',
    '{"format": "torchcaffe-datastate", "nets": {}, "torch_rng": {"cpu": "AAAA"}}',
    '{"format": "torchcaffe-datastate", "nets": {}, "torch_rng": {"cpu": 5}}',
    '{"format": "torchcaffe-datastate", "nets": {"train_net": {"input": 1}}}',
    "[" * 100000,
    "not json",
])
def test_a_bad_sidecar_leaves_the_solver_as_it_was(snapshot, sidecar):
    solver, model, state = snapshot
    model.with_suffix("").with_suffix(".datastate.json").write_text(sidecar)
    before = _fingerprint(solver)
    with pytest.raises(CaffeError, match=r"datastate .*train_iter_2\.datastate\.json"):
        solver.restore(str(state))
    _assert_unchanged(solver, before)


def test_a_bad_learned_net_leaves_the_solver_as_it_was(snapshot):
    solver, model, state = snapshot
    data = model.read_bytes()
    model.write_bytes(data[:-7])  # the last blob cut short
    before = _fingerprint(solver)
    with pytest.raises(CaffeError, match=r"caffemodel .*train_iter_2\.caffemodel"):
        solver.restore(str(state))
    _assert_unchanged(solver, before)
    model.unlink()
    os.mkfifo(model)  # would block a reader forever
    with pytest.raises(CaffeError, match="not a regular file"):
        solver.restore(str(state))
    _assert_unchanged(solver, before)


def test_a_good_restore_still_restores_everything(snapshot):
    solver, _, state = snapshot
    solver.restore(str(state))
    assert (solver.iter, solver.current_step) == (2, 1)


# ---------------------------------------------------------------- writers

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_write_errors_name_the_destination_and_leave_no_file(tmp_path, code):
    destination = tmp_path / "train_iter_4.caffemodel"
    with pytest.raises(CaffeError, match=rf"cannot write {destination}: {os.strerror(code)}"):
        with atomic_output(destination) as out:
            out.write(b"half")
            raise OSError(code, os.strerror(code), str(tmp_path / ".train_iter_4.caffemodel.tmp"))
    assert os.listdir(tmp_path) == []


def test_snapshot_on_a_full_disk_names_the_file(snapshot, monkeypatch):
    solver, _, _ = snapshot

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CaffeError, match=r"cannot write .*train_iter_3\.caffemodel: No space"):
        solver.snapshot()
    assert not any("iter_3" in name for name in os.listdir(Path(solver.param.snapshot_prefix).parent))


# ---------------------------------------------------------------- data layers

def data_net(tmp_path, voc_extra="", sbd=False) -> str:
    voc = write_voc(tmp_path)
    text = voc_layer(voc, "seg11valid", "voc", voc_extra)
    if sbd:
        text += sbd_layer(write_sbd(tmp_path), "train", "sbd")
    return net_file(tmp_path, text, "data.prototxt")


def test_a_16_bit_label_png_is_refused(tmp_path):
    path = data_net(tmp_path)
    Image.fromarray(np.full((4, 5), 257, np.uint16)).save(tmp_path / "VOC2011/SegmentationClass/a1.png")
    with pytest.raises(LayerError, match=r"data\.prototxt: layer 'voc'.*a1\.png has uint16 pixels"):
        torchcaffe.Net(path, torchcaffe.TEST)


def test_a_label_of_another_size_is_refused_at_the_data_layer(tmp_path):
    path = data_net(tmp_path)
    Image.fromarray(np.ones((6, 5), np.uint8)).save(tmp_path / "VOC2011/SegmentationClass/a1.png")
    with pytest.raises(LayerError, match=r"layer 'voc'.*image 'a1'.*data 4x5, label 6x5"):
        torchcaffe.Net(path, torchcaffe.TEST)


def test_a_truncated_mat_in_a_later_forward_names_layer_and_file(tmp_path):
    net = torchcaffe.Net(data_net(tmp_path, sbd=True), torchcaffe.TEST)  # first samples read
    for item in (tmp_path / "dataset/cls").iterdir():
        item.write_bytes(item.read_bytes()[:60])
    with pytest.raises(LayerError, match=r"data\.prototxt: layer 'sbd'.*cannot read .*cls/a\d\.mat"):
        for _ in range(20):  # random order: a sample other than the cached one comes soon
            net.forward()


def test_a_fifo_image_in_a_later_forward_is_refused(tmp_path):
    path = data_net(tmp_path)
    net = torchcaffe.Net(path, torchcaffe.TEST)  # reads a1
    (tmp_path / "VOC2011/JPEGImages/a2.jpg").unlink()
    os.mkfifo(tmp_path / "VOC2011/JPEGImages/a2.jpg")
    net.forward()
    with pytest.raises(LayerError, match=r"layer 'voc'.*image 'a2'.*a2\.jpg.*not a regular file"):
        net.forward()


def test_a_decompression_bomb_is_a_named_error(tmp_path):
    from fuzz.campaigns import _bomb_png

    path = data_net(tmp_path)
    (tmp_path / "VOC2011/SegmentationClass/a1.png").write_bytes(_bomb_png())
    with pytest.raises(LayerError, match=r"layer 'voc'.*a1\.png.*DecompressionBomb"):
        torchcaffe.Net(path, torchcaffe.TEST)


def test_mat_labels_must_be_class_indices(tmp_path):
    path = data_net(tmp_path, sbd=True)
    scipy.io.savemat(tmp_path / "dataset/cls/a1.mat", {"GTcls": {"Segmentation": np.full((4, 5), 300)}})
    scipy.io.savemat(tmp_path / "dataset/cls/a2.mat", {"GTcls": {"Segmentation": np.full((4, 5), 300)}})
    scipy.io.savemat(tmp_path / "dataset/cls/a3.mat", {"GTcls": {"Segmentation": np.full((4, 5), 300)}})
    with pytest.raises(LayerError, match=r"layer 'sbd'.*20 values that are not class indices"):
        torchcaffe.Net(path, torchcaffe.TEST)


def test_prefetch_depth_is_capped_by_the_split(tmp_path):
    net = torchcaffe.Net(data_net(tmp_path, ", 'prefetch': 1000000000"), torchcaffe.TEST)
    assert net.layers[0]._prefetcher.depth == 3
    for _ in range(4):
        net.forward()
