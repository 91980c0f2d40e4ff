"""Export a caffemodel (with its deploy net) to PyTorch, NumPy, safetensors or ONNX.

The exported module comes from torchcaffe (see weights/torch_module.py)
whichever runtime is selected; the forward the files are checked against
is the selected runtime's: torchcaffe's, or BVLC Caffe's own on
`FCN_CAFFE=pycaffe`.

Formats, chosen by the output's suffix:
  .pt           a PyTorch state dict {'<layer>.<index>': tensor}, the blobs of
                net.params in Caffe's shapes (torch.save; load with
                torch.load(path, weights_only=True))
  .npz          the same arrays with numpy.savez
  .safetensors  the same tensors (needs the `safetensors` package)
  .onnx         the whole net, opset 17, traced at the deploy input shape (or
                `input_shape`); inputs and outputs keep the net's blob names

Every file is written to a temporary name, checked, then renamed into place:
the check loads what was written, runs it (the tensor formats through the
torch module, ONNX through onnxruntime) on a fixed pseudo-random input and
compares with the Caffe runtime's forward of the original caffemodel.  A
difference above `tolerance` times the largest output magnitude (at least 1)
raises, and no file is left behind.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from torchcaffe.errors import CaffeError
from torchcaffe.atomic import atomic_path
from weights.torch_module import CaffeModule

log = logging.getLogger(__name__)

ONNX_OPSET = 17
TOLERANCE = 1e-4
FORMATS = {".pt": "pt", ".npz": "npz", ".safetensors": "safetensors", ".onnx": "onnx"}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_error: float  # max |exported - reference| / max(1, max |reference|), over outputs


def export(deploy: str | os.PathLike, weights: str | os.PathLike, out: str | os.PathLike, *,
           input_shape: Sequence[int] | None = None, tolerance: float = TOLERANCE,
           device: str = "cpu") -> ExportResult:
    """Write `out` in the format its suffix names; verify it; return what was checked."""
    out = Path(out)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise CaffeError(f"export: cannot tell the format of {out} from its suffix; use one "
                         f"of {', '.join(FORMATS)}")
    for path in (deploy, weights):
        if not Path(path).is_file():
            raise CaffeError(f"export: no such file {os.fspath(path)}")
    reference = CaffeModule(deploy, weights).to(device).eval()
    inputs = _probe_inputs(reference, input_shape, device)
    expected = _runtime_forward(deploy, weights, reference, inputs)
    with atomic_path(out) as tmp:
        if fmt == "onnx":
            _write_onnx(reference, inputs, tmp)
            actual = _run_onnx(tmp, reference.input_names, inputs)
        else:
            WRITERS[fmt](reference.caffe_state(), tmp)
            actual = _run_state(deploy, READERS[fmt](tmp), tmp, inputs, device)
        error = _compare(reference.output_names, expected, actual, tolerance, out)
    log.info("exported %s (%s): max relative difference %.3g", out, fmt, error)
    return ExportResult(out, fmt, error)


def _runtime_forward(deploy, weights, reference: CaffeModule, inputs) -> list[np.ndarray]:
    """The outputs the export must reproduce: torchcaffe's module, or the net
    on BVLC's pycaffe when that is the selected runtime."""
    from caffe_backend import caffe

    if caffe.__name__ == "torchcaffe":
        with torch.no_grad():
            return [t.detach().cpu().numpy() for t in reference(*inputs)]
    net = caffe.Net(os.fspath(deploy), caffe.TEST, weights=os.fspath(weights))
    for name, tensor in zip(reference.input_names, inputs):
        net.blobs[name].reshape(*tensor.shape)
        net.blobs[name].data[...] = tensor.cpu().numpy()
    net.forward()
    return [net.blobs[name].data.copy() for name in reference.output_names]


def _probe_inputs(module: CaffeModule, input_shape, device) -> list[torch.Tensor]:
    """A fixed input per net input: values in [-128, 128), like mean-subtracted pixels."""
    if input_shape and len(module.input_names) > 1:
        raise CaffeError("export: input_shape applies to single-input nets only")
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for name in module.input_names:
        shape = tuple(input_shape) if input_shape else module.input_shapes[name]
        if not shape or min(shape) < 1:
            raise CaffeError(f"export: input '{name}' has no usable shape {shape}; "
                             "give input_shape")
        tensors.append((torch.rand(shape, generator=generator) * 256 - 128).to(device))
    return tensors


def _compare(names, expected, actual, tolerance, out) -> float:
    worst = 0.0
    for name, want, got in zip(names, expected, actual):
        got = np.asarray(got)
        if got.shape != want.shape:
            raise CaffeError(f"export check of {out}: output '{name}' has shape {got.shape}, "
                             f"the Caffe runtime gives {want.shape}")
        scale = max(1.0, float(np.abs(want).max(initial=0.0)))
        error = float(np.abs(got.astype(np.float64) - want).max(initial=0.0)) / scale
        if not error <= tolerance:  # also catches NaN
            raise CaffeError(f"export check of {out}: output '{name}' differs from the Caffe "
                             f"runtime by {error:.3g} (relative to {scale:.3g}), above "
                             f"{tolerance:g}; the file was not written")
        worst = max(worst, error)
    return worst


# ---------------------------------------------------------------- tensor formats

def _save_pt(state: dict, path: str) -> None:
    torch.save({k: v.cpu().contiguous() for k, v in state.items()}, path)


def _load_pt(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _save_npz(state: dict, path: str) -> None:
    with open(path, "wb") as f:  # an open file keeps numpy from appending ".npz"
        np.savez(f, **{k: v.cpu().numpy() for k, v in state.items()})


def _load_npz(path: str) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise CaffeError("export to .safetensors needs the safetensors package "
                         "(pip install safetensors, or the project's `export` extra)") from None
    return safetensors.torch


def _save_safetensors(state: dict, path: str) -> None:
    _safetensors().save_file({k: v.cpu().contiguous() for k, v in state.items()}, path)


def _load_safetensors(path: str) -> dict:
    return _safetensors().load_file(path)


WRITERS: dict[str, Callable] = {"pt": _save_pt, "npz": _save_npz,
                                "safetensors": _save_safetensors}
READERS: dict[str, Callable] = {"pt": _load_pt, "npz": _load_npz,
                                "safetensors": _load_safetensors}


def _run_state(deploy, state: dict, source: str, inputs, device) -> list[np.ndarray]:
    """Forward of a fresh module (no caffemodel) given only the exported blobs."""
    module = CaffeModule(deploy)
    module.load_caffe_state(state, source)
    module.to(device).eval()
    with torch.no_grad():
        return [t.cpu().numpy() for t in module(*inputs)]


# ---------------------------------------------------------------- ONNX

def _write_onnx(module: CaffeModule, inputs, path: str) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter: it needs no onnxscript; tracer warnings
        # are about shape arithmetic that the fixed input shape makes constant
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs), path, opset_version=ONNX_OPSET,
                          input_names=module.input_names, output_names=module.output_names,
                          do_constant_folding=True, dynamo=False)


def _run_onnx(path: str, input_names, inputs) -> list[np.ndarray]:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise CaffeError("export to .onnx is checked with onnx and onnxruntime; install them "
                         "(pip install onnx onnxruntime, or the project's `export` extra)") \
            from None
    onnx.checker.check_model(path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {name: t.detach().cpu().numpy() for name, t in zip(input_names, inputs)}
    return session.run(None, feeds)
