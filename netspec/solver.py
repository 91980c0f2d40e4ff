"""solver.prototxt for the reference models.

Every FCN solver runs plain SGD at a fixed rate, tests only from the solve
script (test_interval never reached), and displays the loss averaged over
20 iterations; `Solver` holds what differs between models.
"""
from __future__ import annotations

from dataclasses import dataclass

from importlib import import_module

from caffe_backend import caffe

# the schema module of whichever Caffe the backend selected
caffe_pb2 = import_module(f"{caffe.__name__}.proto.caffe_pb2")

NEVER = 999999999  # test_interval: build the test net, never run it from the solver


@dataclass(frozen=True)
class Solver:
    base_lr: float
    max_iter: int
    momentum: float = 0.99      # "heavy" momentum for the unnormalized loss
    iter_size: int = 1
    weight_decay: float = 0.0005
    snapshot: int | None = 4000  # None: the solver writes no snapshots

    def to_proto(self, train_file: str, test_file: str, test_iter: int):
        solver = caffe_pb2.SolverParameter(
            train_net=train_file, test_net=[test_file], test_iter=[test_iter],
            test_interval=NEVER, test_initialization=False,
            display=20, average_loss=20, lr_policy="fixed",
            base_lr=self.base_lr, momentum=self.momentum, iter_size=self.iter_size,
            max_iter=self.max_iter, weight_decay=self.weight_decay)
        if self.snapshot is not None:
            solver.snapshot = self.snapshot
            solver.snapshot_prefix = "snapshot/train"
        return solver
