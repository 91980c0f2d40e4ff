"""A run killed (SIGKILL) in the middle of writing a snapshot loses nothing it
had: the previous snapshot stays byte-identical and restorable, and no
half-written file takes a snapshot's final name; the next run removes the
killed writer's temporary file."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

NET = """
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 3 kernel_size: 1
                            weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""

# The child trains 2 steps (snapshot at iter 2 completes), then stalls the
# writer of iter 4's `stall` file half-way, signals the parent and waits to
# be killed.
CHILD = textwrap.dedent("""
    import contextlib, sys, time
    from pathlib import Path
    import numpy as np
    import torchcaffe
    import torchcaffe.caffemodel, torchcaffe.solverstate

    solver_file, marker, stall = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    torchcaffe.set_random_seed(1)
    solver = torchcaffe.SGDSolver(solver_file)
    solver.net.blobs["data"].data[...] = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4) / 32
    solver.net.blobs["label"].data[...] = np.arange(16).reshape(1, 1, 4, 4) % 3
    solver.step(2)
    module = getattr(torchcaffe, stall)
    real = module.atomic_output

    class HalfThenHang:
        def __init__(self, out):
            self.out = out
        def write(self, data):
            data = bytes(data)
            self.out.write(data[: max(1, len(data) // 2)])
            self.out.flush()
            marker.touch()
            time.sleep(600)

    @contextlib.contextmanager
    def stalling(path):
        with real(path) as out:
            yield HalfThenHang(out)

    module.atomic_output = stalling
    solver.step(2)
""")


@pytest.mark.parametrize("stall", ["caffemodel", "solverstate"])
def test_kill_during_snapshot_keeps_the_previous_one(tmp_path, stall):
    import torchcaffe

    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "snap").mkdir()
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{tmp_path}/net.prototxt" base_lr: 0.1 momentum: 0.9 '
                           f'lr_policy: "fixed" max_iter: 100 display: 0 snapshot: 2 '
                           f'snapshot_prefix: "{tmp_path}/snap/train"')
    marker = tmp_path / "stalled"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    # the child imports this checkout's torchcaffe, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, str(script), str(solver_file), str(marker), stall],
                             stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never reached the snapshot"
            time.sleep(0.05)
        previous = {name: (tmp_path / "snap" / name).read_bytes()
                    for name in ("train_iter_2.caffemodel", "train_iter_2.solverstate")}
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()

    names = sorted(os.listdir(tmp_path / "snap"))
    # a killed writer cannot clean up its temporary file, but it is hidden
    # and never carries a snapshot's final name
    visible = [n for n in names if not n.startswith(".")]
    assert "train_iter_4.solverstate" not in visible
    if stall == "caffemodel":
        assert "train_iter_4.caffemodel" not in visible
    for name, content in previous.items():
        assert (tmp_path / "snap" / name).read_bytes() == content
    stale = [n for n in names if n.startswith(".train_iter_4.")]
    assert len(stale) == 1
    # the next run removes the killed writer's temporary file, and restores:
    # iter 2, the weights written then
    solver = torchcaffe.SGDSolver(str(solver_file))
    assert not (tmp_path / "snap" / stale[0]).exists()
    solver.restore(str(tmp_path / "snap" / "train_iter_2.solverstate"))
    assert solver.iter == 2


def test_temp_files_of_live_writers_are_kept(tmp_path):
    from torchcaffe.atomic import remove_stale_temps

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    names = {
        f".train_iter_8.caffemodel.{dead}.k2j_x9.caffemodel": False,  # writer gone
        f".train_iter_8.solverstate.{os.getpid()}.a1b2.solverstate": True,  # this process
        f".train_iter_8.solverstate.{os.getppid()}.a1b2.solverstate": True,  # a live one
        "train_iter_8.caffemodel": True,  # not a temporary file
        f".val_iter_8.caffemodel.{dead}.q.caffemodel": True,  # another prefix
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    remove_stale_temps(tmp_path, "train_iter_")
    assert {n: (tmp_path / n).exists() for n in names} == names
