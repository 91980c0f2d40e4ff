"""Solver steps against BVLC Caffe's own runs (golden solver/).

Each case: build the solver in (a copy of) the case folder, copy_from the
init weights, set the Input blobs once, step(1) `steps` times; after step k
the loss and every param stored for step k must match what Caffe computed
(the compact copy stores every step's loss and the params after the last
step, fc6's weight aside). Also: restoring
Caffe's own snapshot continues its run, and our snapshots carry the fields
real Caffe reads (checked with the protobuf decoder of caffe.proto).
"""
import json
from pathlib import Path

import numpy as np
import pytest

from golden_sets import case_params, materialize
from torchcaffe.proto import caffe_pb2
from torchcaffe.solver import get_solver

CASES = ["sgd_fixed", "sgd_itersize2_clip", "sgd_step_l1", "sgd_poly", "nesterov", "adam"]
PARAM_RTOL = 1e-4  # relative to each param blob's largest magnitude
LOSS_RTOL = 1e-5


def enter_copy(folder, tmp_path, monkeypatch):
    """A private copy of the golden solver folder, as the working directory."""
    local = materialize(folder, tmp_path / "solver")
    monkeypatch.chdir(local)
    return local


def load_case(name):
    npz = np.load(f"{name}.npz")
    return npz, json.loads(str(npz["meta"]))


def start(name, npz, meta):
    solver = get_solver(meta["solver"])
    solver.net.copy_from(meta["init"])
    solver.net.blobs["data"].data[...] = npz["in/data"]
    solver.net.blobs["label"].data[...] = npz["in/label"]
    return solver


def stored_steps(npz) -> set:
    return {int(key.split("/")[1]) for key in npz.files if key.startswith("param_after/")}


def assert_params(solver, npz, k):
    prefix = f"param_after/{k}/"
    keys = [key for key in npz.files if key.startswith(prefix)]
    if k not in stored_steps(npz):
        return
    assert keys, f"no params stored for step {k}"
    for key in keys:
        layer, index = key[len(prefix):].rsplit("/", 1)
        expected = npz[key]
        actual = solver.net.params[layer][int(index)].data
        scale = max(float(np.abs(expected).max()), 1e-30)
        err = float(np.abs(actual - expected).max()) / scale
        assert err <= PARAM_RTOL, f"step {k} {layer}[{index}]: relative error {err:.3g}"


def assert_loss(solver, npz, k):
    expected = float(npz[f"loss/{k}"])
    actual = float(solver.net.blobs["loss"].data)
    assert abs(actual - expected) <= LOSS_RTOL * max(abs(expected), 1e-30), (
        f"step {k}: loss {actual} vs Caffe's {expected}")


@pytest.mark.parametrize("folder, name", case_params("solver", CASES))
def test_steps_match_caffe(folder, name, tmp_path, monkeypatch):
    enter_copy(folder, tmp_path, monkeypatch)
    npz, meta = load_case(name)
    assert meta["steps"] in stored_steps(npz), "the params after the last step are stored"
    solver = start(name, npz, meta)
    for k in range(1, meta["steps"] + 1):
        solver.step(1)
        assert solver.iter == k
        assert_loss(solver, npz, k)
        assert_params(solver, npz, k)


@pytest.mark.parametrize("folder, name", case_params("solver", ["sgd_fixed"]))
def test_restore_caffe_snapshot_continues_its_run(folder, name, tmp_path, monkeypatch):
    enter_copy(folder, tmp_path, monkeypatch)
    npz, meta = load_case(name)
    solver = get_solver(meta["solver"])
    solver.net.blobs["data"].data[...] = npz["in/data"]
    solver.net.blobs["label"].data[...] = npz["in/label"]
    solver.restore("sgd_fixed_iter_3.solverstate")
    assert solver.iter == 3
    assert_params(solver, npz, 3)  # the weights came from learned_net (full set)
    solver.step(3)
    assert solver.iter == 6
    assert_loss(solver, npz, 6)
    assert_params(solver, npz, 6)


@pytest.mark.parametrize("folder, name", case_params("solver", ["adam"]))
def test_our_snapshot_has_what_caffe_reads(folder, name, tmp_path, monkeypatch):
    enter_copy(folder, tmp_path, monkeypatch)
    npz, meta = load_case(name)
    solver = start("adam", npz, meta)
    solver.step(2)
    model, state = solver.snapshot()
    assert model == "adam_iter_2.caffemodel" and state == "adam_iter_2.solverstate"
    decoded = caffe_pb2.SolverState()
    decoded.ParseFromString(Path(state).read_bytes())
    assert decoded.iter == 2
    assert decoded.current_step == 0
    assert decoded.learned_net == model
    params = [blob for layer in solver.net.params.values() for blob in layer]
    # Adam keeps two buffers (m, then v) per learnable param
    assert len(decoded.history) == 2 * len(params)
    for blob, history in zip(params + params, decoded.history):
        assert tuple(history.shape.dim) == blob.shape
        assert len(history.data) == blob.count
    net = caffe_pb2.NetParameter()
    net.ParseFromString(Path(model).read_bytes())
    saved = {layer.name: layer for layer in net.layer if layer.blobs}
    assert list(saved) == list(solver.net.params)
    for name, blobs in solver.net.params.items():
        for blob, proto in zip(blobs, saved[name].blobs):
            assert tuple(proto.shape.dim) == blob.shape
            np.testing.assert_array_equal(np.asarray(proto.data, np.float32),
                                          blob.data.ravel())
