"""The paper's Table 1 columns, computed from the nets netspec emits.

    python -m netspec.table1 [NAME ...]      (default: every net)

For each net's deploy form (an image Input, no loss):

- parameter layers: the longest chain of Convolution / InnerProduct layers
  from the image to the output (depth as the paper counts it: GoogLeNet's
  22 is its depth, not its 57 convolutions); the fixed Deconvolution
  upsampling is not a parameter layer.
- parameters: the weights and biases of those layers (no upsampling).
- max stride: the coarsest top's stride over the image, read from the
  coordinate map between them (`coord_map_from_to`).
- receptive field: the extent of the image one unit of that coarsest top
  sees, from the kernels, strides and dilations on the way (the largest
  over the branches of a Concat / Eltwise); an InnerProduct sees its whole
  input.
- base rf: for a model, the receptive field of its base classifier cast to
  convolutions (googlenetfcn for FCN-GoogLeNet), which is what the paper's
  column reports: FCN-GoogLeNet discards the final 7x7 average pool, so its
  own units see less than the classifier's.

`--check` compares FCN-AlexNet / VGG16 / GoogLeNet with the paper's figures;
`--time` adds the forward time of the deploy net (the paper's last column:
500 x 500 input, on the CPU or, with `--gpu N`, a GPU; fastest of 3 runs).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from caffe_backend import caffe, coord_map

log = logging.getLogger(__name__)

PARAMETER_LAYERS = ("Convolution", "InnerProduct")
WINDOW_LAYERS = ("Convolution", "Pooling", "Deconvolution")

# Table 1 of the paper: parameter layers, parameters (millions, rounded),
# receptive field, max stride
PAPER_TABLE1 = {
    "voc-fcn-alexnet": (8, 57, 355, 32),
    "voc-fcn32s": (16, 134, 404, 32),
    "voc-fcn-googlenet": (22, 6, 907, 32),
}


@dataclass(frozen=True)
class Geometry:
    """What the walk knows about one blob."""

    channels: int
    size: tuple[int, int]   # H, W
    jump: int               # stride over the image
    rf: int                 # receptive field (pixels of the image)
    depth: int              # parameter layers on the longest path to it


@dataclass(frozen=True)
class Row:
    name: str
    layers: int
    params: int
    rf: int
    stride: int
    coarsest: str
    base_rf: int | None = None
    forward_ms: float | None = None

    def cells(self) -> list[str]:
        base = "" if self.base_rf is None else str(self.base_rf)
        cells = [self.name, str(self.layers), f"{self.params / 1e6:.1f}M", str(self.rf),
                 str(self.stride), base, self.coarsest]
        return cells + ([] if self.forward_ms is None else [f"{self.forward_ms:.0f}"])


HEADER = ["net", "param layers", "params", "rf", "max stride", "base rf", "coarsest top"]
TIMING_SIZE = 500  # the paper times a 500 x 500 input


def _repeated(field, default: int) -> tuple[int, int]:
    """A per-axis repeated field (kernel_size, stride, ...) as (h, w)."""
    values = list(field) or [default]
    return (values[0], values[-1])


def _window(layer):
    """(kernel, stride, pad, dilation) per axis of a conv / pool / deconv layer."""
    if layer.type == "Pooling":
        p = layer.pooling_param
        if p.global_pooling:
            return None
        return ((p.kernel_size,) * 2, (p.stride,) * 2, (p.pad,) * 2, (1, 1))
    p = layer.convolution_param
    return (_repeated(p.kernel_size, 1), _repeated(p.stride, 1), _repeated(p.pad, 0),
            _repeated(p.dilation, 1))


def _out_size(layer, size: tuple[int, int]) -> tuple[int, int]:
    """Caffe's output extent of a window layer (pooling rounds up, and drops
    a last window that would start in the padding)."""
    window = _window(layer)
    if window is None:
        return (1, 1)
    out = []
    for n, k, s, p, d in zip(size, *window):
        extent = d * (k - 1) + 1
        if layer.type == "Deconvolution":
            out.append(s * (n - 1) + extent - 2 * p)
        elif layer.type == "Pooling":
            pooled = math.ceil((n + 2 * p - k) / s) + 1
            if p and (pooled - 1) * s >= n + p:
                pooled -= 1
            out.append(pooled)
        else:
            out.append((n + 2 * p - extent) // s + 1)
    return tuple(out)


def layer_params(layer, bottom: Geometry) -> int:
    """Learnable values of a Convolution / InnerProduct layer."""
    if layer.type == "InnerProduct":
        p = layer.inner_product_param
        inputs = bottom.channels * bottom.size[0] * bottom.size[1]
        return p.num_output * inputs + (p.num_output if p.bias_term else 0)
    p = layer.convolution_param
    kh, kw = _repeated(p.kernel_size, 1)
    return (p.num_output * (bottom.channels // p.group) * kh * kw
            + (p.num_output if p.bias_term else 0))


def walk(net_param) -> tuple[dict[str, Geometry], int]:
    """Every blob's geometry (in-place layers update their blob) and the
    parameter count, from the deploy net's Input shape."""
    blobs: dict[str, Geometry] = {}
    params = 0
    for layer in net_param.layer:
        if layer.type == "Input":
            for top, shape in zip(layer.top, layer.input_param.shape):
                dims = list(shape.dim)
                blobs[top] = Geometry(dims[1], (dims[2], dims[3]), 1, 1, 0)
            continue
        bottoms = [blobs[b] for b in layer.bottom]
        first = bottoms[0]
        depth = max(b.depth for b in bottoms)
        if layer.type in PARAMETER_LAYERS:
            params += layer_params(layer, first)
            depth += 1
        if layer.type in WINDOW_LAYERS:
            kernel, stride, _, dilation = _window(layer) or ((first.size), (1, 1), 0, (1, 1))
            extent = dilation[0] * (kernel[0] - 1) + 1
            size = _out_size(layer, first.size)
            if layer.type == "Deconvolution":  # upsampling: finer, each unit sees a few inputs
                jump, rf = max(1, first.jump // stride[0]), first.rf
            else:
                jump, rf = first.jump * stride[0], first.rf + (extent - 1) * first.jump
            channels = (layer.convolution_param.num_output if layer.type != "Pooling"
                        else first.channels)
            geometry = Geometry(channels, size, jump, rf, depth)
        elif layer.type == "InnerProduct":  # one window over the whole input
            rf = first.rf + (first.size[0] - 1) * first.jump
            geometry = Geometry(layer.inner_product_param.num_output, (1, 1), first.jump, rf,
                                depth)
        elif layer.type == "Crop":
            geometry = Geometry(first.channels, bottoms[1].size, first.jump, first.rf, depth)
        elif layer.type == "Concat":
            geometry = Geometry(sum(b.channels for b in bottoms), first.size, first.jump,
                                max(b.rf for b in bottoms), depth)
        else:  # point-wise: ReLU, LRN, Eltwise, Dropout, Scale, Softmax, ...
            geometry = Geometry(first.channels, first.size, max(b.jump for b in bottoms),
                                max(b.rf for b in bottoms), depth)
        for top in layer.top:
            blobs[top] = geometry
    return blobs, params


def analyse(name: str, width: float = 1.0) -> Row:
    """The Table 1 row of netspec net `name` (deploy form)."""
    from .models import NETS

    net = NETS[name]
    spec = net.net_spec(None, width)
    proto = spec.to_proto()
    blobs, params = walk(proto)
    outputs = [top for layer in proto.layer for top in layer.top]
    image = proto.layer[0].top[0]
    # the coarsest tops; the last of them is the net's coarse output (score_fr,
    # fc8, prob), whose units' field the table reports
    max_jump = max(blobs[top].jump for top in outputs)
    coarsest = [top for top in outputs if blobs[top].jump == max_jump]
    stride = _stride(spec, coarsest, image)
    final = outputs[-1]
    base_rf = None
    if hasattr(net, "dataset"):
        from solvers.solve import base_nets

        base_rf = _base_rf(base_nets(name)[0], width)
    return Row(name, blobs[final].depth, params, blobs[coarsest[-1]].rf, stride, coarsest[-1],
               base_rf)


def _stride(spec, coarsest: list[str], image: str) -> int:
    """The coarsest tops' stride over the image from their coordinate map
    (the last one that has one: a classifier's InnerProduct tops have none)."""
    for top in reversed(coarsest):
        try:
            # pycaffe's answer (axis, scale, shift); scale is one number or one per axis
            _, scale, _ = coord_map.coord_map_from_to(spec[top], spec[image])
        except coord_map.UndefinedMapException:
            continue
        except Exception as exc:  # pycaffe's coord_map raises plain exceptions
            if "map" not in str(exc).lower():
                raise
            continue
        return int(np.ravel(scale)[0])
    raise ValueError(f"no coordinate map from any of {coarsest} to {image}")


@cache
def _base_rf(base: str, width: float) -> int:
    return analyse(base, width).rf


def forward_ms(name: str, width: float = 1.0, repeats: int = 3) -> float:
    """Milliseconds of one forward of the deploy net (its fillers' weights)
    on a TIMING_SIZE square input, the fastest of `repeats` after a warm-up."""
    from .models import NETS
    from .writer import to_prototxt

    proto = NETS[name].prototxts(width)["deploy.prototxt"]
    with tempfile.TemporaryDirectory(prefix="fcn-table1-") as work:
        path = Path(work) / "deploy.prototxt"
        path.write_text(to_prototxt(proto))
        net = caffe.Net(str(path), caffe.TEST)
    for name_ in net.inputs:
        shape = net.blobs[name_].data.shape
        net.blobs[name_].reshape(shape[0], shape[1], TIMING_SIZE, TIMING_SIZE)
    net.reshape()
    output = net.outputs[-1]

    def once():
        net.forward()
        return net.blobs[output].data.flat[0]  # reading a value waits for the device

    once()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def check(rows: dict[str, Row]) -> list[str]:
    """The paper's Table 1 figures that the computed rows miss (empty: all
    agree). Parameters are compared in millions, rounded as the paper does;
    the receptive field is the base classifier's (see the module docstring)."""
    misses = []
    for name, (layers, millions, rf, stride) in PAPER_TABLE1.items():
        row = rows[name]
        got = (row.layers, round(row.params / 1e6), row.base_rf, row.stride)
        if got != (layers, millions, rf, stride):
            misses.append(f"{name}: computed {got}, the paper has {(layers, millions, rf, stride)}")
    return misses


def format_table(rows, header=HEADER) -> str:
    table = [header] + [row.cells() for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in table)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from .models import NETS

    parser = argparse.ArgumentParser(
        prog="python -m netspec.table1",
        description="Table 1 of the paper (parameter layers, parameters, receptive field, "
                    "max stride) computed from the emitted nets.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="nets (default: all)")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless FCN-AlexNet / VGG16 / GoogLeNet match the paper")
    parser.add_argument("--time", action="store_true",
                        help="add each deploy net's forward time (ms, 500 x 500 input)")
    parser.add_argument("--gpu", type=int, help="time on this GPU (default: CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    names = args.names or list(NETS)
    unknown = [n for n in names if n not in NETS]
    if unknown:
        parser.error(f"unknown net(s) {', '.join(unknown)}; see python -m netspec --list")
    if args.check:
        names = list(dict.fromkeys([*names, *PAPER_TABLE1]))
    if args.gpu is not None:
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
    rows = {}
    for name in tqdm(names, desc="nets", unit="net", disable=len(names) < 2):
        rows[name] = analyse(name, args.width)
        if args.time:
            rows[name] = replace(rows[name], forward_ms=forward_ms(name, args.width))
    header = HEADER + (["forward ms"] if args.time else [])
    print(format_table(rows.values(), header))
    if args.check:
        misses = check(rows)
        for miss in misses:
            print(f"MISMATCH {miss}")
        if misses:
            return 1
        print("FCN-AlexNet, FCN-VGG16 and FCN-GoogLeNet match the paper's Table 1 "
              "(layers, params in M, base rf, max stride)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
