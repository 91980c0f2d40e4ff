"""`python -m tests.fuzz`: run the fuzz campaigns and print the table.

Each campaign runs in a worker process (memory-capped, so a runaway
allocation is an error, not the machine's swap); a case that does not
answer within `--timeout` seconds is a hang, and the worker is replaced.
Every crash and hang is listed with the command that replays it.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .campaigns import CAMPAIGNS
from .outcome import OUTCOMES, case_rng, memory_cap, run_one


def _worker(name: str, seed: int, work: Path, conn) -> None:
    logging.disable(logging.CRITICAL)  # the campaigns' refusals are expected; keep output short
    campaign = CAMPAIGNS[name]()
    campaign.prepare(work)
    with memory_cap():
        conn.send("ready")
        while (index := conn.recv()) is not None:
            conn.send(run_one(campaign, case_rng(seed, name, index)))


class Worker:
    def __init__(self, name: str, seed: int):
        self.conn, child = multiprocessing.Pipe()
        self.work = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
        self.process = multiprocessing.get_context("fork").Process(
            target=_worker, args=(name, seed, self.work, child), daemon=True)
        self.process.start()
        deadline = time.monotonic() + 300
        while not self.conn.poll(0.5):
            if not self.process.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"fuzz: campaign {name} failed to prepare its seed files")
        self.conn.recv()

    def run(self, index: int, timeout: float) -> tuple[str, str]:
        self.conn.send(index)
        try:
            if self.conn.poll(timeout):
                return self.conn.recv()
        except EOFError:
            pass
        alive = self.process.is_alive()
        self.stop()
        if alive:
            return "hang", f"no answer within {timeout:g} s"
        return "crash", f"worker died (exit code {self.process.exitcode})"

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        shutil.rmtree(self.work, ignore_errors=True)


def run_campaign(name: str, cases: int, seed: int, timeout: float, first: int = 0):
    counts = dict.fromkeys(OUTCOMES, 0)
    failures = []
    worker = Worker(name, seed)
    for index in range(first, first + cases):
        outcome, detail = worker.run(index, timeout)
        counts[outcome] += 1
        if outcome in ("crash", "hang"):
            failures.append((index, outcome, detail))
        if not worker.process.is_alive():
            worker = Worker(name, seed)
    worker.conn.send(None)
    worker.process.join(10)
    worker.stop()
    return counts, failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10000, help="cases per campaign")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per case before a hang")
    parser.add_argument("--campaign", action="append", choices=sorted(CAMPAIGNS),
                        help="run only these (repeatable); default all")
    parser.add_argument("--first", type=int, default=0, help="first case number (to replay one)")
    args = parser.parse_args(argv)
    names = args.campaign or list(CAMPAIGNS)
    rows, all_failures = [], []
    for name in names:
        start = time.monotonic()
        counts, failures = run_campaign(name, args.cases, args.seed, args.timeout, args.first)
        rows.append((CAMPAIGNS[name].name, counts, time.monotonic() - start))
        all_failures += [(name, *f) for f in failures]
        print(f"{name}: {counts} in {rows[-1][2]:.0f} s", file=sys.stderr, flush=True)
    print(f"| campaign | cases | clean errors | accepted | crashes | hangs | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for title, counts, seconds in rows:
        total = sum(counts.values())
        print(f"| {title} | {total:,} | {counts['clean']:,} | {counts['accepted']:,} | "
              f"{counts['crash']:,} | {counts['hang']:,} | {seconds:.0f} |")
    for name, index, outcome, detail in all_failures[:50]:
        print(f"\n{outcome}: python -m tests.fuzz --campaign {name} --seed {args.seed} "
              f"--first {index} --cases 1\n  {detail}")
    return 1 if all_failures else 0


if __name__ == "__main__":
    sys.exit(main())
