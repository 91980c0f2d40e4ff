"""Training on several processes (gloo, CPU) with Caffe's multi-GPU semantics.

Each case starts real processes (2 ranks, one torch thread each) on a tiny
segmentation net fed by the SBDD data layer over synthetic scenes, and
checks against a one-process run or a file round trip:

- a script written like BVLC's python/train.py (caffe.NCCL, a uid): ranks
  reading different solver files are stopped at the start; then 2 ranks at
  batch 1 == 1 process at iter_size 2 over the same interleaved streams;
- `torchcaffe train -procs 2`: snapshots by rank 0, a SIGKILLed rank stops
  the other with one error and leaves no partial snapshot, and the last
  complete snapshot resumes bit for bit; another world size is refused;
- `python solve.py --procs 2` trains a stage; `--gpus` without CUDA is one
  error line.
"""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import torchcaffe as caffe
from data_layers import synthetic
from torchcaffe.errors import CaffeError
from torchcaffe.solverstate import read_solverstate
from tiny_seg_net import DROPOUT, tiny_seg_net

REPO = Path(__file__).resolve().parents[1]


def caffe_cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# rank 1 kills itself (SIGKILL) in the forward of its 5th batch (iteration 4)
KILLER = ('layer { name: "killer" type: "Python" bottom: "conv1" top: "probe" '
          'python_param { module: "dist_killer" layer: "KillAt" param_str: "5" } }')
KILLER_MODULE = textwrap.dedent('''
    import os, signal
    import caffe_backend
    caffe = caffe_backend.caffe

    class KillAt(caffe.Layer):
        def setup(self, bottom, top):
            self.at, self.calls = int(self.param_str), 0
        def reshape(self, bottom, top):
            top[0].reshape(1)
        def forward(self, bottom, top):
            self.calls += 1
            if caffe.solver_rank() == 1 and self.calls == self.at:
                os.kill(os.getpid(), signal.SIGKILL)
        def backward(self, top, propagate_down, bottom):
            pass
''')

SOLVER = """
train_net: "{net}"
base_lr: {lr}
lr_policy: "fixed"
momentum: {momentum}
weight_decay: 0.0005
iter_size: {iter_size}
display: 0
max_iter: {max_iter}
snapshot: {snapshot}
snapshot_prefix: "{prefix}"
random_seed: 5
"""

# the FCN recipe (sum loss, momentum 0.99) and a normalized loss
RECIPES = {"normalized, momentum 0.9": dict(normalize="true", momentum=0.9, lr=0.01),
           "FCN: unnormalized, momentum 0.99": dict(normalize="false", momentum=0.99, lr=1e-5)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthetic.generate(root, seed=3, train=7, val=2, height=16, width=16)
    return root / "sbdd" / "dataset"


def write_solver(folder: Path, name: str, sbdd: Path, *, extra="", normalize="false",
                 momentum=0.9, lr=1e-5, iter_size=1, max_iter=10, snapshot=0,
                 prefix="snap/train") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    net = folder / f"{name}.net.prototxt"
    net.write_text(tiny_seg_net(sbdd, std=0.1, extra=extra, normalize=normalize == "true"))
    (folder / Path(prefix).parent).mkdir(parents=True, exist_ok=True)
    solver = folder / f"{name}.solver.prototxt"
    solver.write_text(SOLVER.format(net=net, lr=lr, momentum=momentum, iter_size=iter_size,
                                    max_iter=max_iter, snapshot=snapshot,
                                    prefix=folder / prefix))
    return solver


def child_env(tmp_path: Path, timeout_s: float = 20) -> dict:
    path = [str(REPO), str(tmp_path), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path)),
            "OMP_NUM_THREADS": "1", "TORCHCAFFE_COMM_TIMEOUT": str(timeout_s)}


def params_of(net) -> dict[str, np.ndarray]:
    return {f"{name}/{i}": blob.data.copy() for name, blobs in net.params.items()
            for i, blob in enumerate(blobs)}


# ---------------------------------------------------------------- equivalence

# As BVLC's python/train.py: one Process per rank, a shared NCCL uid.
TRAIN_PY = textwrap.dedent('''
    import os
    import sys
    from multiprocessing import Process
    import numpy as np
    import torch
    import torchcaffe as caffe

    def solve(mismatched, protos, uid, rank, count):
        torch.set_num_threads(1)
        if os.environ.get("FCN_TEST_DEVICE") == "cuda":  # the GPU check: a GPU per rank
            caffe.set_device(rank)
            caffe.set_mode_gpu()
        else:
            caffe.set_mode_cpu()
        caffe.set_solver_count(count)
        caffe.set_solver_rank(rank)
        caffe.set_multiprocess(True)
        if mismatched:  # each rank its own solver file: refused at the start
            try:
                caffe.NCCL(caffe.SGDSolver(mismatched[rank]), uid)
            except caffe.CaffeError as exc:
                with open(f"{mismatched[rank]}.err", "w") as out:
                    out.write(str(exc))
        for proto in protos:
            solver = caffe.SGDSolver(proto)
            nccl = caffe.NCCL(solver, uid)
            nccl.bcast()
            solver.add_callback(nccl)
            if solver.param.layer_wise_reduce:
                solver.net.after_backward(nccl)
            solver.step(solver.param.max_iter)
            if rank == 0:
                np.savez(proto + ".npz", **{f"{k}/{i}": b.data for k, bs in
                                            solver.net.params.items() for i, b in enumerate(bs)})

    if __name__ == "__main__":
        uid = caffe.NCCL.new_uid()
        mismatched, protos = sys.argv[1].split(",") if sys.argv[1] else [], sys.argv[2:]
        procs = [Process(target=solve, args=(mismatched, protos, uid, rank, 2))
                 for rank in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        sys.exit(max(abs(p.exitcode) for p in procs))
''')


def test_two_ranks_at_batch_1_equal_one_process_at_iter_size_2(tmp_path, dataset):
    # first each rank reads its own solver file (another base_lr): both are stopped
    mismatched = [write_solver(tmp_path, f"lr{k}", dataset, lr=k * 1e-5) for k in (1, 2)]
    protos = {recipe: write_solver(tmp_path / f"r{i}", "ranks", dataset, **settings)
              for i, (recipe, settings) in enumerate(RECIPES.items())}
    script = tmp_path / "train.py"
    script.write_text(TRAIN_PY)
    result = subprocess.run(
        [sys.executable, str(script), ",".join(map(str, mismatched)), *map(str, protos.values())],
        env=child_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for solver in mismatched:
        assert Path(f"{solver}.err").read_text() == (
            "the 2 training processes disagree on their solver settings: rank(s) [1] differ "
            "from rank 0 (every process must read the same net and solver files)")
    for i, (recipe, settings) in enumerate(RECIPES.items()):
        ranks = np.load(f"{protos[recipe]}.npz")
        single = caffe.SGDSolver(str(write_solver(tmp_path / f"r{i}", "single", dataset,
                                                  iter_size=2, **settings)))
        start = params_of(single.net)
        single.step(10)
        moved = 0
        for key, value in params_of(single.net).items():
            np.testing.assert_allclose(ranks[key], value, rtol=1e-5, atol=1e-7,
                                       err_msg=f"{recipe}: {key}")
            moved += not np.allclose(value, start[key])
        assert moved >= 3, f"{recipe}: training barely changed the params"


def test_nccl_in_one_process_changes_nothing(tmp_path, dataset):
    solvers = [caffe.SGDSolver(str(write_solver(tmp_path, name, dataset, lr=0.01)))
               for name in ("plain", "with-nccl")]
    nccl = caffe.NCCL(solvers[1], caffe.NCCL.new_uid())
    nccl.bcast()
    solvers[1].add_callback(nccl)
    solvers[1].net.after_backward(nccl)
    for solver in solvers:
        solver.step(3)
    plain, with_nccl = (params_of(solver.net) for solver in solvers)
    for key, value in plain.items():
        np.testing.assert_array_equal(with_nccl[key], value, err_msg=key)


# ---------------------------------------------------------------- snapshots, faults

def run_train(tmp_path, solver, *extra, timeout_s=20):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "torchcaffe", "train", f"-solver={solver}", "-procs=2", *extra],
        env=child_env(tmp_path, timeout_s), capture_output=True, text=True, timeout=180)
    return result, time.monotonic() - started


def test_snapshot_kill_and_bit_exact_resume_of_two_processes(tmp_path, dataset):
    (tmp_path / "dist_killer.py").write_text(KILLER_MODULE)
    common = dict(extra=DROPOUT, momentum=0.99, max_iter=6, snapshot=3)
    straight = write_solver(tmp_path, "a", dataset, prefix="snap_a/train", **common)
    result, _ = run_train(tmp_path, straight)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "snap_a").iterdir()) == [
        f"train_iter_{i}.{ext}" for i in (3, 6)
        for ext in ("caffemodel", "datastate.json", "solverstate")]

    # rank 1 dies during iteration 4: rank 0 stops with one error, in bounded time
    killed = write_solver(tmp_path, "b", dataset, prefix="snap_b/train",
                          **{**common, "extra": DROPOUT + "\n" + KILLER})
    result, seconds = run_train(tmp_path, killed, timeout_s=10)
    assert result.returncode != 0
    assert seconds < 60
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "another training process died or stopped answering" in errors[0]
    assert sorted(p.name for p in (tmp_path / "snap_b").iterdir()) == [
        "train_iter_3.caffemodel", "train_iter_3.datastate.json", "train_iter_3.solverstate"]

    # its last complete snapshot resumes as if nothing had happened
    resumed = write_solver(tmp_path, "c", dataset, prefix="snap_c/train", **common)
    result, _ = run_train(tmp_path, resumed, f"-snapshot={tmp_path}/snap_b/train_iter_3.solverstate")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "snap_a" / "train_iter_6.caffemodel").read_bytes() == \
        (tmp_path / "snap_c" / "train_iter_6.caffemodel").read_bytes()
    history_a = read_solverstate(str(tmp_path / "snap_a" / "train_iter_6.solverstate")).history
    history_c = read_solverstate(str(tmp_path / "snap_c" / "train_iter_6.solverstate")).history
    for ha, hc in zip(history_a, history_c):
        np.testing.assert_array_equal(ha, hc)

    # another number of processes is refused, with what to do instead
    one = caffe.SGDSolver(str(write_solver(tmp_path, "d", dataset, prefix="snap_d/train",
                                           **common)))
    with pytest.raises(CaffeError, match=r"written by a run of 2 training process\(es\), this "
                                         r"run has 1: resume with 2"):
        one.restore(str(tmp_path / "snap_a" / "train_iter_3.solverstate"))


# ---------------------------------------------------------------- the staged driver

def test_solve_py_trains_a_stage_on_two_processes(tmp_path):
    from test_staged import WIDTH, random_base

    synthetic.generate(tmp_path / "data", seed=1, train=5, val=2, height=40, width=48)
    base = random_base(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "solvers.solve", "voc-fcn32s", "--procs", "2", "--iters", "2",
         "--width", str(WIDTH), "--data", str(tmp_path / "data"), "--weights", str(base),
         "--test-images", "1", "--save-predictions", "none", "--out", str(tmp_path / "run")],
        env=child_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("voc-fcn32s: 2 iterations") == 1  # rank 0 reports
    stage = tmp_path / "run" / "voc-fcn32s"
    assert sorted(p.name for p in (stage / "snapshot").iterdir()) == [
        "train_iter_2.caffemodel", "train_iter_2.datastate.json", "train_iter_2.solverstate"]
    document = json.loads((stage / "snapshot" / "train_iter_2.datastate.json").read_text())
    assert document["world_size"] == 2 and len(document["ranks"]) == 2
    assert (stage / "final.caffemodel").is_file()
    other = tmp_path / "run" / ".rank1"  # rank 1 keeps its logs aside and writes no weights
    assert (other / "train.log").is_file()
    assert not list(other.rglob("*.caffemodel"))


@pytest.mark.skipif(caffe_cuda_count() >= 2, reason="this machine has GPUs to train on")
def test_gpus_without_cuda_is_one_error_line(capsys):
    from solvers.solve import main

    with pytest.raises(SystemExit) as stop:
        main(["voc-fcn8s", "--gpus", "0,1"])
    assert stop.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "solve.py: error: GPUs '0,1' asked for, but no CUDA device is available to PyTorch on "
        "this machine (train on CPU processes instead: --procs N / -procs N)"
        if caffe_cuda_count() == 0 else "solve.py: error: GPUs '0,1': give distinct ids among "
        "the 1 CUDA device(s) 0..0"]
