"""Solver updates, learning-rate policies and the solver surface against
hand formulas.

The net is one InnerProduct whose output carries `loss_weight: 1`, so the
loss is the sum of its outputs and the gradient is known in closed form:
d loss / d W = x for every row, d loss / d b = 1, whatever W is. Each
solver's recurrence is then replayed in float64 numpy.
"""
import logging
import sys

import numpy as np
import pytest
import torch

from torchcaffe import TEST, Net
from torchcaffe import solver as solver_module
from torchcaffe.errors import CaffeError
from torchcaffe.lr_policy import learning_rate
from torchcaffe.proto import caffe_pb2
from torchcaffe.solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,
                               RMSPropSolver, SGDSolver, get_solver, read_solver_prototxt)

X = np.array([1.0, -2.0, 0.5])
W0, B0 = 0.5, -1.0
NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" loss_weight: 1
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 2
    weight_filler { type: "constant" value: 0.5 } bias_filler { type: "constant" value: -1 } } }
"""


def write_solver(tmp_path, body, name="solver.prototxt"):
    (tmp_path / "net.prototxt").write_text(NET)
    path = tmp_path / name
    path.write_text(f'net: "{tmp_path / "net.prototxt"}"\nsnapshot_prefix: "{tmp_path}/s"\n'
                    + body)
    return str(path)


def start(cls, tmp_path, body):
    solver = cls(write_solver(tmp_path, body))
    solver.net.blobs["data"].data[...] = X
    return solver


def replay(steps, update, weight_decay=0.0):
    """Apply `update(g, lr_mult, state) -> delta` to W and b with the
    closed-form gradients; returns the params after each step."""
    w = np.full((2, 3), W0)
    b = np.full(2, B0)
    states = [{}, {}]
    out = []
    for t in range(steps):
        gw = np.tile(X, (2, 1)) + weight_decay * w
        gb = np.ones(2)
        w = w - update(gw, 1.0, states[0], t)
        b = b - update(gb, 2.0, states[1], t)
        out.append((w.copy(), b.copy()))
    return out


def check_against(solver, expected):
    for w, b in expected:
        solver.step(1)
        np.testing.assert_allclose(solver.net.params["ip"][0].data, w, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(solver.net.params["ip"][1].data, b, rtol=1e-5, atol=1e-7)


BASE = 'lr_policy: "fixed"\nbase_lr: 0.01\n'


def test_sgd_momentum_and_weight_decay(tmp_path):
    def sgd(g, mult, s, t):
        s["h"] = 0.9 * s.get("h", 0) + 0.01 * mult * g
        return s["h"]
    solver = start(SGDSolver, tmp_path, BASE + "momentum: 0.9\nweight_decay: 0.1\n")
    check_against(solver, replay(4, sgd, weight_decay=0.1))


def _resident_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 2**10


def _keep_a_freed_resident_block(tmp_path) -> None:
    """As after a training pass: a Net built (so freed memory is kept for
    reuse) and 768 MiB written and freed: room for the leaf and the history."""
    prototxt = tmp_path / "tiny.prototxt"
    prototxt.write_text('input: "data" input_shape { dim: 1 dim: 1 dim: 2 dim: 2 }')
    Net(str(prototxt), TEST)
    block = torch.ones(192 * 2**20)
    del block


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_cpu_history_takes_memory_only_once_the_first_update_writes_it(tmp_path):
    _keep_a_freed_resident_block(tmp_path)
    # the solver's zero history must not add to the first backward's peak:
    # like torch.optim's lazily made momentum buffers, it becomes resident
    # in the update, when the activations are gone
    leaf = torch.empty(64 * 2**20)  # 256 MiB, never touched
    before = _resident_mib()
    history = solver_module._zero_history(leaf, torch.device("cpu"))
    assert _resident_mib() - before < 32
    assert history.shape == leaf.shape and history.dtype == torch.float32
    assert not history.any()
    history.mul_(0.9).add_(1.0)  # the update's first write
    assert _resident_mib() - before > 200


def test_nesterov(tmp_path):
    def nesterov(g, mult, s, t):
        old = s.get("h", 0)
        s["h"] = 0.9 * old + 0.01 * mult * g
        return 1.9 * s["h"] - 0.9 * old
    check_against(start(NesterovSolver, tmp_path, BASE + "momentum: 0.9\n"),
                  replay(4, nesterov))


def test_adagrad(tmp_path):
    def adagrad(g, mult, s, t):
        s["h"] = s.get("h", 0) + g * g
        return 0.01 * mult * g / (np.sqrt(s["h"]) + 1e-8)
    check_against(start(AdaGradSolver, tmp_path, BASE), replay(4, adagrad))


def test_rmsprop(tmp_path):
    def rmsprop(g, mult, s, t):
        s["h"] = 0.9 * s.get("h", 0) + 0.1 * g * g
        return 0.01 * mult * g / (np.sqrt(s["h"]) + 1e-6)
    check_against(start(RMSPropSolver, tmp_path, BASE + "rms_decay: 0.9\ndelta: 1e-6\n"),
                  replay(4, rmsprop))


def test_adadelta(tmp_path):
    def adadelta(g, mult, s, t):
        s["g2"] = 0.95 * s.get("g2", 0) + 0.05 * g * g
        step = g * np.sqrt((s.get("u2", 0) + 1e-6) / (s["g2"] + 1e-6))
        s["u2"] = 0.95 * s.get("u2", 0) + 0.05 * step * step
        return 1.0 * mult * step
    body = 'lr_policy: "fixed"\nbase_lr: 1.0\nmomentum: 0.95\ndelta: 1e-6\n'
    solver = start(AdaDeltaSolver, tmp_path, body)
    check_against(solver, replay(4, adadelta))
    assert len(solver.history) == 4  # squared gradients, then squared updates


def test_adam(tmp_path):
    def adam(g, mult, s, t):
        s["m"] = 0.9 * s.get("m", 0) + 0.1 * g
        s["v"] = 0.999 * s.get("v", 0) + 0.001 * g * g
        correction = np.sqrt(1 - 0.999 ** (t + 1)) / (1 - 0.9 ** (t + 1))
        return 0.01 * mult * correction * s["m"] / (np.sqrt(s["v"]) + 1e-8)
    check_against(start(AdamSolver, tmp_path, BASE + "momentum: 0.9\n"), replay(4, adam))


def test_iter_size_averages_the_accumulated_gradient(tmp_path):
    # the gradient is the same at every pass, so two accumulated passes
    # scaled by 1/2 give the one-pass update
    def sgd(g, mult, s, t):
        return 0.01 * mult * g
    solver = start(SGDSolver, tmp_path, BASE + "iter_size: 2\n")
    check_against(solver, replay(2, sgd))


def test_clip_gradients_scales_by_the_global_norm(tmp_path):
    norm = np.sqrt(2 * (X ** 2).sum() + 2)  # two rows of x, two biases of 1
    solver = start(SGDSolver, tmp_path, BASE + "clip_gradients: 1.0\n")
    solver.step(1)
    np.testing.assert_allclose(solver.net.params["ip"][0].data,
                               W0 - 0.01 * np.tile(X, (2, 1)) / norm, rtol=1e-6)
    np.testing.assert_allclose(solver.net.params["ip"][1].data, B0 - 0.02 / norm, rtol=1e-6)


def test_l1_decay_adds_the_sign(tmp_path):
    solver = start(SGDSolver, tmp_path, BASE + 'weight_decay: 0.5\nregularization_type: "L1"\n')
    solver.step(1)
    np.testing.assert_allclose(solver.net.params["ip"][0].data,
                               W0 - 0.01 * (np.tile(X, (2, 1)) + 0.5 * np.sign(W0)), rtol=1e-6)


def policy(**fields):
    return caffe_pb2.SolverParameter(base_lr=0.1, **fields)


@pytest.mark.parametrize("fields, iteration, expected", [
    (dict(lr_policy="fixed"), 9, 0.1),
    (dict(lr_policy="step", gamma=0.5, stepsize=3), 7, 0.1 * 0.25),
    (dict(lr_policy="exp", gamma=0.9), 2, 0.1 * 0.81),
    (dict(lr_policy="inv", gamma=0.1, power=0.75), 10, 0.1 * 2 ** -0.75),
    (dict(lr_policy="poly", power=2, max_iter=10), 5, 0.1 * 0.25),
    (dict(lr_policy="sigmoid", gamma=1.0, stepsize=4), 4, 0.05),
])
def test_lr_policies(fields, iteration, expected):
    rate, _ = learning_rate(policy(**fields), iteration, 0)
    assert rate.dtype == np.float32
    assert float(rate) == pytest.approx(expected, rel=1e-6)


def test_multistep_advances_one_step_at_each_stepvalue():
    param = policy(lr_policy="multistep", gamma=0.1, stepvalue=[2, 5])
    rates, step = [], 0
    for it in range(7):
        rate, step = learning_rate(param, it, step)
        rates.append(float(rate))
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)
    assert step == 2


def test_unknown_policy_and_bad_fields_are_named(tmp_path):
    with pytest.raises(CaffeError, match="lr_policy 'cosine'"):
        SGDSolver(write_solver(tmp_path, 'lr_policy: "cosine"\nbase_lr: 0.1\n'))
    with pytest.raises(CaffeError, match="stepsize"):
        SGDSolver(write_solver(tmp_path, 'lr_policy: "step"\nbase_lr: 0.1\n'))
    with pytest.raises(CaffeError, match="HDF5"):
        SGDSolver(write_solver(tmp_path, BASE + "snapshot_format: HDF5\n"))
    with pytest.raises(CaffeError, match="solver.prototxt:3"):
        SGDSolver(write_solver(tmp_path, "base_lr: oops\n"))


def test_get_solver_by_type_and_legacy_enum(tmp_path):
    assert type(get_solver(write_solver(tmp_path, BASE + 'type: "Adam"\n'))) is AdamSolver
    assert type(get_solver(write_solver(tmp_path, BASE + "solver_type: NESTEROV\n"))) \
        is NesterovSolver
    assert type(get_solver(write_solver(tmp_path, BASE))) is SGDSolver
    with pytest.raises(CaffeError, match="not both"):
        get_solver(write_solver(tmp_path, BASE + 'type: "Adam"\nsolver_type: ADAM\n'))
    with pytest.raises(CaffeError, match="unknown solver type 'Lion'"):
        get_solver(write_solver(tmp_path, BASE + 'type: "Lion"\n'))


def test_snapshot_prefix_completion(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    path = tmp_path / "my_solver.prototxt"
    path.write_text(BASE)
    assert read_solver_prototxt(path).snapshot_prefix == str(tmp_path / "my_solver")
    (tmp_path / "snaps").mkdir()
    path.write_text(BASE + f'snapshot_prefix: "{tmp_path / "snaps"}"\n')
    assert read_solver_prototxt(path).snapshot_prefix == str(tmp_path / "snaps" / "my_solver")


def test_display_shows_iteration_smoothed_loss_and_rate(tmp_path, caplog):
    solver = start(SGDSolver, tmp_path, BASE + "display: 1\naverage_loss: 2\n")
    with caplog.at_level(logging.INFO, logger="torchcaffe.solver"):
        solver.step(3)
    # loss before update k: two outputs of w_k . x + b_k, w_k = W0 - k lr x, b_k = B0 - 2k lr
    losses = [2 * ((W0 - 0.01 * k * X) @ X + B0 - 0.02 * k) for k in range(3)]
    text = caplog.text
    assert "Iteration 0, lr = 0.01" in text and "Iteration 2, lr = 0.01" in text
    assert "Iteration 0 (" in text
    assert f"loss = {losses[0]:.6g}" in text
    assert f"loss = {(losses[0] + losses[1]) / 2:.6g}" in text
    assert f"loss = {(losses[1] + losses[2]) / 2:.6g}" in text
    assert "Train net output #1: ip" in text
    assert solver.lr == pytest.approx(0.01)


def test_average_loss_smooths_over_the_window(tmp_path):
    solver = start(SGDSolver, tmp_path, BASE + "average_loss: 2\n")
    solver.step(3)
    w = W0 - 0.01 * X * np.arange(3)[:, None]
    b = B0 - 0.02 * np.arange(3)
    losses = 2 * ((w * X).sum(1) + b)
    assert solver.smoothed_loss == pytest.approx((losses[1] + losses[2]) / 2, rel=1e-5)


def test_test_nets_share_params_and_run_at_test_interval(tmp_path):
    body = (BASE + f'test_net: "{tmp_path / "net.prototxt"}"\ntest_iter: 2\n'
            "test_interval: 2\n")
    solver = start(SGDSolver, tmp_path, body)
    test_net = solver.test_nets[0]
    test_net.blobs["data"].data[...] = X
    solver.step(3)  # tests once, before iteration 2
    assert len(solver.test_scores) == 1
    w = W0 - 0.01 * 2 * X  # after two updates
    b = B0 - 0.02 * 2
    assert solver.test_scores[0]["ip#0"] == pytest.approx(w @ X + b, rel=1e-5)
    np.testing.assert_array_equal(test_net.params["ip"][0].data,
                                  solver.net.params["ip"][0].data)


def test_solve_runs_to_max_iter_and_snapshots_after_train(tmp_path):
    solver = start(SGDSolver, tmp_path, BASE + "max_iter: 3\n")
    solver.solve()
    assert solver.iter == 3
    assert (tmp_path / "s_iter_3.caffemodel").is_file()
    assert (tmp_path / "s_iter_3.solverstate").is_file()
