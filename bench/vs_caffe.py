"""Full-width voc-fcn8s against a plain PyTorch module and BVLC Caffe.

Rows (speed-ups: the baseline's median time / torchcaffe's):
- training step (forward + backward + SGD update, the FCN solver recipe)
  at 1x3x375x500;
- deploy forward at 1x3x375x500 and 1x3x500x500;
- peak resident memory (VmHWM, the process's RSS high-water mark) of a
  fresh process doing MEMORY_STEPS training steps (from the second on, the
  solver's history is resident too, as in a training run; with freed
  memory kept for reuse, glibc's heap reaches its steady size by the
  third), and the page faults of its last step: torchcaffe as shipped (the
  `pool` host-memory policy), with `TORCHCAFFE_KERNELS=default` (torch's
  own operator in every layer, as the plain module), with
  `TORCHCAFFE_MALLOC=retain`, with `lean` (with and without transparent
  huge pages) and with `system` (glibc's malloc untuned), against the plain module (which builds no Net, so runs
  on glibc's defaults); and the time of that last step, as shipped against
  each other malloc policy (one step per process, not interleaved: a rough
  figure).

Each baseline runs with the same weights (random, std 0.01) and inputs.
Caffe runs when given (`--caffe-python`, `--caffe-root`, or FCN_CAFFE=pycaffe
for this interpreter) in a subprocess of its own Python on the prototxts
written here (bench/caffe_side.py), answering one request at a time, so its
passes interleave with ours: each round runs every variant once, after one
untimed round; the figure is the median of the rounds and the spread
(fastest..slowest) says how noisy the machine was. The per-layer table
(`report()`) shows each layer's forward and backward alone, as `caffe time`
does, with the kernel chosen for it.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.net_speed import CLASSES, PlainFCN8s, _PARAM_SHAPES, _peak_rss_mib, fcn8s_params
from netspec.writer import to_prototxt
from torchcaffe.atomic import write_text
from torchcaffe.cli.time import time_layers
from torchcaffe.proto import caffe_pb2

log = logging.getLogger(__name__)

TRAIN_SIZE = (375, 500)
DEPLOY_SIZES = [(375, 500), (500, 500)]
ROUNDS = 2
MEMORY_STEPS = 4
#: set by bench.__main__ from its options
OPTIONS = {"rounds": ROUNDS, "caffe_python": None, "caffe_root": None, "threads": 1}
SOLVER = dict(base_lr=1e-14, lr_policy="fixed", momentum=0.99, weight_decay=0.0005,
              max_iter=100000, display=0, snapshot=0, snapshot_prefix="unused")
_tables: list[str] = []


def _deploy_name(size) -> str:
    return f"deploy_{size[0]}x{size[1]}"


_DEPLOY_SIZE_OF = {_deploy_name(size): size for size in DEPLOY_SIZES}


def write_nets(folder: Path) -> None:
    """train.prototxt (Input data and label), solver.prototxt and one deploy
    prototxt per size, as our NetSpec writes them."""
    write_text(folder / "train.prototxt", to_prototxt(fcn8s_params("train", TRAIN_SIZE)))
    solver = caffe_pb2.SolverParameter(net=str(folder / "train.prototxt"), **SOLVER)
    write_text(folder / "solver.prototxt", to_prototxt(solver))
    for size in DEPLOY_SIZES:
        write_text(folder / f"{_deploy_name(size)}.prototxt",
                   to_prototxt(fcn8s_params("deploy", size)))


# ---------------------------------------------------------------- the variants

def _weights(seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {name: [rng.standard_normal(s, dtype=np.float32) * np.float32(0.01) for s in shapes]
            for name, shapes in _PARAM_SHAPES.items()}


def _inputs(size, seed: int = 1):
    rng = np.random.default_rng(seed)
    data = rng.uniform(-120, 120, (1, 3) + tuple(size)).astype(np.float32)
    label = rng.integers(0, CLASSES, (1, 1) + tuple(size)).astype(np.float32)
    return data, label


class Ours:
    """torchcaffe: an SGDSolver on train.prototxt and (unless `deploy` is
    False, as for the memory rows: the plain module has no second copy of
    the weights) a Net per deploy size."""

    name = "torchcaffe"

    def __init__(self, folder: Path, deploy: bool = True):
        import torchcaffe as caffe

        caffe.set_mode_cpu()
        self.solver = caffe.SGDSolver(str(folder / "solver.prototxt"))
        sizes = DEPLOY_SIZES if deploy else ()
        self.nets = {_deploy_name(s): caffe.Net(str(folder / f"{_deploy_name(s)}.prototxt"),
                                                caffe.TEST) for s in sizes}
        weights = _weights()
        for net in [self.solver.net, *self.nets.values()]:
            for name, values in weights.items():
                for blob, value in zip(net.params[name], values):
                    blob.data[...] = value
        data, label = _inputs(TRAIN_SIZE)
        self.solver.net.blobs["data"].data[...] = data
        self.solver.net.blobs["label"].data[...] = label
        for name, net in self.nets.items():
            net.blobs["data"].data[...] = _inputs(_DEPLOY_SIZE_OF[name])[0]

    def step(self) -> None:
        self.solver.step(1)

    def forward(self, net: str) -> None:
        self.nets[net].forward()


class Plain:
    """The same net as a torch.nn.Module with torch.optim.SGD (bias lr x2, no
    decay on biases, upsampling frozen), as one would write it in PyTorch."""

    name = "torch.nn module"

    def __init__(self, folder: Path):
        self.module = PlainFCN8s()
        modules = dict(self.module.named_children())
        with torch.no_grad():
            for name, values in _weights().items():
                for tensor, value in zip((modules[name].weight, modules[name].bias), values):
                    tensor.copy_(torch.from_numpy(value))
        weights, biases = [], []
        for name, module in modules.items():
            if name.startswith("upscore"):
                module.weight.requires_grad_(False)
                continue
            weights.append(module.weight)
            biases.append(module.bias)
        lr, decay = SOLVER["base_lr"], SOLVER["weight_decay"]
        self.optimizer = torch.optim.SGD(
            [{"params": weights, "lr": lr, "weight_decay": decay},
             {"params": biases, "lr": 2 * lr, "weight_decay": 0.0}],
            lr=lr, momentum=SOLVER["momentum"])
        data, label = _inputs(TRAIN_SIZE)
        self.data, self.label = torch.from_numpy(data), torch.from_numpy(label[:, 0]).long()
        self.deploy = {_deploy_name(s): torch.from_numpy(_inputs(s)[0]) for s in DEPLOY_SIZES}

    def step(self) -> None:
        self.module.train()
        self.optimizer.zero_grad()
        score = self.module(self.data)
        F.cross_entropy(score, self.label, reduction="sum").backward()
        self.optimizer.step()

    def forward(self, net: str) -> None:
        self.module.eval()
        with torch.no_grad():
            self.module(self.deploy[net])


class Caffe:
    """BVLC Caffe in a subprocess of its own Python (bench/caffe_side.py)."""

    name = "BVLC Caffe"

    def __init__(self, folder: Path, python: str, root: str | None, threads: int):
        env = dict(os.environ, GLOG_minloglevel="2", OPENBLAS_NUM_THREADS=str(threads),
                   OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if root:
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(Path(root) / "python"), env.get("PYTHONPATH")]))
        script = Path(__file__).with_name("caffe_side.py")
        self.process = subprocess.Popen([python, str(script), str(folder)], env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready = self.process.stdout.readline()
        if not ready:
            self.process.wait()
            raise RuntimeError(f"the Caffe side ({python} {script}) exited with status "
                               f"{self.process.returncode} before it was ready")
        log.info("vs_caffe: Caffe side ready (%s)", json.loads(ready)["ready"])
        self.last = 0.0

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Caffe side exited during {request}")
        return json.loads(line)

    def step(self) -> None:
        self.last = self.ask(run="step")["seconds"]

    def forward(self, net: str) -> None:
        self.last = self.ask(run="forward", net=net)["seconds"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.ask_quit()

    def ask_quit(self) -> None:
        self.process.stdin.write(json.dumps({"run": "quit"}) + "\n")
        self.process.stdin.close()
        self.process.wait(timeout=60)


def caffe_python() -> tuple[str | None, str | None]:
    """(python, caffe root) of the Caffe to compare with, or (None, None)."""
    python, root = OPTIONS["caffe_python"], OPTIONS["caffe_root"]
    if python or root:
        return python or sys.executable, root
    if os.environ.get("FCN_CAFFE") == "pycaffe":
        return sys.executable, None
    return None, None


# ---------------------------------------------------------------- measuring

def _timed(variant, task) -> float:
    start = time.perf_counter()
    task(variant)
    elapsed = time.perf_counter() - start
    # Caffe's own clock excludes the pipe's round trip
    return variant.last if isinstance(variant, Caffe) else elapsed


def _interleaved(variants, tasks: dict, rounds: int) -> dict:
    """{task: {variant name: [seconds per round]}}; one untimed round first."""
    times = {task: {v.name: [] for v in variants} for task in tasks}
    for r in range(rounds + 1):
        for task, run in tasks.items():
            for variant in variants:
                seconds = _timed(variant, run)
                if r:
                    times[task][variant.name].append(seconds)
        log.info("vs_caffe: round %d of %d done", r, rounds)
    return times


#: (label, environment) of each fresh process the memory rows run
_MEMORY_VARIANTS = [
    ("as shipped", {}),
    ("TORCHCAFFE_KERNELS=default", {"TORCHCAFFE_KERNELS": "default"}),
    ("TORCHCAFFE_MALLOC=retain", {"TORCHCAFFE_MALLOC": "retain"}),
    ("TORCHCAFFE_MALLOC=lean", {"TORCHCAFFE_MALLOC": "lean"}),
    ("TORCHCAFFE_MALLOC=lean THP_MEM_ALLOC_ENABLE=1",
     {"TORCHCAFFE_MALLOC": "lean", "THP_MEM_ALLOC_ENABLE": "1"}),
    ("TORCHCAFFE_MALLOC=system", {"TORCHCAFFE_MALLOC": "system"}),
]


def _peak_child(which: str, folder: str, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    # training steps only: ours without its deploy nets
    variant = Ours(Path(folder), deploy=False) if which == "ours" else Plain(Path(folder))
    for _ in range(MEMORY_STEPS):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        variant.step()
        seconds = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    queue.put((_peak_rss_mib(), faults, seconds))


def _peak_memory(which: str, folder: Path, env: dict | None = None) -> tuple[float, int, float]:
    """(peak RSS in MiB, page faults and seconds of the last step) of a
    fresh process doing MEMORY_STEPS training steps with `env` set."""
    return in_fresh_process(_peak_child, (which, str(folder), OPTIONS["threads"]), env)


def in_fresh_process(target, args: tuple, env: dict | None = None):
    """What `target(*args, queue)` puts on its queue, run in a fresh
    interpreter started with `env` added to the environment."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    # in the environment the child starts with: THP_MEM_ALLOC_ENABLE is read
    # when torch starts, before any code of the child's runs
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        process.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    value = queue.get()
    process.join()
    return value


def _layer_table(ours: Ours, caffe: Caffe | None) -> str:
    net = ours.solver.net
    rows, _, _ = time_layers(net, iterations=1)
    theirs = {name: (f, b) for name, _, f, b in caffe.ask(run="layers", net="train")["layers"]} \
        if caffe else {}
    header = ["layer", "type", "kernel", "torchcaffe fwd ms", "bwd ms"]
    if caffe:
        header += ["Caffe fwd ms", "bwd ms"]
    lines = [header]
    for row in rows:
        line = [row.name, row.type, row.kernel or "", f"{row.forward_s * 1e3:.1f}",
                f"{row.backward_s * 1e3:.1f}"]
        if caffe:
            f, b = theirs.get(row.name, (float("nan"),) * 2)
            line += [f"{f * 1e3:.1f}", f"{b * 1e3:.1f}"]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    title = (f"voc-fcn8s 1x3x{TRAIN_SIZE[0]}x{TRAIN_SIZE[1]} TRAIN, per layer (one pass; "
             "each layer's backward alone, as caffe time)")
    return title + "\n" + "\n".join(text)


def run(device: str) -> list[dict]:
    if device != "cpu":
        log.info("vs_caffe: CPU only (Caffe's side is a CPU build); skipped on %s", device)
        return []
    python, root = caffe_python()
    if python is None:
        log.info("vs_caffe: no BVLC Caffe given (--caffe-python PY / --caffe-root DIR, or "
                 "FCN_CAFFE=pycaffe): comparing with the plain module only")
    rounds = OPTIONS["rounds"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-vs-caffe-") as tmp:
        folder = Path(tmp)
        write_nets(folder)
        variants = [Ours(folder), Plain(folder)]
        caffe = None
        if python is not None:
            caffe = Caffe(folder, python, root, OPTIONS["threads"])
            variants.append(caffe)
        try:
            tasks = {f"training step 1x3x{TRAIN_SIZE[0]}x{TRAIN_SIZE[1]}": lambda v: v.step()}
            for size in DEPLOY_SIZES:
                tasks[f"deploy forward 1x3x{size[0]}x{size[1]}"] = \
                    lambda v, n=_deploy_name(size): v.forward(n)
            # the first call of each shape measures its kernels (then cached)
            times = _interleaved(variants, tasks, rounds)
            for task, by_variant in times.items():
                log.info("vs_caffe: %s, median ms: %s", task, ", ".join(
                    f"{n} {statistics.median(t) * 1e3:.0f}" for n, t in by_variant.items()))
            _tables.append(_layer_table(variants[0], caffe))
        finally:
            if caffe is not None:
                caffe.close()
        for task, by_variant in times.items():
            ours = statistics.median(by_variant["torchcaffe"])
            for variant in variants[1:]:
                theirs = by_variant[variant.name]
                rows.append({
                    "metric": f"voc-fcn8s {task}", "value": ours * 1e3, "unit": "ms",
                    "baseline": variant.name, "baseline_value": statistics.median(theirs) * 1e3,
                    "speedup": True,
                    "spread": {n: [min(t) * 1e3, max(t) * 1e3] for n, t in by_variant.items()}})
        del variants
        plain, plain_faults, _ = _peak_memory("plain", folder)
        step_seconds = {}
        for label, env in _MEMORY_VARIANTS:
            peak, faults, step_seconds[label] = _peak_memory("ours", folder, env)
            rows.append({"metric": f"voc-fcn8s peak RSS over {MEMORY_STEPS} training steps, "
                                   f"{label}",
                         "value": peak, "unit": "MiB",
                         "baseline": "torch.nn module", "baseline_value": plain})
            rows.append({"metric": f"voc-fcn8s page faults in training step {MEMORY_STEPS}, "
                                   f"{label}",
                         "value": faults, "unit": "",
                         "baseline": "torch.nn module", "baseline_value": plain_faults})
        # one step per process, not interleaved: a rough figure of what reuse saves
        for label, _ in _MEMORY_VARIANTS:
            if label.startswith("TORCHCAFFE_MALLOC"):
                rows.append({"metric": f"voc-fcn8s training step {MEMORY_STEPS} "
                                       "(in those processes), as shipped",
                             "value": step_seconds["as shipped"] * 1e3, "unit": "ms",
                             "baseline": label, "baseline_value": step_seconds[label] * 1e3,
                             "speedup": True})
    return rows


def report() -> str:
    return "\n\n".join(_tables)
