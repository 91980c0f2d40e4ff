"""What one fuzz case came to, and the limits it runs under."""
from __future__ import annotations

import contextlib
import os
import random
import resource
import traceback
from typing import Iterator

from torchcaffe.errors import CaffeError

from .campaigns import Broken

OUTCOMES = ("clean", "accepted", "crash", "hang")
MEMORY_CAP = 6 << 30  # bytes of address space a case may add to what the process uses


def case_rng(seed: int, campaign: str, index: int) -> random.Random:
    """The generator of case `index`: the same numbers replay the same input."""
    return random.Random(f"{seed}/{campaign}/{index}")


def run_one(campaign, rng: random.Random) -> tuple[str, str]:
    """(outcome, detail) of one case run in this process."""
    try:
        campaign.case(rng)
    except Broken as exc:
        return "crash", f"Broken: {exc}"
    except CaffeError:
        return "clean", ""
    except (Exception, SystemExit) as exc:
        return "crash", "".join(traceback.format_exception_only(type(exc), exc)).strip()[-800:]
    return "accepted", ""


@contextlib.contextmanager
def memory_cap(extra: int = MEMORY_CAP) -> Iterator[None]:
    """Limit the address space to what the process uses now plus `extra`, so
    a runaway allocation fails inside the case instead of swapping."""
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = used + extra if hard == resource.RLIM_INFINITY else min(hard, used + extra)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
