"""Staged FCN fine-tuning: 32s -> 16s -> 8s, each stage from the last.

`python solve.py voc-fcn8s` trains the chain that ends in voc-fcn8s
(voc-fcn32s, voc-fcn16s, voc-fcn8s); `--stages 16s,8s` picks part of it.
For every stage the driver

1. writes the model folder `<run>/<model>/` from netspec (train / val /
   deploy / solver prototxts and a `solve.py` stub), with the data layers'
   directories pointed at `--data`;
2. builds the solver there (paths in the solver prototxt are relative to
   the model folder, as when the release's solve.py runs in it);
3. initialises: the chain's first model from the base net (`--weights`,
   e.g. vgg16-fcn.caffemodel) by `surgery.transplant`; every later model
   from the previous stage's final weights; then bilinear kernels in the
   upsampling layers (layer names containing 'up'), as the release does;
4. trains for `--iters` (default: the solver's max_iter; one count for
   every stage, or a comma list with one per stage run, e.g. 1800,900,300)
   at the solver's own base_lr (times `--lr-scale`, default 1: one factor for every
   stage, so their ratios stay; for nets and inputs far smaller than the
   reference's), scoring with the test net every `--test-interval`
   iterations and at the end, keeping `best.caffemodel` (highest mean IU)
   and `final.caffemodel`, and a final snapshot for resuming.

What the run directory holds: see `solvers.run_dir`. Inside a model folder
`python solve.py` (the stub) trains that one model in place (`--here`).

Several processes (`--gpus 0,1,2,3` or `all`: one per GPU; `--procs N`: N
CPU processes; or `torchrun`, which sets RANK / WORLD_SIZE) train each stage
with Caffe's multi-GPU semantics (see torchcaffe.parallel): rank 0 scores,
writes the run's files and snapshots; the other ranks keep their logs and
metrics in `<run>/.rank<r>/`.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

from tqdm.contrib.logging import logging_redirect_tqdm

import caffe_backend
from caffe_backend import caffe
from torchcaffe import glog, parallel
from torchcaffe.atomic import atomic_output, write_text
from torchcaffe.floats import float32_text, float32_value
from torchcaffe.progress import on_terminal, progress
from torchcaffe.threads import use_threads
from data_layers.palette import VOC_CLASSES
from solvers.curves import plot_curves
from solvers.run_dir import RunDir
from solvers.score import do_seg_tests
from torchcaffe.errors import CaffeError

log = logging.getLogger(__name__)

CHAINS = {
    "voc": ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s"),
    "siftflow": ("siftflow-fcn32s", "siftflow-fcn16s", "siftflow-fcn8s"),
    "pascalcontext": ("pascalcontext-fcn32s", "pascalcontext-fcn16s", "pascalcontext-fcn8s"),
}


@dataclass(frozen=True)
class SegTask:
    """One scored output of a test net: argmax of `layer` against blob `gt`."""

    name: str
    layer: str
    gt: str
    loss: str | None
    classes: tuple[str, ...] | None = None


VOC_TASK = SegTask("seg", "score", "label", "loss", VOC_CLASSES)
SIFT_FLOW_TASKS = (SegTask("sem", "score_sem", "sem", "loss"),
                   SegTask("geo", "score_geo", "geo", "loss_geo"))


def seg_tasks(model: str) -> tuple[SegTask, ...]:
    if model.startswith("siftflow"):
        return SIFT_FLOW_TASKS
    if model.startswith("voc"):
        return (VOC_TASK,)
    return (SegTask("seg", "score", "label", "loss"),)


def base_nets(model: str) -> tuple[str, str]:
    """netspec names of the base net a chain-first model starts from: its
    fully convolutional form, then the ILSVRC classifier form."""
    for backbone in ("alexnet", "googlenet"):
        if backbone in model:
            return f"{backbone}fcn", backbone
    return "vgg16fcn", "vgg16"


def stage_chain(model: str, stages: str | None = None) -> list[str]:
    """The models to train, in order, for `model` (e.g. `32s,16s,8s`)."""
    chain = next((c[:c.index(model) + 1] for c in CHAINS.values() if model in c), (model,))
    if not stages:
        return list(chain)
    picked = []
    for stride in (s.strip() for s in stages.split(",") if s.strip()):
        match = [name for name in chain if name.endswith(f"-fcn{stride}") or name == stride]
        if not match:
            raise CaffeError(f"--stages: no stage '{stride}' in the chain {', '.join(chain)}")
        picked.append(match[0])
    if picked != sorted(picked, key=chain.index) or len(set(picked)) != len(picked):
        raise CaffeError(f"--stages must follow the chain order {', '.join(chain)}")
    return picked


# ---------------------------------------------------------------- model folders

STUB = '''"""Train {name} in this folder, as the FCN release's per-model solve.py.

    python solve.py [--gpu N] [--iters N] [--weights INIT.caffemodel]

Snapshots, logs and scores go into this folder (see solvers.solve).
"""
import sys

from solvers.solve import main

if __name__ == "__main__":
    sys.exit(main(["{name}", "--here", *sys.argv[1:]]))
'''


def stub_text(name: str) -> str:
    """The `solve.py` a generated model folder gets."""
    return STUB.format(name=name)


def _after_data(path: str) -> PurePosixPath:
    """'../data/sbdd/dataset' -> 'sbdd/dataset' (the part under the data root)."""
    parts = PurePosixPath(path).parts
    if "data" in parts:
        return PurePosixPath(*parts[parts.index("data") + 1:])
    return PurePosixPath(*[p for p in parts if p not in ("..", ".")])


def point_data_layers(net_param, data_dir: Path) -> None:
    """Rewrite the Python data layers' `*_dir` settings to lie under `data_dir`."""
    for layer in net_param.layer:
        if layer.type != "Python" or not layer.python_param.param_str:
            continue
        try:
            settings = ast.literal_eval(layer.python_param.param_str)
        except (ValueError, SyntaxError) as exc:
            raise CaffeError(f"layer '{layer.name}': param_str is not a Python literal "
                             f"({exc})") from None
        if not isinstance(settings, dict):
            continue
        for key, value in settings.items():
            if key.endswith("_dir") and isinstance(value, str):
                settings[key] = str(data_dir / _after_data(value))
        layer.python_param.param_str = repr(settings)


def remove_dropout(net_param) -> None:
    """Drop the net's Dropout layers (their masks come from the runtime's own
    random generator, so two Caffes cannot draw the same ones); a layer that
    read a Dropout's top reads its bottom instead."""
    renamed = {}
    kept = []
    for layer in net_param.layer:
        bottoms = [renamed.get(b, b) for b in layer.bottom]
        del layer.bottom[:]
        layer.bottom.extend(bottoms)
        if layer.type == "Dropout":
            renamed.update({top: bottoms[0] for top in layer.top if top != bottoms[0]})
            continue
        for top in layer.top:  # a later layer writing that name starts it afresh
            renamed.pop(top, None)
        kept.append(layer)
    del net_param.layer[:]
    net_param.layer.extend(kept)


def _prototxts(name: str, width: float | None, training=None) -> dict:
    from netspec.models import NETS

    if name not in NETS:
        raise CaffeError(f"unknown model '{name}' (see python -m netspec --list)")
    kwargs = {} if training is None else {"options": training}
    if width is None:
        return NETS[name].prototxts(**kwargs)
    return NETS[name].prototxts(width=width, **kwargs)


def emit_model(name: str, folder: Path, data_dir: Path | None,
               width: float | None = None, lr_scale: float = 1.0, training=None,
               dropout: bool = True) -> Path:
    """Write `name`'s prototxts (data dirs under `data_dir`, the solver's
    base_lr times `lr_scale`, the paper's `training` studies, a
    netspec.datasets.TrainingOptions, Dropout layers unless `dropout` is
    False) and solve.py stub."""
    from netspec.writer import to_prototxt

    if not (math.isfinite(lr_scale) and lr_scale > 0):
        raise CaffeError(f"--lr-scale must be a positive number, got {lr_scale}")
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, message in _prototxts(name, width, training).items():
        if data_dir is not None and hasattr(message, "layer"):
            point_data_layers(message, data_dir)
        if not dropout and hasattr(message, "layer"):
            remove_dropout(message)
        if hasattr(message, "base_lr"):
            message.base_lr *= lr_scale
        if file_name.endswith(".binaryproto"):  # class weights of a weighted loss
            with atomic_output(folder / file_name) as out:
                out.write(message.SerializeToString())
            continue
        write_text(folder / file_name, to_prototxt(message))
    write_text(folder / "solve.py", stub_text(name))
    return folder


@contextlib.contextmanager
def console_around_bars() -> Iterator[None]:
    """Print the console's log lines around the progress bars (tqdm's
    logging_redirect_tqdm) at the console handler's own level. Without a
    console handler on the root logger nothing is printed, as before; off a
    terminal there are no bars to print around."""
    root = logging.getLogger()
    console = [h for h in root.handlers if type(h) is logging.StreamHandler
               and h.stream in (sys.stdout, sys.stderr)]
    if not console or not on_terminal():
        yield
        return
    with logging_redirect_tqdm():
        root.handlers[-1].setLevel(console[0].level)  # the handler tqdm put in its place
        yield


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


# ---------------------------------------------------------------- one stage

@dataclass
class StageOptions:
    # one count for every stage, or one per stage run (see stage_iters)
    iters: int | tuple[int, ...] | None = None
    test_interval: int = 4000
    test_images: int | None = None
    save_predictions: str = "final"   # all, final or none
    width: float | None = None
    resume: Path | None = None
    lr_scale: float = 1.0   # multiplies every stage's solver base_lr
    training: object = None  # netspec.datasets.TrainingOptions: the paper's studies
    dropout: bool = True    # False: the nets without their Dropout layers


@dataclass
class StageResult:
    name: str
    folder: Path
    init: str
    lr: float | None = None
    iters: int = 0
    final: Path | None = None
    best: Path | None = None
    best_mean_iu: float = float("-inf")
    scores: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {"folder": str(self.folder), "init": self.init, "lr": self.lr,
                "iters": self.iters, "final": str(self.final) if self.final else None,
                "best": str(self.best) if self.best else None,
                "best_mean_iu": self.best_mean_iu if math.isfinite(self.best_mean_iu) else None,
                "tests": self.scores}


def solver_param(solver_file: Path):
    """The SolverParameter of a solver prototxt (pycaffe's `solver.param`
    shows only a few of its fields)."""
    from google.protobuf import text_format

    param = caffe.proto.caffe_pb2.SolverParameter()
    text_format.Parse(solver_file.read_text(encoding="utf-8"), param)
    return param


def _snapshot_folder(param, folder: Path) -> None:
    """Create the folder of the solver's snapshot_prefix (Caffe requires it)."""
    if param.snapshot_prefix:
        (folder / param.snapshot_prefix).parent.mkdir(parents=True, exist_ok=True)


def load_base_net(weights: Path, model: str, width: float | None):
    """The base net of `model` (fully convolutional or classifier form) that
    `weights` fits, loaded with them; its deploy file lives in a temporary
    folder, so checking writes nothing of the user's."""
    errors = []
    with tempfile.TemporaryDirectory(prefix="fcn-base-") as work:
        for base in base_nets(model):
            deploy = Path(work) / f"{base}.prototxt"
            deploy.write_text(_deploy_text(base, width))
            net = caffe.Net(str(deploy), caffe.TEST)
            misfit = caffe_backend.weights_misfit(net, weights)
            if misfit is None:
                net.copy_from(str(weights))
                return base, net
            errors.append(f"{base}: {misfit}")
    raise CaffeError(f"--weights {weights}: fits neither base net of {model} "
                     f"({' or '.join(base_nets(model))}): " + "; ".join(errors))


def init_from_base(solver, weights: Path, model: str, width: float | None) -> None:
    """Transplant base-net weights (fully convolutional or classifier form)."""
    from surgery import transplant

    base, base_net = load_base_net(weights, model, width)
    report = transplant(solver.net, base_net)
    log.info("%s: transplanted %s from %s (%s form): %s", model, weights.name, weights,
             base, report.summary())


def check_inputs(model: str, names: Sequence[str], weights: Path | None,
                 data_dir: Path | None, opts: StageOptions, here: bool) -> None:
    """Refuse bad inputs before anything is written: missing files, weights
    that are not a caffemodel or fit no base net, a missing data root."""
    from torchcaffe.caffemodel import read_caffemodel

    for flag, path in (("--weights", weights), ("--resume", opts.resume)):
        if path is not None and not path.is_file():
            raise CaffeError(f"{flag} {path}: no such file")
    if opts.resume is not None and opts.resume.suffix != ".solverstate":
        raise CaffeError(f"--resume {opts.resume}: expected a .solverstate snapshot")
    if data_dir is not None and not data_dir.is_dir():
        raise CaffeError(f"--data {data_dir}: no such folder (the dataset root; "
                         "`python -m data_layers.prepare check --data DIR` says what goes there)")
    if weights is None:
        return
    read_caffemodel(str(weights))  # a caffemodel at all
    if not here and stage_chain(model).index(names[0]) == 0:
        load_base_net(weights, names[0], opts.width)  # and one the chain can start from


def _deploy_text(base: str, width: float | None) -> str:
    from netspec.writer import to_prototxt

    return to_prototxt(_prototxts(base, width)["deploy.prototxt"])


def python_data_layer(net):
    """The (first) Python data layer instance of a torchcaffe or pycaffe net."""
    for layer in net.layers:
        instance = getattr(getattr(layer, "impl", None), "instance", layer)
        if hasattr(instance, "indices"):
            return instance
    return None


def train_stage(name: str, folder: Path, run: RunDir, init: Path | None, from_base: bool,
                opts: StageOptions, step_offset: int) -> StageResult:
    result = StageResult(name, folder, init=str(init) if init else "fillers")
    leader = parallel.is_root()
    param = solver_param(folder / "solver.prototxt")
    with working_directory(folder):
        _snapshot_folder(param, folder)
        solver = caffe.get_solver("solver.prototxt")
        if init is None:
            log.warning("%s: no initial weights: it starts from its fillers (FCN's are "
                        "zero, so it cannot learn); pass --weights (e.g. vgg16-fcn.caffemodel "
                        "from `python -m weights prepare-base vgg16`)", name)
        elif not leader:
            pass  # rank 0's initial weights arrive by the broadcast below
        elif from_base:
            init_from_base(solver, init, name, opts.width)
        else:
            solver.net.copy_from(str(init))
            log.info("%s: initialised from %s", name, init)
        from surgery import interp
        interp(solver.net, [k for k in solver.net.params if "up" in k])
        if opts.resume is not None:
            restore(solver, opts.resume)
            result.init = f"resumed {opts.resume}"
        if parallel.active():
            if caffe_backend.name == "pycaffe":
                raise CaffeError("training on several processes runs on torchcaffe; BVLC "
                                 "pycaffe's multi-GPU path needs its own NCCL build "
                                 "(unset FCN_CAFFE, or train on one process)")
            nccl = parallel.NCCL(solver)
            nccl.bcast()
            solver.add_callback(nccl)
        total = opts.iters if opts.iters is not None else param.max_iter
        _run_schedule(solver, name, folder, run, opts, total, step_offset, result)
        result.iters = solver.iter
        result.final = folder / "final.caffemodel"
        if leader:
            solver.net.save(str(result.final))
        if not (param.snapshot and solver.iter % param.snapshot == 0):
            solver.snapshot()  # every rank: rank 0 gathers their data states
    return result


def restore(solver, state: Path) -> None:
    """Resume `solver` from the solverstate `state`. BVLC Caffe looks for the
    state's learned_net (a path relative to where the snapshot was taken)
    from the current folder only; when it is not there, it gets a copy of the
    state naming the caffemodel beside `state` (torchcaffe looks there itself)."""
    if caffe_backend.name != "pycaffe":
        solver.restore(str(state))
        return
    header = caffe.proto.caffe_pb2.SolverState.FromString(state.read_bytes())
    beside = state.parent / Path(header.learned_net).name
    if not header.learned_net or Path(header.learned_net).exists() or not beside.is_file():
        solver.restore(str(state))
        return
    header.learned_net = str(beside.resolve())
    with tempfile.TemporaryDirectory(prefix="fcn-resume-") as work:
        copy = Path(work) / state.name
        copy.write_bytes(header.SerializeToString())
        solver.restore(str(copy))


def _run_schedule(solver, name, folder, run, opts, total, step_offset, result) -> None:
    test_net = solver.test_nets[0] if solver.test_nets else None
    data = python_data_layer(test_net) if test_net is not None else None
    ids = list(data.indices) if data is not None else []
    if opts.test_images is not None:
        ids = ids[:opts.test_images]
    start_state = data.get_state() if data is not None and hasattr(data, "get_state") else None
    losses: list[float] = []
    loss_blob = solver.net.blobs.get("loss") if hasattr(solver.net.blobs, "get") else None

    def on_gradients_ready():
        if loss_blob is not None:
            losses.append(float(loss_blob.data.flat[0]))

    solver.add_callback(lambda: None, on_gradients_ready)
    display = solver.param.display or 20
    bar = progress(total=total, initial=min(solver.iter, total), desc=f"{name} train",
               unit="it", dynamic_ncols=True)
    with bar:
        while solver.iter < total:
            to_test = opts.test_interval - solver.iter % opts.test_interval
            chunk = min(display, to_test, total - solver.iter)
            losses.clear()
            solver.step(chunk)
            bar.update(chunk)
            lr = getattr(solver, "lr", None)
            lr = None if lr is None else float32_value(lr)
            mean_loss = sum(losses) / len(losses) if losses else float("nan")
            result.lr = lr
            bar.set_postfix(loss=f"{mean_loss:.4g}", lr="?" if lr is None else float32_text(lr))
            run.record(kind="train", stage=name, iter=solver.iter,
                       step=step_offset + solver.iter, loss=mean_loss, lr=lr)
            final = solver.iter >= total
            if test_net is not None and ids and (final or solver.iter % opts.test_interval == 0):
                _seg_tests(solver, test_net, data, start_state, ids, name, folder, run, opts,
                           step_offset, result, final)


def _seg_tests(solver, test_net, data, start_state, ids, name, folder, run, opts,
               step_offset, result, final) -> None:
    test_net.share_with(solver.net)
    first = None
    for task in seg_tasks(name):
        if start_state is not None:
            data.set_state(start_state)  # every test scores the same images in order
        suffix = "" if len(seg_tasks(name)) == 1 else f"-{task.name}"
        save = opts.save_predictions == "all" or (opts.save_predictions == "final" and final)
        save_format = str(folder / f"predictions-iter{{}}{suffix}") if save else False
        scores = do_seg_tests(test_net, solver.iter, save_format, ids, task.layer, task.gt,
                              loss=task.loss, names=task.classes,
                              results=folder / "scores" / f"iter_{solver.iter}{suffix}.json")
        record = scores.as_dict()
        record.pop("confusion")
        run.record(kind="test", stage=name, task=task.name, step=step_offset + solver.iter,
                   **record)
        result.scores.append({"task": task.name, **record})
        first = first or scores
    if first is not None and first.mean_iu > result.best_mean_iu:
        result.best_mean_iu = first.mean_iu
        result.best = folder / "best.caffemodel"
        solver.net.save(str(result.best))
        log.info("%s: best mean IU so far %.4f at iteration %d", name, first.mean_iu,
                 solver.iter)


# ---------------------------------------------------------------- the chain

def parse_iters(text: str) -> int | tuple[int, ...]:
    """`--iters`: '1000' (every stage) or '1800,900,300' (one per stage)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        counts = [int(p) for p in parts]
    except ValueError:
        raise CaffeError(f"--iters: '{text}' is not a whole number or a comma list of "
                         "them (e.g. 1000 or 1800,900,300)") from None
    if any(c < 1 for c in counts):
        raise CaffeError(f"--iters: every count must be at least 1, got '{text}'")
    return counts[0] if len(counts) == 1 else tuple(counts)


def stage_iters(iters: int | Sequence[int] | None, names: Sequence[str]) -> list[int | None]:
    """Each stage's iteration count (None: its solver's max_iter)."""
    if iters is None or isinstance(iters, int):
        return [iters] * len(names)
    counts = list(iters)
    if len(counts) != len(names):
        raise CaffeError(f"--iters: {len(counts)} counts ({','.join(map(str, counts))}) for "
                         f"{len(names)} stages ({', '.join(names)}); give one count for every "
                         "stage or one per stage")
    return counts


def run_chain(model: str, run_root: Path, stages: str | None = None,
              weights: Path | None = None, data_dir: Path | None = None,
              opts: StageOptions | None = None, here: bool = False) -> list[StageResult]:
    """Train the stages of `model`'s chain; returns each stage's result."""
    # every stage runs inside its model folder: fix the user's relative paths first
    run_root = Path(run_root).resolve()
    weights = Path(weights).resolve() if weights is not None else None
    data_dir = Path(data_dir).resolve() if data_dir is not None else None
    opts = opts or StageOptions()
    if opts.resume is not None:
        opts = StageOptions(**{**opts.__dict__, "resume": Path(opts.resume).resolve()})
    names = [model] if here else stage_chain(model, stages)
    iters = stage_iters(opts.iters, names)  # checked before anything is written
    check_inputs(model, names, weights, data_dir, opts, here)
    model_root = run_root
    if not parallel.is_root():  # the run's files are rank 0's; the others log aside
        run_root = run_root / f".rank{parallel.solver_rank()}"
    run = RunDir(run_root)
    chain = stage_chain(model)
    results: list[StageResult] = []
    document = {"model": model, "stages": {}}
    step_offset = 0
    with run.logging_to_file(), console_around_bars():
        for index, name in enumerate(names):
            folder = model_root if here else emit_model(name, run.stage_dir(name), data_dir,
                                                      opts.width, opts.lr_scale, opts.training,
                                                      opts.dropout)
            if index == 0:
                init = weights
                if here and init is None and chain.index(name) > 0:
                    previous = model_root.parent / chain[chain.index(name) - 1] / "final.caffemodel"
                    init = previous if previous.is_file() else None
            else:
                init = results[-1].final
            from_base = chain.index(name) == 0 and init is not None and index == 0
            stage_opts = StageOptions(**{**opts.__dict__, "iters": iters[index],
                                         "resume": opts.resume if index == 0 else None})
            log.info("stage %d/%d: %s (init: %s)", index + 1, len(names), name,
                     init or "fillers")
            result = train_stage(name, folder, run, init, from_base, stage_opts, step_offset)
            step_offset += result.iters
            results.append(result)
            document["stages"][name] = result.summary()
            run.write_scores(document)
            plot_curves(run.metrics_path, run.curves_path)
    return results


def training_options(args):
    """The studies the command line asks for (None: the release's training)."""
    from netspec.datasets import TrainingOptions

    if not 0 < args.loss_p <= 1:
        raise ValueError(f"--loss-p {args.loss_p}: give a probability in (0, 1]")
    if args.jitter < 0:
        raise ValueError(f"--jitter {args.jitter}: give a number of pixels >= 0")
    weights = None
    if args.class_weights == "balanced":
        if args.here:
            raise ValueError("--class-weights balanced reads the driver's --data; not with --here")
        from solvers.labels import median_frequency_weights

        weights = median_frequency_weights(args.model, args.data.resolve())
        log.info("class weights (median frequency balancing): %s",
                 ", ".join(f"{w:.3g}" for w in weights))
    elif args.class_weights:
        try:
            weights = tuple(float(w) for w in args.class_weights.split(","))
        except ValueError:
            raise ValueError(f"--class-weights {args.class_weights}: give a comma list of "
                             "numbers, one per class") from None
        if min(weights) < 0 or max(weights) <= 0:
            raise ValueError(f"--class-weights {args.class_weights}: weights must be >= 0 "
                             "and not all 0")
    options = TrainingOptions(loss_p=args.loss_p, class_weights=weights,
                              class_balance=args.class_balance, mirror=args.mirror,
                              jitter=args.jitter)
    if weights is not None and args.class_balance == "loss":
        from netspec.models import NETS

        if args.model in NETS:  # a net the weighted loss cannot serve fails here, unwritten
            NETS[args.model].prototxts(options=options)
    return None if options == TrainingOptions() else options


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="solve.py", description="Staged FCN training (32s -> 16s -> 8s) with seg tests.")
    parser.add_argument("model", help="model to reach, e.g. voc-fcn8s (its chain is trained)")
    parser.add_argument("--stages", help="part of the chain, e.g. 32s,16s,8s or 16s,8s")
    parser.add_argument("--gpu", type=int, help="GPU id (default: CPU)")
    parser.add_argument("--gpus", help="train on several GPUs, one process each, with "
                                       "Caffe's multi-GPU semantics: ids (0,1,2,3) or 'all'")
    parser.add_argument("--procs", type=int, default=0,
                        help="train on N CPU processes with the same semantics (gloo)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for torch (default: every available core)")
    parser.add_argument("--iters", help="iterations of every stage (e.g. 1000), or one count "
                                        "per stage run (e.g. 1800,900,300); default: max_iter")
    parser.add_argument("--test-interval", type=int, default=4000,
                        help="seg tests every N iterations and at the end (default 4000)")
    parser.add_argument("--test-images", type=int, help="score only the first N test images")
    parser.add_argument("--save-predictions", choices=("all", "final", "none"),
                        default="final", help="prediction PNGs at which tests (default final)")
    parser.add_argument("--data", type=Path, default=Path("data"),
                        help="dataset root (default: ./data)")
    parser.add_argument("--weights", type=Path,
                        help="initial weights of the first stage (chain start: the base "
                             "net, e.g. vgg16-fcn.caffemodel; later stages: the previous "
                             "stage's caffemodel)")
    parser.add_argument("--width", type=float, help="channel width multiplier (tests, demos)")
    parser.add_argument("--lr-scale", type=float, default=1.0,
                        help="multiply every stage's base_lr (ratios kept) for nets or "
                             "inputs much smaller than the reference's (default 1)")
    parser.add_argument("--out", type=Path, help="run directory (default runs/<model>)")
    parser.add_argument("--resume", type=Path, help="a .solverstate of the first stage")
    parser.add_argument("--here", action="store_true",
                        help="train this one model in the current (model) folder")
    study = parser.add_argument_group(
        "the paper's training studies (train data layer options; off by default)")
    study.add_argument("--loss-p", type=float, default=1.0,
                       help="loss sampling: keep each 32x32 loss cell with probability P; "
                            "the solver's iter_size grows by 1/P (Section 4.3, Figure 5)")
    study.add_argument("--class-weights",
                       help="class balancing: comma list of one weight per class, or "
                            "'balanced' (median frequency over the train split)")
    study.add_argument("--class-balance", choices=("sample", "loss"), default="sample",
                       help="how --class-weights balance: 'sample' keeps pixels of class c "
                            "with probability w_c / max(w) (default); 'loss' weights each "
                            "pixel's loss by w_c (an InfogainLoss with H = diag(w))")
    study.add_argument("--mirror", action="store_true", help="random left-right flips")
    study.add_argument("--jitter", type=int, default=0,
                       help="random translation of up to N pixels per axis (paper: 32)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.here and args.lr_scale != 1.0:
        parser.error("--lr-scale applies to the model folders the driver writes; with "
                     "--here edit base_lr in this folder's solver.prototxt")
    if sum((args.gpu is not None, bool(args.gpus), args.procs > 0)) > 1:
        parser.error("give one of --gpu, --gpus and --procs")
    if args.procs < 0:
        parser.error(f"--procs must be positive, got {args.procs}")
    try:
        devices = parallel.parse_devices(args.gpus) if args.gpus else []
    except CaffeError as exc:
        parser.exit(1, f"solve.py: error: {exc}\n")
    count = len(devices) or args.procs
    if "RANK" not in os.environ and count > 1:
        if caffe.__name__ != "torchcaffe":
            parser.exit(1, "solve.py: error: training on several processes needs torchcaffe "
                           "(unset FCN_CAFFE)\n")
        return parallel.launch_local(count, ["-m", "solvers.solve", *argv])
    if devices:
        args.gpu = devices[parallel.local_rank() % len(devices)]
    with glog.console():
        results = _solve(args, parser)
    if not parallel.is_root():
        return 0
    for result in results:
        best = f"{result.best_mean_iu:.4f}" if math.isfinite(result.best_mean_iu) else "n/a"
        lr = "n/a" if result.lr is None else float32_text(result.lr)
        print(f"{result.name}: {result.iters} iterations at lr {lr}, best mean IU "
              f"{best}, final weights {result.final}")
    return 0


def _solve(args, parser) -> list[StageResult]:
    try:
        training = training_options(args)
    except ValueError as exc:
        parser.error(str(exc))
    except CaffeError as exc:
        parser.exit(1, f"solve.py: error: {exc}\n")
    if args.here and training is not None:
        parser.error("the training studies apply to the model folders the driver writes; "
                     "with --here edit this folder's train data layer and solver")
    try:
        use_threads(args.threads)
        if args.gpu is not None:
            caffe.set_device(args.gpu)
            caffe.set_mode_gpu()
        if "RANK" in os.environ and parallel.init_from_env():
            parallel.quiet_unless_root()
        iters = parse_iters(args.iters) if args.iters is not None else None
        opts = StageOptions(iters=iters, test_interval=args.test_interval,
                            test_images=args.test_images, save_predictions=args.save_predictions,
                            width=args.width, resume=args.resume, lr_scale=args.lr_scale,
                            training=training)
        if args.here:
            root, data_dir = Path.cwd(), None
        else:
            root = args.out or Path("runs") / args.model
            data_dir = args.data.resolve()
        results = run_chain(args.model, root, args.stages, args.weights, data_dir, opts,
                            here=args.here)
    except CaffeError as exc:
        parser.exit(1, f"solve.py: error: {exc}\n")
    parallel.shutdown()  # after a failure the process ends without it: a broken group may hang
    return results


if __name__ == "__main__":
    sys.exit(main())
