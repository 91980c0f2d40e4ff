"""`torchcaffe test`: score a model, as `caffe test`.

    torchcaffe test -model val.prototxt -weights w.caffemodel [-iterations 50] [-gpu 0]

Runs the TEST-phase net `-iterations` times and logs each batch's outputs
(`Batch i, name = value`), the mean loss, and each output's mean over the
batches, in float32 as Caffe sums them.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..glog import caffe_float, loss_note
from ..net import TEST, Net
from ..solver import output_loss_weights
from .flags import GPU, ITERATIONS, LEVEL, MODEL, STAGE, WEIGHTS, FlagError, comma_list, \
    gpu_ids, net_state_flags, use_device

log = logging.getLogger(__name__)

FLAGS = (MODEL, WEIGHTS, ITERATIONS, GPU, LEVEL, STAGE)


def run(values: dict) -> int:
    if not values["model"]:
        raise FlagError("test: give the model definition: -model val.prototxt")
    if not values["weights"]:
        raise FlagError("test: give the weights to score: -weights w.caffemodel")
    iterations = values["iterations"]
    if iterations < 1:
        raise FlagError(f"test: flag -iterations must be at least 1, got {iterations}")
    use_device(gpu_ids(values["gpu"]))
    net = Net(values["model"], phase=TEST, **net_state_flags(values))
    for weights in comma_list(values["weights"]):
        net.copy_from(weights)
    log.info("Running for %d iterations.", iterations)
    sums: dict[str, np.ndarray] = {}
    loss = np.float32(0)
    with torch.no_grad():
        for i in range(iterations):
            net.forward()
            loss += np.float32(net.loss())
            for name in net.outputs:
                scores = net.blobs[name].data.astype(np.float32).ravel()
                for score in scores:
                    log.info("Batch %d, %s = %s", i, name, caffe_float(score))
                sums[name] = sums[name] + scores if name in sums else scores.copy()
    log.info("Loss: %s", caffe_float(loss / np.float32(iterations)))
    weights = output_loss_weights(net)
    for name, total in sums.items():
        for mean in total / np.float32(iterations):
            log.info("%s = %s%s", name, caffe_float(mean), loss_note(weights[name], mean))
    return 0
