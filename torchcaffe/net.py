"""pycaffe's Net with BVLC Caffe's semantics, computing with torch.

Construction follows Caffe's Net::Init: filter layers by NetState, insert
Split layers where a top feeds several bottoms (so `net.blobs` names them as
Caffe does), set up each layer (shapes are known before any forward), work out
which layers need backward (loss weights, `propagate_down`, lr_mult,
`force_backward`), share named params, and freeze the result into a plan: a
list of steps holding the layer and its bottom/top Blob objects.

Forward runs the plan with torch autograd recording (only when some layer
needs backward and grad mode is on). Backward seeds autograd with the diffs
of the net's output blobs (a loss top's diff holds its loss weight, as in
Caffe) and lets autograd compute param gradients, which accumulate in the
params' diffs until cleared; a blob consumed by several layers gets the sum of
their gradients because its Split tops alias it.

Every blob's diff is kept after backward, as in Caffe (`keep_diffs=True`,
the default). Solvers build their nets with `keep_diffs=False`, which keeps
only the diffs of the net's inputs and outputs and saves an activation-sized
copy of the net in memory; there an intermediate blob's diff is kept from
the first forward after someone read it (`blob.diff`).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from collections import OrderedDict
from typing import Iterable, Sequence

import numpy as np
import torch

from . import host_memory, mode
from .blob import Blob, ParamBlob, SyncedTensor
from .errors import INT_MAX, CaffeError, LayerError, clip
# the implementations live in layer_types/ (not layers/: pycaffe's
# `caffe.layers` is NetSpec's layer factory); loading it registers them
from .layer_types.base import LAYER_TYPES
from .proto import caffe_pb2
from .prototxt import filter_net, net_state, read_net_prototxt
from .upgrade import net_needs_upgrade, upgrade_net_param

log = logging.getLogger(__name__)

TRAIN, TEST = 0, 1


# ---------------------------------------------------------------- split insertion

def _split_layer_name(layer: str, blob: str, top_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split"


def _split_blob_name(layer: str, blob: str, top_index: int, split_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split_{split_index}"


def insert_splits(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """Caffe's InsertSplits: a top read by more than one bottom (or read and
    also weighted as a loss) gets a Split layer right after its producer, one
    Split top per reader, named `<blob>_<layer>_<top index>_split_<k>`."""
    source_of: dict[tuple[int, int], tuple[int, int]] = {}
    readers: dict[tuple[int, int], int] = {}
    loss_weight_of: dict[tuple[int, int], float] = {}
    last_top: dict[str, tuple[int, int]] = {}
    for i, layer in enumerate(net.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_top:
                raise LayerError(layer.name, layer.type,
                                 f"bottom '{name}' (index {j}) is not a top of any earlier layer")
            source_of[(i, j)] = last_top[name]
            readers[last_top[name]] = readers.get(last_top[name], 0) + 1
        for j, name in enumerate(layer.top):
            last_top[name] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            top = last_top[layer.top[j]]
            loss_weight_of[top] = layer.loss_weight[j]
            if layer.loss_weight[j]:
                readers[top] = readers.get(top, 0) + 1

    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    next_split: dict[tuple[int, int], int] = {}
    for i, source_layer in enumerate(net.layer):
        layer = out.layer.add()
        layer.CopyFrom(source_layer)
        for j, name in enumerate(layer.bottom):
            top = source_of[(i, j)]
            if readers.get(top, 0) > 1:
                k = next_split.get(top, 0)
                next_split[top] = k + 1
                layer.bottom[j] = _split_blob_name(net.layer[top[0]].name, name, top[1], k)
        for j, name in enumerate(layer.top):
            count = readers.get((i, j), 0)
            if count <= 1:
                continue
            split = out.layer.add()
            split.name = _split_layer_name(layer.name, name, j)
            split.type = "Split"
            split.bottom.append(name)
            weight = loss_weight_of.get((i, j), 0.0)
            for k in range(count):
                split.top.append(_split_blob_name(layer.name, name, j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0.0)
            if weight:
                # the loss use moves to split top 0; readers take the others
                del layer.loss_weight[:]
                next_split[(i, j)] = 1
    return out


# ---------------------------------------------------------------- plan

class LayerHandle:
    """An entry of `net.layers`: pycaffe's Layer view (`type`, `blobs`)."""

    def __init__(self, name: str, type_name: str, impl, blobs: list[ParamBlob]):
        self.name = name
        self.type = type_name
        self.impl = impl
        self.blobs = blobs

    def __repr__(self) -> str:
        return f"<Layer {self.name!r} type {self.type}>"


class _Step:
    """One layer of the plan, with everything forward needs precomputed."""

    __slots__ = ("index", "name", "impl", "bottoms", "tops", "is_input", "is_split",
                 "detach", "first_write", "bottom_shapes", "param_slots", "rebind",
                 "tops_final", "bottoms_final")

    def __init__(self, index, name, impl, bottoms, tops, is_input, is_split):
        self.index = index
        self.name = name
        self.impl = impl
        self.bottoms: list[Blob] = bottoms
        self.tops: list[Blob] = tops
        self.is_input = is_input
        self.is_split = is_split
        self.detach: tuple[bool, ...] | None = None   # per bottom: propagate_down false
        self.first_write: tuple[bool, ...] = ()       # per top: not an in-place write
        self.bottom_shapes: list = []
        # (param index, blob, view shape or None, detach) for each param blob
        self.param_slots: list[tuple[int, ParamBlob, tuple | None, bool]] = []
        self.rebind = False      # param views/detaches to rebuild at each forward
        self.tops_final = True   # no later layer writes over these tops in place
        self.bottoms_final = True


def _check_count(impl, what: str, given: int, expected) -> None:
    if expected is None:
        return
    low, high = (expected, expected) if isinstance(expected, int) else expected
    if not low <= given <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise impl.error(f"takes {want} {what} blob(s), {given} given")


def _reshape(impl, bottom_shapes) -> list:
    """Top shapes from the layer, with the checks Caffe makes around every
    Reshape: a loss layer's bottoms agree on the first axis (LossLayer), and
    no top holds more than INT_MAX elements (Blob::Reshape)."""
    if impl.is_loss and len(bottom_shapes) >= 2 and len(bottom_shapes[0]) \
            and len(bottom_shapes[1]) and bottom_shapes[0][0] != bottom_shapes[1][0]:
        raise impl.error(f"the data and label should have the same first dimension "
                         f"(bottom shapes {list(bottom_shapes[0])} and "
                         f"{list(bottom_shapes[1])})")
    top_shapes = impl.reshape(bottom_shapes)
    for j, shape in enumerate(top_shapes):
        if math.prod(shape) > INT_MAX:
            raise impl.error(f"top {j} would have shape {list(shape)}, "
                             f"{math.prod(shape)} elements: blob size exceeds INT_MAX")
    return top_shapes


_CUDNN = 2  # the engine enum value of every *Parameter that has one


def _warn_engine(lp: caffe_pb2.LayerParameter) -> None:
    """torchcaffe has one engine, computing Caffe's CAFFE-engine results."""
    for field, value in lp.ListFields():
        if field.message_type is not None and "engine" in field.message_type.fields_by_name \
                and value.engine == _CUDNN:
            log.warning("layer '%s': %s.engine CUDNN is ignored; torchcaffe computes as "
                        "Caffe's CAFFE engine", clip(lp.name), field.name)


@contextlib.contextmanager
def _faults_named(layer_name: str, layer_type: str, when: str, source: str | None = None):
    """Errors from inside a layer come out as LayerErrors naming it (and the
    net's file, `source`): a plain CaffeError gets the layer's name, and
    torch's out-of-memory or overflow errors (huge num_output, kernel_size,
    dim ...) become refusals."""
    try:
        yield
    except LayerError as exc:
        if exc.source is not None or source is None:
            raise
        # type(exc): a user layer's error keeps its own exception type too
        raise type(exc)(exc.layer_name, exc.layer_type, exc.message,
                        source=source) from exc.__cause__
    except CaffeError as exc:
        raise LayerError(layer_name, layer_type, str(exc), source=source) from None
    except (RuntimeError, MemoryError, OverflowError) as exc:
        raise LayerError(layer_name, layer_type, f"{when} failed: {type(exc).__name__}: "
                         f"{clip(str(exc), 500)}", source=source) from exc


def _parse_net_args(args: tuple, phase, weights):
    """pycaffe's signatures: (file, phase) or the deprecated (file, weights, phase)."""
    if len(args) == 1:
        if phase is not None:
            raise CaffeError("Net(): phase given twice")
        phase = args[0]
    elif len(args) == 2:
        if phase is not None or weights is not None:
            raise CaffeError("Net(file, weights, phase): weights/phase given twice")
        weights, phase = args
    elif len(args) > 2:
        raise CaffeError("Net() takes (network_file, phase) or (network_file, weights, phase)")
    if phase is not None and phase not in (TRAIN, TEST):
        raise CaffeError(f"Net(): phase must be caffe.TRAIN (0) or caffe.TEST (1), got {phase!r}")
    return phase, weights


class Net:
    """A Caffe net: `Net(prototxt, phase)`, `Net(prototxt, weights, phase)`,
    keywords `phase=`, `weights=`, `level=`, `stages=`. The prototxt may also
    be a `caffe_pb2.NetParameter` (whose own `state` is used unless `phase`
    is given)."""

    def __init__(self, network_file, *args, phase: int | None = None,
                 weights: str | os.PathLike | None = None, level: int | None = None,
                 stages: Iterable[str] | None = None, keep_diffs: bool = True):
        phase, weights = _parse_net_args(args, phase, weights)
        host_memory.apply_policy()
        if isinstance(network_file, caffe_pb2.NetParameter):
            param = caffe_pb2.NetParameter()
            param.CopyFrom(network_file)
            self._source = f"net '{param.name}'" if param.name else "net parameter"
            if net_needs_upgrade(param):
                param = upgrade_net_param(param, self._source)
            base = caffe_pb2.NetState()
            base.CopyFrom(param.state)
            param.state.CopyFrom(net_state(base.phase if phase is None else phase,
                                           base.level if level is None else level,
                                           stages or (), base=base))
        else:
            self._source = os.fspath(network_file)
            if phase is None:
                raise CaffeError(f"Net({self._source!r}): give the phase, caffe.TRAIN or caffe.TEST")
            param = read_net_prototxt(network_file)
            param.state.CopyFrom(net_state(phase, 0 if level is None else level,
                                           stages or (), base=param.state))
        self.phase = param.state.phase
        self._keep_diffs = keep_diffs
        self._net_param = insert_splits(filter_net(param))
        for layer in self._net_param.layer:
            if not layer.HasField("phase"):
                layer.phase = self.phase
        if not len(param.layer) and not len(param.input):
            raise CaffeError(f"{self._source}: the net defines no layers (an empty prototxt?)")
        self._device = torch.device("cpu")
        self._graph_pending = False
        try:
            self._build()
        except LayerError as exc:
            if exc.source is not None:
                raise
            raise type(exc)(exc.layer_name, exc.layer_type, exc.message,
                            source=self._source) from exc.__cause__
        if mode.device() != self._device:
            self._move_to(mode.device())
        if weights is not None:
            self.copy_from(weights)

    # ------------------------------------------------------------ construction
    def _create_layer(self, lp: caffe_pb2.LayerParameter):
        cls = LAYER_TYPES.get(lp.type)
        if cls is None:
            known = ", ".join(sorted(LAYER_TYPES))
            raise LayerError(lp.name, lp.type or "(none)",
                             f"unknown layer type '{lp.type}' (known types: {known})")
        return cls(lp, self.phase)

    def _build(self) -> None:
        net_param = self._net_param
        self.name = net_param.name
        blob_names: list[str] = []
        blobs: list[Blob] = []
        latest: dict[str, int] = {}          # blob name -> blob id
        available: set[str] = set()          # produced and not yet consumed
        blob_need_backward: list[bool] = []
        writers: list[int] = []              # per blob: layers that write it
        self._loss_weights: dict[int, float] = {}
        steps: list[_Step] = []
        handles: list[LayerHandle] = []
        bottom_ids: list[list[int]] = []
        top_ids: list[list[int]] = []
        bottom_need: list[list[bool]] = []
        layer_need_backward: list[bool] = []
        param_propagate: list[list[bool]] = []
        params_by_name: dict[str, tuple[int, int, ParamBlob]] = {}
        self._learnable: list[ParamBlob] = []
        self.params_lr: list[float] = []
        self.params_weight_decay: list[float] = []
        has_lr: list[bool] = []
        has_decay: list[bool] = []
        generator = mode.filler_generator()

        for li, lp in enumerate(net_param.layer):
            if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
                raise LayerError(lp.name, lp.type, "propagate_down must be given either "
                                 f"0 or {len(lp.bottom)} (bottom count) times")
            with _faults_named(lp.name, lp.type, "creating the layer"):
                impl = self._create_layer(lp)
            _warn_engine(lp)
            _check_count(impl, "bottom", len(lp.bottom), impl.num_bottoms)
            _check_count(impl, "top", len(lp.top), impl.num_tops)
            need_backward = False
            b_ids, b_need = [], []
            for j, name in enumerate(lp.bottom):
                if name not in available:
                    detail = ("it was already consumed" if name in latest
                              else "no earlier layer produces it")
                    raise LayerError(lp.name, lp.type, f"unknown bottom blob '{name}' "
                                     f"(index {j}): {detail}")
                bid = latest[name]
                available.discard(name)
                b_ids.append(bid)
                propagate = lp.propagate_down[j] if len(lp.propagate_down) else True
                b_need.append(blob_need_backward[bid] and propagate)
                need_backward |= blob_need_backward[bid]
            t_ids, first_write = [], []
            for j, name in enumerate(lp.top):
                if j < len(lp.bottom) and name == lp.bottom[j]:
                    tid = latest[name]
                    first_write.append(False)
                elif name in latest:
                    raise LayerError(lp.name, lp.type, f"top '{name}' is already produced "
                                     "by an earlier layer (only in-place reuse, top j = "
                                     "bottom j, may repeat a name)")
                else:
                    tid = len(blobs)
                    blob_names.append(name)
                    blobs.append(Blob(()))
                    blob_need_backward.append(False)
                    writers.append(0)
                    latest[name] = tid
                    first_write.append(True)
                writers[tid] += 1
                available.add(name)
                t_ids.append(tid)

            bottom_shapes = [blobs[i].shape for i in b_ids]
            with _faults_named(lp.name, lp.type, "setup"):
                impl.setup(bottom_shapes, generator)
                top_shapes = _reshape(impl, bottom_shapes)
            if len(top_shapes) != len(t_ids):
                raise impl.error(f"reshape gave {len(top_shapes)} top shapes for {len(t_ids)} tops")
            for tid, shape in zip(t_ids, top_shapes):
                blobs[tid]._set_shape(shape)

            # loss weights (Caffe's SetLossWeights; loss layers default to 1 on top 0)
            weights = list(lp.loss_weight)
            if not weights and impl.is_loss:
                weights = [1.0]
            if weights and len(weights) != len(t_ids):
                raise impl.error("loss_weight must be unspecified or given once per top blob")
            for tid, weight in zip(t_ids, weights):
                if weight:
                    self._loss_weights[tid] = float(weight)
                else:
                    self._loss_weights.pop(tid, None)

            # params: specs, sharing by name, learning rates
            if len(lp.param) > len(impl.blobs):
                raise impl.error(f"{len(lp.param)} param specs given for "
                                 f"{len(impl.blobs)} param blobs")
            step = _Step(li, lp.name, impl, [blobs[i] for i in b_ids], [blobs[i] for i in t_ids],
                         lp.type == "Input", lp.type == "Split")
            layer_blobs: list[ParamBlob] = []
            propagate_params = []
            for pid, tensor in enumerate(impl.blobs):
                spec = lp.param[pid] if pid < len(lp.param) else caffe_pb2.ParamSpec()
                propagate = spec.lr_mult != 0
                propagate_params.append(propagate)
                need_backward |= propagate
                shared = params_by_name.get(spec.name) if spec.name else None
                if shared is None:
                    leaf = tensor.detach().to(torch.float32).contiguous()
                    blob = ParamBlob(leaf)
                    if spec.name:
                        params_by_name[spec.name] = (li, pid, blob)
                    blob._learnable_id = len(self._learnable)
                    self._learnable.append(blob)
                    self.params_lr.append(spec.lr_mult)
                    self.params_weight_decay.append(spec.decay_mult)
                    has_lr.append(spec.HasField("lr_mult"))
                    has_decay.append(spec.HasField("decay_mult"))
                    step.param_slots.append((pid, blob, None, False))
                else:
                    owner_layer, owner_pid, blob = shared
                    owner_name = net_param.layer[owner_layer].name
                    this_shape, owner_shape = tuple(tensor.shape), blob.shape
                    if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
                        if int(np.prod(this_shape)) != blob.count:
                            raise impl.error(
                                f"shared param '{spec.name}' has {int(np.prod(this_shape))} "
                                f"values here but {blob.count} in its owner, layer "
                                f"'{owner_name}' (param {owner_pid})")
                    elif this_shape != owner_shape:
                        raise impl.error(
                            f"shared param '{spec.name}' has shape {list(this_shape)} here "
                            f"but {list(owner_shape)} in its owner, layer '{owner_name}' "
                            f"(param {owner_pid}); set share_mode PERMISSIVE to share "
                            "blobs of equal count")
                    lid = blob._learnable_id
                    for has, values, field in ((has_lr, self.params_lr, "lr_mult"),
                                               (has_decay, self.params_weight_decay,
                                                "decay_mult")):
                        if spec.HasField(field):
                            value = getattr(spec, field)
                            if has[lid] and values[lid] != value:
                                raise impl.error(f"shared param '{spec.name}' has mismatched "
                                                 f"{field} ({value} here, {values[lid]} in "
                                                 f"layer '{owner_name}')")
                            has[lid] = True
                            values[lid] = value
                    view = this_shape if this_shape != owner_shape else None
                    step.param_slots.append((pid, blob, view, False))
                    step.rebind |= view is not None
                layer_blobs.append(blob)

            adopt = getattr(impl, "adopt_param_blobs", None)
            if adopt is not None:
                adopt(layer_blobs)
            step.first_write = tuple(first_write)
            step.bottom_shapes = [torch.Size(s) for s in bottom_shapes]
            if len(lp.propagate_down) and not all(lp.propagate_down):
                step.detach = tuple(not p for p in lp.propagate_down)
            steps.append(step)
            handles.append(LayerHandle(lp.name, lp.type, impl, layer_blobs))
            bottom_ids.append(b_ids)
            top_ids.append(t_ids)
            bottom_need.append(b_need)
            param_propagate.append(propagate_params)
            layer_need_backward.append(need_backward)
            if need_backward:
                for tid in t_ids:
                    blob_need_backward[tid] = True

        # Which layers contribute to a loss (Caffe walks the net backwards)
        under_loss: set[int] = set()
        skip_backprop: set[int] = set()
        for li in range(len(steps) - 1, -1, -1):
            contributes = any(tid in self._loss_weights or tid in under_loss
                              for tid in top_ids[li])
            skip = all(tid in skip_backprop for tid in top_ids[li])
            if layer_need_backward[li] and skip:
                layer_need_backward[li] = False
                bottom_need[li] = [False] * len(bottom_ids[li])
            if not contributes:
                layer_need_backward[li] = False
            for j, bid in enumerate(bottom_ids[li]):
                if contributes:
                    under_loss.add(bid)
                else:
                    bottom_need[li][j] = False
                if not bottom_need[li][j]:
                    skip_backprop.add(bid)
        self.force_backward = bool(net_param.force_backward)
        if self.force_backward:
            for li, step in enumerate(steps):
                layer_need_backward[li] = True
                for j, bid in enumerate(bottom_ids[li]):
                    allowed = self._allow_force_backward(step.impl, j)
                    bottom_need[li][j] = bottom_need[li][j] or allowed
                    blob_need_backward[bid] = blob_need_backward[bid] or bottom_need[li][j]
                param_propagate[li] = [True] * len(param_propagate[li])

        # a param is tracked by autograd if any layer using it propagates to it;
        # a layer that does not (lr_mult 0) computes with a detached alias
        tracked: dict[int, bool] = {}
        for li, step in enumerate(steps):
            for (pid, blob, _, _), propagate in zip(step.param_slots, param_propagate[li]):
                tracked[id(blob)] = tracked.get(id(blob), False) or (
                    propagate and layer_need_backward[li])
        for blob in self._learnable:
            blob.leaf.requires_grad_(tracked[id(blob)])
        for li, step in enumerate(steps):
            slots = []
            for (pid, blob, view, _), propagate in zip(step.param_slots, param_propagate[li]):
                detach = blob.leaf.requires_grad and not (propagate and layer_need_backward[li])
                slots.append((pid, blob, view, detach))
                step.rebind |= detach
            step.param_slots = slots

        # in-place overwrites: steps whose tops/bottoms a later layer replaces
        last_writer: dict[int, int] = {}
        for li in range(len(steps)):
            for tid in top_ids[li]:
                last_writer[tid] = li
        writer_before: dict[int, int] = {}
        for li, step in enumerate(steps):
            step.tops_final = all(last_writer[tid] == li for tid in top_ids[li])
            step.bottoms_final = all(last_writer[bid] < li for bid in bottom_ids[li])
            # an in-place layer may overwrite its bottom's tensor when nothing
            # else holds it: not a Split top (those alias the split's bottom)
            bottoms, tops = bottom_ids[li], top_ids[li]
            if bottoms and tops and bottoms[0] == tops[0]:
                producer = writer_before.get(bottoms[0])
                step.impl.overwrite_ok = producer is not None and not steps[producer].is_split
            for tid in tops:
                writer_before[tid] = li

        self._steps = steps
        self._written_by_forward = [blob for step in steps if step.impl.writes_blobs
                                    for _, blob, _, _ in step.param_slots]
        self._blobs = blobs
        self._blob_names = blob_names
        self._layer_names = [s.name for s in steps]
        self._handles = handles
        self._layer_need_backward = layer_need_backward
        self._any_backward = any(layer_need_backward)
        self._bottom_id_lists = bottom_ids
        self._top_id_lists = top_ids
        self._blob_need_backward = blob_need_backward
        self.blobs = OrderedDict(zip(blob_names, blobs))
        # pycaffe's net.layers: a Python layer is the user's own layer object
        self._public_layers = [getattr(h.impl, "instance", h) for h in handles]
        self.layer_dict = OrderedDict(zip(self._layer_names, self._public_layers))
        self.params = OrderedDict((h.name, h.blobs) for h in handles if h.blobs)
        self._inputs = [t for s, ts in zip(steps, top_ids) if s.is_input for t in ts]
        self.inputs = [blob_names[t] for t in self._inputs]
        # Caffe lists outputs in name order (a std::set)
        self.outputs = sorted(available)
        self._outputs = [latest[name] for name in self.outputs]
        self._callbacks: dict[str, list] = {"before_forward": [], "after_forward": [],
                                            "before_backward": [], "after_backward": []}
        self._input_blobs = [self.blobs[n] for n in self.inputs]
        self._input_need_grad = [blob_need_backward[latest[n]] for n in self.inputs]
        # backward starts from the unconsumed tops of layers that run backward
        seeds = []
        for li, ts in enumerate(top_ids):
            if layer_need_backward[li]:
                seeds += [t for t in ts if blob_names[t] in available and t not in seeds]
        self._seed_ids = seeds
        self._seed_blobs = [blobs[t] for t in seeds]
        for tid, weight in self._loss_weights.items():
            blobs[tid]._diff = SyncedTensor(torch.full(blobs[tid].shape, weight))
        if self._keep_diffs:
            for blob in blobs:
                blob._want_diff = True
        for blob, count in zip(blobs, writers):
            blob._grad_src = None
            blob._in_place = count > 1
            blob._live = True
        for step in steps:
            self._bind_params(step)

    @staticmethod
    def _allow_force_backward(impl, bottom_index: int) -> bool:
        """Caffe's AllowForceBackward: loss layers never send a diff to their
        labels (bottom 1); a layer may override with `allow_force_backward`."""
        custom = getattr(impl, "allow_force_backward", None)
        if custom is not None:
            return bool(custom(bottom_index))
        return not (impl.is_loss and bottom_index == 1)

    def _bind_params(self, step: _Step) -> None:
        """Point the layer's param tensors at the net's param blobs."""
        for pid, blob, view, detach in step.param_slots:
            tensor = blob.leaf if view is None else blob.leaf.view(view)
            step.impl.blobs[pid] = tensor.detach() if detach else tensor

    # ------------------------------------------------------------ pycaffe surface
    @property
    def layers(self) -> list:
        """pycaffe's layers: a view with `type` and `blobs` per layer; a Python
        layer is the user's layer object itself."""
        return self._public_layers

    def _bottom_ids(self, layer_index: int) -> list[int]:
        """Blob indices of a layer's bottoms (pycaffe's `_bottom_ids(i)`)."""
        return list(self._bottom_id_lists[layer_index])

    def _top_ids(self, layer_index: int) -> list[int]:
        """Blob indices of a layer's tops (pycaffe's `_top_ids(i)`)."""
        return list(self._top_id_lists[layer_index])

    @property
    def _blob_loss_weights(self) -> list[float]:
        """Each blob's loss weight, in blob order (0 for non-loss blobs)."""
        return [self._loss_weights.get(i, 0.0) for i in range(len(self._blobs))]

    @property
    def blob_loss_weights(self) -> OrderedDict:
        """{blob name: loss weight}, in blob order."""
        return OrderedDict(zip(self._blob_names, self._blob_loss_weights))

    @property
    def top_names(self) -> OrderedDict:
        return OrderedDict((s.name, [self._blob_names[t] for t in ts])
                           for s, ts in zip(self._steps, self._top_id_lists))

    @property
    def bottom_names(self) -> OrderedDict:
        return OrderedDict((s.name, [self._blob_names[b] for b in bs])
                           for s, bs in zip(self._steps, self._bottom_id_lists))

    # Caffe's Net callbacks: each gets the layer index (pycaffe's before_forward ...)
    def before_forward(self, callback) -> None:
        """Call `callback(layer_index)` before each layer's forward."""
        self._callbacks["before_forward"].append(callback)

    def after_forward(self, callback) -> None:
        """Call `callback(layer_index)` after each layer's forward."""
        self._callbacks["after_forward"].append(callback)

    def before_backward(self, callback) -> None:
        """Call `callback(layer_index)` for each layer of a backward, from the
        last down, before autograd computes the pass."""
        self._callbacks["before_backward"].append(callback)

    def after_backward(self, callback) -> None:
        """Call `callback(layer_index)` for each layer of a backward, from the
        last down, once autograd has computed the pass."""
        self._callbacks["after_backward"].append(callback)

    def _run_callbacks(self, kind: str, indices) -> None:
        for callback in self._callbacks[kind]:
            for index in indices:
                callback(index)

    @property
    def learnable_params(self) -> list[ParamBlob]:
        """Caffe's learnable_params(): each distinct param blob once, in order,
        matching `params_lr` and `params_weight_decay`."""
        return self._learnable

    def _layer_index(self, name: str, what: str) -> int:
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise CaffeError(f"{what}: no layer named '{name}' in {self._source}") from None

    def forward(self, blobs: Sequence[str] | None = None, start: str | None = None,
                end: str | None = None, **kwargs) -> dict[str, np.ndarray]:
        """Run layers `start`..`end` (names, inclusive); keyword arguments set
        input blobs. Returns {blob name: data} for the outputs (or the `end`
        layer's tops) plus `blobs`, as pycaffe does."""
        blobs = list(blobs or [])
        start_ind = self._layer_index(start, "forward(start=)") if start is not None else 0
        if end is not None:
            end_ind = self._layer_index(end, "forward(end=)")
            outputs = set(self.top_names[end] + blobs)
        else:
            end_ind = len(self._steps) - 1
            outputs = set(self.outputs + blobs)
        if kwargs:
            self._set_arrays("forward", "data", kwargs, self.inputs)
        self._forward(start_ind, end_ind)
        return {out: self.blobs[out].data for out in outputs}

    def _set_arrays(self, call: str, field: str, arrays: dict, expected: list[str]) -> None:
        """pycaffe's keyword arrays of forward() / backward(): every net input
        (output) by name, each with the blob's batch size, copied into the
        blob's data (diff)."""
        if set(arrays) != set(expected):
            raise CaffeError(f"{call}(): arguments {sorted(arrays)} do not match the net "
                             f"{'inputs' if call == 'forward' else 'outputs'} {sorted(expected)}")
        for name, value in arrays.items():
            if value.shape[0] != self.blobs[name].shape[0]:
                raise CaffeError(f"{call}(): '{name}' has batch size {value.shape[0]}, "
                                 f"the blob {self.blobs[name].shape[0]}")
            getattr(self.blobs[name], field)[...] = value

    def backward(self, diffs: Sequence[str] | None = None, start: str | None = None,
                 end: str | None = None, **kwargs) -> dict[str, np.ndarray]:
        """Backward from layer `start` down to `end` (names, inclusive);
        keyword arguments set output diffs. Returns {blob name: diff} for the
        inputs (or the `end` layer's bottoms) plus `diffs`."""
        diffs = list(diffs or [])
        start_ind = (self._layer_index(start, "backward(start=)") if start is not None
                     else len(self._steps) - 1)
        if end is not None:
            end_ind = self._layer_index(end, "backward(end=)")
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        if kwargs:
            self._set_arrays("backward", "diff", kwargs, self.outputs)
        for name in diffs:
            self.blobs[name]._want_diff = True
        self._backward(start_ind, end_ind)
        return {out: self.blobs[out].diff for out in outputs}

    def forward_all(self, blobs: Sequence[str] | None = None, **kwargs) -> dict[str, np.ndarray]:
        """Forward every batch of the given inputs; outputs stacked (pycaffe's
        forward_all, the last batch padded with zeros and the padding dropped)."""
        outs = {name: [] for name in set(self.outputs + list(blobs or []))}
        for batch in self._batches(kwargs):
            for name, value in self.forward(blobs=blobs, **batch).items():
                outs[name].extend(value.copy())
        total = len(next(iter(kwargs.values()))) if kwargs else None
        return {name: np.asarray(values)[:total] for name, values in outs.items()}

    def forward_backward_all(self, blobs: Sequence[str] | None = None,
                             diffs: Sequence[str] | None = None, **kwargs):
        """forward() and backward() over every batch of the given arrays (net
        inputs feed forward, net outputs seed backward); returns
        ({blob: data}, {blob: diff}) stacked with the padding dropped."""
        outs = {name: [] for name in set(self.outputs + list(blobs or []))}
        grads = {name: [] for name in set(self.inputs + list(diffs or []))}
        forward_batches = self._batches({k: v for k, v in kwargs.items() if k in self.inputs})
        backward_batches = self._batches({k: v for k, v in kwargs.items() if k in self.outputs})
        for fb, bb in itertools.zip_longest(forward_batches, backward_batches, fillvalue={}):
            for name, value in self.forward(blobs=blobs, **fb).items():
                outs[name].extend(value.copy())
            for name, value in self.backward(diffs=diffs, **bb).items():
                grads[name].extend(value.copy())
        total = len(next(iter(kwargs.values()))) if kwargs else None
        return ({name: np.asarray(v)[:total] for name, v in outs.items()},
                {name: np.asarray(v)[:total] for name, v in grads.items()})

    def _batches(self, arrays: dict):
        if not arrays:
            yield {}
            return
        num = len(next(iter(arrays.values())))
        batch = next(iter(self.blobs.values())).shape[0]  # pycaffe: the first blob's
        for i in range(0, num, batch):
            chunk = {}
            for name, value in arrays.items():
                part = np.asarray(value[i:i + batch], dtype=np.float32)
                if len(part) < batch:
                    pad = np.zeros((batch - len(part),) + part.shape[1:], np.float32)
                    part = np.concatenate([part, pad])
                chunk[name] = part
            yield chunk

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """Hand arrays to the net's MemoryData layer (pycaffe's: it must be the
        first layer): 4-d float32 C-contiguous data and labels of the same num,
        a multiple of the layer's batch_size. Forwards then read them batch by
        batch, wrapping at the end."""
        from .layer_types.data import MemoryDataLayer

        first = self._steps[0].impl if self._steps else None
        if not isinstance(first, MemoryDataLayer):
            raise CaffeError(f"{self._source}: set_input_arrays may only be called if the "
                             "first layer is a MemoryData layer")
        first.set_input_arrays(data, labels)

    def reshape(self) -> None:
        """Propagate the input blobs' shapes through every layer (Caffe's Net::Reshape)."""
        for step in self._steps:
            shapes = [b.shape for b in step.bottoms]
            top_shapes = step.impl.reshape(shapes)
            step.bottom_shapes = [torch.Size(s) for s in shapes]
            if step.is_input:
                continue  # an input blob keeps the shape its user gave it
            for blob, shape in zip(step.tops, top_shapes):
                blob._set_shape(shape)
        self._refill_loss_diffs()

    def _refill_loss_diffs(self) -> None:
        for tid, weight in self._loss_weights.items():
            blob = self._blobs[tid]
            if blob._diff is None:
                blob._diff = SyncedTensor(torch.full(blob.shape, weight, device=self._device))

    def clear_param_diffs(self) -> None:
        """Zero every learnable param's diff (Caffe's ClearParamDiffs, which
        solvers call before each iteration)."""
        for blob in self._learnable:
            blob._clear_diff()

    def loss(self) -> float:
        """The weighted sum of the loss blobs after the last forward, as
        Caffe's Net::Forward returns it."""
        total = 0.0
        for tid, weight in self._loss_weights.items():
            total += weight * float(self._blobs[tid]._tensor().detach().sum())
        return total

    # ------------------------------------------------------------ running
    def _forward(self, start: int, end: int) -> None:
        device = mode.device()
        if device != self._device:
            self._move_to(device)
        if self._graph_pending:
            self._drop_graph()
        record = self._any_backward and torch.is_grad_enabled()
        with torch.set_grad_enabled(record):
            if self._device.type != "cpu":
                for blob in self._learnable:
                    blob._data.device()
                for blob in self._written_by_forward:
                    blob._data.device_for_write()
            if record:
                # the net's inputs, or for a forward from a later layer the blobs it
                # reads that earlier layers made, are leaves that collect diffs
                if start == 0:
                    leaves = [b for b, need in zip(self._input_blobs, self._input_need_grad)
                              if need]
                else:
                    leaves = [self._blobs[i] for i in self._boundary_bottoms(start, end)
                              if self._blob_need_backward[i]]
                for blob in leaves:
                    leaf = blob._tensor().detach().requires_grad_()
                    blob._set_tensor(leaf)
                    blob._grad_src = leaf
            before, after = self._callbacks["before_forward"], self._callbacks["after_forward"]
            for step in self._steps[start:end + 1]:
                for callback in before:
                    callback(step.index)
                if step.is_input:
                    for callback in after:
                        callback(step.index)
                    continue
                bottoms = [b._tensor() for b in step.bottoms]
                shapes = [t.shape for t in bottoms]
                with _faults_named(step.name, step.impl.type, "forward", self._source):
                    if shapes != step.bottom_shapes:
                        _reshape(step.impl, [tuple(s) for s in shapes])
                        step.bottom_shapes = shapes
                    if step.detach is not None:
                        bottoms = [t.detach() if d else t for t, d in zip(bottoms, step.detach)]
                    if step.rebind:
                        self._bind_params(step)
                    tops = step.impl.forward(bottoms)
                for blob, tensor, first in zip(step.tops, tops, step.first_write):
                    if step.is_split and blob._want_diff and record:
                        tensor = tensor.view_as(tensor)  # its own node, for its own grad
                    if step.tops_final:
                        tensor = blob._set_output(tensor, bottoms)
                    else:
                        blob._set_tensor(tensor)
                    if first:
                        blob._grad_src = tensor if blob._want_diff else None
                for callback in after:
                    callback(step.index)
        self._graph_pending = record

    def _boundary_bottoms(self, start: int, end: int) -> list[int]:
        """Blobs that layers start..end read but none of them wrote before."""
        written, boundary = set(), []
        for li in range(start, end + 1):
            for bid in self._bottom_id_lists[li]:
                if bid not in written and bid not in boundary:
                    boundary.append(bid)
            written.update(self._top_id_lists[li])
        return boundary

    def _drop_graph(self) -> None:
        """Forget an autograd graph no backward used, before building the next."""
        for blob in self._blobs:
            if blob._data is not None and blob._data.tensor.grad_fn is not None:
                blob._data.tensor = blob._data.tensor.detach()
            blob._grad_src = None
        self._graph_pending = False

    def _backward(self, start: int, end: int) -> None:
        if not self._any_backward:
            return  # Caffe: no layer needs backward, nothing happens
        if not self._graph_pending:
            # no recorded pass (no forward yet, or a lean net's graph was used up):
            # record these layers again from the blobs' current data
            self._forward(end, start)
            if not self._graph_pending:
                raise CaffeError(f"{self._source}: backward() inside torch.no_grad() "
                                 "cannot record the layers it needs")
        full = start == len(self._steps) - 1 and end == 0
        if full:
            seed_blobs = self._seed_blobs
        else:
            step = self._steps[start]
            if not step.tops_final:
                raise CaffeError(f"backward(start='{step.name}'): a later layer overwrites "
                                 "this layer's top in place, so its own output is gone")
            seed_blobs = step.tops
        seeds, grads = [], []
        for blob in seed_blobs:
            tensor = blob._data.tensor if blob._data is not None else None
            if tensor is None or not tensor.requires_grad:
                continue
            seeds.append(tensor)
            grads.append(blob._diff_synced().device())  # never set: zeros, as in Caffe
        seed_set = set(map(id, seed_blobs))
        kept = []
        for blob in self._blobs:
            src = blob._grad_src
            if src is None and blob._want_diff and id(blob) not in seed_set \
                    and not blob._in_place \
                    and blob._data is not None and blob._data.tensor.requires_grad:
                # read through backward(diffs=...) just now: its current tensor is
                # its own output unless an in-place layer replaced it
                src = blob._data.tensor
            if src is not None and src.requires_grad and id(blob) not in seed_set:
                if not src.is_leaf:
                    src.retain_grad()
                kept.append((blob, src))
        if self._device.type != "cpu":
            for blob in self._learnable:
                if blob._diff is not None:
                    blob._diff.device_for_write()  # host edits in; backward writes here
        inputs = None
        if not full:
            inputs = self._backward_inputs(start, end, kept)
        for _, src in kept:
            src.grad = None  # blob diffs are written, not summed over backward calls
        # a net built by the user keeps its graph until the next forward, so a
        # second backward() works as in Caffe; a solver's lean net frees it
        retain = self._keep_diffs
        indices = range(start, end - 1, -1)
        self._run_callbacks("before_backward", indices)
        if seeds:
            torch.autograd.backward(seeds, grads, inputs=inputs, retain_graph=retain)
        self._graph_pending = retain
        kept_ids = set()
        for blob, src in kept:
            kept_ids.add(id(blob))
            if src.grad is not None:
                blob._set_diff(src.grad)
            if not retain:
                blob._grad_src = None
        for blob in self._blobs:
            if id(blob) not in kept_ids and id(blob) not in seed_set \
                    and blob._data is not None and blob._data.tensor.requires_grad:
                blob._diff_missing = True
        self._run_callbacks("after_backward", indices)

    def _backward_inputs(self, start: int, end: int, kept) -> list[torch.Tensor]:
        """What a partial backward may write: params of the layers in range,
        the bottoms of `end`, and kept blob diffs."""
        step = self._steps[end]
        if not step.bottoms_final:
            raise CaffeError(f"backward(end='{step.name}'): a layer writes over this "
                             "layer's bottom in place, so the bottom's value is gone")
        inputs = {}
        for s in self._steps[end:start + 1]:
            for _, blob, _, _ in s.param_slots:
                if blob.leaf.requires_grad:
                    inputs[id(blob.leaf)] = blob.leaf
        for blob in step.bottoms:
            t = blob._tensor()
            if t.requires_grad:
                if not t.is_leaf:
                    t.retain_grad()
                inputs[id(t)] = t
                kept.append((blob, t))
        for _, src in kept:
            inputs[id(src)] = src
        return list(inputs.values())

    # ------------------------------------------------------------ devices
    def _move_to(self, device: torch.device) -> None:
        """Move params and blobs to `device` (after a mode change)."""
        channels_last = mode.channels_last()
        for blob in self._learnable:
            leaf = blob.leaf.detach().to(device)
            if channels_last and leaf.dim() == 4:
                leaf = leaf.contiguous(memory_format=torch.channels_last)
            leaf.requires_grad_(blob.leaf.requires_grad)
            blob._set_leaf(leaf)
        for blob in self._blobs:
            blob._to(device)
            blob._grad_src = None
        for step in self._steps:
            self._bind_params(step)
            to_device = getattr(step.impl, "to_device", None)
            if to_device is not None:
                to_device(device)
        self._device = device
        self._graph_pending = False

    # ------------------------------------------------------------ weights
    def copy_from(self, path: str | os.PathLike) -> None:
        """Copy params from a caffemodel (or, for a `.h5` name, HDF5 weights)
        by layer name (Caffe's CopyTrainedLayersFrom); layers the file lacks
        keep their values. A caffemodel is checked whole first, so a refused
        file changes nothing."""
        if os.fspath(path).endswith(".h5"):
            self.load_hdf5(os.fspath(path))
            return
        self.apply_weights(self.weights_from(path))

    def weights_from(self, path: str | os.PathLike) -> list[tuple[ParamBlob, np.ndarray]]:
        """(param blob, array) pairs a caffemodel would copy, all checked
        against this net's shapes; nothing is changed yet."""
        from .caffemodel import blob_for_target, read_caffemodel

        path = os.fspath(path)
        by_name = {}
        for handle in self._handles:
            by_name.setdefault(handle.name, handle)
        updates = []
        for layer in read_caffemodel(path):
            target = by_name.get(layer.name)
            if target is None:
                log.debug("%s: ignoring source layer %s", path, layer.name)
                continue
            if len(layer.blobs) != len(target.blobs):
                raise CaffeError(f"caffemodel {path}, layer '{layer.name}': the file has "
                                 f"{len(layer.blobs)} blobs, the net's layer "
                                 f"{len(target.blobs)} (incompatible number of blobs)")
            for j, blob in enumerate(target.blobs):
                try:
                    updates.append((blob, blob_for_target(layer, j, blob.shape)))
                except CaffeError as exc:
                    raise CaffeError(f"caffemodel {path}: {exc}") from None
        return updates

    @staticmethod
    def apply_weights(updates: list[tuple[ParamBlob, np.ndarray]]) -> None:
        with torch.no_grad():
            for blob, array in updates:
                blob._data.device_for_write().copy_(torch.from_numpy(array))

    def save(self, path: str | os.PathLike) -> None:
        """Write the params as a caffemodel (this net's layers, Splits included, as Caffe saves)."""
        from .caffemodel import write_caffemodel

        blobs_by_layer = {}
        for handle in self._handles:
            if handle.blobs and handle.name not in blobs_by_layer:
                blobs_by_layer[handle.name] = [
                    b._data.device().detach().cpu().numpy().astype(np.float32, copy=False)
                    for b in handle.blobs]
        write_caffemodel(path, self._net_param, blobs_by_layer)

    def save_hdf5(self, path: str | os.PathLike) -> None:
        """Write the params in Caffe's HDF5 layout (Net::ToHDF5)."""
        from .hdf5_weights import write_weights

        owned: set[int] = set()
        layers = []
        for handle in self._handles:
            arrays = []
            for blob in handle.blobs:
                arrays.append(None if id(blob) in owned else
                              blob._data.device().detach().cpu().numpy())
                owned.add(id(blob))
            layers.append((handle.name, arrays))
        write_weights(path, layers)

    def load_hdf5(self, path: str | os.PathLike) -> None:
        """Copy params from HDF5 weights by layer name (Caffe's
        CopyTrainedLayersFromHDF5): shapes must match; a missing dataset is
        allowed only for a param this layer shares from another."""
        from .hdf5_weights import read_weights

        path = os.fspath(path)
        by_name = {}
        for handle in self._handles:
            by_name.setdefault(handle.name, handle)
        owner_of = {}
        for handle in self._handles:
            for blob in handle.blobs:
                owner_of.setdefault(id(blob), handle.name)
        for name, arrays in read_weights(path):
            target = by_name.get(name)
            if target is None:
                log.info("%s: ignoring source layer %s", path, name)
                continue
            if len(arrays) > len(target.blobs) or any(i >= len(target.blobs) for i in arrays):
                raise CaffeError(f"HDF5 weights {path}, layer '{name}': incompatible number "
                                 f"of blobs ({len(arrays)} in the file, {len(target.blobs)} "
                                 "in the net)")
            for j, blob in enumerate(target.blobs):
                if j not in arrays:
                    if owner_of[id(blob)] != name:
                        continue  # shared from another layer: that layer carries it
                    raise CaffeError(f"HDF5 weights {path}, layer '{name}': no blob {j}")
                array = arrays[j]
                if tuple(array.shape) != tuple(blob.shape):
                    raise CaffeError(f"HDF5 weights {path}, layer '{name}', blob {j}: shape "
                                     f"{list(array.shape)} in the file, {list(blob.shape)} "
                                     "in the net")
                with torch.no_grad():
                    blob._data.device_for_write().copy_(torch.from_numpy(array))

    def share_with(self, other: "Net") -> None:
        """Compute with `other`'s param data (Caffe's ShareTrainedLayersWith):
        layers of the same name share data; diffs stay separate."""
        by_name = {}
        for handle in self._handles:
            by_name.setdefault(handle.name, handle)
        for source in other._handles:
            target = by_name.get(source.name)
            if target is None:
                continue
            if len(source.blobs) != len(target.blobs):
                raise CaffeError(f"share_with: layer '{source.name}' has {len(source.blobs)} "
                                 f"blobs in the other net and {len(target.blobs)} here")
            for src, dst in zip(source.blobs, target.blobs):
                if src.shape != dst.shape:
                    raise CaffeError(f"share_with: layer '{source.name}' param shapes differ: "
                                     f"{list(src.shape)} there, {list(dst.shape)} here")
                leaf = src.leaf.detach().requires_grad_(dst.leaf.requires_grad)
                dst._set_leaf(leaf, synced=src._data)
        for step in self._steps:
            self._bind_params(step)
