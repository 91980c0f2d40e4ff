"""Training on several processes: iterations/s of 1 process against 2.

The net and solver are solver_speed's (voc-fcn8s at 1/16 width, 1 x 3 x 64
x 64 Input data, the FCN recipe). Each configuration runs in fresh
processes (torch on one thread each, as the multi-process tests): one
process alone, then two training together (gloo on the CPU; NCCL on CUDA
when the machine has 2 GPUs or more), gradients all-reduced every step. Rows:
iterations/s of each, and images/s (2 processes train 2 images per
iteration). On a 2-core machine two CPU processes share the cores with the
all-reduce, so expect little or no gain there.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

WARMUP = 2
TIMED = 6
ROUNDS = 2


def _worker(device: str, out: Path) -> None:
    import torch

    from bench.solver_speed import WIDTH, _solver
    from torchcaffe import mode, parallel

    torch.set_num_threads(1)
    if device == "cuda":
        mode.set_device(parallel.local_rank())
        mode.set_mode_gpu()
    parallel.init_from_env()
    parallel.quiet_unless_root()
    solver = _solver()
    if parallel.active():
        nccl = parallel.NCCL(solver)
        nccl.bcast()
        solver.add_callback(nccl)
    solver.step(WARMUP)
    best = float("inf")
    for _ in range(ROUNDS):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        solver.step(TIMED)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    if parallel.is_root():
        out.write_text(json.dumps({"iters_per_s": TIMED / best, "width": WIDTH,
                                   "processes": parallel.solver_count()}))
    parallel.shutdown()


def _measure(device: str, count: int) -> float:
    with tempfile.TemporaryDirectory(prefix="dist-speed-") as work:
        out = Path(work) / "result.json"
        argv = ["-m", "bench.dist_speed", "--worker", device, str(out)]
        if count == 1:
            env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
            status = subprocess.run([sys.executable, *argv], env=env).returncode
        else:
            from torchcaffe import parallel

            status = parallel.launch_local(count, argv)
        if status != 0 or not out.is_file():
            raise RuntimeError(f"dist_speed: the {count}-process run on {device} failed "
                               f"(exit status {status})")
        return json.loads(out.read_text())["iters_per_s"]


def run(device: str) -> list[dict]:
    if device == "cuda":
        import torch

        if torch.cuda.device_count() < 2:
            log.info("dist_speed: one GPU only, no multi-GPU rows")
            return []
    backend = "NCCL" if device == "cuda" else "gloo"
    one = _measure(device, 1)
    two = _measure(device, 2)
    label = "voc-fcn8s x1/16, 1x3x64x64, 1 thread per process"
    return [
        {"metric": f"train iterations/s, 1 process ({label})", "value": one, "unit": "it/s"},
        {"metric": f"train iterations/s, 2 processes ({backend} all-reduce)", "value": two,
         "unit": "it/s", "baseline": "1 process", "baseline_value": one},
        {"metric": "train images/s, 2 processes x batch 1", "value": 2 * two, "unit": "img/s",
         "baseline": "1 process", "baseline_value": one},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dist_speed", description=__doc__)
    parser.add_argument("--worker", nargs=2, metavar=("DEVICE", "OUT"),
                        help="(internal) one timed process of a configuration")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker:
        _worker(args.worker[0], Path(args.worker[1]))
        return 0
    for row in run("cpu"):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
