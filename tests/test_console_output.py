"""Output fit for files and CI logs: progress as periodic plain log lines
off a terminal (bars on one), and float32 values in their shortest
round-trip form in our own summaries and result files."""
import io
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, strategies as st
from tqdm import tqdm

from solvers import solve
from solvers.run_dir import RunDir
from torchcaffe.floats import float32_text, float32_value
from torchcaffe.progress import LogProgress, progress

NOISY_1E_10 = float(np.float32(1e-10))  # 1.000000013351432e-10


@pytest.mark.parametrize("value, text", [(NOISY_1E_10, "1e-10"),
                                         (9.9999998245167e-15, "1e-14"),
                                         (float(np.float32(1e-7)), "1e-07"),
                                         (float(np.float32(0.001)), "0.001"),
                                         (float(np.float32(2.5e-8)), "2.5e-08"),
                                         (0.0, "0.0"), (1.5, "1.5")])
def test_float32_text_is_the_shortest_round_trip(value, text):
    assert float32_text(value) == text
    assert float32_value(value) == float(text) and json.dumps(float32_value(value)) == text


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_text_reads_back_as_the_same_float32(value):
    text = float32_text(value)
    assert np.float32(float(text)) == np.float32(value)
    # no shorter mantissa would do: dropping the last significant digit changes it
    digits = text.split("e")[0].replace("-", "").replace(".", "").strip("0")
    if len(digits) > 1:
        shorter = float(f"{np.float32(value):.{len(digits) - 2}e}")
        assert np.float32(shorter) != np.float32(value)


def progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "torchcaffe.progress"]


def test_off_a_terminal_progress_is_a_line_per_tenth(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="torchcaffe.progress"):
        items = list(progress(range(50), desc="scenes", unit="img"))
    assert items == list(range(50))
    lines = progress_lines(caplog)
    assert [line.split(",")[0] for line in lines] == [
        f"scenes: {n}/50 img ({2 * n}%)" for n in range(5, 51, 5)]
    assert all(line.endswith(" s") and " img/s, " in line for line in lines)
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out and "\x1b" not in captured.err


def test_log_progress_at_least_every_so_often(caplog):
    with caplog.at_level(logging.INFO, logger="torchcaffe.progress"):
        with progress(total=1000, desc="train", every_s=0) as bar:
            for _ in range(3):
                bar.update(1)
                bar.set_postfix(loss="1.35", lr=float32_text(NOISY_1E_10))
    assert progress_lines(caplog)[-1].startswith("train: 3/1000 it (0%), ")
    assert progress_lines(caplog)[-1].endswith(", loss=1.35, lr=1e-10")
    assert len(progress_lines(caplog)) == 3  # the final close adds nothing new


def test_log_progress_bytes_and_unknown_totals(caplog):
    with caplog.at_level(logging.INFO, logger="torchcaffe.progress"):
        with progress(total=4 * 2 ** 20, initial=2 ** 21, unit="B", unit_scale=True,
                      unit_divisor=1024, desc="vgg16.caffemodel") as bar:
            bar.update(2 ** 20)
        with progress(desc="lines", unit="line", every_s=3600) as bar:
            bar.update(7)
        with progress(range(3), desc="quiet", disable=True) as bar:
            list(bar)
    assert progress_lines(caplog)[0].startswith("vgg16.caffemodel: 3.00M/4.00M B (75%), ")
    assert progress_lines(caplog)[1].startswith("lines: 7 line, ")  # at close
    assert len(progress_lines(caplog)) == 2


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_progress_is_a_tqdm_bar():
    screen = Terminal()
    bar = progress(range(3), desc="x", file=screen)
    assert isinstance(bar, tqdm)
    list(bar)
    assert "\r" in screen.getvalue()
    assert isinstance(progress(range(3), file=io.StringIO()), LogProgress)


class FakeSolver:
    """What solve's training loop uses of a solver, at a float32 rate."""

    def __init__(self):
        self.iter = 0
        self.lr = None
        self.param = SimpleNamespace(display=2)
        self.test_nets = []
        self.net = SimpleNamespace(blobs={})

    def add_callback(self, on_start, on_gradients_ready):
        pass

    def step(self, n):
        self.iter += n
        self.lr = NOISY_1E_10


def test_solve_records_and_prints_rates_in_shortest_form(tmp_path, caplog, capsys,
                                                          monkeypatch):
    run = RunDir(tmp_path / "run")
    result = solve.StageResult("voc-fcn32s", tmp_path, init="fillers")
    with caplog.at_level(logging.INFO, logger="torchcaffe.progress"):
        solve._run_schedule(FakeSolver(), "voc-fcn32s", tmp_path, run, solve.StageOptions(),
                            4, 0, result)
    assert repr(result.lr) == "1e-10"
    assert '"lr": 1e-10' in run.metrics_path.read_text()
    assert progress_lines(caplog)[-1].endswith("lr=1e-10")

    result.iters, result.final = 4, Path("final.caffemodel")
    monkeypatch.setattr(solve, "run_chain", lambda *a, **k: [result])
    assert solve.main(["voc-fcn32s", "--out", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().out == ("voc-fcn32s: 4 iterations at lr 1e-10, best mean IU "
                                       "n/a, final weights final.caffemodel\n")
