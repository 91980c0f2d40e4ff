"""The run directory a training run writes, and its files.

    <run>/train.log          every log line of the run (solver display, seg tests)
    <run>/metrics.jsonl      one JSON object per line: `train` records (stage,
                             iter, global step, mean loss, lr) and `test`
                             records (the seg-test metrics)
    <run>/scores.json        per stage: init weights, lr, best and final scores
    <run>/curves.png         loss and mean IU against the global iteration
    <run>/<stage>/           the stage's model folder (prototxts, solve.py,
                             snapshot/, scores/, predictions-*/, best and
                             final caffemodels)
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Iterator

from solvers.score import write_json

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RunDir:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "train.log"
        self.metrics_path = self.root / "metrics.jsonl"
        self.scores_path = self.root / "scores.json"
        self.curves_path = self.root / "curves.png"

    def stage_dir(self, name: str) -> Path:
        return self.root / name

    @contextlib.contextmanager
    def logging_to_file(self) -> Iterator[None]:
        """Copy every log record of the process into train.log meanwhile."""
        handler = logging.FileHandler(self.log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(logging.INFO)
        root = logging.getLogger()
        root.addHandler(handler)
        previous = root.level
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(previous)
            handler.close()

    def record(self, **fields) -> None:
        """Append one metrics line (flushed, so a crash loses at most it)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in fields.items()}
        with open(self.metrics_path, "a", encoding="utf-8") as out:
            out.write(json.dumps(clean) + "\n")
            out.flush()

    def write_scores(self, document: dict) -> None:
        write_json(self.scores_path, document)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl (a torn last line is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records
