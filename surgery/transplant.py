"""Move learned parameters between nets of different form.

`transplant` copies every parameter blob of one net into the layer of the
same name in another; when the shapes differ but the element counts agree
(an InnerProduct `O x (C*H*W)` becoming a Convolution `O x C x H x W`) the
values are copied in flat (C) order, which is exactly the fc -> conv cast.
`expand_score` grows a score layer to more classes while keeping the old
ones.  Both work on any pycaffe-style nets (`net.params[name][i].data`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from torchcaffe.errors import CaffeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlobMove:
    """What happened to one parameter blob of the source net."""

    layer: str
    index: int
    target: str | None  # layer name in the new net, None when dropped
    old_shape: tuple[int, ...]
    new_shape: tuple[int, ...] | None


@dataclass
class TransplantReport:
    """Per-blob outcome of a transplant.

    copied: same shape; coerced: same element count, new shape (fc -> conv);
    dropped: no layer or no blob of that index in the new net; untouched:
    layers of the new net that the source net lacks (they keep their values).
    """

    copied: list[BlobMove] = field(default_factory=list)
    coerced: list[BlobMove] = field(default_factory=list)
    dropped: list[BlobMove] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.copied)} copied, {len(self.coerced)} coerced, "
                f"{len(self.dropped)} dropped, {len(self.untouched)} untouched")


def transplant(new_net, net, suffix: str = "") -> TransplantReport:
    """Copy `net`'s parameters into `new_net` by layer name (+ `suffix`).

    A blob whose shape differs is reshaped when the element count agrees and
    refused with a CaffeError naming both layers and shapes otherwise; the
    new net is left unchanged in that case.  Source layers (or extra blobs)
    the new net lacks are dropped.
    """
    report = TransplantReport()
    pending: list[tuple[np.ndarray, object]] = []  # checked first, written after
    for name, blobs in net.params.items():
        target = name + suffix
        if target not in new_net.params:
            report.dropped.extend(
                BlobMove(name, i, None, tuple(b.data.shape), None) for i, b in enumerate(blobs))
            log.info("dropping %s: no layer %r in the new net", name, target)
            continue
        new_blobs = new_net.params[target]
        for i, blob in enumerate(blobs):
            old_shape = tuple(blob.data.shape)
            if i >= len(new_blobs):
                report.dropped.append(BlobMove(name, i, None, old_shape, None))
                log.info("dropping %s[%d]: %r has only %d blob(s)", name, i, target, len(new_blobs))
                continue
            new_shape = tuple(new_blobs[i].data.shape)
            move = BlobMove(name, i, target, old_shape, new_shape)
            if old_shape == new_shape:
                report.copied.append(move)
                log.info("copying %s[%d] -> %s %s", name, i, target, new_shape)
            elif blob.data.size == new_blobs[i].data.size:
                report.coerced.append(move)
                log.info("coercing %s[%d] %s -> %s %s", name, i, old_shape, target, new_shape)
            else:
                raise CaffeError(
                    f"transplant: layer '{name}' blob {i} has shape {old_shape} "
                    f"({blob.data.size} values) but layer '{target}' blob {i} has shape "
                    f"{new_shape} ({new_blobs[i].data.size} values); the element "
                    "counts must agree")
            pending.append((blob.data, new_blobs[i]))
    for values, new_blob in pending:
        # C-order reshape is the flat copy that casts fc weights to conv kernels
        new_blob.data[...] = np.asarray(values).reshape(new_blob.data.shape)
    used = {name + suffix for name in net.params}
    report.untouched = [name for name in new_net.params if name not in used]
    log.info("transplant: %s", report.summary())
    return report


def expand_score(new_net, new_layer: str, net, layer: str) -> None:
    """Copy score layer `layer` (k classes) into the first k outputs of `new_layer`.

    The new layer must have at least k outputs and the same per-output shape;
    its remaining outputs keep their values.
    """
    old_w, new_w = _param(net, layer, 0), _param(new_net, new_layer, 0)
    old_k, new_k = old_w.shape[0], new_w.shape[0]
    if old_k > new_k or old_w.shape[1:] != new_w.shape[1:]:
        raise CaffeError(
            f"expand_score: layer '{layer}' weight {old_w.shape} does not fit into the "
            f"first outputs of layer '{new_layer}' weight {new_w.shape}")
    new_w[:old_k] = old_w
    if len(net.params[layer]) > 1:
        if len(new_net.params[new_layer]) < 2:
            raise CaffeError(f"expand_score: layer '{layer}' has a bias but layer "
                             f"'{new_layer}' has none")
        # biases may be legacy 4-d (1, 1, 1, k): write through the flat iterator
        _param(new_net, new_layer, 1).flat[:old_k] = _param(net, layer, 1).ravel()


def _param(net, layer: str, index: int) -> np.ndarray:
    if layer not in net.params:
        raise CaffeError(f"no learnable layer '{layer}' in the net "
                         f"(have: {', '.join(net.params) or 'none'})")
    blobs = net.params[layer]
    if index >= len(blobs):
        raise CaffeError(f"layer '{layer}' has {len(blobs)} parameter blob(s), no blob {index}")
    return blobs[index].data
