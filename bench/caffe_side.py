"""The BVLC Caffe side of `bench.vs_caffe`, run by Caffe's own Python.

    CAFFE_PYTHON bench/caffe_side.py NET_DIR

It imports only pycaffe and numpy (a pycaffe environment need not have
torch). NET_DIR holds the prototxts the bench wrote (`solver.prototxt`
naming `train.prototxt`, and `deploy_<H>x<W>.prototxt`). It then answers
requests, one JSON line each on stdin, with one JSON line on stdout, so the
bench can interleave Caffe's runs with its own:

    {"run": "step"}                        -> {"seconds": s}  one solver.step(1)
    {"run": "forward", "net": "deploy_375x500"} -> {"seconds": s}
    {"run": "layers", "net": "train"}      -> {"layers": [[name, type, fwd s, bwd s], ...]}
    {"run": "quit"}
"""
import json
import os
import sys
import time

import numpy as np

import caffe

SEED = 0


def _fill(net, rng) -> None:
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.data.shape).astype(np.float32) * 0.01
    for name in net.inputs:
        shape = net.blobs[name].data.shape
        if name == "label":
            net.blobs[name].data[...] = rng.integers(0, 21, shape)
        else:
            net.blobs[name].data[...] = rng.uniform(-120, 120, shape)


def _layer_times(net):
    """Each layer's forward and backward alone, as `caffe time` does."""
    count = len(net.layers)
    net.forward()
    net.backward()
    rows = []
    for i, name in enumerate(net._layer_names):
        start = time.perf_counter()
        net._forward(i, i)
        rows.append([name, net.layers[i].type, time.perf_counter() - start])
    for i in range(count - 1, -1, -1):
        start = time.perf_counter()
        net._backward(i, i)
        rows[i].append(time.perf_counter() - start)
    return rows


def main() -> int:
    folder = sys.argv[1]
    caffe.set_mode_cpu()
    rng = np.random.default_rng(SEED)
    solver = caffe.SGDSolver(os.path.join(folder, "solver.prototxt"))
    _fill(solver.net, rng)
    nets = {"train": solver.net}
    for name in sorted(os.listdir(folder)):
        if name.startswith("deploy_"):
            key = name[:-len(".prototxt")]
            nets[key] = caffe.Net(os.path.join(folder, name), caffe.TEST)
            _fill(nets[key], rng)
    print(json.dumps({"ready": caffe.__file__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["run"] == "quit":
            break
        if request["run"] == "layers":
            answer = {"layers": _layer_times(nets[request["net"]])}
        else:
            start = time.perf_counter()
            if request["run"] == "step":
                solver.step(1)
            else:
                nets[request["net"]].forward()
            answer = {"seconds": time.perf_counter() - start}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
