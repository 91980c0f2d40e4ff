"""Kernel choice: every implementation computes Caffe's sums (against
explicit loops and finite differences), Caffe's backward decisions hold
under each, and the choice is cached, overridable and robust to a bad
cache file. The golden suites themselves run under every policy
(tests/conftest.py)."""
import dataclasses
import json
import logging
import math
import os
import signal
import time

import numpy as np
import pytest
import torch

import torchcaffe
from torchcaffe import kernel_choice, kernels
from torchcaffe.errors import CaffeError
from torchcaffe.kernels import Window

# (channels in, out, kernel, stride, pad, dilation, group, height, width, bias)
GEOMETRIES = [
    (3, 4, (3, 3), 1, 1, 1, 1, 7, 9, True),
    (4, 6, (3, 2), 2, 0, 1, 2, 9, 8, False),
    (6, 6, (5, 5), 3, 2, 2, 3, 13, 11, True),
    (8, 5, (1, 1), 1, 0, 1, 1, 5, 6, True),      # 1x1: the columns are the image
    (8, 4, (1, 1), 2, 1, 1, 2, 5, 7, False),     # 1x1 with stride and pad
    (2, 3, (7, 7), 1, 0, 1, 1, 12, 15, True),    # fc6-like
]
IDS = [f"k{g[2][0]}x{g[2][1]}-s{g[3]}-p{g[4]}-d{g[5]}-g{g[6]}-{'bias' if g[9] else 'nobias'}"
       for g in GEOMETRIES]


def _window(g) -> Window:
    _, _, kernel, s, p, d, groups, *_ = g
    return Window(kernel, (s, s), (p, p), (d, d), groups)


def conv_loops(x, w, b, window: Window):
    """Caffe's convolution as written in its definition: explicit sums."""
    n, c, h, wd = x.shape
    o, cg = w.shape[:2]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = window.kernel, window.stride, window.pad, window.dilation
    oh, ow = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1, (wd + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    padded = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    padded[:, :, ph:ph + h, pw:pw + wd] = x
    out = np.zeros((n, o, oh, ow))
    per_group = o // window.groups
    for oc in range(o):
        g = oc // per_group
        for i in range(kh):
            for j in range(kw):
                patch = padded[:, g * cg:(g + 1) * cg, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                               j * dw:j * dw + sw * (ow - 1) + 1:sw]
                out[:, oc] += np.einsum("nchw,c->nhw", patch, w[oc, :, i, j])
    return out + (b[None, :, None, None] if b is not None else 0)


def deconv_loops(x, w, b, window: Window):
    """Caffe's deconvolution by definition: each input value scatters its
    kernel (times the value) onto the output, stride apart, minus the pad."""
    n, c, h, wd = x.shape
    og = w.shape[1]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = window.kernel, window.stride, window.pad, window.dilation
    full_h, full_w = sh * (h - 1) + dh * (kh - 1) + 1, sw * (wd - 1) + dw * (kw - 1) + 1
    out = np.zeros((n, og * window.groups, full_h, full_w))
    per_group = c // window.groups
    for ic in range(c):
        g = ic // per_group
        for i in range(kh):
            for j in range(kw):
                out[:, g * og:(g + 1) * og, i * dh:i * dh + sh * (h - 1) + 1:sh,
                    j * dw:j * dw + sw * (wd - 1) + 1:sw] += \
                    x[:, ic][:, None] * w[ic, :, i, j][None, :, None, None]
    out = out[:, :, ph:full_h - ph, pw:full_w - pw]
    return out + (b[None, :, None, None] if b is not None else 0)


def _tensors(g, transposed: bool, dtype=torch.float32):
    c, o, kernel, *_, groups, h, w, bias = g
    gen = torch.Generator().manual_seed(sum(kernel) + c)
    shape = (c, o // groups) + kernel if transposed else (o, c // groups) + kernel
    return (torch.randn(2, c, h, w, generator=gen, dtype=dtype),
            torch.randn(shape, generator=gen, dtype=dtype),
            torch.randn(o, generator=gen, dtype=dtype) if bias else None)


@pytest.mark.parametrize("family, reference", [("Convolution", conv_loops),
                                               ("Deconvolution", deconv_loops)])
@pytest.mark.parametrize("g", GEOMETRIES, ids=IDS)
@pytest.mark.parametrize("name", ["direct", "channels_last", "im2col", "im2col_openblas",
                                  "im2col_openblas/direct"])
@pytest.mark.parametrize("band_bytes", [kernels.COLUMN_BYTES, 64], ids=["one-band", "bands"])
def test_forward_equals_explicit_sums(family, reference, g, name, band_bytes, monkeypatch):
    # tiny bands: one output row at a time, edge bands reading the pad
    monkeypatch.setattr(kernels, "COLUMN_BYTES", band_bytes)
    x, w, b = _tensors(g, family == "Deconvolution")
    window = _window(g)
    got = kernels.kernel(family, name)(x, w, b, window)
    expected = reference(x.double().numpy(), w.double().numpy(),
                         None if b is None else b.double().numpy(), window)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


# small enough for finite differences: (in, out, kernel, stride, pad, dilation, group, h, w, bias)
SMALL = [(2, 2, (3, 3), 1, 1, 1, 1, 4, 5, True), (4, 2, (3, 2), 2, 1, 2, 2, 6, 5, False),
         (2, 4, (1, 1), 1, 0, 1, 2, 3, 4, True)]


@pytest.mark.parametrize("family", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("g", SMALL, ids=["k3", "k3x2-s2-p1-d2-g2", "k1-g2"])
@pytest.mark.parametrize("name", ["im2col", "im2col_openblas", "channels_last/im2col_openblas"])
def test_gradients_equal_finite_differences(family, g, name, monkeypatch):
    monkeypatch.setattr(kernels, "COLUMN_BYTES", 64)
    x, w, b = (None if t is None else t.requires_grad_()
               for t in _tensors(g, family == "Deconvolution", torch.float64))
    fn = kernels.kernel(family, name)
    window = _window(g)
    inputs = (x, w) if b is None else (x, w, b)
    assert torch.autograd.gradcheck(lambda *t: fn(t[0], t[1], t[2] if len(t) > 2 else None, window),
                                    inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("family", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("name", ["channels_last", "im2col", "im2col_openblas",
                                  "direct/im2col_openblas", "im2col_openblas/channels_last"])
@pytest.mark.parametrize("g", GEOMETRIES, ids=IDS)
def test_gradients_equal_torch_operator(family, name, g):
    """Each kernel's input, weight and bias gradients against oneDNN's."""
    window = _window(g)
    results = []
    for kernel in ("direct", name):
        x, w, b = (None if t is None else t.requires_grad_()
                   for t in _tensors(g, family == "Deconvolution"))
        y = kernels.kernel(family, kernel)(x, w, b, window)
        y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
        results.append([t.grad for t in (x, w, b) if t is not None])
    for got, expected in zip(results[1], results[0]):
        scale = float(expected.abs().max())
        assert float((got - expected).abs().max()) <= 1e-5 * scale


def conv_weight_grad_loops(grad, x, window: Window):
    """Caffe's weight gradient by its definition: per tap, the sum over items
    and output positions of the output gradient times the input it saw."""
    n, c, h, wd = x.shape
    _, o, oh, ow = grad.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = window.kernel, window.stride, window.pad, window.dilation
    padded = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    padded[:, :, ph:ph + h, pw:pw + wd] = x
    out = np.zeros((o, c, kh, kw))
    for i in range(kh):
        for j in range(kw):
            patch = padded[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                           j * dw:j * dw + sw * (ow - 1) + 1:sw]
            out[:, :, i, j] = np.einsum("nohw,nchw->oc", grad, patch)
    return out


# the geometries tap_gemm computes (stride 1, no groups): (in, out, kernel,
# pad, dilation, items, height, width)
TAP_GEOMETRIES = [
    (3, 4, (3, 3), 1, 1, 2, 7, 9),
    (2, 3, (7, 7), 0, 1, 1, 12, 15),   # fc6-like
    (3, 2, (3, 3), 6, 1, 2, 4, 5),     # conv1_1-like: the pad wider than the image
    (4, 3, (3, 2), (2, 1), 2, 3, 9, 8),  # dilated, rectangular, pads per axis
    (5, 4, (1, 1), 0, 1, 2, 5, 6),
    (2, 2, (5, 5), 0, 1, 2, 5, 5),     # one output position per item
]


@pytest.mark.parametrize("g", TAP_GEOMETRIES, ids=lambda g: f"k{g[2]}-p{g[3]}-d{g[4]}-n{g[5]}")
def test_tap_gemm_gradients_equal_explicit_sums(g):
    c, o, kernel, pad, dilation, items, h, w = g
    pad = pad if isinstance(pad, tuple) else (pad, pad)
    window = Window(kernel, (1, 1), pad, (dilation, dilation), 1)
    gen = torch.Generator().manual_seed(sum(kernel) + c + items)
    x = torch.randn(items, c, h, w, generator=gen).requires_grad_()
    weight = torch.randn((o, c) + kernel, generator=gen).requires_grad_()
    bias = torch.randn(o, generator=gen).requires_grad_()
    y = kernels.kernel("Convolution", "tap_gemm")(x, weight, bias, window)
    # a gradient that is a strided view, as a Split or Crop can hand over
    grad = torch.randn(y.shape[:2] + (y.shape[2], 2 * y.shape[3]), generator=gen)[..., ::2]
    y.backward(grad)
    expected_w = conv_weight_grad_loops(grad.double().numpy(), x.detach().double().numpy(), window)
    np.testing.assert_allclose(weight.grad.numpy(), expected_w, rtol=0,
                               atol=1e-5 * np.abs(expected_w).max())
    np.testing.assert_allclose(bias.grad.numpy(), grad.double().sum((0, 2, 3)).numpy(),
                               rtol=1e-5, atol=1e-5)
    # the input gradient is oneDNN's, the forward direct's
    x2, w2 = x.detach().requires_grad_(), weight.detach().requires_grad_()
    y2 = kernels.kernel("Convolution", "direct")(x2, w2, bias.detach(), window)
    y2.backward(grad)
    assert torch.equal(y, y2) and torch.equal(x.grad, x2.grad)


def test_tap_gemm_gradients_equal_finite_differences():
    window = Window((3, 2), (1, 1), (1, 2), (2, 1), 1)
    gen = torch.Generator().manual_seed(3)
    x, w, b = (torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_()
               for s in ((2, 2, 6, 5), (3, 2, 3, 2), (3,)))
    fn = kernels.kernel("Convolution", "tap_gemm")
    assert torch.autograd.gradcheck(lambda *t: fn(*t, window), (x, w, b), eps=1e-6, atol=1e-6)


def test_tap_gemm_is_a_backward_offered_where_it_computes_the_layer():
    x = torch.ones(1, 4, 9, 9)

    def offered(stride=1, groups=1, dilation=1, differentiated=True, family="Convolution", t=x):
        window = Window((3, 3), (stride, stride), (1, 1), (dilation, dilation), groups)
        return "tap_gemm" in kernel_choice.candidates(family, t, (window,),
                                                      differentiated=differentiated)

    assert offered() and offered(dilation=2)
    assert not offered(stride=2) and not offered(groups=2) and not offered(family="Deconvolution")
    assert not offered(t=torch.ones(1, 4, 9, 9, 9))
    # no backward, nothing for it to do; and its forward, direct's, is not raced twice
    assert not offered(differentiated=False)


@pytest.mark.parametrize("name", ["im2col", "direct/im2col_openblas", "im2col_openblas/direct"])
def test_only_the_wanted_gradients_are_computed(name, monkeypatch):
    """No input gradient where autograd does not ask for one (Caffe's
    propagate_down false), no weight gradient for a frozen weight."""
    asked = []
    for family in kernels.FAMILIES.values():
        for method_name, method in family.items():
            def backward(*args, real=method.backward):
                asked.append(tuple(args[4]))
                return real(*args)
            monkeypatch.setitem(family, method_name, dataclasses.replace(method,
                                                                         backward=backward))
    g = GEOMETRIES[0]
    x, w, b = _tensors(g, False)
    w.requires_grad_()
    kernels.kernel("Convolution", name)(x, w, b, _window(g)).sum().backward()
    assert x.grad is None and w.grad is not None
    x, w, _ = _tensors(g, True)
    x.requires_grad_()
    kernels.kernel("Deconvolution", name)(x, w, None, _window(g)).sum().backward()
    assert x.grad is not None and w.grad is None
    assert asked == [(False, True, False), (True, False, False)]


@pytest.mark.parametrize("name", ["linear", "addmm", "addmm_openblas", "linear/addmm_openblas",
                                  "addmm_openblas/addmm"])
@pytest.mark.parametrize("bias", [True, False])
def test_inner_product_kernels(name, bias):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    got = kernels.kernel("InnerProduct", name)(x, w, b)
    expected = np.einsum("abk,ok->abo", x.detach().numpy(), w.detach().numpy())
    if bias:
        expected = expected + b.detach().numpy()
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    inputs = (x, w) if b is None else (x, w, b)
    assert torch.autograd.gradcheck(
        lambda *t: kernels.kernel("InnerProduct", name)(t[0], t[1], t[2] if len(t) > 2 else None),
        inputs)


# ---------------------------------------------------------------- through a Net

NET = """
force_backward: {force}
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: 9 dim: 11 }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 1
    weight_filler {{ type: "gaussian" std: 0.3 }} bias_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" propagate_down: false
  convolution_param {{ num_output: 4 kernel_size: 1 group: 2 bias_term: false
    weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "up" type: "Deconvolution" bottom: "conv2" top: "up"
  param {{ lr_mult: 0 }}
  convolution_param {{ num_output: 2 kernel_size: 4 stride: 2 dilation: 2 group: 2
    weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "up" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "target" type: "Input" top: "target" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }}
"""


def _run_net(tmp_path, policy: str, force: bool):
    path = tmp_path / f"net_{force}.prototxt"
    path.write_text(NET.format(force=str(force).lower()))
    torchcaffe.set_random_seed(5)
    with kernel_choice.policy(policy):
        net = torchcaffe.Net(str(path), torchcaffe.TRAIN)
        net.blobs["data"].data[...] = np.linspace(-1, 1, net.blobs["data"].count).reshape(
            net.blobs["data"].shape)
        net.blobs["target"].data[...] = [[1, -2, 3], [0.5, 0, -1]]
        net.forward()
        net.backward()
        kernels_run = {h.name: h.impl.kernel_name for h in net._handles
                       if hasattr(h.impl, "kernel_name")}
        blobs = {n: (b.data.copy(), b.diff.copy()) for n, b in net.blobs.items()}
        params = {n: [(p.data.copy(), p.diff.copy()) for p in ps] for n, ps in net.params.items()}
    return kernels_run, blobs, params


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("policy", ["im2col,addmm", "channels_last", "im2col_openblas,addmm_openblas",
                                    "direct/im2col_openblas,linear/addmm_openblas"])
def test_net_results_and_backward_decisions_under_each_policy(tmp_path, policy, force):
    ran_default, blobs_default, params_default = _run_net(tmp_path, "default", force)
    ran, blobs, params = _run_net(tmp_path, policy, force)
    assert set(ran_default.values()) == {"direct", "linear"}
    forced = policy.split(",")
    types = {"conv1": "Convolution", "conv2": "Convolution", "up": "Deconvolution",
             "ip": "InnerProduct"}
    for layer, family in types.items():
        names = [n for n in forced
                 if all(m in kernels.FAMILIES[family] for m in kernels.split_name(n))]
        assert ran[layer] == (names[0] if names else ran_default[layer]), layer
    for name, (data, diff) in blobs_default.items():
        np.testing.assert_allclose(blobs[name][0], data, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(blobs[name][1], diff, rtol=1e-5, atol=1e-6, err_msg=name)
    for name, pairs in params_default.items():
        for (data, diff), (got_data, got_diff) in zip(pairs, params[name]):
            np.testing.assert_allclose(got_diff, diff, rtol=1e-5, atol=1e-6, err_msg=name)
    assert params["conv2"][0][1].any() and params["ip"][0][1].any()
    if not force:
        # propagate_down false on conv2: nothing reaches conv1; the input
        # needs no diff; lr_mult 0 on the deconvolution: no weight diff
        assert not blobs["conv1"][1].any() and not params["conv1"][0][1].any()
        assert not blobs["data"][1].any()
        assert not params["up"][0][1].any()


# ---------------------------------------------------------------- policy, cache

def test_policy_parsing():
    p = kernel_choice.parse_policy("auto, fc6=im2col ,fc7=direct")
    assert p.default == ("auto",) and p.for_layer("fc6") == ("im2col",)
    assert p.for_layer("conv1") == ("auto",)
    assert kernel_choice.parse_policy("im2col,addmm").default == ("im2col", "addmm")
    with pytest.raises(CaffeError, match="TORCHCAFFE_KERNELS: unknown kernel choice 'fast'"):
        kernel_choice.parse_policy("fc6=fast")
    assert kernel_choice.parse_policy("fc6=direct/im2col_openblas").for_layer("fc6") == \
        ("direct/im2col_openblas",)
    for bad in ("direct/fast", "direct/im2col/im2col", "auto/direct"):
        with pytest.raises(CaffeError, match="unknown kernel choice"):
            kernel_choice.parse_policy(bad)


def test_environment_sets_the_policy(monkeypatch):
    monkeypatch.setenv("TORCHCAFFE_KERNELS", "default,conv=im2col")
    with kernel_choice.policy(None):
        assert kernel_choice.current_policy().for_layer("conv") == ("im2col",)
        assert kernel_choice.current_policy().for_layer("other") == ("default",)


CONV_METHODS = ["channels_last", "direct", "im2col", "im2col_openblas"] + \
    (["winograd"] if torch.backends.nnpack.is_available() else [])
# winograd is for inference only, tap_gemm a backward only
TRAINING_METHODS = sorted([m for m in CONV_METHODS if m != "winograd"] + ["tap_gemm"])


def _is_conv_kernel(name: str) -> bool:
    return all(part in CONV_METHODS for part in kernels.split_name(name))


def _choose(layer="conv", shape=(1, 8, 12, 12)):
    x = torch.ones(shape)
    w = torch.ones(16, 8, 3, 3, requires_grad=True)
    window = Window((3, 3), (1, 1), (1, 1), (1, 1), 1)
    return kernel_choice.choose(layer, "Convolution", 10**9, x, w, None, window)[0]


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """Measure every layer, into a fresh cache file; record what was measured."""
    path = tmp_path / "cache" / "kernels.json"
    monkeypatch.setenv("TORCHCAFFE_KERNEL_CACHE", str(path))
    monkeypatch.setattr(kernel_choice, "_cache", kernel_choice._Cache())
    calls = []
    real = kernel_choice._measure

    def measure(impls, *args):
        calls.append(sorted(impls))
        return real(impls, *args)

    monkeypatch.setattr(kernel_choice, "_measure", measure)
    # as in a fresh process: NNPACK's pool not yet pinned to an earlier test's thread count
    monkeypatch.setattr(kernels.NNPACK, "threads", None)
    with kernel_choice.policy("auto"):
        yield path, calls


def test_choice_is_measured_once_and_survives_a_new_process(measured, monkeypatch):
    path, calls = measured
    state = torch.get_rng_state()
    with torch.enable_grad():
        first = _choose()
        assert _choose() == first
    assert torch.equal(torch.get_rng_state(), state), "measuring must not draw from torch's RNG"
    assert calls == [TRAINING_METHODS]
    entries = json.loads(path.read_text())["entries"]
    (key, entry), = entries.items()
    assert entry["kernel"] == first
    raced = {phase: set(entry[phase]["seconds"]) | set(entry[phase]["dropped"])
             for phase in ("forward", "backward")}
    assert raced == {"forward": set(TRAINING_METHODS) - {"tap_gemm"},
                     "backward": set(TRAINING_METHODS)}
    assert "x=1x8x12x12" in key and "grad=w" in key and f"threads={torch.get_num_threads()}" in key
    # a new process: an empty in-memory cache reads the file instead of measuring
    monkeypatch.setattr(kernel_choice, "_cache", kernel_choice._Cache())
    with torch.enable_grad():
        assert _choose() == first
    with torch.no_grad():  # forward only is another key, with winograd among the methods
        _choose()
    assert calls[1:] == [CONV_METHODS] and len(json.loads(path.read_text())["entries"]) == 2


def test_small_layers_are_not_measured(measured):
    _, calls = measured
    x, w = torch.ones(1, 2, 4, 4), torch.ones(2, 2, 3, 3)
    window = Window((3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert kernel_choice.choose("c", "Convolution", 100, x, w, None, window)[0] == "direct"
    assert calls == []


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "entries": []}', '[1, 2]',
                                     '{"version": 99, "entries": {}}'])
def test_corrupt_cache_is_rebuilt_with_a_warning(measured, caplog, content):
    path, calls = measured
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="torchcaffe.kernel_choice"):
        _choose()
    assert any("is corrupt" in r.getMessage() and str(path) in r.getMessage()
               for r in caplog.records)
    assert len(calls) == 1
    assert len(json.loads(path.read_text())["entries"]) == 1


def test_cached_unknown_kernel_is_measured_again(measured, monkeypatch):
    path, calls = measured
    _choose()
    content = json.loads(path.read_text())
    for entry in content["entries"].values():
        entry["kernel"] = "retired_kernel"
    path.write_text(json.dumps(content))
    monkeypatch.setattr(kernel_choice, "_cache", kernel_choice._Cache())
    assert _is_conv_kernel(_choose())
    assert len(calls) == 2


def test_auto_combines_the_fastest_forward_and_the_fastest_backward(measured, monkeypatch):
    def race(seconds):
        return ({n: seconds.get(n, 1.0) for n in TRAINING_METHODS}, {})
    fake = {"forward": race({"channels_last": 0.5}), "backward": race({"im2col_openblas": 0.5})}
    monkeypatch.setattr(kernel_choice, "_measure", lambda *args: {
        phase: fake[phase] for phase in (("forward", "backward") if any(args[-1]) else ("forward",))})
    with torch.enable_grad():
        assert _choose() == "channels_last/im2col_openblas"
    with torch.no_grad():
        assert _choose() == "channels_last"  # forward only: no backward to choose
    # within MARGIN of the default, the default stays
    fake["forward"] = race({"channels_last": 0.97})
    with torch.enable_grad():
        assert _choose("other", (1, 8, 10, 10)) == "direct/im2col_openblas"


class _ScriptedClock:
    """A perf_counter that each scripted run advances by its next duration."""

    def __init__(self, durations: dict[str, list[float]]):
        self.now, self.durations, self.calls = 0.0, durations, []

    def perf_counter(self) -> float:
        return self.now

    def run(self, name: str):
        def advance():
            self.calls.append(name)
            self.now += self.durations[name].pop(0)
        return advance


def _race_with(monkeypatch, durations):
    clock = _ScriptedClock(durations)
    monkeypatch.setattr(kernel_choice, "time", clock)
    finalists, dropped = kernel_choice._race({n: clock.run(n) for n in durations},
                                             torch.device("cpu"))
    return finalists, dropped, clock


def test_a_burst_of_load_in_one_round_does_not_decide_a_close_race(monkeypatch):
    # `a` truly takes 1.00 s and `b` 1.10 s; load hits `a`'s first round (1.6 s).
    # The fastest call of each stands for it, and the race, close, runs on.
    finalists, dropped, clock = _race_with(monkeypatch, {
        "a": [1.00, 1.60, 1.00, 1.01, 1.00, 1.00, 1.00, 1.00],
        "b": [1.10, 1.10, 1.11, 1.10, 1.10, 1.10, 1.10, 1.10]})
    assert finalists == pytest.approx({"a": 1.00, "b": 1.10}) and dropped == {}
    assert clock.calls[:4] == ["a", "b", "a", "b"]  # interleaved
    # a close race stops after MAX_ROUNDS or EXTRA_SECONDS of extra timing
    assert len(clock.calls) == 2 * (1 + kernel_choice.MAX_ROUNDS)
    assert kernel_choice._pick(finalists, "b") == "a"


def test_a_settled_race_stops_after_its_rounds(monkeypatch):
    # 0.1 s against 0.14 s: two rounds (0.05 to 0.5 s), no more; `c` (3x) is dropped
    finalists, dropped, clock = _race_with(monkeypatch, {
        "a": [0.10, 0.11, 0.10], "b": [0.14, 0.14, 0.15], "c": [0.30]})
    assert finalists == pytest.approx({"a": 0.10, "b": 0.14})
    assert dropped == pytest.approx({"c": 0.30})
    assert len(clock.calls) == 3 + 2 * 2


def test_the_default_is_not_dropped_for_a_cold_first_call(monkeypatch):
    # the default (first) pays a cold start of 3x; warm, it is the fastest
    finalists, dropped, _ = _race_with(monkeypatch, {
        "default": [0.30, 0.08, 0.08, 0.08], "other": [0.10, 0.10, 0.10, 0.10]})
    assert finalists == pytest.approx({"default": 0.08, "other": 0.10}) and dropped == {}
    assert kernel_choice._pick(finalists, "default") == "default"


def test_extra_rounds_stop_at_their_time_budget(monkeypatch):
    # 8 s each: after the first round, extra rounds run until EXTRA_SECONDS is spent
    durations = {"a": [8.0] * 9, "b": [8.2] * 9}
    finalists, _, clock = _race_with(monkeypatch, durations)
    extra_rounds = math.floor(kernel_choice.EXTRA_SECONDS / 16.2) + 1
    assert len(clock.calls) == 2 * (1 + 1 + extra_rounds)
    assert finalists == pytest.approx({"a": 8.0, "b": 8.2})


def test_openblas_gemm_splits_among_torch_threads_without_its_own_pool():
    """OpenBLAS's own pool (which spins between calls, against torch's
    threads) stays at one thread; a GEMM is split among torch's thread
    count of workers, by output columns or rows, each part the same sums."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = torch.get_num_threads()
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(300, 70, generator=gen), torch.randn(70, 500, generator=gen)
    results = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            for left, right in ((a, b), (b.t(), a.t())):  # wide and tall outputs
                out = torch.empty(left.shape[0], right.shape[1])
                kernels.OPENBLAS.mm(left, right, out)
                results.append(out)
            info = threadpoolctl.threadpool_info()
            assert [i["num_threads"] for i in info if i["internal_api"] == "openblas"] \
                and all(i["num_threads"] == 1 for i in info if i["internal_api"] == "openblas")
    finally:
        torch.set_num_threads(before)
    expected = (a.double() @ b.double()).numpy()
    for got in results:
        got = got.numpy() if got.shape == expected.shape else got.numpy().T
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_per_layer_override_beats_the_measurement(measured):
    _, calls = measured
    with kernel_choice.policy("auto,conv=channels_last"):
        assert _choose("conv") == "channels_last"
        assert _is_conv_kernel(_choose("other", (1, 8, 10, 10)))
    assert len(calls) == 1


def test_unwritable_cache_still_chooses(monkeypatch, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TORCHCAFFE_KERNEL_CACHE", str(blocker / "sub" / "kernels.json"))
    monkeypatch.setattr(kernel_choice, "_cache", kernel_choice._Cache())
    with kernel_choice.policy("auto"), caplog.at_level(logging.WARNING):
        assert _is_conv_kernel(_choose())
    assert any("not remembered" in r.getMessage() for r in caplog.records)


def test_default_threads_are_shared_among_local_training_processes(monkeypatch):
    from torchcaffe import threads

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    try:
        assert threads.use_threads() == 2  # 8 cores // 3 processes
        monkeypatch.delenv("LOCAL_WORLD_SIZE")
        assert threads.use_threads() == 8
        assert threads.use_threads(1) == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_openblas_gemm_works_in_a_forked_child():
    """A child forked after the workers started (data-loading processes,
    forked trainers) gets workers of its own instead of waiting forever."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a, b = torch.ones(200, 50), torch.ones(50, 300)
        kernels.OPENBLAS.mm(a, b, torch.empty(200, 300))
        pid = os.fork()
        if pid == 0:
            # numpy only around the GEMM: torch's own OpenMP pool is not the subject
            out = np.empty((200, 300), dtype=np.float32)
            kernels.OPENBLAS.mm(a, b, torch.from_numpy(out))
            os._exit(0 if (out == 50).all() else 1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's GEMM hung")
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        torch.set_num_threads(before)


def test_openblas_methods_only_for_cpu_float_tensors():
    cpu = kernel_choice.candidates("Convolution", torch.ones(1, 2, 4, 4))
    assert "im2col_openblas" in cpu
    for x in (torch.ones(1, 2, 4, 4, device="meta"), torch.ones(1, 2, 4, 4, dtype=torch.half)):
        names = kernel_choice.candidates("Convolution", x)
        assert "im2col_openblas" not in names and "direct" in names
    assert "addmm_openblas" not in kernel_choice.candidates("InnerProduct",
                                                            torch.ones(2, 3, device="meta"))


# ---------------------------------------------------------------- Winograd (NNPACK)

needs_nnpack = pytest.mark.skipif(not kernels.NNPACK.available, reason="no NNPACK in this torch")
# (in, out, pad, batch, height, width, bias): 3x3 stride 1, the Winograd layers
WINOGRAD_GEOMETRIES = [(3, 4, 1, 2, 7, 9, True), (5, 3, 0, 1, 8, 13, False),
                       (4, 4, 1, 1, 1, 1, True), (64, 32, 1, 1, 20, 23, True)]


@needs_nnpack
@pytest.mark.parametrize("g", WINOGRAD_GEOMETRIES,
                         ids=[f"{g[0]}to{g[1]}-p{g[2]}-n{g[3]}-{g[4]}x{g[5]}" for g in WINOGRAD_GEOMETRIES])
def test_winograd_equals_explicit_sums_within_its_rounding(g):
    c, o, pad, n, h, w, bias = g
    gen = torch.Generator().manual_seed(c + o)
    x, weight = torch.randn(n, c, h, w, generator=gen), torch.randn(o, c, 3, 3, generator=gen)
    b = torch.randn(o, generator=gen) if bias else None
    window = Window((3, 3), (1, 1), (pad, pad), (1, 1), 1)
    got = kernels.kernel("Convolution", "winograd")(x, weight, b, window)
    expected = conv_loops(x.double().numpy(), weight.double().numpy(),
                          None if b is None else b.double().numpy(), window)
    assert got.shape == expected.shape
    # the transforms round more than plain sums (~1e-5 of the scale on VGG
    # layers), far less than the golden suites' 1e-4
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=5e-5 * np.abs(expected).max())


@needs_nnpack
def test_winograd_backward_when_forced_is_the_torch_operators():
    window = Window((3, 3), (1, 1), (1, 1), (1, 1), 1)
    grads = []
    for name in ("direct", "winograd"):
        gen = torch.Generator().manual_seed(3)
        x, w, b = (torch.randn(s, generator=gen).requires_grad_() for s in
                   ((2, 6, 9, 10), (4, 6, 3, 3), (4,)))
        y = kernels.kernel("Convolution", name)(x, w, b, window)
        y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
        grads.append([x.grad, w.grad, b.grad])
    for got, expected in zip(*grads[::-1]):
        assert torch.equal(got, expected)


@needs_nnpack
def test_winograd_is_offered_only_where_it_computes_the_layer(monkeypatch):
    monkeypatch.setattr(kernels.NNPACK, "threads", None)  # as in a fresh process
    x = torch.ones(1, 8, 12, 12)

    def offered(family="Convolution", t=x, kernel=(3, 3), stride=1, pad=1, dilation=1, groups=1):
        window = Window(kernel, (stride, stride), (pad, pad), (dilation, dilation), groups)
        return "winograd" in kernel_choice.candidates(family, t, (window,))

    assert offered() and offered(pad=0)
    assert not offered(pad=100)  # FCN's conv1_1
    assert not offered(stride=2) and not offered(kernel=(5, 5)) and not offered(kernel=(1, 1))
    assert not offered(dilation=2) and not offered(groups=2)
    assert not offered("Deconvolution") and not offered(t=x.double())
    assert not offered(t=torch.ones(1, 8, 12, 12, device="meta"))
    # nor where backward runs through the call: its rounding compounds over steps
    window = Window((3, 3), (1, 1), (1, 1), (1, 1), 1)
    assert "winograd" not in kernel_choice.candidates("Convolution", x, (window,),
                                                      differentiated=True)
    # NNPACK's pool keeps the thread count of its first call
    monkeypatch.setattr(kernels.NNPACK, "threads", torch.get_num_threads() + 1)
    assert not offered()


def test_a_method_can_be_left_out_everywhere(measured):
    _, calls = measured
    policy = kernel_choice.parse_policy("auto,-winograd,-im2col")
    assert policy.excluded == {"winograd", "im2col"} and policy.default == ("auto",)
    with kernel_choice.policy(policy):
        _choose()
    with kernel_choice.policy(policy), torch.no_grad():
        _choose()
    assert calls == [[m for m in TRAINING_METHODS if m != "im2col"],
                     [m for m in CONV_METHODS if m not in ("winograd", "im2col")]]
    # a family's default cannot be left out: it is what runs otherwise
    with kernel_choice.policy("default,-direct"):
        assert _choose() == "direct"
    with pytest.raises(CaffeError, match="cannot leave out 'fast'.*not a method"):
        kernel_choice.parse_policy("auto,-fast")
