"""A tiny trainable net for the `torchcaffe` tool's tests: a Python data
layer whose batch i is known (data = (i + 1) * [1, 2, 3, 4] / 4, label =
i % 3), an InnerProduct with 3 outputs, SoftmaxWithLoss, and Accuracy in the
TEST phase. Everything is written into the test's folder, which also holds
the data layer's module (put the folder on sys.path / PYTHONPATH)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODULE = "tool_batches"

DATA_LAYER = '''
import time
import numpy as np
import torchcaffe as caffe


class Batches(caffe.Layer):
    def setup(self, bottom, top):
        self.i = 0
        self.delay = float(self.param_str or 0)

    def reshape(self, bottom, top):
        top[0].reshape(1, 4)
        top[1].reshape(1)

    def forward(self, bottom, top):
        top[0].data[...] = (self.i + 1) * np.arange(1, 5, dtype=np.float32) / 4
        top[1].data[...] = self.i % 3
        self.i += 1
        if self.delay:
            time.sleep(self.delay)

    def backward(self, top, propagate_down, bottom):
        pass
'''

NET = '''name: "tiny"
layer { name: "data" type: "Python" top: "data" top: "label"
        python_param { module: "%(module)s" layer: "Batches" param_str: "%(delay)s" } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
        include { phase: TEST } }
'''

SOLVER = '''net: "net.prototxt"
base_lr: %(base_lr)s
lr_policy: "fixed"
momentum: 0.9
display: %(display)d
max_iter: %(max_iter)d
snapshot: %(snapshot)d
snapshot_prefix: "snap/tiny"
random_seed: 1
%(extra)s
'''


def batch(i: int) -> tuple[np.ndarray, int]:
    """The data layer's batch i: (data of shape (4,), label)."""
    return (i + 1) * np.arange(1, 5, dtype=np.float32) / 4, i % 3


def write_tiny(folder: Path, *, max_iter: int = 6, display: int = 2, snapshot: int = 0,
               base_lr: str = "0.01", extra: str = "", delay: float = 0) -> Path:
    """net.prototxt, solver.prototxt, snap/ and the data layer module in
    `folder`; returns the solver path."""
    (folder / f"{MODULE}.py").write_text(DATA_LAYER)
    (folder / "net.prototxt").write_text(NET % {"module": MODULE, "delay": delay or ""})
    (folder / "snap").mkdir(exist_ok=True)
    solver = folder / "solver.prototxt"
    solver.write_text(SOLVER % {"base_lr": base_lr, "display": display, "max_iter": max_iter,
                                "snapshot": snapshot, "extra": extra})
    return solver


def tool(folder: Path, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """`python -m torchcaffe *args` run in `folder` (stderr piped, text)."""
    environment = {**os.environ, **(env or {}),
                   "PYTHONPATH": os.pathsep.join([str(REPO), str(folder)])}
    return subprocess.Popen([sys.executable, "-m", "torchcaffe", *args], cwd=folder,
                            env=environment, stderr=subprocess.PIPE, text=True, **popen)
