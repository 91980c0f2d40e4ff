"""bench.net_speed's tap_gemm row: its baseline really runs oneDNN's
backward on exactly the layers `auto` gave to tap_gemm, and nothing else
changes."""
import numpy as np

import torchcaffe
from bench import net_speed
from torchcaffe import kernel_choice

NET = """
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } shape { dim: 1 dim: 1 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" } } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" } } }
layer { name: "down" type: "Convolution" bottom: "conv2" top: "score"
        convolution_param { num_output: 3 kernel_size: 2 stride: 2 weight_filler { type: "gaussian" } } }
layer { name: "pool" type: "Pooling" bottom: "label" top: "small_label"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "small_label" top: "loss" }
"""


def test_tap_gemm_row_swaps_exactly_its_layers_to_onednn(tmp_path, monkeypatch):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    data = np.linspace(-1, 1, 72, dtype=np.float32).reshape(1, 2, 6, 6)
    label = (np.arange(36, dtype=np.float32) % 3).reshape(1, 1, 6, 6)
    # as `auto` would have chosen: conv1 tap_gemm, conv2 im2col forward with
    # tap_gemm, the strided layer (which tap_gemm cannot take) im2col
    chosen = {"conv1": "direct/tap_gemm", "conv2": "im2col/tap_gemm", "down": "im2col"}
    with kernel_choice.policy(",".join(f"{n}={k}" for n, k in chosen.items())):
        net = torchcaffe.Net(str(path), torchcaffe.TRAIN)
        net_speed._runtime_step(net, data, label, backward=True)
    ran, real_step = [], net_speed._runtime_step

    def step(*args, **kwargs):
        real_step(*args, **kwargs)
        ran.append({s.name: s.impl.kernel_name for s in net._steps
                    if getattr(s.impl, "kernel_name", None)})

    monkeypatch.setattr(net_speed, "_runtime_step", step)
    rows = net_speed._tap_gemm_rows(net, data, label, "cpu", 1)
    assert [r["metric"] for r in rows] == [
        "voc-fcn8s forward+backward 1x3x375x500, tap_gemm on 2 layers"]
    assert ran[0] == chosen
    assert ran[1] == {"conv1": "direct", "conv2": "im2col/direct", "down": "im2col"}
    assert ran[2:] == ran[:2]  # one warm-up round, one timed round, alternating


def test_no_tap_gemm_row_where_auto_chose_it_nowhere(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    with kernel_choice.policy("default"):
        net = torchcaffe.Net(str(path), torchcaffe.TRAIN)
        net.forward()
        net.backward()
    assert net_speed._tap_gemm_rows(net, None, None, "cpu", 1) == []
