"""The timing rule every bench section uses."""
from __future__ import annotations

import time
from typing import Callable


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` calls: the run least disturbed by other load."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
