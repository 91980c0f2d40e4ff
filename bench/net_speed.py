"""Net runtime speed: voc-fcn8s through torchcaffe's Net against the same
network written directly as a torch.nn.Module, with the same weights, in the
same run.

Forward is the deploy net (no loss, nothing needs backward, so both run
without autograd); forward+backward is the train net with Input data/label
layers in place of the Python data layer (TRAIN phase: dropout on), the
module's step clearing its grads as a solver clears param diffs. Timings
alternate runtime / module iterations so machine load hits both alike; the
figure is the fastest iteration (the least disturbed by other load). Peak memory is measured for one forward+backward in a
fresh process per variant (peak RSS on the CPU, peak allocated bytes on CUDA).
Where `auto` gave some layers' backward to `tap_gemm`, one more row times the
train net with those layers on oneDNN's backward instead, alternating.
"""
from __future__ import annotations

import logging
import multiprocessing
import resource
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

HEIGHT, WIDTH = 375, 500
CLASSES = 21
# timed iterations per variant: (forward, forward+backward)
ITERATIONS = {"cpu": (3, 2), "cuda": (20, 10)}
_VGG = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


def fcn8s_params(phase: str, size: tuple[int, int] = (HEIGHT, WIDTH)):
    """voc-fcn8s NetParameter at 1 x 3 x size: 'deploy' (Input data) or
    'train' (Input data and label instead of the Python data layer)."""
    from netspec.models import NETS

    from torchcaffe.proto import caffe_pb2

    model = NETS["voc-fcn8s"]
    if phase == "deploy":
        net = model.net_proto(None)
        net.layer[0].input_param.shape[0].dim[:] = [1, 3, *size]
        return net
    net = model.net_proto(model.dataset.train_split)
    inputs = caffe_pb2.LayerParameter(name="input", type="Input", top=["data", "label"])
    inputs.input_param.shape.add().dim[:] = [1, 3, *size]
    inputs.input_param.shape.add().dim[:] = [1, 1, *size]
    layers = [inputs] + [layer for layer in net.layer if layer.type != "Python"]
    del net.layer[:]
    net.layer.extend(layers)
    return net


def _fcn8s_param_shapes() -> dict[str, list[tuple[int, ...]]]:
    """Caffe layer name -> its param blob shapes (weight, then bias if any)."""
    shapes, channels = {}, 3
    for stage, widths in enumerate(_VGG, start=1):
        for i, width in enumerate(widths, start=1):
            shapes[f"conv{stage}_{i}"] = [(width, channels, 3, 3), (width,)]
            channels = width
    shapes["fc6"] = [(4096, 512, 7, 7), (4096,)]
    shapes["fc7"] = [(4096, 4096, 1, 1), (4096,)]
    shapes["score_fr"] = [(CLASSES, 4096, 1, 1), (CLASSES,)]
    shapes["upscore2"] = [(CLASSES, CLASSES, 4, 4)]
    shapes["score_pool4"] = [(CLASSES, 512, 1, 1), (CLASSES,)]
    shapes["upscore_pool4"] = [(CLASSES, CLASSES, 4, 4)]
    shapes["score_pool3"] = [(CLASSES, 256, 1, 1), (CLASSES,)]
    shapes["upscore8"] = [(CLASSES, CLASSES, 16, 16)]
    return shapes


_PARAM_SHAPES = _fcn8s_param_shapes()


class PlainFCN8s(nn.Module):
    """FCN-8s (VGG16) as one would write it in PyTorch; attribute names are
    the Caffe layer names so weights copy across by name."""

    def __init__(self, classes: int = CLASSES):
        super().__init__()
        channels = 3
        for stage, widths in enumerate(_VGG, start=1):
            for i, width in enumerate(widths, start=1):
                pad = 100 if (stage, i) == (1, 1) else 1
                setattr(self, f"conv{stage}_{i}", nn.Conv2d(channels, width, 3, padding=pad))
                channels = width
        self.fc6 = nn.Conv2d(512, 4096, 7)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.score_fr = nn.Conv2d(4096, classes, 1)
        self.upscore2 = nn.ConvTranspose2d(classes, classes, 4, stride=2, bias=False)
        self.score_pool4 = nn.Conv2d(512, classes, 1)
        self.upscore_pool4 = nn.ConvTranspose2d(classes, classes, 4, stride=2, bias=False)
        self.score_pool3 = nn.Conv2d(256, classes, 1)
        self.upscore8 = nn.ConvTranspose2d(classes, classes, 16, stride=8, bias=False)

    @staticmethod
    def _crop(x: torch.Tensor, like: torch.Tensor, offset: int) -> torch.Tensor:
        return x[:, :, offset:offset + like.shape[2], offset:offset + like.shape[3]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, pools = x, []
        for stage, widths in enumerate(_VGG, start=1):
            for i in range(1, len(widths) + 1):
                h = F.relu(getattr(self, f"conv{stage}_{i}")(h), inplace=True)
            h = F.max_pool2d(h, 2, 2, ceil_mode=True)
            pools.append(h)
        h = F.dropout(F.relu(self.fc6(h), inplace=True), 0.5, self.training)
        h = F.dropout(F.relu(self.fc7(h), inplace=True), 0.5, self.training)
        upscore2 = self.upscore2(self.score_fr(h))
        fuse_pool4 = upscore2 + self._crop(self.score_pool4(pools[3]), upscore2, 5)
        upscore_pool4 = self.upscore_pool4(fuse_pool4)
        fuse_pool3 = upscore_pool4 + self._crop(self.score_pool3(pools[2]), upscore_pool4, 9)
        return self._crop(self.upscore8(fuse_pool3), x, 31)


def _build(phase: str, device: str, which=("runtime", "module")):
    """(runtime net, plain module, data, label), same weights in both; a
    variant left out of `which` is None."""
    import torchcaffe as caffe

    (caffe.set_mode_gpu if device == "cuda" else caffe.set_mode_cpu)()
    net = module = None
    if "runtime" in which:
        # keep_diffs=False as a solver builds its nets: like the module, keep
        # no intermediate gradients
        net = caffe.Net(fcn8s_params(phase), keep_diffs=False,
                        phase=caffe.TEST if phase == "deploy" else caffe.TRAIN)
    if "module" in which:
        module = PlainFCN8s().to(device).train(phase == "train")
        modules = dict(module.named_children())
        for name in ("upscore2", "upscore_pool4", "upscore8"):
            modules[name].weight.requires_grad_(False)  # lr_mult 0, as in the prototxt
    rng = np.random.default_rng(0)
    for name, shapes in _PARAM_SHAPES.items():
        values = [rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01)
                  for shape in shapes]
        if net is not None:
            for blob, value in zip(net.params[name], values):
                blob.data[...] = value
        if module is not None:
            with torch.no_grad():
                for tensor, value in zip((modules[name].weight, modules[name].bias), values):
                    tensor.copy_(torch.from_numpy(value))
    data = rng.uniform(-120, 120, (1, 3, HEIGHT, WIDTH)).astype(np.float32)
    label = rng.integers(0, CLASSES, (1, 1, HEIGHT, WIDTH)).astype(np.float32)
    return net, module, data, label


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _runtime_step(net, data, label, backward: bool) -> None:
    net.blobs["data"].data[...] = data
    if backward:
        net.blobs["label"].data[...] = label
        net.clear_param_diffs()
        net.forward()
        net.backward()
    else:
        net.forward()["score"]


def _module_step(module, x, y, backward: bool) -> None:
    if backward:
        module.zero_grad()
        score = module(x)
        loss = F.cross_entropy(score, y, ignore_index=255, reduction="sum")
        loss.backward()
    else:
        with torch.no_grad():
            score = module(x)
        score.cpu().numpy()


def _time_pair(net, module, data, label, device: str, backward: bool, iterations: int):
    x = torch.from_numpy(data).to(device)
    y = torch.from_numpy(label[:, 0]).long().to(device)
    times = {"runtime": [], "module": []}
    for i in range(iterations + 1):  # the first round warms up
        for which in ("runtime", "module"):
            _sync(device)
            start = time.perf_counter()
            if which == "runtime":
                _runtime_step(net, data, label, backward)
            else:
                _module_step(module, x, y, backward)
            _sync(device)
            if i:
                times[which].append(time.perf_counter() - start)
    return min(times["runtime"]), min(times["module"])


def _tap_gemm_rows(net, data, label, device: str, iterations: int) -> list[dict]:
    """forward+backward with the kernels `auto` chose, against the same with
    oneDNN's backward wherever `auto` chose `tap_gemm` (what it replaces),
    alternating; no row where `auto` chose it nowhere."""
    from torchcaffe import kernel_choice, kernels

    chosen = {step.name: step.impl.kernel_name for step in net._steps
              if getattr(step.impl, "kernel_name", None)}
    swapped = {name: kernels.join_name(kernels.split_name(kernel)[0], "direct")
               for name, kernel in chosen.items() if kernels.split_name(kernel)[1] == "tap_gemm"}
    if not swapped:
        return []
    policies = {variant: ",".join(["default"] + [f"{n}={k}" for n, k in choices.items()])
                for variant, choices in (("with", chosen), ("without", {**chosen, **swapped}))}
    times = {variant: [] for variant in policies}
    for i in range(iterations + 1):  # the first round warms up
        for variant, policy in policies.items():
            with kernel_choice.policy(policy):
                _sync(device)
                start = time.perf_counter()
                _runtime_step(net, data, label, backward=True)
                _sync(device)
            if i:
                times[variant].append(time.perf_counter() - start)
    log.info("net_speed: tap_gemm ran the backward of %s", ", ".join(swapped))
    return [{"metric": f"voc-fcn8s forward+backward 1x3x{HEIGHT}x{WIDTH}, tap_gemm on "
                       f"{len(swapped)} layers", "value": min(times["with"]) * 1e3, "unit": "ms",
             "baseline": "oneDNN's backward on those layers",
             "baseline_value": min(times["without"]) * 1e3}]


def _check_same_net(net, module, data, device: str) -> None:
    runtime = net.forward(data=data)["score"]
    with torch.no_grad():
        plain = module(torch.from_numpy(data).to(device)).cpu().numpy()
    scale = float(np.abs(plain).max()) or 1.0
    error = float(np.abs(runtime - plain).max()) / scale
    if error > 1e-3:
        raise RuntimeError(f"the plain module and the runtime disagree (error {error:.3g})")


def _peak_memory_child(which: str, device: str, queue) -> None:
    net, module, data, label = _build("train", device, which=(which,))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    x = torch.from_numpy(data).to(device)
    y = torch.from_numpy(label[:, 0]).long().to(device)
    if which == "runtime":
        _runtime_step(net, data, label, backward=True)
    else:
        _module_step(module, x, y, backward=True)
    _sync(device)
    if device == "cuda":
        queue.put(torch.cuda.max_memory_allocated() / 2**20)
    else:
        queue.put(_peak_rss_mib())


def _peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the
    address space, so unlike ru_maxrss it does not inherit the parent's
    peak across fork + exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB -> MiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def _peak_memory(which: str, device: str) -> float:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_memory_child, args=(which, device, queue))
    process.start()
    value = queue.get()
    process.join()
    return value


def run(device: str) -> list[dict]:
    rows = []
    for phase, backward, metric, iterations in (
            ("deploy", False, "voc-fcn8s forward", ITERATIONS[device][0]),
            ("train", True, "voc-fcn8s forward+backward", ITERATIONS[device][1])):
        net, module, data, label = _build(phase, device)
        if not backward:
            _check_same_net(net, module, data, device)
        log.info("net_speed: %s on %s, %d iterations each", metric, device, iterations)
        runtime, plain = _time_pair(net, module, data, label, device, backward, iterations)
        rows.append({"metric": f"{metric} 1x3x{HEIGHT}x{WIDTH}", "value": runtime * 1e3,
                     "unit": "ms", "baseline": "torch.nn module", "baseline_value": plain * 1e3})
        if backward:
            rows += _tap_gemm_rows(net, data, label, device, 2 * iterations)
        del net, module
    label = "peak RSS" if device == "cpu" else "peak CUDA memory"
    rows.append({"metric": f"voc-fcn8s forward+backward {label}",
                 "value": _peak_memory("runtime", device), "unit": "MiB",
                 "baseline": "torch.nn module", "baseline_value": _peak_memory("module", device)})
    return rows
