"""float32 values as people should read them.

Caffe computes in float32, so a rate of 1e-10 is really
1.000000013351432e-10 once widened to a Python float. For our own
summaries, tables and result files, `float32_text` gives the shortest text
that reads back as the same float32 (`1e-10`), and `float32_value` the
Python float of that text (what JSON then writes). Caffe's own log lines
print six significant digits instead: see `glog.caffe_float`.
"""
from __future__ import annotations

import numpy as np


def float32_text(value: float) -> str:
    """Shortest round-trip text of `value` as a float32: 1e-10, 0.001, 2.5e-08."""
    return str(np.float32(value))


def float32_value(value: float) -> float:
    """The Python float of `float32_text(value)`: 1e-10 rather than
    1.000000013351432e-10."""
    return float(float32_text(value))
