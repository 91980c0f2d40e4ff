"""The fused SGD update computes what the solver's torch ops compute, bit
for bit, in one pass; the solver uses it for plain SGD on CPU float32
params, and falls back to the torch ops everywhere else."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from torchcaffe import fused_sgd
from torchcaffe.solver import AdamSolver, SGDSolver

needs_fused = pytest.mark.skipif(not fused_sgd.available(),
                                 reason="no fused SGD update here (no compiler, or another CPU)")


@needs_fused
@pytest.mark.parametrize("count", [1, 17, 4099, (1 << 20) + 5])
@pytest.mark.parametrize("decay", [0.0005, 0.0])
def test_one_pass_equals_the_six_torch_passes(count, decay):
    generator = torch.Generator().manual_seed(count)
    arrays = [torch.randn(count, generator=generator) for _ in range(3)]
    arrays[0][:1] = float("inf") if decay == 0 else arrays[0][:1]  # skipped decay: no inf * 0
    fused = [a.clone() for a in arrays]
    fused_sgd._torch_update(*arrays, decay, 0.9, 0.01)
    fused_sgd._run(*fused, decay, 0.9, 0.01)
    for name, a, b in zip(("data", "diff", "history"), arrays, fused):
        assert torch.equal(a, b), name


@needs_fused
def test_the_update_value_by_hand():
    # diff 0.5 + 0.5 * data 1 = 1; history 2 * 0.9 + 1 * 0.1 (each product
    # rounded to float32, then the sum); data 1 - that; diff and history hold it
    data, diff, history = (torch.tensor([v], dtype=torch.float32) for v in (1.0, 0.5, 2.0))
    fused_sgd._run(data, diff, history, 0.5, 0.9, 0.1)
    value = np.float32(2.0) * np.float32(0.9) + np.float32(1.0) * np.float32(0.1)
    assert history.item() == diff.item() == value
    assert data.item() == np.float32(1.0) - value


SOLVER = """train_net: "{net}" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9
weight_decay: 0.0005 display: 0 max_iter: 100 random_seed: 3 {extra}"""

NET = """layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 dim: 64 dim: 64 } shape { dim: 4 }
                     data_filler { type: "gaussian" std: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  param { lr_mult: 1 decay_mult: 2 } param { lr_mult: 0 decay_mult: 0 }
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def _trained(tmp_path, monkeypatch, fused: bool, solver_type=SGDSolver, extra=""):
    net = tmp_path / "net.prototxt"
    net.write_text(NET)
    path = tmp_path / "solver.prototxt"
    path.write_text(SOLVER.format(net=net, extra=extra))
    calls = []
    real = fused_sgd.update
    monkeypatch.setattr(fused_sgd, "update", lambda *a: (calls.append(1), real(*a)))
    if not fused:
        monkeypatch.setenv(fused_sgd.ENV, "0")
    solver = solver_type(str(path))
    solver.step(4)
    monkeypatch.delenv(fused_sgd.ENV, raising=False)
    state = [b.data.copy() for blobs in solver.net.params.values() for b in blobs]
    state += [b.diff.copy() for blobs in solver.net.params.values() for b in blobs]
    return state + [h.numpy().copy() for h in solver.history], len(calls)


@needs_fused
def test_solver_steps_are_the_same_bits_with_the_fused_update(tmp_path, monkeypatch):
    fused, used = _trained(tmp_path, monkeypatch, fused=True)
    plain, unused = _trained(tmp_path, monkeypatch, fused=False)
    assert used == 4 and unused == 0
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a, b)


def test_other_solvers_and_l1_keep_the_torch_ops(tmp_path, monkeypatch):
    _, used = _trained(tmp_path, monkeypatch, fused=True, solver_type=AdamSolver,
                       extra='type: "Adam" momentum2: 0.999')
    assert used == 0
    _, used = _trained(tmp_path, monkeypatch, fused=True, extra='regularization_type: "L1"')
    assert used == 0


def test_offered_wherever_it_can_be_built(monkeypatch):
    """Where this CPU is one it is built for and a compiler exists, the
    fused update must pass its check against torch's ops (else every
    solver here quietly runs the six passes)."""
    import shutil

    from torchcaffe import native

    if fused_sgd._flags() is None or shutil.which(native._compiler()) is None:
        pytest.skip("not offered here")
    monkeypatch.delenv(fused_sgd.ENV, raising=False)
    assert fused_sgd.available()
    monkeypatch.setenv(fused_sgd.ENV, "0")
    assert not fused_sgd.available()


def test_a_bad_setting_is_named(monkeypatch):
    from torchcaffe.errors import CaffeError

    monkeypatch.setenv(fused_sgd.ENV, "yes")
    with pytest.raises(CaffeError, match=r"TORCHCAFFE_FUSED_SGD='yes': use 1 .* or 0"):
        fused_sgd.available()
