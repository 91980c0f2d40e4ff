"""Model Zoo deploy nets (LeNet, CIFAR-10 quick, CaffeNet) against the outputs
BVLC Caffe computed for seeded weights (format: the golden README, `zoo/`).

The prototxts are Caffe's own deploy files. The weights are rebuilt from the
rule each case states in words (`meta['weight_rule']`), implemented here.
Tolerance: 1e-3 of each array's largest magnitude, as the golden set asks.
"""
import json
import math

import numpy as np
import pytest

import torchcaffe
from golden_sets import assert_close, case_params

RTOL = 1e-3
_WEIGHTED = {"Convolution", "Deconvolution", "InnerProduct"}


def seeded_blob(seed: int, k: int, layer_type: str, index: int, shape) -> np.ndarray:
    """Blob k of the net by the golden weight rule. All arithmetic is float32:
    z is cast to float32 first, and the He scale is computed in float64 and
    cast (`float32(sqrt(2 / fan_in))`, fan_in = prod(shape[1:])), as the rule
    writes it; the other constants are Python floats, which numpy applies to
    a float32 array without widening it. With this reading every recorded
    blob of the three nets matches Caffe's to about 2e-6 of its scale, the
    float32 rounding of the forward itself."""
    z = np.random.default_rng([seed, k]).standard_normal(shape).astype(np.float32)
    if layer_type in _WEIGHTED:
        if index == 0:
            return z * np.float32(math.sqrt(2 / math.prod(shape[1:])))
        return z * 0.1
    if layer_type == "BatchNorm":
        return (z * 0.1, 1 + 0.1 * np.abs(z), np.ones_like(z))[index]
    if layer_type == "Scale":
        return (1 + 0.1 * z, z * 0.1)[index]
    if layer_type == "PReLU":
        return 0.25 + 0.05 * z
    return z * 0.1


def load_seeded_weights(net, seed: int, plan) -> None:
    """Fill every param blob; `plan` lists [layer, index, type, shape] in
    `net.params` order, which must be ours too."""
    ours = [(layer, i, list(blob.shape)) for layer, blobs in net.params.items()
            for i, blob in enumerate(blobs)]
    assert ours == [(layer, index, list(shape)) for layer, index, _, shape in plan]
    for k, (layer, index, layer_type, shape) in enumerate(plan):
        net.params[layer][index].data[...] = seeded_blob(seed, k, layer_type, index, tuple(shape))


@pytest.mark.parametrize("folder, case", case_params("zoo"))
def test_zoo_net_matches_caffe(folder, case):
    golden = np.load(folder / f"{case}.npz")
    meta = json.loads(str(golden["meta"]))
    assert meta["kind"] == "zoo"
    torchcaffe.set_mode_cpu()
    net = torchcaffe.Net(str(folder / meta["prototxt"]), torchcaffe.TEST)
    load_seeded_weights(net, meta["weight_seed"], meta["plan"])
    net.blobs[meta["input"]].reshape(*meta["input_shape"])
    net.reshape()
    net.blobs[meta["input"]].data[...] = golden[f"in/{meta['input']}"]
    net.forward()
    compared = [key for key in golden.files if key.startswith("out/")]
    assert compared
    for key in compared:
        assert_close(net.blobs[key[len("out/"):]].data, golden[key], key, RTOL)
