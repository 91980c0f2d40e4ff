"""`make bench`: run every speed section and print one table.

Each section module exposes `run(device) -> list[row]`, a row being a dict
with `metric`, `value`, `unit` and, where the figure has one, the `baseline`
it is compared with and that baseline's `baseline_value`, measured in the
same run. The table shows value / baseline as the ratio; the rows also go to
a JSON file for the README and later comparison.
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

SECTIONS = ["net_speed", "load_speed", "solver_speed", "score_speed", "data_speed",
            "dist_speed"]


def _devices() -> list[str]:
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _format(rows: list[dict]) -> str:
    header = ("device", "metric", "value", "baseline", "baseline value", "ratio")
    lines = [header]
    for row in rows:
        base = row.get("baseline_value")
        ratio = row["value"] / base if base else None
        lines.append((
            row["device"],
            row["metric"],
            f"{row['value']:.4g} {row['unit']}",
            row.get("baseline") or "",
            f"{base:.4g} {row['unit']}" if base else "",
            f"{ratio:.3f}x" if ratio is not None else "",
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="only this device")
    parser.add_argument("--json", default=os.path.join("bench", "results.json"),
                        help="where to write the rows (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    devices = [args.device] if args.device else _devices()
    rows: list[dict] = []
    for section in args.only or SECTIONS:
        module = importlib.import_module(f"bench.{section}")
        for device in devices:
            logging.info("bench: %s on %s", section, device)
            for row in module.run(device):
                rows.append({"section": section, "device": device, **row})
    print(_format(rows))
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "rows": rows,
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
