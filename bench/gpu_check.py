"""`make gpu-check`: what an NVIDIA machine must show, in one table.

    python -m bench.gpu_check [--require-gpu]

Checks, each in fresh processes:
1. the golden cases computed by BVLC Caffe (layers, nets, solver steps),
   computed on CUDA (pytest with the bench.gpu_golden plugin);
2. the bench's CUDA rows (`python -m bench --device cuda`);
3. a 50-iteration staged run on the GPU (voc-fcn32s -> 16s -> 8s for 20 +
   15 + 15 iterations, narrow nets, synthetic data): it must finish with
   finite losses and scores;
4. with 2 GPUs or more: 2 ranks on 2 GPUs at batch 1 against 1 GPU at
   iter_size 2, params within 1e-5 relative (the CI equivalence test, on
   CUDA with NCCL).

Prints one table (check, result, seconds, detail) and exits 1 when any
check fails. On a machine without CUDA it prints one line and exits 0
(with --require-gpu: exit status 2).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN_TESTS = ["tests/test_golden_layers.py", "tests/test_golden_nets.py",
                "tests/test_golden_solver.py"]
EQUIVALENCE_TEST = ("tests/test_distributed.py::"
                    "test_two_ranks_at_batch_1_equal_one_process_at_iter_size_2")
NO_GPU_STATUS = 2


def _run(argv: list[str], timeout_s: float, **kwargs) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True,
                                text=True, timeout=timeout_s, **kwargs)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout_s:g} s", time.monotonic() - started
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def _pytest(tests: list[str], timeout_s: float) -> tuple[bool, float, str]:
    status, output, seconds = _run(["-m", "pytest", "-q", "-p", "bench.gpu_golden", *tests],
                                   timeout_s)
    summary = next((line.strip("= ") for line in reversed(output.splitlines())
                    if " passed" in line or " failed" in line or " error" in line), "")
    failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    detail = summary + (f"; first: {failed[0]}" if failed else "")
    return status == 0, seconds, detail or output[-300:]


def check_golden() -> tuple[bool, float, str]:
    return _pytest(GOLDEN_TESTS, timeout_s=150)


def check_bench(rows_out: list[dict]) -> tuple[bool, float, str]:
    with tempfile.TemporaryDirectory(prefix="gpu-check-bench-") as work:
        out = Path(work) / "results.json"
        status, output, seconds = _run(["-m", "bench", "--device", "cuda", "--json", str(out)],
                                       timeout_s=120)
        if status != 0 or not out.is_file():
            return False, seconds, output[-300:]
        rows_out.extend(json.loads(out.read_text())["rows"])
    return True, seconds, f"{len(rows_out)} rows (below)"


def check_staged_run() -> tuple[bool, float, str]:
    with tempfile.TemporaryDirectory(prefix="gpu-check-solve-") as work:
        work = Path(work)
        setup = ("import sys; from pathlib import Path; sys.path.insert(0, 'tests');"
                 "from data_layers import synthetic; from test_staged import random_base;"
                 f"w = Path({str(work)!r});"
                 "synthetic.generate(w / 'data', seed=1, train=8, val=2, height=64, width=80);"
                 "random_base(w)")
        status, output, seconds = _run(["-c", setup], timeout_s=60)
        if status != 0:
            return False, seconds, f"setting up: {output[-300:]}"
        status, output, more = _run(
            ["-m", "solvers.solve", "voc-fcn8s", "--gpu", "0", "--iters", "20,15,15",
             "--width", str(1 / 32), "--data", str(work / "data"),
             "--weights", str(work / "vgg16-fcn-narrow.caffemodel"), "--test-interval", "50",
             "--test-images", "2", "--save-predictions", "none", "--out", str(work / "run")],
            timeout_s=150)
        seconds += more
        if status != 0:
            return False, seconds, output[-300:]
        stages = json.loads((work / "run" / "scores.json").read_text())["stages"]
        losses = [test["loss"] for stage in stages.values() for test in stage["tests"]]
        iters = sum(stage["iters"] for stage in stages.values())
        finite = losses and all(isinstance(x, float) and math.isfinite(x) for x in losses)
        return bool(finite and iters == 50), seconds, (
            f"{iters} iterations over {len(stages)} stages, test losses "
            f"{', '.join(f'{x:.4g}' for x in losses)}")


def check_two_gpus(gpus: int) -> tuple[bool | None, float, str]:
    if gpus < 2:
        return None, 0.0, "skipped: one GPU"
    return _pytest([EQUIVALENCE_TEST], timeout_s=150)


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    header = ("check", "result", "seconds", "detail")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header[:3], widths)) + "  " + header[3]]
    lines.append("  ".join("-" * w for w in widths) + "  ------")
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--require-gpu", action="store_true",
                        help=f"exit with status {NO_GPU_STATUS} (not 0) when there is no CUDA")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device is available to PyTorch on this machine; nothing "
              "was checked")
        return NO_GPU_STATUS if args.require_gpu else 0
    gpus = torch.cuda.device_count()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    bench_rows: list[dict] = []
    checks = [("golden cases on CUDA", check_golden),
              ("bench CUDA rows", lambda: check_bench(bench_rows)),
              ("50-iteration staged run", check_staged_run),
              ("2-GPU equivalence", lambda: check_two_gpus(gpus))]
    rows, failed = [], False
    for name, check in checks:
        ok, seconds, detail = check()
        failed |= ok is False
        result = "skipped" if ok is None else "ok" if ok else "MISMATCH"
        rows.append((name, result, f"{seconds:.0f}", detail))
    for row in bench_rows:
        base = row.get("baseline_value")
        ratio = f" ({row['value'] / base:.3f}x {row['baseline']})" if base else ""
        rows.append((f"  bench {row['section']}", "", "",
                     f"{row['metric']}: {row['value']:.4g} {row['unit']}{ratio}"))
    print(f"gpu-check on {gpus} x {torch.cuda.get_device_name(0)}")
    print(_table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
