"""Which implementation (`kernels`) runs each Convolution, Deconvolution and
InnerProduct: chosen per layer shape and device, as `cudnn.benchmark` does.

The policy comes from the environment variable TORCHCAFFE_KERNELS or from
`set_policy()`: a default, optionally followed by per-layer choices, e.g.
`auto`, `default`, `im2col_openblas`, or `auto,fc6=im2col,fc7=direct/im2col`;
`-method` leaves a method out everywhere (`auto,-winograd`).

- `auto` (the default): layers of fewer than MIN_MEASURED_MACS multiply-adds
  run the family's default kernel (measuring them would cost more than it
  could win); larger ones time each method's forward and, when the call
  will be differentiated, each method's backward for exactly the gradients
  autograd will ask for, apart, on random data of the layer's shapes, and
  combine the fastest of each (the default unless another is more than
  MARGIN faster): e.g. `direct/im2col_openblas`. The answer is kept in
  memory and in a JSON file per machine (TORCHCAFFE_KERNEL_CACHE, else
  `$XDG_CACHE_HOME/torchcaffe/kernels.json` or `~/.cache/...`), keyed by the
  shapes, geometry, gradients wanted, dtype, device, torch's thread count and
  torch version, so it is measured once.
- `default`: torch's own operator everywhere (oneDNN / cuDNN; F.linear).
- kernel names (methods `direct`, `channels_last`, `im2col`,
  `im2col_openblas`, `tap_gemm`, `winograd`, `linear`, `addmm`, `addmm_openblas`, or
  `forward/backward` pairs of them): the first of them that the layer type
  and shape have, else the default; `im2col,addmm` forces Caffe's algorithm
  on all three types.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
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
# a race whose two fastest are closer than SETTLED runs more rounds
SETTLED = 0.15
MAX_ROUNDS = 7
EXTRA_SECONDS = 20.0
_CACHE_VERSION = 2


class Policy:
    """Default choices (`auto`, `default` or kernel names, the first that
    applies wins), per-layer choices (one each) and methods left out (never
    a family's default)."""

    def __init__(self, default: tuple[str, ...] = (AUTO,), layers: dict[str, str] | None = None,
                 excluded: frozenset[str] = frozenset()):
        self.default = tuple(default)
        self.layers = dict(layers or {})
        self.excluded = frozenset(excluded)

    def for_layer(self, name: str) -> tuple[str, ...]:
        return (self.layers[name],) if name in self.layers else self.default


def kernel_names() -> list[str]:
    """The method names; a kernel is one of them or `forward/backward`."""
    return sorted({name for family in kernels.FAMILIES.values() for name in family})


def _valid(choice: str) -> bool:
    if choice in (AUTO, DEFAULT):
        return True
    methods = kernel_names()
    return choice.count("/") <= 1 and all(part in methods for part in kernels.split_name(choice))


def parse_policy(text: str, source: str = ENV_POLICY) -> Policy:
    """Comma-separated items: `auto`, `default` or kernel names for every
    layer, `layer=choice` for one layer, `-method` to leave a method out."""
    valid = [AUTO, DEFAULT] + kernel_names() + ["FORWARD/BACKWARD", "-METHOD"]
    policy, defaults, excluded = Policy(), [], set()
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item.startswith("-"):
            if item[1:] not in kernel_names():
                raise CaffeError(f"{source}: cannot leave out '{item[1:]}' in '{text}': not a "
                                 f"method (methods: {', '.join(kernel_names())})")
            excluded.add(item[1:])
            continue
        layer, _, choice = item.rpartition("=")
        if not _valid(choice):
            raise CaffeError(f"{source}: unknown kernel choice '{choice}' in '{text}' "
                             f"(valid: {', '.join(valid)})")
        if layer:
            policy.layers[layer] = choice
        else:
            defaults.append(choice)
    if defaults:
        policy.default = tuple(defaults)
    policy.excluded = frozenset(excluded)
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


def candidates(family: str, x: torch.Tensor, extra: tuple = (),
               excluded: frozenset[str] = frozenset(),
               differentiated: bool = False) -> dict[str, kernels.Method]:
    """The methods that can run this call (`extra`: the layer's geometry;
    `differentiated`: backward will run through it; backward-only methods
    only then), the family's default first and never left out."""
    default = next(iter(kernels.FAMILIES[family]))
    return {name: method for name, method in kernels.FAMILIES[family].items()
            if (name == default or name not in excluded)
            and not (differentiated and method.inference_only)
            and not (method.backward_only and not differentiated)
            and kernels.available(method, x, extra)
            and (family == "InnerProduct" or x.dim() == 4 or name not in kernels.TWO_D_ONLY)}


def choose(layer: str, family: str, work: int, x, weight, bias,
           *extra) -> tuple[str, Callable]:
    """(kernel name, implementation) for this layer's call `fn(x, weight, bias, *extra)`."""
    grads = _grads_wanted(x, weight, bias)
    methods = candidates(family, x, extra, current_policy().excluded, any(grads))
    default = next(iter(methods))
    for spec in current_policy().for_layer(layer):
        if spec == AUTO:
            if work >= MIN_MEASURED_MACS:
                spec = _auto(layer, family, methods, x, weight, bias, extra, grads)
                return spec, kernels.kernel(family, spec)
            break
        if spec == DEFAULT:
            break
        if all(part in methods for part in kernels.split_name(spec)):
            return spec, kernels.kernel(family, spec)
    return default, kernels.kernel(family, default)


def _grads_wanted(x, weight, bias) -> tuple[bool, bool, bool]:
    if not torch.is_grad_enabled():
        return False, False, False
    return (x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)


def _pick(seconds: dict[str, float], default: str) -> str:
    """The fastest, unless the default is within MARGIN of it."""
    best = min(seconds, key=seconds.get)
    if default in seconds and seconds[best] > seconds[default] * (1 - MARGIN):
        return default
    return best


def _listing(seconds: dict[str, float], dropped: dict[str, float]) -> str:
    return ", ".join([f"{n} {t * 1e3:.1f} ms" for n, t in sorted(seconds.items(),
                                                               key=lambda kv: kv[1])]
                     + [f"{n} dropped ({t * 1e3:.1f} ms)" for n, t in dropped.items()])


def _auto(layer, family, methods, x, weight, bias, extra, grads) -> str:
    key = _key(family, x, weight, bias, extra, grads)
    entry = _cache.get(key)
    if entry is not None and all(part in methods for part in kernels.split_name(entry["kernel"])):
        return entry["kernel"]
    times = _measure(methods, x, weight, bias, extra, grads)
    default = next(iter(methods))
    chosen = {phase: _pick(seconds, default) for phase, (seconds, _) in times.items()}
    best = kernels.join_name(chosen["forward"], chosen.get("backward", chosen["forward"]))
    log.info("kernel choice for %s (%s, input %s, weight %s): %s [%s]", layer, family,
             _shape(x), _shape(weight), best, "; ".join(
                 f"{phase}: {_listing(*pair)}" for phase, pair in times.items()))
    _cache.put(key, {"kernel": best, **{phase: {"seconds": seconds, "dropped": dropped}
                                        for phase, (seconds, dropped) in times.items()}})
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _race(runs: dict[str, Callable[[], object]],
          device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """({finalist: seconds}, {dropped: seconds of its first call}).

    Runs more than twice as slow as the best on a first call are dropped,
    except the first run, the default: it ran first and cold, and may have
    paid (page faults, primitive setup) for what the others then found
    warm. The rest run again in interleaved rounds, so that other load hits
    them alike, and each keeps its fastest call: load only ever adds time.
    While the two fastest are within SETTLED of each other, rounds go on
    (up to MAX_ROUNDS, and EXTRA_SECONDS of extra timing), so that a burst
    of load during one round cannot decide a close race."""
    def timed(run) -> float:
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        return time.perf_counter() - start

    default = next(iter(runs))

    def survivors(times: dict[str, float], factor: float) -> list[str]:
        fastest = min(times.values())
        return [n for n, t in times.items()
                if n == default or t <= factor * fastest or fastest < 0.01]

    def unsettled(best: dict[str, float]) -> bool:
        first, second = sorted(best.values())[:2]
        return second < first * (1 + SETTLED)

    seconds = {name: timed(run) for name, run in runs.items()}
    names = survivors(seconds, 2.0)
    fastest = min(seconds.values())
    rounds = 3 if fastest < 0.05 else 2 if fastest < 0.5 else 1
    names = survivors({n: seconds[n] for n in names}, 1.5)
    if len(names) > 1:
        # the first call counts too: warming up, like load, only adds time
        times = {n: [seconds[n]] for n in names}
        extra_since = None
        for done in range(MAX_ROUNDS):
            if done >= rounds:
                if not unsettled({n: min(t) for n, t in times.items()}):
                    break
                extra_since = extra_since or time.perf_counter()
                if time.perf_counter() - extra_since > EXTRA_SECONDS:
                    break
            for name in names:
                times[name].append(timed(runs[name]))
        seconds.update({n: min(t) for n, t in times.items()})
    return ({n: seconds[n] for n in names},
            {n: t for n, t in seconds.items() if n not in names})


def _measure(methods: dict[str, kernels.Method], x, weight, bias, extra,
             grads: tuple[bool, bool, bool]) -> dict[str, tuple[dict, dict]]:
    """{"forward": race results[, "backward": race results]}: each method's
    forward, and when the call will be differentiated each method's
    backward for exactly the gradients autograd will ask for, timed apart
    on random data of these shapes (a private generator leaves the net's
    random streams untouched)."""
    generator = torch.Generator(device=x.device).manual_seed(0)

    def sample(t):
        return torch.rand(t.shape, generator=generator, device=t.device, dtype=t.dtype)

    with torch.inference_mode(False), torch.no_grad():
        inputs = [sample(x), sample(weight), None if bias is None else sample(bias)]
        results = {"forward": _race({
            name: lambda m=method: m.forward(*inputs, *extra) for name, method in methods.items()
            if not method.backward_only}, x.device)}
        if any(grads):
            out = next(iter(methods.values())).forward(*inputs, *extra)
            grad = sample(out)
            del out
            results["backward"] = _race({
                name: lambda m=method: m.backward(grad, inputs[0], inputs[1], bias is not None,
                                                  grads, *extra)
                for name, method in methods.items()}, x.device)
    return results


def layer_work(weight: torch.Tensor, positions: int) -> int:
    """Multiply-adds of a layer applying `weight` at `positions` places."""
    return weight.numel() * positions


def conv_positions(x: torch.Tensor, window: kernels.Window) -> int:
    return x.shape[0] * math.prod(
        (size + 2 * p - (d * (k - 1) + 1)) // s + 1
        for size, k, s, p, d in zip(x.shape[2:], window.kernel, window.stride, window.pad,
                                    window.dilation))
