"""Dense output from a strided net, both ways of the paper's Section 3.2.

A net whose output `top` has stride S can be made to output at stride S / f:

- shift-and-stitch: run the net on f^2 inputs, the image shifted right /
  down by (a S0, b S0) pixels (zeros prepended; S0 = S / f, 0 <= a, b < f),
  and interlace the f^2 outputs;
- filter rarefaction: set the stride of the net's last downsampling layers
  (strides multiplying to f) to 1 and dilate every window after them by the
  stride they lost (a convolution's `dilation`, pad scaled alike; a max
  pool, which Caffe cannot dilate, becomes an Eltwise MAX of k^2 Crops of
  its input, zero-padded by a fixed identity 1x1 convolution: the same
  values where the pooled input is non-negative, as after a ReLU).

The paper states both give the same result. They agree exactly on the
output units whose receptive field lies inside the image; nearer the border
the two see different padding (the shifted inputs move the image against
the net's own zero padding), so `dense_outputs` also returns that interior.
Both run on the net cut at `top` (e.g. `score_fr`), before any upsampling.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tqdm import tqdm

from torchcaffe.errors import CaffeError

WINDOW_LAYERS = ("Convolution", "Pooling")
POINT_WISE = ("ReLU", "LRN", "Dropout", "Eltwise", "Concat", "Scale", "Softmax", "Split")


def truncate(net_param, top: str):
    """The net's layers that `top` depends on (in their order)."""
    needed, kept = {top}, []
    for layer in reversed(net_param.layer):
        if needed & set(layer.top):
            kept.append(layer)
            needed |= set(layer.bottom)
    cut = type(net_param)()
    cut.CopyFrom(net_param)
    del cut.layer[:]
    cut.layer.extend(reversed(kept))
    return cut


def _stride(layer) -> int:
    if layer.type == "Pooling":
        return layer.pooling_param.stride
    if layer.type == "Convolution":
        strides = set(layer.convolution_param.stride) or {1}
        if len(strides) > 1:
            raise CaffeError(f"shift-and-stitch: layer '{layer.name}' has unequal strides")
        return strides.pop()
    return 1


def rarefied_layers(net_param, factor: int) -> list[str]:
    """The last downsampling layers whose strides multiply to `factor`."""
    chosen, product = [], 1
    for layer in reversed(net_param.layer):
        stride = _stride(layer)
        if stride > 1 and product < factor:
            chosen.append(layer.name)
            product *= stride
    if product != factor:
        raise CaffeError(f"shift-and-stitch: factor {factor} is not a product of the last "
                         f"strides of the net (the last {len(chosen)} give {product})")
    return chosen[::-1]


def rarefy(net_param, factor: int, channels: dict[str, int] | None = None):
    """The net (cut at its output) with its last strides, multiplying to
    `factor`, set to 1 and the windows after them dilated. A padded max
    pool after them needs its input's `channels` (blob name -> count)."""
    chosen = set(rarefied_layers(net_param, factor))
    out = type(net_param)()
    out.CopyFrom(net_param)
    del out.layer[:]
    dilation: dict[str, int] = {}
    for layer in net_param.layer:
        d = {dilation.get(b, 1) for b in layer.bottom} or {1}
        if len(d) > 1:
            raise CaffeError(f"shift-and-stitch: layer '{layer.name}' joins blobs of "
                             "different density")
        d = d.pop()
        stride = _stride(layer)
        if layer.name in chosen:
            out_d = d * stride
        elif stride > 1 and d > 1:
            raise CaffeError(f"shift-and-stitch: layer '{layer.name}' downsamples after a "
                             "rarefied layer")
        else:
            out_d = d
        if layer.type in WINDOW_LAYERS and (d > 1 or layer.name in chosen):
            new_layers = _dilated(layer, d, channels or {})
        elif d > 1 and layer.type not in POINT_WISE:
            raise CaffeError(f"shift-and-stitch: cannot rarefy through layer '{layer.name}' "
                             f"({layer.type}); cut the net before it")
        else:
            new_layers = [layer]
        out.layer.extend(new_layers)
        for top in layer.top:
            dilation[top] = out_d
    return out


def _dilated(layer, d: int, channels: dict[str, int]) -> list:
    """`layer` at stride 1 with its window dilated by `d` (more layers for a pool)."""
    new = type(layer)()
    new.CopyFrom(layer)
    if layer.type == "Convolution":
        p = new.convolution_param
        dilations = list(p.dilation) or [1]
        p.ClearField("stride")
        p.ClearField("dilation")
        p.dilation.extend([x * d for x in dilations])
        pads = [x * d for x in p.pad]
        p.ClearField("pad")
        p.pad.extend(pads)
        return [new]
    p = new.pooling_param
    p.stride = 1
    if d == 1 or p.kernel_size == 1:
        return [new]
    if p.pool != p.MAX:
        raise CaffeError(f"shift-and-stitch: pooling layer '{layer.name}' would need a "
                         "dilated average pool")
    if p.pad and layer.bottom[0] not in channels:
        raise CaffeError(f"shift-and-stitch: padded pool '{layer.name}' needs the channel "
                         f"count of '{layer.bottom[0]}'")
    return _dilated_max_pool(layer, p.kernel_size, p.pad, d, channels.get(layer.bottom[0]))


def _dilated_max_pool(layer, kernel: int, pad: int, d: int, channels: int | None) -> list:
    """Max over a kernel x kernel window of taps `d` apart, stride 1, out of
    Caffe layers: zero padding (a fixed per-channel identity convolution; a
    pool may not pad more than its kernel), a reference of the output's
    extent, one Crop per tap and an Eltwise MAX."""
    make, pooling = type(layer), type(layer.pooling_param)
    max_op = type(layer.eltwise_param).MAX
    name, bottom = layer.name, layer.bottom[0]
    source, added = bottom, []
    if pad:
        source = f"{name}/padded"
        added.append(make(name=source, type="Convolution", bottom=[bottom], top=[source],
                          param=[dict(lr_mult=0, decay_mult=0)],
                          convolution_param=dict(
                              num_output=channels, group=channels, kernel_size=[1],
                              pad=[pad * d], bias_term=False,
                              weight_filler=dict(type="constant", value=1))))
    reference = f"{name}/extent"
    added.append(make(name=reference, type="Pooling", bottom=[source], top=[reference],
                      pooling_param=dict(pool=pooling.MAX, kernel_size=d * (kernel - 1) + 1,
                                         stride=1)))
    taps = []
    for i in range(kernel):
        for j in range(kernel):
            tap = f"{name}/tap{i}{j}"
            added.append(make(name=tap, type="Crop", bottom=[source, reference], top=[tap],
                              crop_param=dict(axis=2, offset=[i * d, j * d])))
            taps.append(tap)
    added.append(make(name=name, type="Eltwise", bottom=taps, top=list(layer.top),
                      eltwise_param=dict(operation=max_op)))
    return added


def field_of(net_param, top: str) -> tuple[Fraction, Fraction, int]:
    """(jump, start, extent): unit u of `top` sees the image pixels from
    jump * u + start on, `extent` of them (the union over joined branches)."""
    field: dict[str, tuple[Fraction, Fraction, Fraction]] = {}  # jump, start, end
    for layer in net_param.layer:
        if not layer.bottom:
            for t in layer.top:
                field[t] = (Fraction(1), Fraction(0), Fraction(0))
            continue
        bottoms = [field[b] for b in layer.bottom]
        jump, start, end = bottoms[0]
        if layer.type in WINDOW_LAYERS:
            k, s, p, d = _window(layer)
            start, end = start - jump * p, end - jump * p + jump * d * (k - 1)
            jump *= s
        elif layer.type == "Crop":
            offset = jump * (list(layer.crop_param.offset) or [0])[0]
            start, end = start + offset, end + offset
        elif layer.type in ("Eltwise", "Concat"):
            start, end = min(b[1] for b in bottoms), max(b[2] for b in bottoms)
        for t in layer.top:
            field[t] = (jump, start, end)
    jump, start, end = field[top]
    return jump, start, int(end - start) + 1


def _window(layer):
    """(kernel, stride, pad, dilation) along the first spatial axis."""
    if layer.type == "Pooling":
        p = layer.pooling_param
        return p.kernel_size, p.stride or 1, p.pad, 1
    p = layer.convolution_param
    return (list(p.kernel_size)[0], (list(p.stride) or [1])[0], (list(p.pad) or [0])[0],
            (list(p.dilation) or [1])[0])


# ---------------------------------------------------------------- running both ways


@dataclass
class DenseOutput:
    """`top` at stride S / f both ways (C x H' x W'; NaN where no shifted
    pass lands), and where the two must agree (receptive field inside the image)."""

    stitched: np.ndarray
    rarefied: np.ndarray
    interior: np.ndarray  # H' x W' bool


def _net(net_param, work: Path, name: str):
    from caffe_backend import caffe

    path = work / f"{name}.prototxt"
    path.write_text(text_format.MessageToString(net_param))
    return caffe.Net(str(path), caffe.TEST)


def _copy_params(net, source, cut) -> None:
    """The learned layers of the cut net from `source`; the rarefied net's
    padding layers keep their fixed identity weights."""
    learned = {layer.name for layer in cut.layer}
    for name, blobs in net.params.items():
        if name not in learned:
            continue
        if name not in source.params:
            raise CaffeError(f"shift-and-stitch: the weights have no layer '{name}'")
        for blob, values in zip(blobs, source.params[name]):
            blob.data[...] = values.data


def _run(net, input_name: str, image: np.ndarray, top: str) -> np.ndarray:
    net.blobs[input_name].reshape(1, *image.shape)
    net.blobs[input_name].data[...] = image
    net.forward()
    return np.array(net.blobs[top].data[0])


def dense_outputs(deploy_param, top: str, factor: int, image: np.ndarray, weights) -> DenseOutput:
    """`top` of the deploy net over `image` (C x H x W) made `factor` times
    denser by shift-and-stitch and by filter rarefaction; `weights` is a
    net holding the parameters (by layer name), e.g. the deploy net loaded
    with its caffemodel."""
    cut = truncate(deploy_param, top)
    input_name = cut.layer[0].top[0]
    with tempfile.TemporaryDirectory(prefix="fcn-shift-stitch-") as work:
        coarse_net = _net(cut, Path(work), "cut")
        rare = rarefy(cut, factor, {name: blob.data.shape[1]
                                    for name, blob in coarse_net.blobs.items()})
        fine_net = _net(rare, Path(work), "rarefied")
        jump, start, extent = field_of(cut, top)
        fine, fine_start, fine_extent = field_of(rare, top)
        if fine * factor != jump or fine_extent != extent:
            raise CaffeError(f"shift-and-stitch: rarefaction changed the field of '{top}' "
                             f"(stride {jump} -> {fine}, extent {extent} -> {fine_extent})")
        step = int(fine)
        offset = (start - fine_start) / fine  # of a pass's unit 0 on the dense grid
        if offset.denominator != 1:
            raise CaffeError("shift-and-stitch: the shifted outputs do not fall on the dense grid")
        _copy_params(coarse_net, weights, cut)
        _copy_params(fine_net, weights, cut)
        rarefied = _run(fine_net, input_name, image, top)
        stitched = np.full_like(rarefied, np.nan)
        channels, height, width = image.shape
        shifts = [(a, b) for a in range(factor) for b in range(factor)]
        for a, b in tqdm(shifts, desc="shifted passes", unit="pass", disable=len(shifts) < 4):
            shifted = np.zeros((channels, height + a * step, width + b * step), image.dtype)
            shifted[:, a * step:, b * step:] = image
            coarse = _run(coarse_net, input_name, shifted, top)
            rows = factor * np.arange(coarse.shape[1]) - a + int(offset)
            cols = factor * np.arange(coarse.shape[2]) - b + int(offset)
            keep_r = (rows >= 0) & (rows < rarefied.shape[1])
            keep_c = (cols >= 0) & (cols < rarefied.shape[2])
            stitched[:, rows[keep_r][:, None], cols[keep_c][None, :]] = \
                coarse[:, keep_r][:, :, keep_c]
    first = [int(fine_start) + step * u for u in range(max(rarefied.shape[1:]))]
    inside_r = np.array([f >= 0 and f + extent <= height for f in first[:rarefied.shape[1]]])
    inside_c = np.array([f >= 0 and f + extent <= width for f in first[:rarefied.shape[2]]])
    return DenseOutput(stitched, rarefied, inside_r[:, None] & inside_c[None, :])


# ---------------------------------------------------------------- command line


def load_deploy(model: str, width: float, weights: str | None, work: Path, seed: int):
    """The model's deploy NetParameter and a net holding its weights (the
    caffemodel, or random He-scaled weights for a demonstration)."""
    from caffe_backend import caffe
    from netspec.models import NETS

    if model not in NETS:
        raise CaffeError(f"unknown net '{model}' (see python -m netspec --list)")
    proto = NETS[model].prototxts(width)["deploy.prototxt"]
    path = work / "deploy.prototxt"
    path.write_text(text_format.MessageToString(proto))
    if weights:
        return proto, caffe.Net(str(path), caffe.TEST, weights=weights)
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            fan = int(np.prod(blob.data.shape[1:])) if blob.data.ndim > 1 else 1
            blob.data[...] = rng.standard_normal(blob.data.shape) * np.sqrt(2.0 / fan)
    return proto, net


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m surgery.shift_stitch",
        description="Section 3.2: a net's coarse output made f times denser by "
                    "shift-and-stitch and by filter rarefaction, and how far they differ.")
    parser.add_argument("model", help="a netspec net, e.g. voc-fcn32s")
    parser.add_argument("--factor", type=int, default=2, help="f (default 2)")
    parser.add_argument("--top", default="score_fr", help="the coarse output (default score_fr)")
    parser.add_argument("--weights", help="caffemodel (default: random weights)")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    parser.add_argument("--image", help="an RGB image (default: random, --size pixels square)")
    parser.add_argument("--size", type=int, default=400, help="random image size (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write stitched / rarefied / interior to this .npz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with tempfile.TemporaryDirectory(prefix="fcn-shift-stitch-") as work:
            proto, net = load_deploy(args.model, args.width, args.weights, Path(work), args.seed)
            if args.image:
                from data_layers.seg_data import VOC_MEAN_BGR, load_bgr

                image = load_bgr(Path(args.image), args.image, np.array(VOC_MEAN_BGR), "image")
            else:
                image = (np.random.default_rng(args.seed).standard_normal(
                    (3, args.size, args.size)) * 50).astype(np.float32)
            dense = dense_outputs(proto, args.top, args.factor, image, net)
    except CaffeError as exc:
        parser.exit(1, f"shift_stitch: error: {exc}\n")
    inside = dense.interior
    difference = np.abs(dense.stitched[:, inside] - dense.rarefied[:, inside])
    scale = float(np.abs(dense.rarefied[:, inside]).max()) if inside.any() else 0.0
    print(f"{args.model} {args.top}: dense {dense.rarefied.shape[1]}x{dense.rarefied.shape[2]} "
          f"(factor {args.factor}); {int(inside.sum())} units with their field inside the image")
    if inside.any():
        print(f"max |shift-and-stitch - rarefaction| there: {difference.max():.3g} "
              f"(outputs up to {scale:.3g})")
    if args.save:
        np.savez(args.save, stitched=dense.stitched, rarefied=dense.rarefied, interior=inside)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
