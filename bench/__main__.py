"""`make bench`: run every speed section and print one table.

Each section module exposes `run(device) -> list[row]`, a row being a dict
with `metric`, `value`, `unit` and, where the figure has one, the `baseline`
it is compared with and that baseline's `baseline_value`, measured in the
same run. The table shows value / baseline as the ratio, or for rows marked
`speedup` (times) how many times faster the value is than its baseline; the
rows also go to a JSON file for the README and later comparison. A section
may also offer `report() -> str`, a table printed after the main one
(vs_caffe's per-layer times).

`--quick` runs only vs_caffe with one timed round; `--threads N` caps the
CPU threads (default: every available core), and the first line printed
says how many were used.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import sys
import time

SECTIONS = ["vs_caffe", "kernel_accuracy", "infer_speed", "net_speed", "load_speed",
            "solver_speed", "score_speed", "data_speed", "dist_speed"]
#: run only when named with --only
EXTRA_SECTIONS = ["host_memory"]


def _devices() -> list[str]:
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _format(rows: list[dict]) -> str:
    header = ("device", "metric", "value", "baseline", "baseline value", "ratio")
    lines = [header]
    for row in rows:
        base = row.get("baseline_value")
        ratio = row["value"] / base if base else None
        if ratio and row.get("speedup"):
            ratio = 1 / ratio  # how many times faster than the baseline
        lines.append((
            row["device"],
            row["metric"],
            f"{row['value']:.4g} {row['unit']}",
            row.get("baseline") or "",
            f"{base:.4g} {row['unit']}" if base else "",
            "" if ratio is None else f"{ratio:.2f}x faster" if row.get("speedup") else f"{ratio:.3f}x",
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=SECTIONS + EXTRA_SECTIONS,
                        help="run only these sections (host_memory only when named)")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="only this device")
    parser.add_argument("--json", default=os.path.join("bench", "results.json"),
                        help="where to write the rows (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and Caffe (default: every available core)")
    parser.add_argument("--caffe-python", metavar="PY",
                        help="vs_caffe: a Python whose `import caffe` is BVLC's pycaffe "
                        "(FCN_CAFFE=pycaffe: this interpreter's)")
    parser.add_argument("--caffe-root", metavar="DIR",
                        help="vs_caffe: a built BVLC Caffe checkout; its python/ goes on PYTHONPATH")
    parser.add_argument("--rounds", type=int, default=None,
                        help="vs_caffe and host_memory: timed rounds (default 2; --quick: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="only vs_caffe, one timed round")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from torchcaffe import host_memory
    from torchcaffe.errors import CaffeError

    # the whole run under the policy its first line states (a Net would
    # apply it only when the first section builds one), and a bad value
    # refused before any section runs
    try:
        memory = host_memory.apply_policy()
    except CaffeError as error:
        parser.error(str(error))

    from torchcaffe.threads import use_threads

    from bench import vs_caffe

    threads = use_threads(args.threads)
    vs_caffe.OPTIONS.update(caffe_python=args.caffe_python, caffe_root=args.caffe_root,
                            threads=threads,
                            rounds=args.rounds if args.rounds is not None
                            else 1 if args.quick else vs_caffe.ROUNDS)
    sections = args.only or (["vs_caffe"] if args.quick else SECTIONS)
    devices = [args.device] if args.device else _devices()
    rows: list[dict] = []
    tables: list[str] = []
    for section in sections:
        module = importlib.import_module(f"bench.{section}")
        for device in devices:
            logging.info("bench: %s on %s", section, device)
            for row in module.run(device):
                rows.append({"section": section, "device": device, **row})
        if hasattr(module, "report") and module.report():
            tables.append(module.report())
        # what one section kept for reuse is not the next one's RSS
        host_memory.trim()
    print(f"torch threads: {threads} (of {os.cpu_count()} CPUs; --threads to change); "
          f"host memory: {memory} ({host_memory.ENV} to change)")
    print(_format(rows))
    for table in tables:
        print("\n" + table)
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "host_memory": memory,
        "rows": rows,
        "tables": tables,
    }
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    tmp = args.json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, args.json)
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
