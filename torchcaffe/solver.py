"""Caffe's solvers: SGD, Nesterov, AdaGrad, RMSProp, AdaDelta and Adam.

A solver reads a `SolverParameter` prototxt, builds the train net (phase
TRAIN) and the test nets (phase TEST, computing with the train net's params)
and runs Caffe's loop. One `step` is `iter_size` forward/backward passes
whose param diffs accumulate (the reported loss is their mean), then the
update, in Caffe's order:

1. the rate from the learning-rate policy (`lr_policy.learning_rate`);
2. clip: if `clip_gradients` >= 0 and the global L2 norm of all diffs is
   above it, scale every diff by clip_gradients / norm;
3. per param: scale the diff by 1 / iter_size; add weight decay
   (`weight_decay * decay_mult` times the data for L2, times its sign for
   L1); turn the diff into the update value (rate * lr_mult and the
   solver's history, see each class);
4. data -= diff; then `iter` += 1 and a snapshot if `iter` is a multiple of
   `snapshot`.

The arithmetic runs on the params' torch tensors (on whatever device the net
computes) with `torch._foreach_*` ops over all params at once. As in Caffe,
the diffs hold the update value after a step.

Snapshots write `<prefix>_iter_<N>.caffemodel` and `.solverstate` in Caffe's
binary formats, plus a sidecar `<prefix>_iter_<N>.datastate.json` (Caffe
ignores it) with what Caffe's SolverState lacks for an exact resume: the
sampling state of every Python layer that has `get_state()` / `set_state()`,
the read position of the built-in readers (Data, ImageData, WindowData,
HDF5Data), and torch's random generators (dropout). Every file is written atomically
and the `.solverstate`, which names the caffemodel, is written last, so a
snapshot is complete once its solverstate exists (a snapshot that fails
midway removes the files it had already written). Paths in the solver
prototxt (`net`, `train_net`, `test_net`, `snapshot_prefix`) are relative to
the current directory, as in Caffe.
"""
from __future__ import annotations

import base64
import contextlib
import json
import logging
import mmap
import os
import time
from enum import Enum
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from google.protobuf import text_format

from . import fused_sgd, mode, parallel
from .errors import CaffeError
from .glog import caffe_float, loss_note
from .lr_policy import check_policy, learning_rate
from .net import TEST, TRAIN, Net
from .proto import caffe_pb2
from .prototxt import read_net_prototxt
from .regular_file import read_regular_bytes
from .solverstate import read_solverstate, write_solverstate
from .atomic import atomic_output, remove_stale_temps

log = logging.getLogger(__name__)

_f32 = np.float32

DATASTATE_SUFFIX = ".datastate.json"
_DATASTATE_FORMAT = "torchcaffe-datastate"

# SolverParameter.solver_type (deprecated enum) -> `type` string
_LEGACY_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


# ---------------------------------------------------------------- reading the prototxt

def upgrade_solver_type(param: caffe_pb2.SolverParameter, source: str) -> None:
    """Caffe's UpgradeSolverType: the enum `solver_type` becomes the string `type`."""
    if not param.HasField("solver_type"):
        return
    if param.HasField("type"):
        raise CaffeError(f"solver {source}: give either the old 'solver_type' (enum) or "
                         "the new 'type' (string), not both")
    name = _LEGACY_TYPES.get(param.solver_type)
    if name is None:
        raise CaffeError(f"solver {source}: unknown solver_type {param.solver_type}")
    param.type = name
    param.ClearField("solver_type")


def read_solver_prototxt(path: str | os.PathLike) -> caffe_pb2.SolverParameter:
    """Parse a solver prototxt (errors name the file and line), upgrade the
    legacy `solver_type`, and complete `snapshot_prefix` as BVLC Caffe's
    reader does: unset -> the file's path without extension; an existing
    directory -> that directory / the file's stem."""
    source = os.fspath(path)
    try:
        text = read_regular_bytes(source).decode("utf-8")
    except OSError as exc:
        raise CaffeError(f"cannot read solver prototxt {source}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CaffeError(f"solver prototxt {source} is not UTF-8 text ({exc.reason})") from None
    param = caffe_pb2.SolverParameter()
    try:
        text_format.Parse(text, param)
    except text_format.ParseError as exc:
        raise CaffeError(f"{source}:{exc.GetLine()}:{exc.GetColumn()}: "
                         f"{str(exc).split(' : ', 1)[-1]}") from None
    upgrade_solver_type(param, source)
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = os.path.splitext(source)[0]
        log.info("snapshot_prefix was not specified and is set to %s", param.snapshot_prefix)
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, Path(source).stem)
        log.info("snapshot_prefix is a directory and is replaced by %s", param.snapshot_prefix)
    return param


def _load_param(solver_file, source: str | None = None) -> tuple[caffe_pb2.SolverParameter, str]:
    if isinstance(solver_file, caffe_pb2.SolverParameter):
        source = source or "parameter"
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(solver_file)
        upgrade_solver_type(param, source)
        return param, source
    return read_solver_prototxt(solver_file), os.fspath(solver_file)


# ---------------------------------------------------------------- the solver

class SolverAction(Enum):
    """What an action function (`set_action_function`) asks the solver to do
    at its next check: Caffe's SolverAction (the `caffe` tool maps SIGINT /
    SIGHUP to these)."""

    NONE = "none"
    STOP = "stop"
    SNAPSHOT = "snapshot"


def _zero_history(leaf: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A zero buffer shaped as `leaf`. On the CPU it is fresh anonymous
    memory, whose untouched pages take no resident memory, so the history
    of a big net becomes resident in the first update, after backward freed
    its activations, rather than adding to the first backward's peak. (Not
    malloc's: with freed memory kept for reuse, a calloc may zero pages
    that are already resident, which backward would then miss.)"""
    if device.type != "cpu" or leaf.dtype != torch.float32 or not leaf.is_contiguous() \
            or not leaf.numel():
        return torch.zeros_like(leaf, device=device)
    pages = mmap.mmap(-1, leaf.numel() * leaf.element_size())
    return torch.from_numpy(np.frombuffer(pages, dtype=np.float32).reshape(tuple(leaf.shape)))


class SGDSolver:
    """Stochastic gradient descent with momentum:
    history = momentum * history + rate * lr_mult * diff; data -= history.

    `SGDSolver(solver_prototxt)` (or a `caffe_pb2.SolverParameter`), as
    pycaffe's. Attributes: `net`, `test_nets`, `iter`, `param`, `lr` (the
    rate at the current iteration), `smoothed_loss`, `history` (torch
    tensors, in learnable-param order)."""

    type_name = "SGD"
    history_per_param = 1  # Adam and AdaDelta keep two buffers per param

    def __init__(self, solver_file, *, source: str | None = None):
        param, self._source = _load_param(solver_file, source)
        if param.type != self.type_name:
            log.info("solver %s: type '%s' run by %s", self._source, param.type,
                     type(self).__name__)
        self.param = param
        self._check_param()
        if parallel.is_root():
            # snapshots a killed run was writing: their temporary files are garbage now
            remove_stale_temps(os.path.dirname(param.snapshot_prefix) or ".",
                               os.path.basename(param.snapshot_prefix) + "_iter_")
        if param.random_seed >= 0:
            parallel.seed_solver(param.random_seed)  # random_seed + rank, as Caffe
        self.net = self._train_net()
        # as Caffe's, only the root solver of a multi-process run tests
        self.test_nets = self._test_nets() if parallel.is_root() else []
        for test_net in self.test_nets:
            test_net.share_with(self.net)
        log.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.smoothed_loss = 0.0
        self._losses: list[float] = []
        self._callbacks: list[tuple[Callable, Callable]] = []
        self._action_function: Callable[[], SolverAction] | None = None
        self._agreed_action: SolverAction | None = None  # set by parallel.NCCL
        self.requested_early_exit = False
        self._iterations_last = 0  # the iteration of the last display, across step() calls
        self.test_scores: list[dict[str, float]] = []
        params = self.net.learnable_params
        device = params[0].leaf.device if params else mode.device()
        self.history = [_zero_history(p.leaf.detach(), device)
                        for _ in range(self.history_per_param) for p in params]
        self._decay_groups = self._group_decays()
        self._param_decays = [0.0] * len(self.net.learnable_params)
        for decay, indices in self._decay_groups:
            for i in indices:
                self._param_decays[i] = decay

    # ------------------------------------------------------------ set-up
    def _error(self, message: str) -> CaffeError:
        return CaffeError(f"solver {self._source}: {message}")

    def _check_param(self) -> None:
        p = self.param
        if p.average_loss < 1:
            raise self._error(f"average_loss must be >= 1, got {p.average_loss}")
        if p.iter_size < 1:
            raise self._error(f"iter_size must be >= 1, got {p.iter_size}")
        if p.regularization_type not in ("L1", "L2"):
            raise self._error(f"unknown regularization_type '{p.regularization_type}' "
                              "(choose L1 or L2)")
        if p.snapshot_format != caffe_pb2.SolverParameter.BINARYPROTO:
            raise self._error("snapshot_format HDF5 is not supported by torchcaffe; use "
                              "BINARYPROTO (Caffe's default)")
        try:
            check_policy(p)
        except CaffeError as exc:
            raise self._error(str(exc).removeprefix("solver: ")) from None
        if p.snapshot > 0:
            folder = os.path.dirname(p.snapshot_prefix) or "."
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                raise self._error(f"cannot write snapshots with snapshot_prefix "
                                  f"'{p.snapshot_prefix}': make sure the folder '{folder}' "
                                  "exists and is writable")

    def _train_net(self) -> Net:
        p = self.param
        given = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        if len(given) != 1:
            raise self._error("specify the train net with exactly one of net, net_param, "
                              f"train_net, train_net_param (given: {given or 'none'})")
        field = given[0]
        if field.endswith("_param"):
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(getattr(p, field))
        else:
            log.info("Creating training net from %s file: %s", field, getattr(p, field))
            net_param = read_net_prototxt(getattr(p, field))
        state = caffe_pb2.NetState(phase=TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        net_param.state.CopyFrom(state)
        return Net(net_param, keep_diffs=False)  # lean: see torchcaffe.net

    def _test_nets(self) -> list[Net]:
        p = self.param
        if p.HasField("net") and p.HasField("net_param"):
            raise self._error("give either net or net_param, not both")
        sources: list[caffe_pb2.NetParameter] = list(p.test_net_param)
        sources += [read_net_prototxt(path) for path in p.test_net]
        origins = (["test_net_param"] * len(p.test_net_param)
                   + [f"test_net file: {path}" for path in p.test_net])
        explicit = len(sources)
        generic = p.HasField("net") or p.HasField("net_param")
        if (len(p.test_iter) < explicit) if generic else (len(p.test_iter) != explicit):
            raise self._error(f"test_iter must be given once per test net ({explicit} test "
                              f"net(s), {len(p.test_iter)} test_iter)")
        for _ in range(len(p.test_iter) - explicit):
            sources.append(p.net_param if p.HasField("net_param")
                           else read_net_prototxt(p.net))
            origins.append("net_param" if p.HasField("net_param") else f"net file: {p.net}")
        if len(p.test_state) and len(p.test_state) != len(sources):
            raise self._error("test_state must be unspecified or given once per test net")
        if sources and p.test_interval <= 0:
            raise self._error("test nets need test_interval > 0")
        nets = []
        for i, source in enumerate(sources):
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(source)
            state = caffe_pb2.NetState(phase=TEST)
            state.MergeFrom(net_param.state)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            net_param.state.CopyFrom(state)
            log.info("Creating test net (#%d) specified by %s", i, origins[i])
            nets.append(Net(net_param, keep_diffs=False))
        return nets

    def _group_decays(self) -> list[tuple[float, list[int]]]:
        """Params by their (nonzero) local decay, so each group is one foreach op."""
        groups: dict[float, list[int]] = {}
        weight_decay = _f32(self.param.weight_decay)
        for i, mult in enumerate(self.net.params_weight_decay):
            local = float(weight_decay * _f32(mult))
            if local:
                groups.setdefault(local, []).append(i)
        return list(groups.items())

    # ------------------------------------------------------------ pycaffe surface
    def add_callback(self, on_start, on_gradients_ready: Callable[[], None] | None = None) -> None:
        """Call `on_start` before each iteration's forward passes and
        `on_gradients_ready` before its update (pycaffe's add_callback); one
        object with both methods (pycaffe's NCCL) may be given instead."""
        if on_gradients_ready is None:
            on_start, on_gradients_ready = on_start.on_start, on_start.on_gradients_ready
        self._callbacks.append((on_start, on_gradients_ready))

    @property
    def lr(self) -> float:
        """The learning rate at the current iteration (pycaffe's `lr`, Caffe's
        GetLearningRate, which also advances a multistep policy's step)."""
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        return float(rate)

    def share_weights(self, net: Net) -> None:
        """Make `net` compute with this solver's train-net params (pycaffe's
        share_weights: net.share_with(solver.net))."""
        net.share_with(self.net)

    def set_action_function(self, function: Callable[[], SolverAction] | None) -> None:
        """Ask `function()` once per iteration (and per test batch) whether to
        snapshot or stop early (Caffe's Solver::SetActionFunction)."""
        self._action_function = function

    def poll_action(self) -> SolverAction:
        """Ask the action function (if any) what to do now."""
        return self._action_function() if self._action_function else SolverAction.NONE

    def agree_on_action(self, value: str) -> None:
        """The request every process of a multi-process run acts on after
        this iteration's update (rank 0's, sent by parallel.NCCL)."""
        self._agreed_action = SolverAction(value)

    def _requested_action(self) -> SolverAction:
        if self._agreed_action is not None:
            agreed, self._agreed_action = self._agreed_action, None
            return agreed
        return self.poll_action()

    def step(self, iters: int) -> None:
        """Run `iters` iterations (Caffe's Solver::Step)."""
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        self._losses = []
        self.smoothed_loss = 0.0
        timer = time.perf_counter()  # restarted by every step() call, as Caffe's
        net = self.net
        last_layer = len(net.layers) - 1
        while self.iter < stop_iter:
            net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and (
                    self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.requested_early_exit:
                    break  # a stop was requested while testing
            for on_start, _ in self._callbacks:
                on_start()
            display = p.display and self.iter % p.display == 0 and parallel.is_root()
            loss = _f32(0)
            for _ in range(p.iter_size):
                net._forward(0, last_layer)
                net._backward(last_layer, 0)
                loss += _f32(net.loss())
            loss /= _f32(p.iter_size)
            self._update_smoothed_loss(float(loss), start_iter)
            if display:
                lapse = time.perf_counter() - timer
                log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter,
                         caffe_float((self.iter - self._iterations_last) / (lapse or 1)),
                         caffe_float(lapse), p.display, caffe_float(self.smoothed_loss))
                timer, self._iterations_last = time.perf_counter(), self.iter
                self._log_outputs(net, "Train", {
                    name: net.blobs[name].data.ravel() for name in net.outputs})
            for _, on_gradients_ready in self._callbacks:
                on_gradients_ready()
            self.apply_update()
            request = self._requested_action()
            if (p.snapshot and self.iter % p.snapshot == 0) or request is SolverAction.SNAPSHOT:
                self.snapshot()
            if request is SolverAction.STOP:
                self.requested_early_exit = True
                break

    def solve(self, resume_file: str | os.PathLike | None = None) -> None:
        """Train to `max_iter` (Caffe's Solver::Solve), resuming first if asked."""
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        if resume_file is not None:
            log.info("Restoring previous solver status from %s", os.fspath(resume_file))
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0 and parallel.is_root():
            # one more forward, only to show the loss of the final weights
            with torch.no_grad():
                self.net._forward(0, len(self.net.layers) - 1)
            self._update_smoothed_loss(float(_f32(self.net.loss())), start_iter)
            log.info("Iteration %d, loss = %s", self.iter, caffe_float(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    def _update_smoothed_loss(self, loss: float, start_iter: int) -> None:
        average = self.param.average_loss
        if len(self._losses) < average:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = (self.smoothed_loss * (size - 1) + loss) / size
        else:
            idx = (self.iter - start_iter) % average
            self.smoothed_loss += (loss - self._losses[idx]) / average
            self._losses[idx] = loss

    @staticmethod
    def _log_outputs(net: Net, kind: str, values: dict[str, np.ndarray]) -> None:
        index = 0
        weights = output_loss_weights(net)
        for name, array in values.items():
            for value in np.asarray(array).ravel():
                log.info("    %s net output #%d: %s = %s%s", kind, index, name,
                         caffe_float(value), loss_note(weights[name], value))
                index += 1

    # ------------------------------------------------------------ testing
    def test_all(self) -> list[dict[str, float]]:
        """Run every test net for its test_iter batches (Caffe's TestAll);
        returns (and keeps in `test_scores`) each net's mean outputs."""
        self.test_scores = []
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test_scores.append(self.test(i))
        return self.test_scores

    def test(self, index: int = 0) -> dict[str, float]:
        """Mean of each output of test net `index` over test_iter forwards,
        computed with the train net's current params."""
        log.info("Iteration %d, Testing net (#%d)", self.iter, index)
        net = self.test_nets[index]
        net.share_with(self.net)
        iters = self.param.test_iter[index]
        sums: dict[str, np.ndarray] = {}
        loss = 0.0
        with torch.no_grad():
            for _ in range(iters):
                self._handle_requests_while_testing()
                if self.requested_early_exit:
                    log.info("Test interrupted.")
                    return {}
                net._forward(0, len(net.layers) - 1)
                if self.param.test_compute_loss:
                    loss += net.loss()
                for name in net.outputs:
                    value = net.blobs[name].data.astype(np.float32).ravel()
                    sums[name] = sums[name] + value if name in sums else value.copy()
        if self.param.test_compute_loss:
            log.info("Test loss: %s", caffe_float(loss / iters))
        means = {name: total / iters for name, total in sums.items()}
        self._log_outputs(net, "Test", means)
        return {f"{name}#{k}" if len(v) > 1 else name: float(x)
                for name, v in means.items() for k, x in enumerate(v)}

    def _handle_requests_while_testing(self) -> None:
        """Caffe's Test(): act on every pending request before each batch."""
        request = self._requested_action()
        while request is not SolverAction.NONE:
            if request is SolverAction.SNAPSHOT:
                self.snapshot()
            elif request is SolverAction.STOP:
                self.requested_early_exit = True
            request = self._requested_action()

    # ------------------------------------------------------------ the update
    def apply_update(self) -> None:
        """Rate, clipping, normalization, regularization, update value,
        data -= diff, then `iter` += 1 (Caffe's SGDSolver::ApplyUpdate)."""
        p = self.param
        rate, self.current_step = learning_rate(p, self.iter, self.current_step)
        if p.display and self.iter % p.display == 0 and parallel.is_root():
            log.info("Iteration %d, lr = %s", self.iter, caffe_float(rate))
        blobs = self.net.learnable_params
        if blobs:
            self._update(blobs, rate)
        self.iter += 1

    def _update(self, blobs, rate) -> None:
        p = self.param
        datas = [b.data_tensor for b in blobs]
        diffs = [b.diff_tensor for b in blobs]
        if self.history[0].device != datas[0].device:  # the mode changed since
            self.history = [h.to(datas[0].device) for h in self.history]
        self._clip_gradients(diffs)
        if p.iter_size > 1:
            torch._foreach_mul_(diffs, float(_f32(1) / _f32(p.iter_size)))
        rates = [float(rate * _f32(lr_mult)) for lr_mult in self.net.params_lr]
        if self._fused_update_fits(datas, diffs):
            fused_sgd.update(datas, diffs, self.history, self._param_decays,
                             float(_f32(self.param.momentum)), rates)
            return
        self._regularize(datas, diffs)
        self._compute_update_value(diffs, rates)
        torch._foreach_sub_(datas, diffs)

    def _fused_update_fits(self, datas, diffs) -> bool:
        """Plain SGD with L2 decay on CPU float32 params: one pass per param
        (fused_sgd), the same bits as the torch ops below."""
        return (type(self)._compute_update_value is SGDSolver._compute_update_value
                and self.param.regularization_type == "L2"
                and fused_sgd.fits(datas + diffs + self.history) and fused_sgd.available())

    def _clip_gradients(self, diffs: list[torch.Tensor]) -> None:
        clip = float(_f32(self.param.clip_gradients))
        if clip < 0:
            return
        norm = float(torch.stack(torch._foreach_norm(diffs)).square().sum().sqrt())
        if norm > clip:
            scale = float(_f32(clip) / _f32(norm))
            log.info("Gradient clipping: scaling down gradients (L2 norm %g > %g) by scale "
                     "factor %g", norm, clip, scale)
            torch._foreach_mul_(diffs, scale)

    def _regularize(self, datas: list[torch.Tensor], diffs: list[torch.Tensor]) -> None:
        l1 = self.param.regularization_type == "L1"
        for decay, indices in self._decay_groups:
            group_diffs = [diffs[i] for i in indices]
            group_datas = [datas[i] for i in indices]
            if l1:
                group_datas = torch._foreach_sign(group_datas)
            torch._foreach_add_(group_diffs, group_datas, alpha=decay)

    def _compute_update_value(self, diffs: list[torch.Tensor], rates: list[float]) -> None:
        # fused_sgd._torch_update mirrors _regularize's L2 step, these ops and
        # the final subtraction for its check on each machine: change them together
        momentum = float(_f32(self.param.momentum))
        torch._foreach_mul_(self.history, momentum)
        torch._foreach_mul_(diffs, rates)
        torch._foreach_add_(self.history, diffs)
        torch._foreach_copy_(diffs, self.history)

    # ------------------------------------------------------------ snapshots
    def snapshot_filename(self, extension: str) -> str:
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self) -> tuple[str, str]:
        """Write the caffemodel, the datastate sidecar and the solverstate
        (last) for the current iteration; returns (caffemodel, solverstate).

        In a multi-process run every process calls it (the step loop does):
        rank 0 gathers each process's data state and writes the files."""
        model = self.snapshot_filename(".caffemodel")
        state = self.snapshot_filename(".solverstate")
        datastate = self.snapshot_filename(DATASTATE_SUFFIX)
        document = self._datastate_document()  # gathered before any file is written
        if not parallel.is_root():
            return model, state
        if self.param.snapshot_diff:
            log.warning("snapshot_diff is set, but snapshots hold the params' data only")
        written = []
        try:
            log.info("Snapshotting to binary proto file %s", model)
            self.net.save(model)
            written.append(model)
            self._write_datastate(datastate, document)
            written.append(datastate)
            log.info("Snapshotting solver state to binary proto file %s", state)
            write_solverstate(state, self.iter, self.current_step, model,
                              [h.detach().cpu().numpy() for h in self.history])
        except BaseException:
            # no half snapshot: without its solverstate the other files are orphans
            for path in written:
                with contextlib.suppress(OSError):
                    os.remove(path)
            raise
        return model, state

    def restore(self, state_file: str | os.PathLike) -> None:
        """Resume from a `.solverstate`: iter, current_step, history, the
        weights of its learned_net and, when its sidecar exists, the data
        order and torch's random state.

        Everything (solverstate, learned_net, sidecar) is read and checked
        before anything changes: a refused resume leaves the solver as it was.
        """
        state_file = os.fspath(state_file)
        if state_file.endswith(".h5"):
            raise self._error(f"cannot restore {state_file}: HDF5 solverstates are not "
                              "supported; use a binary .solverstate")
        state = read_solverstate(state_file)
        if len(state.history) != len(self.history):
            raise CaffeError(f"solverstate {state_file}: {len(state.history)} history blobs, "
                             f"but this {self.type_name} solver keeps {len(self.history)} for "
                             f"{len(self.net.learnable_params)} learnable params (another net "
                             "or solver type?)")
        for i, (target, array) in enumerate(zip(self.history, state.history)):
            if array.size != target.numel():
                raise CaffeError(f"solverstate {state_file}: history blob {i} has "
                                 f"{array.size} values, the param {target.numel()} "
                                 f"(shape {list(target.shape)})")
        weights = []
        if state.learned_net:
            weights = self.net.weights_from(_learned_net_path(state.learned_net, state_file))
        sidecar = state_file.removesuffix(".solverstate") + DATASTATE_SUFFIX
        data_state = None
        if os.path.lexists(sidecar):
            data_state = _DataState.read(sidecar, self._nets())
        else:
            log.info("no %s beside the solverstate: the data order restarts", sidecar)
        # all checked: only the sidecar's set_state calls can still refuse, and they undo themselves
        if data_state is not None:
            data_state.apply()
        self.net.apply_weights(weights)
        with torch.no_grad():
            for target, array in zip(self.history, state.history):
                target.copy_(torch.from_numpy(np.ascontiguousarray(array)).reshape(target.shape))
        self.iter = state.iter
        self.current_step = state.current_step

    # ------------------------------------------------------------ data-order sidecar
    def _nets(self) -> list[tuple[str, Net]]:
        return [("train_net", self.net)] + [(f"test_net_{i}", n)
                                            for i, n in enumerate(self.test_nets)]

    def _datastate_document(self) -> dict | None:
        """The sidecar's content (on rank 0; None elsewhere): this process's
        layer states and generators, or in a run of N processes one such
        entry per rank."""
        nets = {key: {handle.name: instance.get_state()
                      for handle, instance in _stateful_layers(net)}
                for key, net in self._nets()}
        rng = {"cpu": _encode_bytes(torch.get_rng_state())}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = [_encode_bytes(s) for s in torch.cuda.get_rng_state_all()]
        entries = parallel.gather_to_root({"nets": nets, "torch_rng": rng})
        if entries is None:
            return None
        if len(entries) == 1:
            return {"format": _DATASTATE_FORMAT, "version": 1, "iter": self.iter, **entries[0]}
        return {"format": _DATASTATE_FORMAT, "version": 2, "iter": self.iter,
                "world_size": len(entries), "ranks": entries}

    def _write_datastate(self, path: str, document: dict) -> None:
        try:
            text = json.dumps(document, indent=1)
        except TypeError as exc:
            raise self._error(f"a data layer's get_state() is not JSON-serializable: "
                              f"{exc}") from None
        with atomic_output(path) as out:
            out.write(text.encode("utf-8"))


class _DataState:
    """A checked `.datastate.json`: layer states and torch's generator states."""

    _MAX_BYTES = 64 << 20  # far above any real sidecar; refuses a runaway file early

    def __init__(self, path: str, layer_states: list, cpu_rng: torch.Tensor | None,
                 cuda_rng: list[torch.Tensor] | None):
        self.path = path
        self.layer_states = layer_states  # (net key, layer name, instance, state)
        self.cpu_rng = cpu_rng
        self.cuda_rng = cuda_rng

    @classmethod
    def read(cls, path: str, nets: list[tuple[str, Net]]) -> "_DataState":
        def error(message: str) -> CaffeError:
            return CaffeError(f"datastate {path}: {message}")

        try:
            raw = read_regular_bytes(path)
            if len(raw) > cls._MAX_BYTES:
                raise error(f"is {len(raw)} bytes, larger than any sidecar torchcaffe writes")
            document = json.loads(raw.decode("utf-8"))
        except CaffeError:
            raise
        except OSError as exc:
            raise error(f"unreadable ({exc.strerror or exc})") from None
        except (ValueError, RecursionError) as exc:
            raise error(f"not valid JSON ({str(exc)[:200]})") from None
        if not isinstance(document, dict) or document.get("format") != _DATASTATE_FORMAT:
            raise error(f"not a {_DATASTATE_FORMAT} file")
        document = cls._own_entry(document, path, error)
        saved = document.get("nets", {})
        if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
            raise error("'nets' must map each net to an object of layer states")
        unknown_nets = sorted(set(saved) - {key for key, _ in nets})
        if unknown_nets:
            raise error(f"has states for net(s) {unknown_nets[:5]} this solver does not have")
        layer_states = []
        for key, net in nets:
            states = saved.get(key, {})
            layers = {h.name: inst for h, inst in _stateful_layers(net)}
            unknown = sorted(set(states) - set(layers))
            if unknown:
                raise error(f"{key} has no layer(s) {unknown[:5]} with get_state/set_state "
                            "(another net?)")
            for name, instance in layers.items():
                if name in states:
                    layer_states.append((key, name, instance, states[name]))
                else:
                    log.warning("datastate %s: no state for layer '%s' of %s", path, name, key)
        rng = document.get("torch_rng", {})
        if not isinstance(rng, dict):
            raise error("'torch_rng' must be an object")
        cpu_rng = None
        if "cpu" in rng:
            cpu_rng = _decode_rng(rng["cpu"], torch.get_rng_state().numel(), error, "cpu")
        cuda_rng = None
        if "cuda" in rng and torch.cuda.is_available():
            if not isinstance(rng["cuda"], list):
                raise error("'torch_rng.cuda' must be a list")
            if len(rng["cuda"]) == torch.cuda.device_count():
                sizes = [s.numel() for s in torch.cuda.get_rng_state_all()]
                cuda_rng = [_decode_rng(text, size, error, "cuda")
                            for text, size in zip(rng["cuda"], sizes)]
        return cls(path, layer_states, cpu_rng, cuda_rng)

    @staticmethod
    def _own_entry(document: dict, path: str, error) -> dict:
        """This process's part: the whole file of a one-process run, else the
        entry of this rank, from a run of as many processes as this one."""
        world = document.get("world_size", 1)
        if world != parallel.solver_count():
            raise error(f"was written by a run of {world} training process(es), this run has "
                        f"{parallel.solver_count()}: resume with {world} (each process's data "
                        "order and random state are in the snapshot), or delete this file to "
                        "resume the weights and solver state with the data order restarted")
        if world == 1:
            return document
        ranks = document.get("ranks")
        if not isinstance(ranks, list) or len(ranks) != world \
                or not isinstance(ranks[parallel.solver_rank()], dict):
            raise error(f"'ranks' must hold one object per process ({world})")
        return ranks[parallel.solver_rank()]

    def apply(self) -> None:
        """Set every layer's state and the generators; on a refusal, put
        back what was already set and raise."""
        undo = []
        try:
            for key, name, instance, state in self.layer_states:
                previous = instance.get_state()
                try:
                    instance.set_state(state)
                except CaffeError as exc:
                    raise CaffeError(f"datastate {self.path}: layer '{name}' of {key}: "
                                     f"{exc}") from None
                except Exception as exc:
                    raise CaffeError(f"datastate {self.path}: layer '{name}' of {key} refused "
                                     f"its state: {type(exc).__name__}: "
                                     f"{str(exc)[:200]}") from None
                undo.append((instance, previous))
        except BaseException:
            for instance, previous in reversed(undo):
                instance.set_state(previous)
            raise
        if self.cpu_rng is not None:
            torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        log.info("restored the data order and random state from %s", self.path)


def output_loss_weights(net: Net) -> dict[str, float]:
    """Each output blob's loss weight (0 for a non-loss output)."""
    return {name: net._loss_weights.get(net._blob_names.index(name), 0.0)
            for name in net.outputs}


def _stateful_layers(net: Net):
    """(layer handle, the object with get_state/set_state) for layers that
    can save their state: Python layers' instances, and the built-in
    readers (Data, ImageData, WindowData, HDF5Data) themselves."""
    for handle in net._handles:
        instance = getattr(handle.impl, "instance", handle.impl)
        if instance is not None and hasattr(instance, "get_state") \
                and hasattr(instance, "set_state"):
            yield handle, instance


def _encode_bytes(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _decode_rng(text, size: int, error, which: str) -> torch.Tensor:
    """A generator state saved by `_encode_bytes`, of the `size` bytes torch expects."""
    if not isinstance(text, str):
        raise error(f"'torch_rng.{which}' must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise error(f"'torch_rng.{which}' is not valid base64") from None
    if len(raw) != size:
        raise error(f"'torch_rng.{which}' holds {len(raw)} bytes, torch's generator state "
                    f"{size}")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def _learned_net_path(learned_net: str, state_file: str) -> str:
    """learned_net as Caffe resolves it (from the current directory), else
    the file of that name beside the solverstate (a moved snapshot)."""
    if os.path.exists(learned_net):
        return learned_net
    beside = os.path.join(os.path.dirname(state_file), os.path.basename(learned_net))
    if os.path.exists(beside):
        return beside
    raise CaffeError(f"solverstate {state_file}: its learned_net '{learned_net}' does not "
                     f"exist (nor {beside})")


class NesterovSolver(SGDSolver):
    """Nesterov's accelerated gradient: history as SGD, update =
    (1 + momentum) * history - momentum * previous history."""

    type_name = "Nesterov"

    def _compute_update_value(self, diffs, rates):
        momentum = float(_f32(self.param.momentum))
        previous = [h.clone() for h in self.history]
        torch._foreach_mul_(self.history, momentum)
        torch._foreach_mul_(diffs, rates)
        torch._foreach_add_(self.history, diffs)
        torch._foreach_mul_(previous, -momentum)
        torch._foreach_add_(previous, self.history, alpha=float(_f32(1) + _f32(momentum)))
        torch._foreach_copy_(diffs, previous)


class AdaGradSolver(SGDSolver):
    """AdaGrad: history += diff^2; update = rate * diff / (sqrt(history) + delta)."""

    type_name = "AdaGrad"

    def _check_param(self):
        super()._check_param()
        if self.param.momentum != 0:
            raise self._error("momentum cannot be used with AdaGrad")

    def _compute_update_value(self, diffs, rates):
        torch._foreach_addcmul_(self.history, diffs, diffs)
        denom = torch._foreach_sqrt(self.history)
        torch._foreach_add_(denom, float(_f32(self.param.delta)))
        torch._foreach_div_(diffs, denom)
        torch._foreach_mul_(diffs, rates)


class RMSPropSolver(SGDSolver):
    """RMSProp: history = rms_decay * history + (1 - rms_decay) * diff^2;
    update = rate * diff / (sqrt(history) + delta)."""

    type_name = "RMSProp"

    def _check_param(self):
        super()._check_param()
        if self.param.momentum != 0:
            raise self._error("momentum cannot be used with RMSProp")
        if not 0 <= self.param.rms_decay < 1:
            raise self._error(f"rms_decay must be in [0, 1), got {self.param.rms_decay}")

    def _compute_update_value(self, diffs, rates):
        decay = _f32(self.param.rms_decay)
        squares = torch._foreach_mul(diffs, diffs)
        torch._foreach_mul_(self.history, float(decay))
        torch._foreach_add_(self.history, squares, alpha=float(_f32(1) - decay))
        denom = torch._foreach_sqrt(self.history)
        torch._foreach_add_(denom, float(_f32(self.param.delta)))
        torch._foreach_div_(diffs, denom)
        torch._foreach_mul_(diffs, rates)


class AdaDeltaSolver(SGDSolver):
    """AdaDelta: running means of squared gradients (history[:n]) and squared
    updates (history[n:]) with decay `momentum`; update = rate * diff *
    sqrt((E[dx^2] + delta) / (E[g^2] + delta))."""

    type_name = "AdaDelta"
    history_per_param = 2

    def _compute_update_value(self, diffs, rates):
        n = len(diffs)
        grads_sq, updates_sq = self.history[:n], self.history[n:]
        momentum = _f32(self.param.momentum)
        delta = float(_f32(self.param.delta))
        keep, blend = float(momentum), float(_f32(1) - momentum)
        torch._foreach_mul_(grads_sq, keep)
        torch._foreach_add_(grads_sq, torch._foreach_mul(diffs, diffs), alpha=blend)
        ratio = torch._foreach_add(updates_sq, delta)
        torch._foreach_div_(ratio, torch._foreach_add(grads_sq, delta))
        torch._foreach_sqrt_(ratio)
        torch._foreach_mul_(diffs, ratio)
        torch._foreach_mul_(updates_sq, keep)
        torch._foreach_add_(updates_sq, torch._foreach_mul(diffs, diffs), alpha=blend)
        torch._foreach_mul_(diffs, rates)


class AdamSolver(SGDSolver):
    """Adam: m = beta1 m + (1 - beta1) diff, v = beta2 v + (1 - beta2) diff^2
    (history[:n] and history[n:]); update = rate * sqrt(1 - beta2^t) /
    (1 - beta1^t) * m / (sqrt(v) + delta), t = iter + 1; beta1 is
    `momentum`, beta2 `momentum2`."""

    type_name = "Adam"
    history_per_param = 2

    def _compute_update_value(self, diffs, rates):
        n = len(diffs)
        first, second = self.history[:n], self.history[n:]
        beta1, beta2 = _f32(self.param.momentum), _f32(self.param.momentum2)
        t = self.iter + 1
        correction = _f32(np.sqrt(1.0 - float(beta2) ** t) / (1.0 - float(beta1) ** t))
        torch._foreach_mul_(first, float(beta1))
        torch._foreach_add_(first, diffs, alpha=float(_f32(1) - beta1))
        torch._foreach_mul_(second, float(beta2))
        torch._foreach_add_(second, torch._foreach_mul(diffs, diffs),
                            alpha=float(_f32(1) - beta2))
        denom = torch._foreach_sqrt(second)
        torch._foreach_add_(denom, float(_f32(self.param.delta)))
        quotient = torch._foreach_div(first, denom)
        torch._foreach_mul_(quotient, [float(_f32(r) * correction) for r in rates])
        torch._foreach_copy_(diffs, quotient)


SOLVER_TYPES: dict[str, type[SGDSolver]] = {
    cls.type_name: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                                   AdaDeltaSolver, AdamSolver)}


def get_solver(solver_file, *, source: str | None = None) -> SGDSolver:
    """The solver its prototxt's `type` (or legacy `solver_type`) names
    (`source` names a `SolverParameter` in error messages)."""
    param, source = _load_param(solver_file, source)
    cls = SOLVER_TYPES.get(param.type)
    if cls is None:
        raise CaffeError(f"solver {source}: unknown solver type '{param.type}' (known: "
                         f"{', '.join(SOLVER_TYPES)})")
    return cls(param, source=source)
