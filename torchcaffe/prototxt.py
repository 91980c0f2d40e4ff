"""Net prototxt files in, `NetParameter` out: parsing with errors that name the
file and line, Caffe's upgrade of old formats, and Caffe's NetState filtering
of layers by phase, stage and level (`include` / `exclude` rules)."""
from __future__ import annotations

import os
from typing import Iterable

from google.protobuf import text_format

from .errors import CaffeError, LayerError
from .regular_file import read_regular_bytes
from .proto import caffe_pb2
from .upgrade import net_needs_upgrade, upgrade_net_param


def parse_net_text(text: str, source: str = "<string>") -> caffe_pb2.NetParameter:
    """Parse prototxt text; a syntax error names `source`, line and column."""
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        message = str(exc)
        # protobuf prefixes "line:column : "; we put the file in front instead
        prefix = f"{line}:{column} : "
        if message.startswith(prefix):
            message = message[len(prefix):]
        raise CaffeError(f"{source}:{line}:{column}: {message}") from None
    if net_needs_upgrade(net):
        net = upgrade_net_param(net, source)
    return net


def read_net_prototxt(path: str | os.PathLike) -> caffe_pb2.NetParameter:
    """Read a net prototxt file, upgraded to the current format."""
    path = os.fspath(path)
    try:
        text = read_regular_bytes(path).decode("utf-8")
    except OSError as exc:
        raise CaffeError(f"cannot read net prototxt {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CaffeError(f"net prototxt {path} is not UTF-8 text ({exc.reason}); "
                         "is it a binary caffemodel?") from None
    return parse_net_text(text, path)


def net_state(phase: int, level: int = 0, stages: Iterable[str] = (),
              base: caffe_pb2.NetState | None = None) -> caffe_pb2.NetState:
    """pycaffe's state for `Net(file, phase, level, stages)`: the file's own
    stages plus `stages`, with `phase` and `level` set."""
    state = caffe_pb2.NetState()
    if base is not None:
        state.CopyFrom(base)
    state.phase = phase
    state.level = level
    state.stage.extend(stages)
    return state


def state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    """Caffe's StateMeetsRule: phase equal (if set), level within the bounds
    (if set), every `stage` present and no `not_stage` present."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(stage not in stages for stage in rule.stage):
        return False
    return not any(stage in stages for stage in rule.not_stage)


def layer_included(layer: caffe_pb2.LayerParameter, state: caffe_pb2.NetState) -> bool:
    if len(layer.include) and len(layer.exclude):
        raise LayerError(layer.name, layer.type,
                         "specify either include rules or exclude rules, not both")
    if len(layer.include):
        return any(state_meets_rule(state, rule) for rule in layer.include)
    return not any(state_meets_rule(state, rule) for rule in layer.exclude)


def filter_net(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of `net` with only the layers its `state` includes (Caffe's FilterNet)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    for layer in net.layer:
        if layer_included(layer, net.state):
            out.layer.add().CopyFrom(layer)
    return out
