"""Time the full demo, as `make demo` runs it, and check it is deterministic.

    python -m bench.demo_time [--runs 2] [--json bench/results-demo-time.json] [-- DEMO ARGS]

Runs `python -m solvers.demo` in a fresh process per run (each into its own
output folder) and records, per run, the wall time, the CPU time of the demo
process (user + sys), the load average before and after (a busy machine
inflates the wall time, not the CPU time) and the sha1 of results.json; with
two or more runs it says whether those are byte-identical. The demo's limit
is 3 minutes of wall time on an idle 2-core machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_S = 180


def time_demo(out: Path, demo_args: list[str]) -> dict:
    """One demo run in a child process: wall / CPU seconds, load, results digest."""
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "solvers.demo", "--out", str(out), *demo_args],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    results = (out / "results.json").read_bytes()
    return {"wall_s": round(wall, 1),
            "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "results_sha1": hashlib.sha1(results).hexdigest()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.demo_time", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="demo runs (2+: compare results)")
    parser.add_argument("--json", type=Path, default=Path("bench/results-demo-time.json"),
                        help="where to write the measurements")
    parser.add_argument("demo_args", nargs="*", help="arguments for solvers.demo (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    runs = []
    with tempfile.TemporaryDirectory(prefix="demo-time-") as scratch:
        for index in range(args.runs):
            run = time_demo(Path(scratch) / f"run{index}", args.demo_args)
            runs.append(run)
            print(f"run {index + 1}: {run['wall_s']:.0f} s wall, {run['cpu_s']:.0f} s CPU "
                  f"(user + sys), load {run['load_before'][0]:.2f} -> "
                  f"{run['load_after'][0]:.2f}, results.json sha1 {run['results_sha1'][:12]}")
    report = {"machine": platform.machine(), "cpus": os.cpu_count(),
              "python": platform.python_version(), "demo_args": args.demo_args,
              "limit_s": LIMIT_S, "runs": runs,
              "within_limit": all(r["wall_s"] <= LIMIT_S for r in runs)}
    if len(runs) > 1:
        report["deterministic"] = len({r["results_sha1"] for r in runs}) == 1
        print("results.json identical across runs:", report["deterministic"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
