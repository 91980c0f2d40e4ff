"""Solver overhead and memory: one SGD `step` against forward + backward alone.

The net is voc-fcn8s's train net narrowed to 1/16 of its channels with Input
data and label (1 x 3 x 64 x 64), random weights, the FCN solver recipe
(fixed lr, momentum 0.99, weight decay). Rows:
- ms per `step(1)` vs ms per forward + backward (+ clearing diffs) alone,
  measured alternately in the same run: the difference is the update;
- resident memory after 200 steps vs after 10 (flat when nothing leaks);
- on the CPU, the SGD update alone over full-width voc-fcn8s's params
  (134M floats): the fused one-pass update against the six torch ops it
  replaces, alternately (skipped where the fused update is not built).
"""
from __future__ import annotations

import logging
import resource
import time

import numpy as np
import torch

from solvers.solve import _prototxts
from bench.net_speed import _PARAM_SHAPES
from torchcaffe import fused_sgd, mode
from torchcaffe.proto import caffe_pb2
from torchcaffe.solver import SGDSolver

log = logging.getLogger(__name__)

WIDTH = 1 / 16
SIZE = 64
TIMED = 10
ROUNDS = 3


def _train_net() -> caffe_pb2.NetParameter:
    net = _prototxts("voc-fcn8s", WIDTH)["train.prototxt"]
    layers = [layer for layer in net.layer if layer.type != "Python"]
    del net.layer[:]
    for name, channels in (("data", 3), ("label", 1)):
        layer = net.layer.add(name=name, type="Input", top=[name])
        layer.input_param.shape.add(dim=[1, channels, SIZE, SIZE])
    net.layer.extend(layers)
    return net


def _solver() -> SGDSolver:
    param = caffe_pb2.SolverParameter(
        net_param=_train_net(), base_lr=1e-10, lr_policy="fixed", momentum=0.99,
        weight_decay=0.0005, max_iter=100000, display=0, snapshot_prefix="unused")
    solver = SGDSolver(param)
    rng = np.random.RandomState(0)
    for blobs in solver.net.params.values():
        for blob in blobs:
            blob.data[...] = rng.randn(*blob.shape) * 0.01
    solver.net.blobs["data"].data[...] = rng.randn(1, 3, SIZE, SIZE) * 50
    solver.net.blobs["label"].data[...] = rng.randint(0, 21, (1, 1, SIZE, SIZE))
    return solver


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _forward_backward(solver) -> None:
    net = solver.net
    last = len(net.layers) - 1
    net.clear_param_diffs()
    net._forward(0, last)
    net._backward(last, 0)
    net.loss()  # the solver reads the loss each iteration too


def _time(fn, device: str, n: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / n * 1e3


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def run(device: str) -> list[dict]:
    if device == "cuda":
        mode.set_mode_gpu()
    else:
        mode.set_mode_cpu()
    try:
        solver = _solver()
        for _ in range(3):  # warm-up (device moves, allocator)
            solver.step(1)
        step_ms, fb_ms = [], []
        for _ in range(ROUNDS):  # alternate, so drifting machine load hits both
            fb_ms.append(_time(lambda: _forward_backward(solver), device, TIMED))
            step_ms.append(_time(lambda: solver.step(1), device, TIMED))
        solver.step(10 - solver.iter % 10)
        rss_10 = _rss_mb()
        solver.step(190)
        rss_200 = _rss_mb()
    finally:
        mode.set_mode_cpu()
    label = f"voc-fcn8s x{WIDTH:g} width, 1x3x{SIZE}x{SIZE}"
    rows = [_update_row()] if device == "cpu" and fused_sgd.available() else []
    return rows + [
        {"metric": f"solver step ({label})", "value": min(step_ms), "unit": "ms",
         "baseline": "forward+backward alone", "baseline_value": min(fb_ms)},
        {"metric": "solver RSS after 200 more steps", "value": rss_200, "unit": "MiB",
         "baseline": "RSS after 10 steps", "baseline_value": rss_10},
    ]


def _update_row() -> dict:
    """The update alone over full-width voc-fcn8s's params (FCN recipe:
    momentum 0.99, decay 5e-4 on weights, biases at twice the rate)."""
    generator = torch.Generator().manual_seed(0)
    params = [(shape, i % 2 == 0) for shapes in _PARAM_SHAPES.values()
              for i, shape in enumerate(shapes)]
    arrays = [[torch.randn(shape, generator=generator) * 0.01 for _ in range(3)]
              for shape, _ in params]
    settings = [(5e-4 if weight else 0.0, 1e-10 if weight else 2e-10) for _, weight in params]

    def fused():
        for (data, diff, history), (decay, rate) in zip(arrays, settings):
            fused_sgd._run(data, diff, history, decay, 0.99, rate)

    def torch_ops():
        for (data, diff, history), (decay, rate) in zip(arrays, settings):
            fused_sgd._torch_update(data, diff, history, decay, 0.99, rate)

    fused_ms, torch_ms = [], []
    for _ in range(ROUNDS + 1):
        fused_ms.append(_time(fused, "cpu", 1))
        torch_ms.append(_time(torch_ops, "cpu", 1))
    count = sum(a[0].numel() for a in arrays)
    return {"metric": f"SGD update alone, voc-fcn8s full width ({count / 1e6:.0f}M params), "
                      "fused (one pass per param)",
            "value": min(fused_ms[1:]), "unit": "ms", "baseline": "the six torch ops",
            "baseline_value": min(torch_ms[1:])}
