"""`torchcaffe test`, `time` and `device_query`: Caffe's lines, and the
scores of `test` against values computed by hand from the net's weights."""
import re

import numpy as np
import pytest

from torchcaffe.cli import main
from torchcaffe.net import TEST, Net
from tool_fixtures import batch, write_tiny

G = r"(-?[\d.]+(?:e[+-]\d+)?)"
W = np.array([[0.5, -1, 0.25, 0], [-0.5, 1, 0, 0.75], [1, 0.5, -0.25, -1]], np.float32)
B = np.array([0.1, -0.2, 0.3], np.float32)


def messages(err: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in err.splitlines() if "] " in line]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    write_tiny(tmp_path)
    net = Net("net.prototxt", phase=TEST)
    net.params["ip"][0].data[...] = W
    net.params["ip"][1].data[...] = B
    net.save("w.caffemodel")
    return tmp_path


def by_hand(i: int) -> tuple[float, float]:
    """(acc, loss) of batch i: softmax loss of W x + b at the label."""
    x, label = batch(i)
    scores = W.astype(np.float64) @ x + B
    log_p = scores - scores.max() - np.log(np.exp(scores - scores.max()).sum())
    return float(scores.argmax() == label), float(-log_p[label])


def test_test_prints_each_batch_and_the_means(tiny, capsys):
    assert main(["test", "-model", "net.prototxt", "-weights", "w.caffemodel",
                 "-iterations", "4"]) == 0
    lines = messages(capsys.readouterr().err)
    assert "Running for 4 iterations." in lines
    batches = [re.fullmatch(rf"Batch (\d+), (\w+) = {G}", m) for m in lines]
    batches = [(int(b[1]), b[2], float(b[3])) for b in batches if b]
    assert [(i, name) for i, name, _ in batches] == [(i, n) for i in range(4)
                                                     for n in ("acc", "loss")]
    expected = [by_hand(i) for i in range(4)]
    for i, name, value in batches:
        assert value == pytest.approx(expected[i][name == "loss"], rel=1e-5, abs=1e-6)
    mean_acc = np.mean([e[0] for e in expected])
    mean_loss = np.mean([e[1] for e in expected])
    assert float(re.fullmatch(rf"Loss: {G}", lines[-3])[1]) == pytest.approx(mean_loss, rel=1e-5)
    acc = re.fullmatch(rf"acc = {G}", lines[-2])
    loss = re.fullmatch(rf"loss = {G} \(\* 1 = {G} loss\)", lines[-1])
    assert float(acc[1]) == pytest.approx(mean_acc, rel=1e-5)
    assert float(loss[1]) == pytest.approx(mean_loss, rel=1e-5) and loss[1] == loss[2]
    # the mean is the mean of the batch values printed above
    printed = [v for _, name, v in batches if name == "loss"]
    assert float(loss[1]) == pytest.approx(np.mean(printed), rel=1e-5)


@pytest.mark.parametrize("args, message", [
    (["-weights", "w.caffemodel"], "test: give the model definition: -model val.prototxt"),
    (["-model", "net.prototxt"], "test: give the weights to score: -weights w.caffemodel"),
    (["-model", "net.prototxt", "-weights", "w.caffemodel", "-iterations", "0"],
     "test: flag -iterations must be at least 1, got 0"),
    (["-model", "nothing.prototxt", "-weights", "w.caffemodel"], "nothing.prototxt"),
    (["-model", "net.prototxt", "-weights", "none.caffemodel"], "none.caffemodel"),
    (["-model", "net.prototxt", "-weights", "net.prototxt"], "net.prototxt"),
    (["-model", "net.prototxt", "-weights", "w.caffemodel", "-solver", "s"],
     "test: unknown flag '-solver'"),
])
def test_test_bad_flags_and_files(tiny, capsys, args, message):
    assert main(["test", *args]) == 1
    errors = [l for l in capsys.readouterr().err.splitlines() if not re.match(r"I\d{4} ", l)]
    assert len(errors) == 1 and errors[0].startswith("torchcaffe: error: ")
    assert message in errors[0]


def test_time_prints_per_layer_and_total_milliseconds(tiny, capsys):
    assert main(["time", "-model", "net.prototxt", "-iterations", "3"]) == 0
    lines = messages(capsys.readouterr().err)
    start = lines.index("*** Benchmark begins ***")
    assert lines[start - 3] == "Performing Forward"
    assert re.fullmatch(rf"Initial loss: {G}", lines[start - 2])
    assert lines[start - 1] == "Performing Backward"
    assert lines[start + 1] == "Testing for 3 iterations."
    rounds = [re.fullmatch(rf"Iteration: (\d+) forward-backward time: {G} ms\.", m)
              for m in lines[start + 2:start + 5]]
    assert [int(r[1]) for r in rounds] == [1, 2, 3]
    assert lines[start + 5] == "Average time per layer: "
    per_layer = lines[start + 6:start + 12]
    names = ["data", "ip", "loss"]  # the TRAIN net (Accuracy is TEST only)
    times = {}
    for k, line in enumerate(per_layer):
        name, kind = names[k // 2], ("forward", "backward")[k % 2]
        match = re.fullmatch(rf"( *)(\w+)\t{kind}: {G} ms\.", line)
        assert match and match[2] == name and len(match[1] + match[2]) == 10, line
        times[name, kind] = float(match[3])
    assert times["ip", "forward"] > 0 and times["ip", "backward"] > 0
    assert times["data", "backward"] == 0  # no bottoms, no params: nothing to do
    totals = [re.fullmatch(rf"{label}: {G} ms\.", m) for label, m in zip(
        ("Average Forward pass", "Average Backward pass", "Average Forward-Backward",
         "Total Time"), lines[start + 12:start + 16])]
    forward, backward, both, total = (float(t[1]) for t in totals)
    assert both == pytest.approx(forward + backward, rel=1e-4)
    assert total == pytest.approx(3 * both, rel=1e-4)
    assert lines[start + 16] == "*** Benchmark ends ***"


def test_time_refuses_a_bad_phase(tiny, capsys):
    assert main(["time", "-model", "net.prototxt", "-phase", "VAL"]) == 1
    assert "time: flag -phase must be TRAIN or TEST, got 'VAL'" in capsys.readouterr().err


def test_device_query_without_cuda(capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert main(["device_query"]) == 0
    assert messages(capsys.readouterr().err)[-1] == "No cuda device present."


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_device_query_lists_each_device(capsys):
    assert main(["device_query", "-gpu", "0"]) == 0
    lines = messages(capsys.readouterr().err)
    assert lines[1] == "Device id:                     0"
    assert any(re.fullmatch(r"Name: {26}\S.*", m) for m in lines)
    assert any(re.fullmatch(r"Total global memory: {11}\d+", m) for m in lines)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a CPU-only machine")
def test_a_gpu_flag_without_cuda_is_one_error_line(tiny, capsys):
    assert main(["time", "-model", "net.prototxt", "-gpu", "0"]) == 1
    errors = [l for l in capsys.readouterr().err.splitlines() if not re.match(r"I\d{4} ", l)]
    assert errors == ["torchcaffe: error: set_mode_gpu: no CUDA device is available to PyTorch"]
