"""`torchcaffe time`: per-layer forward and backward times, as `caffe time`.

    torchcaffe time -model train.prototxt [-iterations 50] [-gpu 0] [-phase TRAIN]

One untimed forward and backward first, then `-iterations` timed rounds.
Each layer's forward is timed as it runs inside the net's forward. Backward
in torchcaffe is one autograd pass over the whole net, so each layer's
backward is timed on its own: the gradient of its tops (ones) with respect
to its bottoms and params, through that layer's part of the graph only. The
totals (Average Forward pass / Backward pass / Forward-Backward) are the
net's real forward and backward passes.
"""
from __future__ import annotations

import logging
import time
from typing import NamedTuple

import torch

from .. import mode
from ..glog import caffe_float
from ..net import TEST, TRAIN, Net
from .flags import GPU, ITERATIONS, LEVEL, MODEL, PHASE, STAGE, FlagError, gpu_ids, \
    net_state_flags, use_device

log = logging.getLogger(__name__)

FLAGS = (MODEL, ITERATIONS, GPU, PHASE, LEVEL, STAGE)


def _now() -> float:
    if mode.device().type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


class _LayerClock:
    """Times one layer's forward and keeps its bottoms and tops (tensors of
    the last forward's graph) for timing its backward."""

    def __init__(self, impl):
        self.forward_s = 0.0
        self.backward_s = 0.0
        self._forward = impl.forward
        self.bottoms: list[torch.Tensor] = []
        self.tops: list[torch.Tensor] = []
        self.params: list[torch.Tensor] = []

    def forward(self, bottoms):
        start = _now()
        tops = self._forward(bottoms)
        self.forward_s += _now() - start
        self.bottoms, self.tops = list(bottoms), list(tops)
        return tops

    def time_backward(self) -> None:
        tops = [t for t in self.tops if t.requires_grad]
        inputs = [t for t in self.bottoms + self.params if t.requires_grad]
        if not tops or not inputs:
            return
        start = _now()
        torch.autograd.grad(tops, inputs, [torch.ones_like(t) for t in tops],
                            retain_graph=True, allow_unused=True)
        self.backward_s += _now() - start


class LayerTime(NamedTuple):
    """One layer's mean seconds per iteration, and the kernel it ran."""

    name: str
    type: str
    kernel: str | None
    forward_s: float
    backward_s: float


def _log_iteration(j: int, seconds: float) -> None:
    log.info("Iteration: %d forward-backward time: %s ms.", j + 1, caffe_float(seconds * 1000))


def time_layers(net: Net, iterations: int, on_iteration=None):
    """([LayerTime per layer], forward s, backward s), per iteration, over
    `iterations` rounds of the net's forward and backward (after the caller's
    warm-up); `on_iteration(j, seconds)` after each round."""
    steps = net._steps
    last = len(steps) - 1
    clocks = [_LayerClock(step.impl) for step in steps]
    for step, clock in zip(steps, clocks):
        clock.params = [blob.leaf for _, blob, _, _ in step.param_slots]
        step.impl.forward = clock.forward
    forward_s = backward_s = 0.0
    try:
        for j in range(iterations):
            start = _now()
            net._forward(0, last)
            middle = _now()
            for clock in reversed(clocks):
                clock.time_backward()
            resumed = _now()
            net._backward(last, 0)
            end = _now()
            forward_s += middle - start
            backward_s += end - resumed
            if on_iteration is not None:
                on_iteration(j, middle - start + end - resumed)
    finally:
        for step in steps:
            del step.impl.forward  # back to the class's method
    rows = [LayerTime(step.name, step.impl.type, getattr(step.impl, "kernel_name", None),
                      clock.forward_s / iterations, clock.backward_s / iterations)
            for step, clock in zip(steps, clocks)]
    return rows, forward_s / iterations, backward_s / iterations


def _phase(text: str) -> int:
    if text in ("", "TRAIN"):
        return TRAIN
    if text == "TEST":
        return TEST
    raise FlagError(f"time: flag -phase must be TRAIN or TEST, got '{text}'")


def run(values: dict) -> int:
    if not values["model"]:
        raise FlagError("time: give the model definition: -model train.prototxt")
    iterations = values["iterations"]
    if iterations < 1:
        raise FlagError(f"time: flag -iterations must be at least 1, got {iterations}")
    phase = _phase(values["phase"])
    use_device(gpu_ids(values["gpu"]))
    net = Net(values["model"], phase=phase, **net_state_flags(values))
    last = len(net.layers) - 1
    log.info("Performing Forward")
    net._forward(0, last)
    log.info("Initial loss: %s", caffe_float(net.loss()))
    log.info("Performing Backward")
    net._backward(last, 0)

    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", iterations)
    rows, forward_s, backward_s = time_layers(net, iterations, _log_iteration)
    log.info("Average time per layer: ")
    for row in rows:
        log.info("%10s\tforward: %s ms.", row.name, caffe_float(row.forward_s * 1000))
        log.info("%10s\tbackward: %s ms.", row.name, caffe_float(row.backward_s * 1000))
    log.info("Average Forward pass: %s ms.", caffe_float(forward_s * 1000))
    log.info("Average Backward pass: %s ms.", caffe_float(backward_s * 1000))
    log.info("Average Forward-Backward: %s ms.", caffe_float((forward_s + backward_s) * 1000))
    log.info("Total Time: %s ms.", caffe_float((forward_s + backward_s) * 1000 * iterations))
    log.info("*** Benchmark ends ***")
    return 0
