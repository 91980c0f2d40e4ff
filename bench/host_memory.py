"""Host-memory policies side by side on full-width voc-fcn8s training.

Not part of a plain `make bench` (about seven minutes with three rounds):
`python -m bench --only host_memory --rounds 3`. Each round runs, for each
policy in turn, a fresh process doing STEPS training steps (vs_caffe's
solver, weights and inputs) under `TORCHCAFFE_MALLOC=<policy>`, so the
policies' processes alternate and the machine's drift falls on all of them
alike. Rows, the default policy against each other one: the median time of
the steps after the first WARM_STEPS over all rounds (with the spread),
the median page faults of those steps, and the peak RSS; and for `pool`,
the bytes its large blocks occupied at their high-water mark (the most in
use at once: the pool's resident memory never passes it).
"""
from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.net_speed import _peak_rss_mib
from bench.vs_caffe import OPTIONS, Ours, in_fresh_process, write_nets

POLICIES = ["pool", "retain"]
STEPS = 6
WARM_STEPS = 2


def _child(folder: str, threads: int, queue) -> None:
    from torchcaffe import host_memory, host_pool

    torch.set_num_threads(threads)
    variant = Ours(Path(folder), deploy=False)
    seconds, faults = [], []
    for _ in range(STEPS):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        variant.step()
        seconds.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    stats = host_pool.stats()
    queue.put({"state": host_memory.apply_policy(), "seconds": seconds[WARM_STEPS:],
               "faults": faults[WARM_STEPS:], "peak": _peak_rss_mib(),
               "pool_high_water": stats["high_water"] / 2**20 if stats else None})


def run(device: str) -> list[dict]:
    if device != "cpu":
        return []
    runs: dict[str, list[dict]] = {policy: [] for policy in POLICIES}
    with tempfile.TemporaryDirectory(prefix="bench-host-memory-") as tmp:
        write_nets(Path(tmp))
        for _ in range(OPTIONS["rounds"]):
            for policy in POLICIES:
                runs[policy].append(in_fresh_process(
                    _child, (tmp, OPTIONS["threads"]), {"TORCHCAFFE_MALLOC": policy}))
    merged = {policy: {key: [v for r in rs for v in r[key]] for key in ("seconds", "faults")}
              | {"peak": max(r["peak"] for r in rs), "state": rs[0]["state"],
                 "pool_high_water": rs[0]["pool_high_water"]}
              for policy, rs in runs.items()}
    ours, rows = merged[POLICIES[0]], []
    label = f"{POLICIES[0]} (held: {ours['state']})"
    steps = f"steps {WARM_STEPS + 1}-{STEPS} of {OPTIONS['rounds']} fresh processes each"
    for policy in POLICIES[1:]:
        theirs, name = merged[policy], f"TORCHCAFFE_MALLOC={policy} (held: {merged[policy]['state']})"
        rows += [
            {"metric": f"voc-fcn8s training step, {steps}, median, {label}",
             "value": statistics.median(ours["seconds"]) * 1e3, "unit": "ms",
             "baseline": name, "baseline_value": statistics.median(theirs["seconds"]) * 1e3,
             "speedup": True,
             "spread": {n: [min(m["seconds"]) * 1e3, max(m["seconds"]) * 1e3]
                        for n, m in merged.items()}},
            {"metric": f"voc-fcn8s page faults per training step, median, {label}",
             "value": statistics.median(ours["faults"]), "unit": "",
             "baseline": name, "baseline_value": statistics.median(theirs["faults"])},
            {"metric": f"voc-fcn8s peak RSS over {STEPS} training steps, {label}",
             "value": ours["peak"], "unit": "MiB",
             "baseline": name, "baseline_value": theirs["peak"]}]
    if merged["pool"]["pool_high_water"] is not None:
        rows.append({"metric": "voc-fcn8s training, the pool's large blocks at their "
                               "high-water mark (the most in use at once)",
                     "value": merged["pool"]["pool_high_water"], "unit": "MiB"})
    return rows
