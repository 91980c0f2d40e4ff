"""Caffe's multi-process globals and pycaffe's NCCL object, single-process.

`solver_count` / `solver_rank` / `set_multiprocess` hold what Caffe's
multi-GPU training sets per process; torchcaffe trains in one process, so
they are recorded and reported but change nothing. `has_nccl()` is False,
as for a pycaffe built without NCCL (BVLC's test_nccl then checks nothing
more); `NCCL(solver, uid)` can still be made and added as a callback, and
its `bcast()` is a no-op while one solver runs. Multi-process training
(gradient all-reduce between processes) is future work.
"""
from __future__ import annotations

import os

from .errors import CaffeError

_STATE = {"solver_count": 1, "solver_rank": 0, "multiprocess": False}


def has_nccl() -> bool:
    """Whether multi-process NCCL training is available (not in torchcaffe)."""
    return False


def solver_count() -> int:
    return _STATE["solver_count"]


def set_solver_count(count: int) -> None:
    _STATE["solver_count"] = int(count)


def solver_rank() -> int:
    return _STATE["solver_rank"]


def set_solver_rank(rank: int) -> None:
    _STATE["solver_rank"] = int(rank)


def set_multiprocess(multiprocess: bool) -> None:
    _STATE["multiprocess"] = bool(multiprocess)


class NCCL:
    """pycaffe's NCCL(solver, uid) for one process: broadcasting weights and
    reducing gradients between processes are not implemented, so using it
    with more than one solver is refused."""

    def __init__(self, solver, uid: bytes | str):
        self.solver = solver
        self.uid = uid

    @staticmethod
    def new_uid() -> bytes:
        """A fresh unique id (bytes, as pycaffe gives on Python 3)."""
        return os.urandom(16)

    def _single_process(self, what: str) -> None:
        if solver_count() > 1:
            raise CaffeError(f"NCCL.{what}: multi-process training is not available in "
                             f"torchcaffe (solver_count is {solver_count()})")

    def bcast(self) -> None:
        """Broadcast the root solver's weights: nothing to do in one process."""
        self._single_process("bcast")

    # a solver callback (solver.add_callback(nccl)) and a net after_backward hook
    def on_start(self) -> None:
        self._single_process("on_start")

    def on_gradients_ready(self) -> None:
        self._single_process("on_gradients_ready")

    def __call__(self, layer_index: int) -> None:
        self._single_process("after_backward")
