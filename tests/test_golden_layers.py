"""Every layer case in the shared golden set (outputs and gradients computed
by BVLC Caffe) reproduced through the public `torchcaffe.Net`.

Tolerance: max |got - expected| <= 1e-5 * max |expected| for each array
(relative to the array's largest magnitude, so sums with cancellation are
judged on the array's scale).
"""
import json
from pathlib import Path

import numpy as np
import pytest

import torchcaffe

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "layers"
CASES = sorted(p.stem for p in GOLDEN.glob("*.npz")) if GOLDEN.is_dir() else []
RTOL = 1e-5


def assert_matches(name: str, got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape, f"{name}: shape {got.shape}, Caffe {expected.shape}"
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    err = float(np.abs(got - expected).max()) if expected.size else 0.0
    assert err <= RTOL * max(scale, 1e-30), f"{name}: max error {err:.3g} on scale {scale:.3g}"


@pytest.mark.skipif(not CASES, reason="shared golden layer cases are not present")
@pytest.mark.parametrize("case", CASES)
def test_layer_case_matches_caffe(case):
    golden = np.load(GOLDEN / f"{case}.npz")
    meta = json.loads(str(golden["meta"]))
    assert meta["kind"] == "layer"
    phase = {"TRAIN": torchcaffe.TRAIN, "TEST": torchcaffe.TEST}[meta["phase"]]
    torchcaffe.set_mode_cpu()
    net = torchcaffe.Net(str(GOLDEN / f"{case}.prototxt"), phase)

    def arrays(prefix):
        return {key[len(prefix):]: golden[key] for key in golden.files if key.startswith(prefix)}

    # 1. params, 2. inputs
    for key, value in arrays("param/").items():
        layer, index = key.rsplit("/", 1)
        net.params[layer][int(index)].data[...] = value
    for blob, value in arrays("in/").items():
        net.blobs[blob].data[...] = value
    # 3. forward
    net.forward()
    for blob, expected in arrays("out/").items():
        assert_matches(f"out/{blob}", net.blobs[blob].data, expected)
    # 4. backward: top diffs on non-loss outputs; loss outputs start from their loss_weight
    for blob, topdiff in arrays("topdiff/").items():
        assert blob not in meta["losses"]
        net.blobs[blob].diff[...] = topdiff
    net.backward()
    checked = 0
    for blob in meta["inputs"]:
        if f"diff/{blob}" in golden.files:
            assert_matches(f"diff/{blob}", net.blobs[blob].diff, golden[f"diff/{blob}"])
            checked += 1
    for key, expected in arrays("pdiff/").items():
        layer, index = key.rsplit("/", 1)
        assert_matches(f"pdiff/{key}", net.params[layer][int(index)].diff, expected)
        checked += 1
    assert checked, "the case compares no gradient"
