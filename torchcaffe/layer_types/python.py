"""The host of `type: "Python"` layers (pycaffe's PythonLayer).

`python_param { module layer param_str }` names a module and a class with
pycaffe's `caffe.Layer` interface. The module is imported by name, as Caffe
does (the project installs the names the reference prototxts use,
`voc_layers` etc., as top-level modules); if no such module is importable,
the name is looked up in the entry-point group `torchcaffe.python_layers`,
where other packages may register layer modules under names of their own.

The instance gets `param_str` and `phase`, then `setup` / `reshape` /
`forward` with lists of Blob, as in Caffe (reshape runs before every
forward). A layer with bottoms or params that need gradients runs inside a
torch.autograd.Function whose backward calls the user's `backward(top,
propagate_down, bottom)`, so gradients flow through Python layers like
through any other. The layer's own `self.blobs` become the net's param blobs
of this layer; the user's backward writes their diffs directly, as in Caffe.
"""
from __future__ import annotations

import importlib
import importlib.metadata

import torch

from ..blob import Blob, SyncedTensor
from ..errors import CaffeError, LayerError, clip, layer_error_from
from .base import CaffeLayer, register

ENTRY_POINT_GROUP = "torchcaffe.python_layers"

# what user code may raise that must not escape as itself: a SystemExit from
# a layer would end the program that only built a net
_USER_FAULTS = (Exception, SystemExit)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {clip(str(exc), 500)}"


def _import_module(layer: CaffeLayer, module_name: str, class_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not (module_name == missing or module_name.startswith(missing + ".")):
            raise layer.error(f"importing module '{module_name}' (for class '{class_name}') "
                              f"failed: {exc}") from exc
    except Exception as exc:  # the module exists but fails while importing
        raise layer.error(f"importing module '{module_name}' (for class '{class_name}') "
                          f"failed: {type(exc).__name__}: {exc}") from exc
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=module_name):
        try:
            return importlib.import_module(entry.value)
        except _USER_FAULTS as exc:
            raise layer.error(f"module '{module_name}' (for class '{class_name}') is "
                              f"registered as '{entry.value}', which failed to import: "
                              f"{type(exc).__name__}: {exc}") from exc
    raise layer.error(f"cannot find module '{module_name}' for class '{class_name}': it is "
                      "not importable and no entry point of group "
                      f"'{ENTRY_POINT_GROUP}' has that name")


def _wrap(tensor: torch.Tensor, diff: torch.Tensor | None = None) -> Blob:
    """A standalone Blob over `tensor` (and `diff`, else zeros)."""
    blob = Blob(tuple(tensor.shape), tensor.device)
    blob._set_tensor(tensor)
    if diff is not None:
        blob._diff = SyncedTensor(diff.contiguous())
    return blob


@register("Python")
class PythonLayer(CaffeLayer):
    def __init__(self, param, phase: int):
        super().__init__(param, phase)
        spec = param.python_param
        if not spec.module or not spec.layer:
            raise self.error("python_param needs both 'module' and 'layer'")
        module = _import_module(self, spec.module, spec.layer)
        cls = getattr(module, spec.layer, None)
        if not isinstance(cls, type):
            raise self.error(f"module '{spec.module}' has no class '{spec.layer}'")
        try:
            self.instance = cls()
            self.instance.param_str = spec.param_str
            self.instance.phase = phase
        except _USER_FAULTS as exc:
            raise self.error(f"creating {spec.module}.{spec.layer} failed (is it a "
                             f"caffe.Layer?): {_describe(exc)}") from exc
        self._device = torch.device("cpu")
        self._bottom: list[Blob] = []
        self._top: list[Blob] = []

    def _call_user(self, method: str, *args) -> None:
        """Call the user's method; whatever it raises (SystemExit included)
        becomes an error naming this layer."""
        try:
            getattr(self.instance, method)(*args)
        except LayerError:
            raise
        except CaffeError as exc:
            raise self.error(str(exc)) from None
        except _USER_FAULTS as exc:
            # keeps the user's exception type too (pycaffe passes it through)
            raise layer_error_from(exc, self.name, self.type,
                                   f"{type(self.instance).__name__}.{method} failed: "
                                   f"{_describe(exc)}") from exc

    def setup(self, bottom_shapes, generator):
        self._bottom = [Blob(s, self._device) for s in bottom_shapes]
        self._top = [Blob((), self._device) for _ in self.param.top]
        self._call_user("setup", self._bottom, self._top)
        self.blobs = [blob._tensor() for blob in self.instance.blobs]

    def adopt_param_blobs(self, param_blobs: list) -> None:
        """The net made this layer's blobs its params: the user's `self.blobs`
        becomes those very blobs (pycaffe shares them the same way)."""
        self.instance.blobs[:] = param_blobs

    def reshape(self, bottom_shapes):
        for blob, shape in zip(self._bottom, bottom_shapes):
            blob._set_shape(shape)
        self._call_user("reshape", self._bottom, self._top)
        return [blob.shape for blob in self._top]

    def to_device(self, device: torch.device) -> None:
        self._device = device
        for blob in self._bottom + self._top:
            blob._to(device)

    def forward(self, bottoms):
        if torch.is_grad_enabled() and any(t.requires_grad for t in (*bottoms, *self.blobs)):
            # the params go in only so that autograd runs this node for them
            return list(_PythonLayerFunction.apply(self, len(bottoms), *bottoms, *self.blobs))
        return self.run_forward(bottoms)

    def run_forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        for blob, tensor in zip(self._bottom, bottoms):
            blob._set_tensor(tensor.detach())
        self._call_user("reshape", self._bottom, self._top)
        self._call_user("forward", self._bottom, self._top)
        return [blob._tensor() for blob in self._top]

    def run_backward(self, bottoms, tops, top_grads, propagate_down) -> list:
        top_blobs = [_wrap(t, g if g is not None else torch.zeros_like(t))
                     for t, g in zip(tops, top_grads)]
        bottom_blobs = [_wrap(b) for b in bottoms]
        self._call_user("backward", top_blobs, propagate_down, bottom_blobs)
        return [blob._diff_synced().device() if down else None
                for blob, down in zip(bottom_blobs, propagate_down)]


class _PythonLayerFunction(torch.autograd.Function):
    """Forward and backward of a Python layer, as one autograd node."""

    @staticmethod
    def forward(ctx, host: PythonLayer, num_bottoms: int, *inputs):
        bottoms = inputs[:num_bottoms]
        # fresh tensor objects for autograd to own; the storage is the top blob's
        tops = tuple(t.detach() for t in host.run_forward(list(bottoms)))
        ctx.host = host
        ctx.num_bottoms = num_bottoms
        ctx.num_params = len(inputs) - num_bottoms
        ctx.save_for_backward(*bottoms, *tops)
        return tops

    @staticmethod
    def backward(ctx, *top_grads):
        saved = ctx.saved_tensors
        bottoms, tops = saved[:ctx.num_bottoms], saved[ctx.num_bottoms:]
        propagate_down = [bool(n) for n in ctx.needs_input_grad[2:2 + ctx.num_bottoms]]
        diffs = ctx.host.run_backward(bottoms, tops, top_grads, propagate_down)
        # param diffs were written by the user's backward into the param blobs
        return (None, None, *diffs, *([None] * ctx.num_params))
