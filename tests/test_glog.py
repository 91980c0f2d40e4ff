"""Caffe's console lines: glog's prefix, the solver's lines at Caffe's
points and intervals, GLOG_minloglevel, and pycaffe's init_log / log."""
import logging
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import torchcaffe
from torchcaffe import glog
from tool_fixtures import REPO, write_tiny

# glog's LogMessage prefix: severity, MMDD, HH:MM:SS.uuuuuu, thread id (width 5), file:line]
PREFIX = r"(?P<sev>[IWEF])(?P<mon>\d\d)(?P<day>\d\d) (?P<clock>\d\d:\d\d:\d\d\.\d{6}) +(?P<tid>\d+) (?P<file>[\w.<>-]+):(?P<line>\d+)\] "
# Caffe's solver.cpp / sgd_solver.cpp lines; numbers as C++ `<<` prints a float
NUMBER = r"-?(?:\d+(?:\.\d+)?(?:e[+-]\d+)?|inf|nan)"
SOLVER_LINES = {
    "display": rf"Iteration (\d+) \(({NUMBER}) iter/s, ({NUMBER})s/(\d+) iters\), loss = ({NUMBER})",
    "train_output": rf"    Train net output #(\d+): (\w+) = ({NUMBER})(?: \(\* ({NUMBER}) = ({NUMBER}) loss\))?",
    "lr": rf"Iteration (\d+), lr = ({NUMBER})",
    "testing": r"Iteration (\d+), Testing net \(#(\d+)\)",
    "test_output": rf"    Test net output #(\d+): (\w+) = ({NUMBER})(?: \(\* ({NUMBER}) = ({NUMBER}) loss\))?",
    "snapshot": r"Snapshotting to binary proto file (\S+_iter_(\d+)\.caffemodel)",
    "state": r"Snapshotting solver state to binary proto file (\S+_iter_(\d+)\.solverstate)",
    "final_loss": rf"Iteration (\d+), loss = ({NUMBER})",
    "done": r"Optimization Done\.",
}


def classify(message: str):
    for kind, pattern in SOLVER_LINES.items():
        match = re.fullmatch(pattern, message)
        if match:
            return kind, match.groups()
    return None, ()


def parse_lines(text: str) -> list[tuple[str, str, tuple]]:
    """(severity, kind, groups) of each glog line; every line must be one."""
    parsed = []
    for line in text.splitlines():
        match = re.match(PREFIX, line)
        assert match, f"not a glog line: {line!r}"
        parsed.append((match["sev"], *classify(line[match.end():])))
    return parsed


def test_prefix_is_glogs():
    record = logging.LogRecord("torchcaffe.solver", logging.INFO, "/x/solver.py", 218,
                               "Iteration %d, lr = %s", (20, "1e-10"), None)
    line = glog.GlogFormatter().format(record)
    match = re.match(PREFIX + r"(?P<msg>.*)$", line)
    assert match, line
    moment = time.localtime(record.created)
    assert (int(match["mon"]), int(match["day"])) == (moment.tm_mon, moment.tm_mday)
    assert match["clock"] == time.strftime("%H:%M:%S", moment) + \
        f".{int((record.created % 1) * 1e6):06d}"
    assert (match["file"], match["line"], match["msg"]) == ("solver.py", "218",
                                                           "Iteration 20, lr = 1e-10")
    assert re.match(r"[IWEF]\d{4} \S{15} [ \d]{4}\d ", line)  # thread id right-aligned in 5 columns


@pytest.mark.parametrize("level, letter", [(logging.DEBUG, "I"), (logging.INFO, "I"),
                                           (logging.WARNING, "W"), (logging.ERROR, "E"),
                                           (logging.CRITICAL, "F")])
def test_severity_letters(level, letter):
    record = logging.LogRecord("x", level, "a.py", 1, "m", (), None)
    assert glog.GlogFormatter().format(record)[0] == letter


@pytest.mark.parametrize("value, text", [(1e-10, "1e-10"), (np.float32(1e-10), "1e-10"),
                                         (np.float32(1e-14), "1e-14"), (0.01, "0.01"),
                                         (2.142857142857, "2.14286"), (1234567.0, "1.23457e+06"),
                                         (0.0, "0"), (1.5, "1.5"), (100000.0, "100000")])
def test_floats_print_as_cpp_streams_them(value, text):
    # std::ostream << float: 6 significant digits, %g style
    assert glog.caffe_float(value) == text


def test_loss_note():
    assert glog.loss_note(0, 3.0) == ""
    assert glog.loss_note(1.0, 1.349) == " (* 1 = 1.349 loss)"
    assert glog.loss_note(0.5, 3.0) == " (* 0.5 = 1.5 loss)"


def run_solver_logged(tmp_path, monkeypatch, capsys, **solver):
    """Train the tiny net with glog lines as the console; returns stderr."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_tiny(tmp_path, **solver)
    with glog.console():
        torchcaffe.get_solver(str(path)).solve()
    return capsys.readouterr().err


def test_solver_prints_caffes_lines_at_caffes_points(tmp_path, monkeypatch, capsys):
    text = run_solver_logged(tmp_path, monkeypatch, capsys, max_iter=6, display=2, snapshot=4,
                             base_lr="1e-10", extra="test_iter: 2\ntest_interval: 3\n")
    lines = [(kind, groups) for _, kind, groups in parse_lines(text) if kind]
    kinds = [kind for kind, _ in lines]
    # displays at 0, 2, 4; tests at 0 (test_initialization), 3 and 6; snapshots at 4
    # and (after training) 6
    assert [int(g[0]) for k, g in lines if k == "display"] == [0, 2, 4]
    assert all(int(g[3]) == 2 for k, g in lines if k == "display")
    assert [(int(g[0]), g[1]) for k, g in lines if k == "lr"] == [(0, "1e-10"), (2, "1e-10"),
                                                                 (4, "1e-10")]
    assert [int(g[0]) for k, g in lines if k == "testing"] == [0, 3, 6]
    assert [int(g[1]) for k, g in lines if k == "snapshot"] == [4, 6]
    assert [int(g[1]) for k, g in lines if k == "state"] == [4, 6]
    assert [int(g[0]) for k, g in lines if k == "final_loss"] == [6]
    assert kinds[-1] == "done"
    # each display: the iteration line, then the train output with its loss weight, then lr
    first = kinds.index("display")
    assert kinds[first:first + 3] == ["display", "train_output", "lr"]
    _, (index, name, value, weight, weighted) = lines[first + 1]
    assert (index, name, weight) == ("0", "loss", "1") and value == weighted
    assert float(lines[first][1][4]) == pytest.approx(float(value), rel=1e-5)
    tests = [g for k, g in lines if k == "test_output"]
    assert [(g[0], g[1]) for g in tests] == [("0", "acc"), ("1", "loss")] * 3
    assert tests[0][3] is None and tests[1][3] == "1"


def test_display_averages_loss_over_average_loss(tmp_path, monkeypatch, capsys):
    text = run_solver_logged(tmp_path, monkeypatch, capsys, max_iter=4, display=1,
                             extra="average_loss: 2\n")
    lines = [(kind, groups) for _, kind, groups in parse_lines(text) if kind]
    raw = [float(g[2]) for k, g in lines if k == "train_output"]       # this iteration's loss
    shown = [float(g[4]) for k, g in lines if k == "display"]          # smoothed
    expected = [raw[0]] + [(a + b) / 2 for a, b in zip(raw, raw[1:])]
    assert shown == pytest.approx(expected, rel=2e-5)


SCRIPT = """
import logging, torchcaffe
torchcaffe.log("hello from pycaffe")
logging.getLogger("torchcaffe.solver").warning("a warning")
logging.getLogger("torchcaffe.net").error("an error")
"""


def run_script(script: str, **env) -> str:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}
    environment.update(env, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=environment, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    return done.stderr


@pytest.mark.parametrize("minloglevel, shown", [(None, "IWE"), ("0", "IWE"), ("1", "WE"),
                                                ("2", "E"), ("3", "")])
def test_glog_minloglevel(minloglevel, shown):
    env = {} if minloglevel is None else {"GLOG_minloglevel": minloglevel}
    text = run_script(SCRIPT, GLOG_logtostderr="1", **env)
    parsed = [re.match(PREFIX + r"(?P<msg>.*)", line) for line in text.splitlines()]
    assert all(parsed), text
    assert "".join(m["sev"] for m in parsed) == shown
    if "I" in shown:
        info = parsed[0]
        assert (info["file"], info["line"], info["msg"]) == ("<string>", "3",
                                                             "hello from pycaffe")


def test_a_program_that_configures_logging_gets_each_line_once():
    script = ("import logging, torchcaffe\n"
              "logging.basicConfig(format='%(levelname)s:%(message)s', level=logging.INFO)\n"
              "torchcaffe.log('once')\n")
    assert run_script(script) == "INFO:once\n"


def test_init_log_sets_the_minimum_level():
    script = ("import torchcaffe, logging\n"
              "torchcaffe.init_log(1, True)\n"
              "torchcaffe.log('hidden')\n"
              "logging.getLogger('torchcaffe.x').warning('shown')\n"
              "torchcaffe.init_log(0)\n"
              "torchcaffe.log('shown again')\n")
    text = run_script(script, GLOG_minloglevel="2")
    messages = [line.split("] ", 1)[1] for line in text.splitlines()]
    assert messages == ["shown", "shown again"]


@pytest.mark.parametrize("level", [-1, 4, 1.5, "1"])
def test_init_log_refuses_other_levels(level):
    with pytest.raises(ValueError, match="init_log: level must be"):
        glog.init_log(level)


def test_pycaffe_names():
    assert torchcaffe.init_log is glog.init_log and torchcaffe.log is glog.log


def test_iteration_rate_counts_from_the_last_display_across_step_calls(tmp_path, monkeypatch,
                                                                       capsys):
    # pycaffe loops call step(1): Caffe's rate still counts the iterations
    # since the last display (its timer restarts with each Step call)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    solver = torchcaffe.get_solver(str(write_tiny(tmp_path, display=3)))
    with glog.console():
        for _ in range(7):
            solver.step(1)
    lines = [(kind, g) for _, kind, g in parse_lines(capsys.readouterr().err) if kind == "display"]
    assert [int(g[0]) for _, g in lines] == [0, 3, 6]
    assert float(lines[0][1][1]) == 0  # no display before: Caffe's counter starts at 0
    assert all(float(g[1]) > 0 for _, g in lines[1:])
