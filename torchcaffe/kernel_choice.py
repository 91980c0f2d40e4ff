"""Which implementation (`kernels`) runs each Convolution, Deconvolution and
InnerProduct: chosen per layer shape and device, as `cudnn.benchmark` does.

The policy comes from the environment variable TORCHCAFFE_KERNELS or from
`set_policy()`: a default, optionally followed by per-layer choices, e.g.
`auto`, `default`, `im2col`, or `auto,fc6=im2col,fc7=direct`.

- `auto` (the default): layers of fewer than MIN_MEASURED_MACS multiply-adds
  run the family's default kernel (measuring them would cost more than it
  could win); larger ones run each candidate on random data of the layer's
  shapes, forward and, when the call will be differentiated, backward for
  exactly the gradients autograd will ask for, and take the fastest (the
  default unless another is more than MARGIN faster). The answer is kept in
  memory and in a JSON file per machine (TORCHCAFFE_KERNEL_CACHE, else
  `$XDG_CACHE_HOME/torchcaffe/kernels.json` or `~/.cache/...`), keyed by the
  shapes, geometry, gradients wanted, dtype, device, torch's thread count and
  torch version, so it is measured once.
- `default`: torch's own operator everywhere (oneDNN / cuDNN; F.linear).
- kernel names (`direct`, `channels_last`, `im2col`, `linear`, `addmm`):
  the first of them that the layer type and shape have, else the default;
  `im2col,addmm` forces Caffe's algorithm on all three types.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from . import kernels
from .atomic import write_text
from .errors import CaffeError

log = logging.getLogger(__name__)

ENV_POLICY = "TORCHCAFFE_KERNELS"
ENV_CACHE = "TORCHCAFFE_KERNEL_CACHE"
AUTO, DEFAULT = "auto", "default"
MIN_MEASURED_MACS = 10**8
MARGIN = 0.05
_CACHE_VERSION = 1


class Policy:
    """Default choices (`auto`, `default` or kernel names, the first that
    applies wins) and per-layer choices (one each)."""

    def __init__(self, default: tuple[str, ...] = (AUTO,), layers: dict[str, str] | None = None):
        self.default = tuple(default)
        self.layers = dict(layers or {})

    def for_layer(self, name: str) -> tuple[str, ...]:
        return (self.layers[name],) if name in self.layers else self.default


def kernel_names() -> list[str]:
    return sorted({name for family in kernels.FAMILIES.values() for name in family})


def parse_policy(text: str, source: str = ENV_POLICY) -> Policy:
    """Comma-separated items: `auto`, `default` or kernel names for every
    layer, and `layer=choice` for one layer."""
    valid = [AUTO, DEFAULT] + kernel_names()
    policy, defaults = Policy(), []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        layer, _, choice = item.rpartition("=")
        if choice not in valid:
            raise CaffeError(f"{source}: unknown kernel choice '{choice}' in '{text}' "
                             f"(valid: {', '.join(valid)})")
        if layer:
            policy.layers[layer] = choice
        else:
            defaults.append(choice)
    if defaults:
        policy.default = tuple(defaults)
    return policy


_policy: Policy | None = None


def current_policy() -> Policy:
    global _policy
    if _policy is None:
        _policy = parse_policy(os.environ.get(ENV_POLICY, AUTO))
    return _policy


def set_policy(spec: str | Policy | None) -> None:
    """Set the policy for this process (None: read TORCHCAFFE_KERNELS again)."""
    global _policy
    _policy = parse_policy(spec, "set_policy") if isinstance(spec, str) else spec


@contextlib.contextmanager
def policy(spec: str | Policy):
    """Run a block under another policy."""
    before = _policy
    set_policy(spec)
    try:
        yield
    finally:
        set_policy(before)


# ---------------------------------------------------------------- the cache file

def cache_path() -> Path:
    given = os.environ.get(ENV_CACHE)
    if given:
        return Path(given)
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "torchcaffe" / "kernels.json"


class _Cache:
    """Choices by key, in memory and in the per-machine JSON file."""

    def __init__(self):
        self.path: Path | None = None
        self.entries: dict[str, dict] = {}
        self._write_failed = False

    def _load(self, path: Path) -> dict[str, dict]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("kernel cache %s is unreadable (%s); choosing again", path, exc)
            return {}
        try:
            content = json.loads(text)
            if content.get("version") != _CACHE_VERSION or not isinstance(content["entries"], dict):
                raise ValueError(f"not a version {_CACHE_VERSION} kernel cache")
            return {k: v for k, v in content["entries"].items()
                    if isinstance(v, dict) and isinstance(v.get("kernel"), str)}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("kernel cache %s is corrupt (%s); measuring again and rewriting it",
                        path, exc)
            return {}

    def _ensure(self) -> None:
        path = cache_path()
        if path != self.path:
            self.path, self.entries, self._write_failed = path, self._load(path), False

    def get(self, key: str) -> dict | None:
        self._ensure()
        return self.entries.get(key)

    def put(self, key: str, entry: dict) -> None:
        self._ensure()
        self.entries[key] = entry
        # merge what other processes wrote meanwhile, then replace the file whole
        merged = {**self._load(self.path), **self.entries} if self.path.exists() else self.entries
        self.entries = merged
        try:
            write_text(self.path, json.dumps({"version": _CACHE_VERSION, "entries": merged},
                                             indent=1, sort_keys=True))
        except CaffeError as exc:
            if not self._write_failed:
                log.warning("kernel choices are not remembered across runs: %s", exc)
            self._write_failed = True


_cache = _Cache()


# ---------------------------------------------------------------- choosing

def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape))


_device_names: dict[str, str] = {}


def _device_name(device: torch.device) -> str:
    key = str(device)
    if key not in _device_names:
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
        else:
            name = platform.processor() or platform.machine()
            with contextlib.suppress(OSError):
                with open("/proc/cpuinfo") as f:
                    name = next((line.split(":", 1)[1].strip() for line in f
                                 if line.startswith("model name")), name)
        _device_names[key] = f"{key}:{name}"
    return _device_names[key]


def _key(family: str, x, weight, bias, extra: tuple, grads: tuple[bool, bool, bool]) -> str:
    wanted = "".join(n for n, g in zip("xwb", grads) if g) or "-"
    geometry = ";".join(repr(e) for e in extra)
    return (f"{family}|x={_shape(x)}|w={_shape(weight)}|bias={int(bias is not None)}|{geometry}"
            f"|grad={wanted}|{str(x.dtype).removeprefix('torch.')}|{_device_name(x.device)}"
            f"|threads={torch.get_num_threads()}|torch={torch.__version__}")


def candidates(family: str, x: torch.Tensor) -> dict[str, Callable]:
    impls = kernels.FAMILIES[family]
    if family == "InnerProduct" or x.dim() == 4:
        return dict(impls)
    return {name: fn for name, fn in impls.items() if name not in kernels.TWO_D_ONLY}


def choose(layer: str, family: str, work: int, x, weight, bias,
           *extra) -> tuple[str, Callable]:
    """(kernel name, implementation) for this layer's call `fn(x, weight, bias, *extra)`."""
    impls = candidates(family, x)
    default = next(iter(impls))
    for spec in current_policy().for_layer(layer):
        if spec == AUTO:
            if work >= MIN_MEASURED_MACS:
                spec = _auto(layer, family, impls, x, weight, bias, extra)
                return spec, impls[spec]
            break
        if spec == DEFAULT:
            break
        if spec in impls:
            return spec, impls[spec]
    return default, impls[default]


def _grads_wanted(x, weight, bias) -> tuple[bool, bool, bool]:
    if not torch.is_grad_enabled():
        return False, False, False
    return (x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)


def _auto(layer, family, impls, x, weight, bias, extra) -> str:
    grads = _grads_wanted(x, weight, bias)
    key = _key(family, x, weight, bias, extra, grads)
    entry = _cache.get(key)
    if entry is not None and entry["kernel"] in impls:
        return entry["kernel"]
    seconds, dropped = _measure(impls, x, weight, bias, extra, grads)
    default = next(iter(impls))
    best = min(seconds, key=seconds.get)
    if default in seconds and seconds[best] > seconds[default] * (1 - MARGIN):
        best = default
    log.info("kernel choice for %s (%s, input %s, weight %s, %s): %s [%s]", layer, family,
             _shape(x), _shape(weight), "forward+backward" if any(grads) else "forward", best,
             ", ".join([f"{n} {t * 1e3:.1f} ms" for n, t in sorted(seconds.items(),
                                                                   key=lambda kv: kv[1])]
                       + [f"{n} dropped ({t * 1e3:.1f} ms)" for n, t in dropped.items()]))
    _cache.put(key, {"kernel": best, "seconds": seconds, "dropped": dropped})
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(impls: dict[str, Callable], x, weight, bias, extra,
             grads: tuple[bool, bool, bool]) -> tuple[dict[str, float], dict[str, float]]:
    """({finalist: seconds}, {dropped: seconds of its first call}) on random
    data of these shapes (a private generator leaves the net's random
    streams untouched). Candidates more than twice as slow as the best on a
    first call (forward alone, then the whole call) are dropped; the rest
    run again, interleaved so that other load hits them alike, and keep
    their median."""
    generator = torch.Generator(device=x.device).manual_seed(0)

    def sample(t, grad):
        return torch.rand(t.shape, generator=generator, device=t.device,
                          dtype=t.dtype).requires_grad_(grad)

    def run(fn, backward: bool) -> float:
        _sync(x.device)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = fn(*inputs, *extra)
            if backward:
                out.backward(torch.ones_like(out))
        _sync(x.device)
        for t in inputs:
            if t is not None:
                t.grad = None
        return time.perf_counter() - start

    def survivors(times: dict[str, float], factor: float) -> list[str]:
        fastest = min(times.values())
        return [n for n, t in times.items() if t <= factor * fastest or fastest < 0.01]

    backward = any(grads)
    with torch.inference_mode(False), torch.enable_grad():
        inputs = [sample(x, grads[0]), sample(weight, grads[1]),
                  None if bias is None else sample(bias, grads[2])]
        seconds = {name: run(fn, False) for name, fn in impls.items()}
        names = survivors(seconds, 2.0)
        if backward:
            seconds.update({name: run(impls[name], True) for name in names})
            names = survivors({n: seconds[n] for n in names}, 2.0)
        fastest = min(seconds[n] for n in names)
        rounds = 3 if fastest < 0.05 else 2 if fastest < 0.5 else 1
        names = survivors({n: seconds[n] for n in names}, 1.5)
        times: dict[str, list[float]] = {n: [] for n in names}
        if len(names) > 1:
            for _ in range(rounds):
                for name in names:
                    times[name].append(run(impls[name], backward))
    seconds.update({n: statistics.median(t) for n, t in times.items() if t})
    return ({n: seconds[n] for n in names},
            {n: t for n, t in seconds.items() if n not in names})


def layer_work(weight: torch.Tensor, positions: int) -> int:
    """Multiply-adds of a layer applying `weight` at `positions` places."""
    return weight.numel() * positions


def conv_positions(x: torch.Tensor, window: kernels.Window) -> int:
    return x.shape[0] * math.prod(
        (size + 2 * p - (d * (k - 1) + 1)) // s + 1
        for size, k, s, p, d in zip(x.shape[2:], window.kernel, window.stride, window.pad,
                                    window.dilation))
