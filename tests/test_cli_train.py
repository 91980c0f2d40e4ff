"""`torchcaffe train`: Caffe's flags, weights and resume, and the signal
effects (SIGINT stops with a final snapshot; SIGHUP snapshots and goes on)."""
import queue
import re
import signal
import threading

import numpy as np
import pytest

from torchcaffe.cli import main
from torchcaffe.net import TEST, Net
from torchcaffe.proto import caffe_pb2
from torchcaffe.solverstate import read_solverstate
from tool_fixtures import tool, write_tiny

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")


class Lines:
    """The lines a running tool writes to stderr, waited for by pattern."""

    def __init__(self, process):
        self.process = process
        self.seen: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match:
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                self.process.kill()
                pytest.fail(f"no line matching {pattern!r} in {timeout} s:\n" +
                            "\n".join(self.seen[-20:]))
            if line is None:
                pytest.fail(f"the tool ended without a line matching {pattern!r}:\n" +
                            "\n".join(self.seen[-20:]))
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def finish(self, timeout: float = 120) -> int:
        code = self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.seen.append(line)
        return code


def snapshot_iters(folder) -> list[int]:
    """Iterations with a complete snapshot (caffemodel and solverstate)."""
    states = sorted(int(p.name.split("_iter_")[1].split(".")[0])
                    for p in (folder / "snap").glob("tiny_iter_*.solverstate"))
    for it in states:
        assert (folder / "snap" / f"tiny_iter_{it}.caffemodel").is_file()
        assert read_solverstate(str(folder / "snap" / f"tiny_iter_{it}.solverstate")).iter == it
    return states


def start_training(tmp_path, *flags):
    # slow enough batches (2 ms) that a signal lands mid-training
    write_tiny(tmp_path, max_iter=1_000_000, display=50, delay=0.002)
    return Lines(tool(tmp_path, "train", "-solver", "solver.prototxt", *flags))


def test_sigint_stops_and_still_writes_the_final_snapshot(tmp_path):
    lines = start_training(tmp_path)
    lines.wait_for(r"\] Iteration 100 \(")
    lines.process.send_signal(signal.SIGINT)
    lines.wait_for(r"\] Optimization stopped early\.")
    assert lines.finish() == 0
    (stopped,) = snapshot_iters(tmp_path)
    assert 100 < stopped < 1_000_000
    assert any(f"Snapshotting solver state to binary proto file snap/tiny_iter_{stopped}."
               in line for line in lines.seen)
    assert lines.seen[-1].endswith("] Optimization Done.")


def test_sighup_snapshots_and_training_goes_on(tmp_path):
    lines = start_training(tmp_path)
    lines.wait_for(r"\] Iteration 100 \(")
    lines.process.send_signal(signal.SIGHUP)
    at = int(lines.wait_for(r"Snapshotting solver state to binary proto file "
                            r"snap/tiny_iter_(\d+)\.solverstate")[1])
    later = lines.wait_for(r"\] Iteration (\d+) \(")  # still training
    assert int(later[1]) > at
    lines.process.send_signal(signal.SIGINT)
    assert lines.finish() == 0
    assert len(snapshot_iters(tmp_path)) == 2 and snapshot_iters(tmp_path)[0] == at
    assert not any("Traceback" in line for line in lines.seen)


def test_signal_effects_are_flags(tmp_path):
    lines = start_training(tmp_path, "-sigint_effect", "none", "--sighup_effect=stop")
    lines.wait_for(r"\] Iteration 100 \(")
    lines.process.send_signal(signal.SIGINT)  # ignored
    lines.wait_for(r"\] Iteration 200 \(")
    lines.process.send_signal(signal.SIGHUP)
    lines.wait_for(r"\] Optimization stopped early\.")
    assert lines.finish() == 0
    assert len(snapshot_iters(tmp_path)) == 1


def run_tool(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["-foo", "1"], "train: unknown flag '-foo' (its flags: -solver, -weights"),
    (["-solver"], "train: flag -solver needs a value"),
    (["solver.prototxt"], "train: unexpected argument 'solver.prototxt'"),
    ([], "train: give the solver definition: -solver solver.prototxt"),
    (["-solver", "s.prototxt", "-level", "x"], "train: flag -level takes a whole number, got 'x'"),
    (["-solver", "s.prototxt", "-weights", "a", "-snapshot", "b"],
     "train: give -snapshot to resume training or -weights to fine-tune, not both"),
    (["-solver", "s.prototxt", "-sigint_effect", "halt"],
     "train: flag -sigint_effect must be stop, snapshot or none, got 'halt'"),
    (["-solver", "missing.prototxt"], "cannot read solver prototxt missing.prototxt"),
    # without CUDA (or with one GPU): one line saying so, before anything starts
    (["-solver", "solver.prototxt", "-gpu", "0,1"], "CUDA device"),
    (["-solver", "solver.prototxt", "-gpu", "0", "-procs", "2"],
     "give -gpu (one process per GPU) or -procs (CPU processes), not both"),
    (["-solver", "solver.prototxt", "-gpu", "one"],
     "flag -gpu takes device ids separated by ',' or 'all', got 'one'"),
    (["-solver", "solver.prototxt", "-weights", "missing.caffemodel"], "missing.caffemodel"),
])
def test_bad_flags_and_files_give_one_error_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    write_tiny(tmp_path)
    code, err = run_tool(capsys, "train", *args)
    errors = [line for line in err.splitlines() if not re.match(r"I\d{4} ", line)]
    assert code == 1
    assert len(errors) == 1 and errors[0].startswith("torchcaffe: error: "), err
    assert message in errors[0]


def test_unknown_command_and_usage(capsys):
    assert main(["brew"]) == 1
    assert capsys.readouterr().err.strip() == ("torchcaffe: error: unknown command 'brew' "
                                               "(commands: train, test, device_query, time)")
    assert main([]) == 1 and "usage: torchcaffe <command> <args>" in capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    assert "-sighup_effect" in capsys.readouterr().out


def ip_weights(path) -> np.ndarray:
    param = caffe_pb2.NetParameter()
    param.ParseFromString(path.read_bytes())
    layers = {layer.name: layer for layer in param.layer}
    return np.asarray(layers["ip"].blobs[0].data, dtype=np.float32)


def test_weights_are_a_comma_list_loaded_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    write_tiny(tmp_path, max_iter=0)
    net = Net("net.prototxt", phase=TEST)
    for i, value in enumerate((1.0, 2.0)):
        net.params["ip"][0].data[...] = value
        net.params["ip"][1].data[...] = 10 * value
        net.save(f"w{i}.caffemodel")
    code, err = run_tool(capsys, "train", "-solver", "solver.prototxt",
                         "-weights", "w0.caffemodel,w1.caffemodel")
    assert code == 0, err
    assert [m for m in re.findall(r"Finetuning from (\S+)", err)] == [
        "w0.caffemodel", "w1.caffemodel"]
    # max_iter 0: the snapshot after training holds the loaded weights, the last file's
    assert snapshot_iters(tmp_path) == [0]
    np.testing.assert_array_equal(ip_weights(tmp_path / "snap" / "tiny_iter_0.caffemodel"),
                                  np.full(12, 2.0, np.float32))


def test_snapshot_resumes_and_iterations_sets_the_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    write_tiny(tmp_path, max_iter=4, snapshot=4)
    assert run_tool(capsys, "train", "-solver", "solver.prototxt")[0] == 0
    code, err = run_tool(capsys, "train", "--solver=solver.prototxt",
                         "-snapshot=snap/tiny_iter_4.solverstate", "-iterations", "6")
    assert code == 0, err
    assert "Resuming from snap/tiny_iter_4.solverstate" in err
    assert re.findall(r"\] Iteration (\d+) \(", err) == ["4"]  # display 2: only 4 is run
    assert snapshot_iters(tmp_path) == [4, 6]


def test_action_requests_are_checked_after_each_update_and_before_test_batches(
        tmp_path, monkeypatch, caplog):
    import logging

    import torchcaffe
    from torchcaffe.solver import SolverAction

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    write_tiny(tmp_path, max_iter=100, display=0,
               extra="test_iter: 3\ntest_interval: 7\ntest_initialization: false\n")
    solver = torchcaffe.get_solver("solver.prototxt")
    asked = []

    def requests():
        asked.append(solver.iter)
        # snapshot after update 3; stop while the test at iteration 7 runs
        if solver.iter == 3 and asked.count(3) == 1:
            return SolverAction.SNAPSHOT
        if solver.iter == 7 and asked.count(7) == 3:  # before the test's 2nd batch
            return SolverAction.STOP
        return SolverAction.NONE

    solver.set_action_function(requests)
    with caplog.at_level(logging.INFO, logger="torchcaffe.solver"):
        solver.solve()
    # once per update (iter 1..7), then once per pending request before each test batch
    assert asked == [1, 2, 3, 4, 5, 6, 7, 7, 7, 7]
    assert snapshot_iters(tmp_path) == [3, 7]  # the request's, and the final one
    messages = [r.getMessage() for r in caplog.records]
    assert messages.index("Test interrupted.") < messages.index("Optimization stopped early.")
    assert "Optimization Done." not in messages
