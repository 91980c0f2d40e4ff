"""`torchcaffe train`: train or fine-tune a model, as `caffe train`.

    torchcaffe train -solver solver.prototxt [-weights a.caffemodel,b.caffemodel]
                     [-snapshot x.solverstate] [-gpu 0 | 0,1 | all] [-procs N]
                     [-iterations N] [-sigint_effect stop] [-sighup_effect snapshot]

Several devices (`-gpu 0,1` or `all`) train with Caffe's multi-GPU
semantics, one process per device (see torchcaffe.parallel); `-procs N`
does the same with N CPU processes. Under `torchrun` (RANK, WORLD_SIZE in
the environment) each process trains as its rank, on CUDA device number
LOCAL_RANK of the `-gpu` list (or the CPU without `-gpu`).

SIGINT and SIGHUP do what `-sigint_effect` / `-sighup_effect` say (stop,
snapshot or none; Caffe's defaults: SIGINT stops, and the final snapshot is
still written; SIGHUP snapshots and training goes on). The solver asks for
a pending signal once per iteration and before each test batch, as Caffe's
SignalHandler is asked. `-iterations`, when given, replaces the solver's
max_iter (Caffe's train ignores that flag).
"""
from __future__ import annotations

import logging
import os
import signal

from .. import parallel
from .flags import GPU, LEVEL, STAGE, Flag, FlagError, comma_list, gpu_ids, use_device

log = logging.getLogger(__name__)

_EFFECT_NAMES = ("stop", "snapshot", "none")  # SolverAction's values
_EFFECTS = "stop, snapshot or none"
FLAGS = (
    Flag("solver", str, "", "the solver definition prototxt"),
    Flag("weights", str, "", "caffemodel(s) to fine-tune from, separated by ','; not with "
                             "-snapshot"),
    Flag("snapshot", str, "", "a .solverstate to resume training from"),
    GPU,
    Flag("procs", int, 0, "train on N CPU processes with multi-GPU semantics (gloo)"),
    Flag("iterations", int, 0, "train to this iteration (default: the solver's max_iter)"),
    Flag("sigint_effect", str, "stop", f"on SIGINT: {_EFFECTS} (default stop)"),
    Flag("sighup_effect", str, "snapshot", f"on SIGHUP: {_EFFECTS} (default snapshot)"),
    LEVEL,
    STAGE,
)


def signal_effect(flag: str, value: str):
    """The SolverAction a -sigint_effect / -sighup_effect value names."""
    from ..solver import SolverAction

    try:
        return SolverAction(value)
    except ValueError:
        raise FlagError(f"train: flag -{flag} must be {_EFFECTS}, got '{value}'") from None


class SignalRequests:
    """Caffe's SignalHandler: SIGINT / SIGHUP only note that they came; the
    solver's action function reads (and clears) them, SIGHUP first."""

    def __init__(self, on_sigint, on_sighup):
        self._effects = {signal.SIGINT: on_sigint}
        if hasattr(signal, "SIGHUP"):  # not on Windows
            self._effects = {signal.SIGHUP: on_sighup, **self._effects}
        self._pending: set[int] = set()
        self._previous: dict[int, object] = {}

    def _note(self, signum, frame) -> None:
        self._pending.add(signum)

    def requested_action(self):
        from ..solver import SolverAction

        for signum, effect in self._effects.items():
            if signum in self._pending:
                self._pending.discard(signum)
                return effect
        return SolverAction.NONE

    def __enter__(self) -> "SignalRequests":
        self._previous = {s: signal.signal(s, self._note) for s in self._effects}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run(values: dict) -> int:
    solver_file = values["solver"]
    if not solver_file:
        raise FlagError("train: give the solver definition: -solver solver.prototxt")
    if values["snapshot"] and values["weights"]:
        raise FlagError("train: give -snapshot to resume training or -weights to fine-tune, "
                        "not both")
    if values["iterations"] < 0:
        raise FlagError(f"train: flag -iterations must be positive, got {values['iterations']}")
    if values["procs"] < 0:
        raise FlagError(f"train: flag -procs must be positive, got {values['procs']}")
    if values["procs"] and values["gpu"]:
        raise FlagError("train: give -gpu (one process per GPU) or -procs (CPU processes), "
                        "not both")
    several = values["gpu"] == "all" or len(comma_list(values["gpu"])) > 1
    in_group = "RANK" in os.environ
    if not in_group and (several or values["procs"] > 1):
        return _launch(values, several)  # before torch is imported: each process imports it

    from ..solver import read_solver_prototxt

    on_sigint = signal_effect("sigint_effect", values["sigint_effect"])
    on_sighup = signal_effect("sighup_effect", values["sighup_effect"])
    param = read_solver_prototxt(solver_file)
    param.train_state.level = values["level"]
    param.train_state.stage.extend(comma_list(values["stage"]))
    if values["iterations"]:
        log.info("max_iter %d -> %d (-iterations)", param.max_iter, values["iterations"])
        param.max_iter = values["iterations"]
    ids = parallel.parse_devices(values["gpu"]) if several else gpu_ids(values["gpu"])
    if not values["gpu"] and param.HasField("solver_mode") \
            and param.solver_mode == param.SolverMode.GPU:
        ids = [param.device_id]  # the solver asks for a GPU (device_id defaults to 0)
    if in_group and ids:
        ids = [ids[parallel.local_rank() % len(ids)]]
    if ids:
        log.info("Using GPUs %d", ids[0])
    use_device(ids)
    if in_group:
        parallel.init_from_env()
        parallel.quiet_unless_root()
    status = _train(param, solver_file, values, on_sigint, on_sighup)
    parallel.shutdown()  # after a failure the process ends without it: a broken group may hang
    return status


def _launch(values: dict, several_gpus: bool) -> int:
    """One process per GPU (or -procs CPU processes), each running this command."""
    for flag in ("sigint_effect", "sighup_effect"):
        if values[flag] not in _EFFECT_NAMES:
            raise FlagError(f"train: flag -{flag} must be {_EFFECTS}, got '{values[flag]}'")
    if not os.path.isfile(values["solver"]):
        raise FlagError(f"cannot read solver prototxt {values['solver']}")
    ids = parallel.parse_devices(values["gpu"]) if several_gpus else []
    count = len(ids) or values["procs"]
    log.info("Using %s", f"GPUs {', '.join(map(str, ids))}" if ids else f"{count} CPU processes")
    return parallel.launch_local(count, ["-m", "torchcaffe", "train", *_as_argv(values)])


def _as_argv(values: dict) -> list[str]:
    """The flags that differ from their defaults, to hand to each process."""
    defaults = {flag.name: flag.default for flag in FLAGS}
    return [f"-{name}={value}" for name, value in values.items() if value != defaults[name]]


def _train(param, solver_file, values, on_sigint, on_sighup) -> int:
    from ..solver import get_solver

    with SignalRequests(on_sigint, on_sighup) as requests:
        solver = get_solver(param, source=solver_file)
        solver.set_action_function(requests.requested_action)
        if values["snapshot"]:
            log.info("Resuming from %s", values["snapshot"])
            solver.restore(values["snapshot"])
        for weights in comma_list(values["weights"]):
            log.info("Finetuning from %s", weights)
            for net in (solver.net, *solver.test_nets):
                net.copy_from(weights)
        if parallel.active():
            nccl = parallel.NCCL(solver)
            nccl.bcast()
            solver.add_callback(nccl)
        log.info("Starting Optimization")
        solver.solve()
    log.info("Optimization Done.")
    return 0
