"""Read and write Caffe's binary .solverstate (`SolverState` message).

Fields (caffe.proto): iter = 1, learned_net = 2 (the caffemodel snapshotted
with it), history = 3 (one BlobProto per learnable param, the solver's
momentum / moment buffers in param order), current_step = 4 (multistep
position). History blobs use the same fast wire-format path as caffemodels.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Sequence

import numpy as np

from torchcaffe.errors import INT_MAX, CaffeError
from torchcaffe.proto import caffe_pb2
from torchcaffe.atomic import atomic_output
from torchcaffe.wire import (LEN, VARINT, MappedFile, WireError, as_signed64,
                             encode_blob_field, expect_wire_type, iter_fields, parse_blob,
                             read_string)

_ITER, _LEARNED_NET, _HISTORY, _CURRENT_STEP = 1, 2, 3, 4


class SolverState(NamedTuple):
    iter: int
    current_step: int
    learned_net: str
    history: list[np.ndarray]


def _error(path, message: str) -> CaffeError:
    return CaffeError(f"solverstate {os.fspath(path)}: {message}")


def _counter(path, name: str, value: int) -> int:
    """iter and current_step: int32 in Caffe's schema, and counts of steps;
    a value outside 0..INT_MAX cannot come from a Caffe snapshot."""
    value = as_signed64(value)
    if not 0 <= value <= INT_MAX:
        raise _error(path, f"'{name}' is {value}, outside 0..{INT_MAX} (corrupt solverstate?)")
    return value


def read_solverstate(path: str | os.PathLike) -> SolverState:
    """(iter, current_step, learned_net, history) of a solverstate file.

    History arrays are float32 shaped as stored (legacy num/channels/height/
    width blobs come back 4-d, as Caffe's Blob::FromProto reshapes them).
    """
    try:
        mf = MappedFile(path)
    except OSError as exc:
        raise CaffeError(f"cannot open solverstate {os.fspath(path)}: {exc.strerror}") from None
    with mf:
        iteration, current_step, learned_net, layouts = None, 0, "", []
        try:
            for number, wire_type, value, nxt in iter_fields(mf.buf, 0, mf.size):
                if number == _ITER:
                    expect_wire_type("SolverState.iter", wire_type, VARINT)
                    iteration = _counter(path, "iter", value)
                elif number == _LEARNED_NET:
                    expect_wire_type("SolverState.learned_net", wire_type, LEN)
                    learned_net = read_string(mf.buf, value, nxt, "SolverState.learned_net")
                elif number == _HISTORY:
                    expect_wire_type("SolverState.history", wire_type, LEN)
                    layouts.append(parse_blob(mf.buf, value, nxt))
                elif number == _CURRENT_STEP:
                    expect_wire_type("SolverState.current_step", wire_type, VARINT)
                    current_step = _counter(path, "current_step", value)
        except WireError as exc:
            raise _error(path, f"not a valid SolverState: {exc} "
                         "(truncated, or not a solverstate?)") from None
        if iteration is None:
            raise _error(path, "no 'iter' field (is it a solverstate?)")
        history = []
        for i, layout in enumerate(layouts):
            try:
                history.append(mf.blob_array(layout))
            except WireError as exc:
                raise _error(path, f"history blob {i} {exc}") from None
        return SolverState(iteration, current_step, learned_net, history)


def write_solverstate(path: str | os.PathLike, iter: int, current_step: int,
                      learned_net: str, history: Sequence[np.ndarray]) -> None:
    """Write a solverstate BVLC Caffe can restore from, atomically."""
    header = caffe_pb2.SolverState(iter=int(iter), learned_net=os.fspath(learned_net),
                                   current_step=int(current_step))
    with atomic_output(path) as out:
        out.write(header.SerializeToString())
        for array in history:
            for part in encode_blob_field(_HISTORY, array):
                out.write(part)
