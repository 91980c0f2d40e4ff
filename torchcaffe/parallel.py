"""Caffe's multi-GPU training (BVLC parallel.cpp) on torch.distributed.

N processes, one solver each, train as one: every solver runs forward and
backward on its own batches; after backward (the solver's
`on_gradients_ready` callback) every learnable param's diff is all-reduced
(summed) across processes and scaled by 1/N, then every solver applies the
same update. Weights are broadcast from rank 0 at the start (`bcast`); the
solver's `random_seed` is offset by the rank; data layers take rank r's
interleaved share r, r+N, ... of one order (see `data_share`); rank 0 alone
tests, displays and writes snapshots. The effective batch is
N x batch_size x iter_size, and the learning rate is used as given.

Backends: NCCL when the solver computes on a GPU, gloo on the CPU.
A process group is made in one of three ways:

- `init_from_env()`: the variables `torchrun` sets (RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR, MASTER_PORT), for one or many machines; the
  project's launchers (`launch_local`) set the same ones with a file
  rendezvous (TORCHCAFFE_INIT_METHOD);
- `NCCL(solver, uid)` in a script written like BVLC's python/train.py:
  `set_solver_count` / `set_solver_rank` before the solver is made, a uid
  from `NCCL.new_uid()` shared by the processes; the rendezvous is a file
  named by the uid in the temporary folder, so no variables are needed
  (the processes must share that folder: one machine).

Faults: every collective waits at most `timeout()` seconds
(TORCHCAFFE_COMM_TIMEOUT, default 300); a process that dies or stops
answering makes the others fail with one `ParallelError` naming the step,
instead of hanging.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import hashlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from .errors import CaffeError

log = logging.getLogger(__name__)

TRAIN = 0  # torchcaffe.TRAIN, without importing the net machinery here
DEFAULT_TIMEOUT_S = 300.0
_TIMEOUT_ENV = "TORCHCAFFE_COMM_TIMEOUT"
_INIT_ENV = "TORCHCAFFE_INIT_METHOD"

# the solver's SolverAction values, by the code that carries them in the all-reduce
_ACTION_VALUES = ("none", "stop", "snapshot")

_STATE = {"solver_count": 1, "solver_rank": 0, "multiprocess": False, "group": False,
          "order_seed": None}


class ParallelError(CaffeError):
    """A collective step failed: another process died, hung or disagrees."""


# ---------------------------------------------------------------- pycaffe's globals

def has_nccl() -> bool:
    """Whether multi-process training is available: pycaffe's "built with
    NCCL" means torch.distributed here (NCCL on GPUs, gloo on CPUs)."""
    import torch.distributed as dist

    return dist.is_available()


def solver_count() -> int:
    return _STATE["solver_count"]


def set_solver_count(count: int) -> None:
    if int(count) < 1:
        raise CaffeError(f"set_solver_count: need at least 1 solver, got {count}")
    _STATE["solver_count"] = int(count)


def solver_rank() -> int:
    return _STATE["solver_rank"]


def set_solver_rank(rank: int) -> None:
    if int(rank) < 0:
        raise CaffeError(f"set_solver_rank: the rank must be >= 0, got {rank}")
    _STATE["solver_rank"] = int(rank)


def set_multiprocess(multiprocess: bool) -> None:
    _STATE["multiprocess"] = bool(multiprocess)


def is_root() -> bool:
    """Caffe's root_solver(): the process that tests, displays and snapshots."""
    return solver_rank() == 0


def active() -> bool:
    """Whether this process trains together with others right now."""
    return _STATE["group"] and solver_count() > 1


def timeout() -> float:
    """Seconds a collective step may wait for the other processes."""
    text = os.environ.get(_TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise CaffeError(f"{_TIMEOUT_ENV}={text!r}: give a number of seconds") from None
    if value <= 0:
        raise CaffeError(f"{_TIMEOUT_ENV}={text!r}: give a positive number of seconds")
    return value


# ---------------------------------------------------------------- seeds and data order

def seed_solver(random_seed: int) -> None:
    """What Caffe's Solver::Init does with `random_seed` (>= 0): seed with
    random_seed + rank. The unoffset seed is kept as the seed of data
    orders every process must share (`order_seed`)."""
    from . import mode

    _STATE["order_seed"] = int(random_seed)
    mode.set_random_seed(int(random_seed) + solver_rank())


def data_share(phase: int) -> tuple[int, int]:
    """(rank, count): a TRAIN-phase data layer takes items rank, rank +
    count, ... of its order; TEST nets run on rank 0 only and read all
    (Caffe's DataLayer::Skip)."""
    if phase != TRAIN:
        return 0, 1
    return solver_rank(), solver_count()


def order_seed(layer: str) -> int:
    """The seed of a shuffled order that every process must draw alike
    (the solver's random_seed, without the rank's offset)."""
    seed = _STATE["order_seed"]
    if seed is None:
        raise CaffeError(f"layer '{layer}': shuffling with {solver_count()} training processes "
                         "needs the solver's random_seed, so that every process shuffles "
                         "the same way and takes its own share of one order")
    return seed


# ---------------------------------------------------------------- the process group

def _backend() -> str:
    from . import mode

    return "nccl" if mode.device().type == "cuda" else "gloo"


def _uid_init_method(uid: bytes | str) -> str:
    token = uid.hex() if isinstance(uid, bytes) else hashlib.sha1(uid.encode()).hexdigest()
    return "file://" + os.path.join(tempfile.gettempdir(), f"torchcaffe-nccl-{token}")


def _init_group(init_method: str, rank: int, count: int) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() != count or dist.get_rank() != rank:
            raise ParallelError(f"a process group of {dist.get_world_size()} processes "
                                f"(this one rank {dist.get_rank()}) exists already; this "
                                f"solver is rank {rank} of {count}")
    else:
        backend = _backend()
        kwargs = {}
        if backend == "nccl":
            import torch

            from . import mode

            # NCCL's object collectives (agreement, snapshot gather) use the current device
            torch.cuda.set_device(mode.device())
            kwargs["device_id"] = mode.device()
        log.info("rank %d of %d: joining the process group (%s, %s)", rank, count, backend,
                 init_method.split("?")[0])
        try:
            dist.init_process_group(backend, init_method=init_method, rank=rank,
                                    world_size=count,
                                    timeout=datetime.timedelta(seconds=timeout()), **kwargs)
        except Exception as exc:  # torch raises RuntimeError, DistError, ValueError...
            raise ParallelError(f"rank {rank} of {count}: could not join the other processes "
                                f"within {timeout():g} s ({_first_line(exc)})") from None
    set_solver_count(count)
    set_solver_rank(rank)
    set_multiprocess(True)
    _STATE["group"] = True


def init_from_env() -> bool:
    """Join the process group `torchrun` (or `launch_local`) describes in
    the environment; False when the environment describes none."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    try:
        rank, count = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise CaffeError(f"RANK={os.environ['RANK']!r} / WORLD_SIZE="
                         f"{os.environ['WORLD_SIZE']!r} must be whole numbers") from None
    if not 0 <= rank < count:
        raise CaffeError(f"RANK={rank} must lie in 0..WORLD_SIZE-1 ({count - 1})")
    if count > 1:
        _init_group(os.environ.get(_INIT_ENV, "env://"), rank, count)
    return True


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", solver_rank()))


def shutdown() -> None:
    import torch.distributed as dist

    if _STATE["group"] and dist.is_initialized():
        dist.destroy_process_group()
    _STATE["group"] = False


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _collective(what: str, function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        raise ParallelError(
            f"rank {solver_rank()} of {solver_count()}: {what} failed: another training "
            f"process died or stopped answering within {timeout():g} s "
            f"({_first_line(exc)})") from None


def gather_to_root(value) -> list | None:
    """Every process's `value` on rank 0 (in rank order), None elsewhere."""
    if not active():
        return [value]
    import torch.distributed as dist

    gathered = [None] * solver_count() if is_root() else None
    _collective("gathering the snapshot's data states", dist.gather_object, value, gathered,
                dst=0)
    return gathered


# ---------------------------------------------------------------- pycaffe's NCCL

def _fingerprint(solver) -> dict:
    """What every process must agree on: the solver settings and the train
    net, as text digests, and the learnable params' shapes."""
    param = type(solver.param)()
    param.CopyFrom(solver.param)
    for local in ("device_id", "solver_mode"):
        param.ClearField(local)
    net_text = str(solver.net._net_param) if hasattr(solver.net, "_net_param") else ""
    return {"solver": hashlib.sha256(str(param).encode()).hexdigest()[:16],
            "net": hashlib.sha256(net_text.encode()).hexdigest()[:16],
            "shapes": [list(b.shape) for b in solver.net.learnable_params],
            "iter": solver.iter}


class NCCL:
    """pycaffe's `NCCL(solver, uid)`: joins the other processes (rendezvous
    named by `uid`, unless a process group exists already, e.g. under
    torchrun), checks that every process runs the same solver and net,
    broadcasts rank 0's weights (`bcast`) and, as a solver callback,
    all-reduces the gradients. Its layer-wise hook (`net.after_backward`)
    does nothing: the reduction is done once, in `on_gradients_ready`,
    which gives the same sums."""

    def __init__(self, solver, uid: bytes | str | None = None):
        self.solver = solver
        self.uid = uid
        if solver_count() > 1 and not active():
            if uid is None:
                raise CaffeError(f"NCCL: solver_count is {solver_count()}: give the uid "
                                 "(NCCL.new_uid()) that every process shares")
            method = _uid_init_method(uid)
            _init_group(method, solver_rank(), solver_count())
            if is_root():  # the rendezvous file outlives the store: remove it at exit
                atexit.register(_remove_quietly, method.removeprefix("file://"))
        if active():
            self._check_agreement()

    @staticmethod
    def new_uid() -> bytes:
        """A fresh unique id (bytes, as pycaffe gives on Python 3)."""
        return os.urandom(16)

    def _check_agreement(self) -> None:
        import torch.distributed as dist

        mine = _fingerprint(self.solver)
        everyone = [None] * solver_count()
        _collective("checking that every process runs the same net", dist.all_gather_object,
                    everyone, mine)
        for field, what in (("shapes", "learnable params"), ("net", "train net"),
                            ("solver", "solver settings"), ("iter", "iteration")):
            values = [entry[field] for entry in everyone]
            if any(value != values[0] for value in values):
                differ = [rank for rank, value in enumerate(values) if value != values[0]]
                raise ParallelError(
                    f"the {count_text()} disagree on their {what}: rank(s) {differ} differ "
                    f"from rank 0 (every process must read the same net and solver files"
                    f"{' and resume from the same snapshot' if field == 'iter' else ''})")

    def bcast(self) -> None:
        """Give every process rank 0's weights (Caffe's NCCL::Broadcast)."""
        if not active():
            return
        import torch.distributed as dist

        import torch

        datas = [b.data_tensor for b in self.solver.net.learnable_params]
        if not datas:
            return
        from . import mode

        # the params reach the GPU at the first forward; NCCL needs them there now
        flat = torch.cat([d.reshape(-1) for d in datas]).to(mode.device())
        _collective("broadcasting rank 0's weights", dist.broadcast, flat, src=0)
        offset = 0
        with torch.no_grad():
            for data in datas:
                data.copy_(flat[offset:offset + data.numel()].view_as(data))
                offset += data.numel()

    # a solver callback (solver.add_callback(nccl)) and a net after_backward hook
    def on_start(self) -> None:
        pass

    def on_gradients_ready(self) -> None:
        """Sum every diff across processes and scale by 1/N; rank 0's pending
        stop / snapshot request travels in the same message, so that every
        process acts on it after this iteration's update."""
        if not active():
            return
        import torch
        import torch.distributed as dist

        solver = self.solver
        diffs = [b.diff_tensor for b in solver.net.learnable_params]
        request = solver.poll_action().value if is_root() else "none"
        from . import mode

        code = torch.full((1,), float(_ACTION_VALUES.index(request)), dtype=torch.float32,
                          device=diffs[0].device if diffs else mode.device())
        flat = torch.cat([d.reshape(-1) for d in diffs] + [code])
        _collective(f"the gradient all-reduce of iteration {solver.iter}", dist.all_reduce,
                    flat)
        agreed = _ACTION_VALUES[int(flat[-1].item())]
        flat = flat[:-1]
        flat.mul_(float(torch.tensor(1.0, dtype=torch.float32) / solver_count()))
        offset = 0
        with torch.no_grad():
            for diff in diffs:
                diff.copy_(flat[offset:offset + diff.numel()].view_as(diff))
                offset += diff.numel()
        solver.agree_on_action(agreed)

    def __call__(self, layer_index: int) -> None:
        pass


def count_text() -> str:
    return f"{solver_count()} training processes"


# ---------------------------------------------------------------- launching

def parse_devices(text: str) -> list[int]:
    """'0,1,3' or 'all' -> CUDA device ids; one clear error where there is no CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise CaffeError(f"GPUs '{text}' asked for, but no CUDA device is available to "
                         "PyTorch on this machine (train on CPU processes instead: "
                         "--procs N / -procs N)")
    if text == "all":
        return list(range(torch.cuda.device_count()))
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CaffeError(f"GPUs '{text}': give device ids separated by ',' or 'all'") from None
    bad = [i for i in ids if not 0 <= i < torch.cuda.device_count()]
    if not ids or bad or len(set(ids)) != len(ids):
        raise CaffeError(f"GPUs '{text}': give distinct ids among the "
                         f"{torch.cuda.device_count()} CUDA device(s) 0.."
                         f"{torch.cuda.device_count() - 1}")
    return ids


def _forward_signals(children: list) -> dict:
    """SIGINT / SIGHUP to the launcher go to rank 0, whose stop or snapshot
    request every rank then follows; SIGTERM ends every rank."""
    def to_root(signum, frame):
        if children and children[0].poll() is None:
            children[0].send_signal(signum)

    def to_all(signum, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    handlers = {signal.SIGINT: to_root, signal.SIGTERM: to_all}
    if hasattr(signal, "SIGHUP"):
        handlers[signal.SIGHUP] = to_root
    try:
        return {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    except ValueError:  # not the main thread: leave the signals alone
        return {}


def launch_local(count: int, argv: Sequence[str], grace_s: float = 10.0) -> int:
    """Run `python argv...` in `count` processes on this machine, as torchrun
    would (RANK, WORLD_SIZE, LOCAL_RANK; a file rendezvous, so no port is
    needed), and wait for them. When one fails, the others get `grace_s`
    seconds to fail on their own (they see the broken collective) before
    they are terminated. Returns the first nonzero exit status, else 0."""
    rendezvous = tempfile.NamedTemporaryFile(prefix="torchcaffe-rdzv-", delete=False)
    rendezvous.close()
    os.unlink(rendezvous.name)  # the store creates it; it must not hold stale data
    children: list[subprocess.Popen] = []
    previous = _forward_signals(children)
    try:
        for rank in range(count):
            env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(count),
                   "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(count),
                   _INIT_ENV: "file://" + rendezvous.name}
            children.append(subprocess.Popen([sys.executable, *argv], env=env))
        status = 0
        failed_at = None
        while any(child.poll() is None for child in children):
            codes = [child.poll() for child in children]
            if status == 0 and any(code not in (None, 0) for code in codes):
                status = next(code for code in codes if code not in (None, 0))
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > grace_s:
                for child in children:
                    if child.poll() is None:
                        child.terminate()
            time.sleep(0.1)
        for rank, child in enumerate(children):
            if child.returncode < 0:
                log.warning("rank %d was ended by signal %s", rank,
                            signal.Signals(-child.returncode).name)
        codes = [child.returncode for child in children]
        status = status or next((code for code in codes if code), 0)
        return 128 - status if status < 0 else status  # as a shell reports a signal
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        if os.path.exists(rendezvous.name):
            os.unlink(rendezvous.name)


def quiet_unless_root() -> None:
    """Caffe logs from the root solver only: the other ranks keep warnings."""
    if not is_root():
        logging.getLogger("torchcaffe").setLevel(logging.WARNING)
        logging.getLogger("solvers").setLevel(logging.WARNING)
        logging.getLogger("data_layers").setLevel(logging.WARNING)
