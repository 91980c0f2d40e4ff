"""Neuron and normalization layers on hand-derived values: the edge cases the
Caffe-computed golden cases leave out (Power's special cases and its
backward formula, gradients at kinks and bounds, parameter errors,
BatchNorm's statistics bookkeeping, MVN's eps on the standard deviation)."""
import math

import numpy as np
import pytest
import torch

import torchcaffe as caffe
from test_layers_numerics import grads, run
from test_layers_shapes import TRAIN, make_layer
from torchcaffe.errors import LayerError
from torchcaffe.prototxt import parse_net_text


def net_from(text: str, phase=caffe.TEST) -> caffe.Net:
    return caffe.Net(parse_net_text(text), phase=phase)


def input_layer(name: str, *dims: int) -> str:
    shape = " ".join(f"dim: {d}" for d in dims)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {shape} }} }} }}\n'


# ---------------------------------------------------------------- Power

def power(params: str) -> str:
    return f'type: "Power" power_param {{ {params} }}'


@pytest.mark.parametrize("params, value", [
    ("power: 0 scale: 3 shift: 2", 1.0),   # power 0: always 1
    ("power: 2 scale: 0 shift: 3", 9.0),   # scale 0: shift ** power
    ("power: 0.5 scale: 0 shift: -1", math.nan),
    ("power: -1 scale: 0 shift: 0", math.inf),
])
def test_power_that_ignores_its_input_is_constant_with_zero_gradient(params, value):
    net = net_from("force_backward: true\n" + input_layer("data", 3)
                   + f'layer {{ name: "p" {power(params)} bottom: "data" top: "y" }}\n')
    net.blobs["data"].data[...] = [-1.0, 0.0, 2.5]
    net.forward()
    np.testing.assert_array_equal(net.blobs["y"].data, np.full(3, value, np.float32))
    net.blobs["data"].diff[...] = 7.0
    net.blobs["y"].diff[...] = [1.0, 2.0, 3.0]
    net.backward()
    np.testing.assert_array_equal(net.blobs["data"].diff, np.zeros(3))


@pytest.mark.parametrize("params, x, y, dy", [
    ("power: 1 scale: -2 shift: 0.5", 3.0, -5.5, -2.0),      # linear: diff_scale
    ("power: 2 scale: 3 shift: 1", 1.0, 16.0, 24.0),         # 2 * 3 * (3 * 1 + 1)
    ("power: 0.5 scale: 1 shift: 0", 4.0, 2.0, 0.25),        # shift 0: power * y / x
    ("power: 2.5 scale: 2 shift: 1", 1.5, 32.0, 40.0),       # 2.5 * 2 * 32 / 4
    ("power: -1 scale: 1 shift: 1", 1.0, 0.5, -0.25),        # -1 * 0.5 / 2
])
def test_power_values_and_gradients(params, x, y, dy):
    top, (gx,) = grads(power(params), torch.tensor([x]))
    assert top.item() == pytest.approx(y, rel=1e-6)
    assert gx.item() == pytest.approx(dy, rel=1e-6)


def test_power_backward_divides_by_the_base_as_caffe_does():
    # y = x^3 at x = 0: Caffe forms dy/dx = power * y / x = 0/0, not calculus' 0
    _, (gx,) = grads(power("power: 3"), torch.tensor([0.0, 2.0]))
    assert math.isnan(gx[0].item())
    assert gx[1].item() == pytest.approx(12.0)


# ---------------------------------------------------------------- Exp, Log

def test_exp_base_scale_shift():
    # 2 ** (1 + 2x) at x = 1.5: 16; gradient 16 * ln 2 * 2
    y, (gx,) = grads('type: "Exp" exp_param { base: 2 scale: 2 shift: 1 }', torch.tensor([1.5]))
    assert y.item() == pytest.approx(16.0, rel=1e-6)
    assert gx.item() == pytest.approx(32 * math.log(2), rel=1e-6)
    y, (gx,) = grads('type: "Exp"', torch.tensor([1.0]))   # base -1: e
    assert y.item() == pytest.approx(math.e, rel=1e-6) and gx.item() == pytest.approx(math.e, rel=1e-6)
    (y,) = run('type: "Exp" exp_param { base: 10 shift: 400 }', torch.tensor([0.0]))
    assert y.item() == math.inf                          # float overflow, as Caffe's pow


def test_exp_base_one_is_constant():
    y, (gx,) = grads('type: "Exp" exp_param { base: 1 shift: 2 }', torch.tensor([-3.0, 7.0]))
    torch.testing.assert_close(y, torch.ones(2))
    assert torch.count_nonzero(gx) == 0


def test_log_base_scale_shift():
    # log10(2x + 1) at x = 4.5: 1; gradient 2 / (10 ln 10)
    y, (gx,) = grads('type: "Log" log_param { base: 10 scale: 2 shift: 1 }', torch.tensor([4.5]))
    assert y.item() == pytest.approx(1.0, rel=1e-6)
    assert gx.item() == pytest.approx(2 / (10 * math.log(10)), rel=1e-6)


@pytest.mark.parametrize("text, field", [
    ('type: "Exp" exp_param { base: 0 }', "exp_param.base"),
    ('type: "Exp" exp_param { base: -2 }', "exp_param.base"),
    ('type: "Log" log_param { base: -0.5 }', "log_param.base"),
    ('type: "Log" log_param { base: 1 }', "log_param.base"),
])
def test_exp_and_log_refuse_bad_bases(text, field):
    with pytest.raises(LayerError, match=f"under_test.*{field}"):
        make_layer(text, [(2,)])


# ---------------------------------------------------------------- kinks and bounds

def test_clip_gradient_passes_at_the_bounds():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.8, 1.0])
    y, (gx,) = grads('type: "Clip" clip_param { min: -0.5 max: 0.8 }', x)
    torch.testing.assert_close(y, torch.tensor([-0.5, -0.5, 0.0, 0.8, 0.8]))
    torch.testing.assert_close(gx, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


@pytest.mark.parametrize("params, message", [
    ("min: 1 max: 0", "min 1.0 is greater than clip_param.max 0.0"),
    ("min: 1", "clip_param.max is required"),
])
def test_clip_parameter_errors(params, message):
    with pytest.raises(LayerError, match=message):
        make_layer(f'type: "Clip" clip_param {{ {params} }}', [(2,)])


def test_threshold_outputs_indicator_and_propagates_nothing():
    x = torch.tensor([0.2, 0.3, 0.31]).requires_grad_()
    (y,) = run('type: "Threshold" threshold_param { threshold: 0.3 }', x)
    torch.testing.assert_close(y, torch.tensor([0.0, 0.0, 1.0]))
    assert not y.requires_grad


def test_absval_gradient_is_sign_and_in_place_is_refused():
    _, (gx,) = grads('type: "AbsVal"', torch.tensor([-2.0, 0.0, 3.0]))
    torch.testing.assert_close(gx, torch.tensor([-1.0, 0.0, 1.0]))
    with pytest.raises(LayerError, match="in-place"):
        make_layer('type: "AbsVal" bottom: "x" top: "x"', [(2,)])


def test_elu_bnll_swish_values_and_gradients():
    y, (gx,) = grads('type: "ELU" elu_param { alpha: 0.5 }', torch.tensor([-1.0, 0.0, 2.0]))
    torch.testing.assert_close(y, torch.tensor([0.5 * (math.exp(-1) - 1), 0.0, 2.0]))
    torch.testing.assert_close(gx, torch.tensor([0.5 * math.exp(-1), 0.5, 1.0]))  # alpha at 0
    y, (gx,) = grads('type: "BNLL"', torch.tensor([0.0, 100.0, -100.0]))
    torch.testing.assert_close(y, torch.tensor([math.log(2), 100.0, 0.0]))
    torch.testing.assert_close(gx, torch.tensor([0.5, 1.0, 0.0]))
    s = 1 / (1 + math.exp(-2))
    y, (gx,) = grads('type: "Swish" swish_param { beta: 2 }', torch.tensor([1.0]))
    assert y.item() == pytest.approx(s, rel=1e-6)
    assert gx.item() == pytest.approx(2 * s + s * (1 - 2 * s), rel=1e-6)


# ---------------------------------------------------------------- PReLU

def test_prelu_channel_shared_has_one_scalar_slope():
    layer, _ = make_layer('type: "PReLU" prelu_param { channel_shared: true }', [(2, 3, 2)])
    assert layer.blobs[0].shape == () and layer.blobs[0].item() == 0.25
    slope = torch.tensor(0.5, requires_grad=True)
    layer.blobs = [slope]
    x = torch.tensor([[[-2.0, 1.0], [0.0, -4.0], [3.0, -1.0]]] * 2).requires_grad_()
    (y,) = layer.forward([x])
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(y[0], torch.tensor([[-1.0, 1.0], [0.0, -2.0], [3.0, -0.5]]))
    # the slope gathers x over every channel where x <= 0: 2 * (-2 - 4 - 1)
    assert slope.grad.item() == pytest.approx(-14.0)
    torch.testing.assert_close(x.grad[0], torch.tensor([[0.5, 1.0], [0.5, 0.5], [1.0, 0.5]]))


def test_prelu_per_channel_default_and_filler():
    layer, _ = make_layer('type: "PReLU"', [(1, 3, 2, 2)])
    torch.testing.assert_close(layer.blobs[0], torch.full((3,), 0.25))
    layer, _ = make_layer('type: "PReLU" prelu_param { filler { type: "constant" value: -1 } }',
                          [(1, 2)])
    torch.testing.assert_close(layer.blobs[0], torch.full((2,), -1.0))
    with pytest.raises(LayerError, match="at least 2 axes"):
        make_layer('type: "PReLU"', [(4,)])
    with pytest.raises(LayerError, match="more than the 4 axes"):
        make_layer('type: "PReLU"', [(1, 2, 1, 1, 3)])
    layer, _ = make_layer('type: "PReLU"', [(1, 3, 2)])
    with pytest.raises(LayerError, match="bottom has 2 channels, the slopes 3"):
        layer.reshape([(1, 2, 2)])


def test_prelu_in_place_matches_the_separate_top():
    body = (input_layer("data", 1, 2, 3)
            + 'layer { name: "scale" type: "Scale" bottom: "data" top: "s" '
              'scale_param { filler { type: "constant" value: 2 } } }\n')
    separate = net_from("force_backward: true\n" + body
                        + 'layer { name: "p" type: "PReLU" bottom: "s" top: "y" }\n')
    in_place = net_from("force_backward: true\n" + body
                        + 'layer { name: "p" type: "PReLU" bottom: "s" top: "s" }\n')
    x = np.array([[[-1, 2, -3], [4, -5, 0]]], np.float32)
    g = np.array([[[1, 2, 3], [4, 5, 6]]], np.float32)
    outs = []
    for net, top in ((separate, "y"), (in_place, "s")):
        net.blobs["data"].data[...] = x
        net.forward()
        net.blobs[top].diff[...] = g
        net.backward()
        outs.append((net.blobs[top].data.copy(), net.blobs["data"].diff.copy(),
                     net.params["p"][0].diff.copy()))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(outs[0][0], np.where(x > 0, 2 * x, 0.5 * x))
    # slope diff: sum of g * s where s <= 0, per channel: (1*-2 + 3*-6), (5*-10 + 6*0)
    np.testing.assert_allclose(outs[0][2], [-20.0, -50.0])


# ---------------------------------------------------------------- BatchNorm

def batch_norm(params: str = "", param_specs: str = "") -> str:
    return f'type: "BatchNorm" {param_specs} batch_norm_param {{ {params} }}'


def test_batchnorm_test_with_zero_scale_factor_uses_zero_statistics():
    layer, _ = make_layer(batch_norm(), [(2, 2)])
    layer.blobs = [torch.tensor([5.0, 5.0]), torch.tensor([9.0, 9.0]), torch.tensor([0.0])]
    x = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    (y,) = layer.forward([x])
    torch.testing.assert_close(y, x / math.sqrt(1e-5))


def test_batchnorm_global_stats_divide_by_the_scale_factor():
    layer, _ = make_layer(batch_norm("eps: 0"), [(1, 1, 2)])
    layer.blobs = [torch.tensor([2.0]), torch.tensor([8.0]), torch.tensor([2.0])]  # mean 1, var 4
    y, (gx,) = grads_with(layer, torch.tensor([[[3.0, -1.0]]]))
    torch.testing.assert_close(y, torch.tensor([[[1.0, -1.0]]]))
    torch.testing.assert_close(gx, torch.full((1, 1, 2), 0.5))


def grads_with(layer, x):
    leaf = x.clone().requires_grad_()
    (y,) = layer.forward([leaf])
    y.backward(torch.ones_like(y))
    return y.detach(), [leaf.grad]


def test_batchnorm_train_updates_running_statistics_as_caffe():
    layer, _ = make_layer(batch_norm("moving_average_fraction: 0.5 eps: 0"), [(4, 1)], TRAIN)
    layer.blobs = [torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([1.0])]
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]])   # mean 3, variance 3.5 (14/3 unbiased)
    (y,) = layer.forward([x])
    torch.testing.assert_close(y, (x - 3) / math.sqrt(3.5))
    mean_sum, var_sum, factor = layer.blobs
    assert factor.item() == pytest.approx(1.5)          # 1 * 0.5 + 1
    assert mean_sum.item() == pytest.approx(4.0)        # 3 + 0.5 * 2
    assert var_sum.item() == pytest.approx(14 / 3 + 0.5, rel=1e-6)


def test_batchnorm_statistics_are_not_learned():
    text = input_layer("data", 2, 3) + 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "y" }\n'
    net = net_from(text, caffe.TRAIN)
    assert net.params_lr == [0.0, 0.0, 0.0]
    with pytest.raises(LayerError, match=r"layer 'bn'.*param\[1\]\.lr_mult must be 0"):
        net_from(text.replace('top: "y"', 'top: "y" param { lr_mult: 0 } param { lr_mult: 1 }'))


def test_batchnorm_shape_errors():
    with pytest.raises(LayerError, match="at least 2 axes"):
        make_layer(batch_norm(), [(5,)])
    layer, _ = make_layer(batch_norm(), [(2, 3, 4)])
    with pytest.raises(LayerError, match="3 channels"):
        layer.reshape([(2, 4, 4)])


# ---------------------------------------------------------------- Bias, MVN

def test_bias_broadcast_and_errors():
    layer, tops = make_layer('type: "Bias" bias_param { axis: 0 num_axes: 0 '
                             'filler { type: "constant" value: 1.5 } }', [(2, 3)])
    assert tops == [(2, 3)] and layer.blobs[0].shape == ()
    (y,) = layer.forward([torch.zeros(2, 3)])
    torch.testing.assert_close(y, torch.full((2, 3), 1.5))
    with pytest.raises(LayerError, match="num_axes must be >= -1"):
        make_layer('type: "Bias" bias_param { num_axes: -2 }', [(2, 3)])
    with pytest.raises(LayerError, match="would span axes 1..2"):
        make_layer('type: "Bias" bias_param { axis: 1 num_axes: 2 }', [(2, 3)])
    with pytest.raises(LayerError, match=r"bias of shape \[4\] does not match"):
        make_layer('type: "Bias"', [(2, 3), (4,)])


def test_mvn_adds_eps_to_the_standard_deviation():
    x = torch.tensor([[[0.0, 2.0]]])                     # one channel: mean 1, std 1
    layer, tops = make_layer('type: "MVN" mvn_param { eps: 1 }', [(1, 1, 2)])
    assert tops == [(1, 1, 2, 1)]                        # Caffe's top is 4-d
    leaf = x.clone().requires_grad_()
    (y,) = layer.forward([leaf])
    y.backward(torch.tensor([1.0, 0.0]).reshape(1, 1, 2, 1))
    torch.testing.assert_close(y.flatten(), torch.tensor([-0.5, 0.5]))   # / (1 + 1)
    # Caffe's backward: (dy - mean(dy) - y mean(y dy)) / (std + eps)
    #                 = ([1, 0] - 0.5 - [-0.5, 0.5] * -0.25) / 2
    torch.testing.assert_close(leaf.grad.flatten(), torch.tensor([0.1875, -0.1875]))


def test_mvn_across_channels_and_mean_only():
    x = torch.tensor([[[1.0], [3.0]], [[0.0], [4.0]]])   # (2, 2, 1)
    (y,) = run('type: "MVN" mvn_param { normalize_variance: false across_channels: true }', x)
    torch.testing.assert_close(y.reshape(2, 2), torch.tensor([[-1.0, 1.0], [-2.0, 2.0]]))
    with pytest.raises(LayerError, match="more than the 4 axes"):
        make_layer('type: "MVN"', [(1, 1, 1, 1, 2)])
