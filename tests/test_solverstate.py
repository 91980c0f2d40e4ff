"""solverstate reading/writing against Caffe's own snapshot and the protobuf decoder."""
import os
from pathlib import Path

import numpy as np
import pytest

from torchcaffe.caffemodel import read_caffemodel
from torchcaffe.errors import CaffeError
from torchcaffe.proto import caffe_pb2
from torchcaffe.solverstate import read_solverstate, write_solverstate

from golden_sets import file_params, unpacked


def reference_decode(path) -> caffe_pb2.SolverState:
    state = caffe_pb2.SolverState()
    state.ParseFromString(Path(path).read_bytes())
    return state


@pytest.mark.parametrize("path", file_params("solver/sgd_fixed_iter_3.solverstate"))
def test_caffe_snapshot_reads(path, tmp_path):
    folder = path.parent
    path = unpacked(path, tmp_path)
    state = read_solverstate(path)
    iteration, current_step, learned_net, history = state
    assert iteration == 3 and current_step == 0
    assert learned_net == "sgd_fixed_iter_3.caffemodel"
    # one history blob per learnable param, in net.params order, shaped like it
    params = [b for layer in read_caffemodel(unpacked(next(folder.glob(learned_net + "*")), tmp_path)) for b in layer.blobs]
    assert [h.shape for h in history] == [p.shape for p in params]
    reference = reference_decode(path)
    assert len(reference.history) == len(history) == 22
    for ours, blob in zip(history, reference.history):
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours.ravel(), np.array(blob.data, np.float32))
    assert any(np.abs(h).max() > 0 for h in history)  # momentum after 3 steps is nonzero


def test_round_trip_and_reference_decoder(tmp_path):
    rng = np.random.default_rng(0)
    history = [rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
               rng.standard_normal(3).astype(np.float32), np.zeros((4, 5), np.float32)]
    path = tmp_path / "run_iter_40.solverstate"
    write_solverstate(path, 40, 2, "run_iter_40.caffemodel", history)
    assert os.listdir(tmp_path) == [path.name]
    state = read_solverstate(path)
    assert (state.iter, state.current_step, state.learned_net) == (40, 2, "run_iter_40.caffemodel")
    for ours, expected in zip(state.history, history, strict=True):
        np.testing.assert_array_equal(ours, expected)
    reference = reference_decode(path)
    assert (reference.iter, reference.current_step, reference.learned_net) == (
        40, 2, "run_iter_40.caffemodel")
    for blob, expected in zip(reference.history, history):
        assert tuple(blob.shape.dim) == expected.shape
        np.testing.assert_array_equal(np.array(blob.data, np.float32), expected.ravel())


def test_legacy_history_blobs_keep_their_4d_shape(tmp_path):
    state = caffe_pb2.SolverState(iter=7, learned_net="m.caffemodel")
    state.history.add(num=1, channels=1, height=2, width=3, data=range(6))
    path = tmp_path / "legacy.solverstate"
    path.write_bytes(state.SerializeToString())
    restored = read_solverstate(path)
    assert restored.iter == 7 and restored.current_step == 0
    np.testing.assert_array_equal(restored.history[0],
                                  np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3))


def test_bad_files_name_the_file(tmp_path):
    write_solverstate(tmp_path / "ok.solverstate", 5, 0, "m.caffemodel",
                      [np.ones((8, 8), np.float32)])
    raw = (tmp_path / "ok.solverstate").read_bytes()
    cut = tmp_path / "cut.solverstate"
    cut.write_bytes(raw[:-10])
    model = tmp_path / "model.solverstate"
    model.write_bytes(caffe_pb2.NetParameter(name="net").SerializeToString())
    garbage = tmp_path / "garbage.solverstate"
    garbage.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    for path in (cut, model, garbage):
        with pytest.raises(CaffeError, match=path.name):
            read_solverstate(path)
