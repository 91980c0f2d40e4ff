"""How many CPU threads torch computes with: every core this process may
run on (shared out among the training processes of one machine) unless the
user caps it (`--threads N` in the project's commands)."""
from __future__ import annotations

import os

import torch

from .errors import CaffeError


def available_cores() -> int:
    """Cores this process may use (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def use_threads(count: int | None = None) -> int:
    """Compute on `count` threads (None: the available cores, divided among
    the LOCAL_WORLD_SIZE processes that torchrun or our launcher started on
    this machine, so they do not oversubscribe it); returns the count."""
    if count is None:
        local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        count = max(1, available_cores() // local_processes)
    if count < 1:
        raise CaffeError(f"--threads must be at least 1, got {count}")
    torch.set_num_threads(count)
    return count
