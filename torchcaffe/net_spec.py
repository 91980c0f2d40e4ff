"""NetSpec: write Caffe nets as Python expressions, emit NetParameter protos.

The public API is pycaffe's ``caffe.net_spec``:

    n = NetSpec()
    n.data, n.label = layers.Python(module="voc_layers", layer="VOCSegDataLayer",
                                    ntop=2, param_str="{...}")
    n.conv = layers.Convolution(n.data, num_output=64, kernel_size=3,
                                param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.relu = layers.ReLU(n.conv, in_place=True)
    n.pool = layers.Pooling(n.relu, pool=params.Pooling.MAX, kernel_size=2)
    print(n.to_proto())

``layers.<Type>(*bottoms, **kwargs)`` records a layer of that type. Keyword
arguments fill the layer's ``<type>_param`` message when it has such a field,
otherwise the LayerParameter itself (``loss_weight``, ``include``, ``name``,
any ``*_param``). Dicts become messages, lists become repeated fields (a
single value given to a repeated field becomes a one-element list), enums may
be given as numbers (``params.Pooling.MAX``) or names. ``ntop`` sets the number
of tops and ``in_place=True`` makes the tops the bottoms. Layers and tops are
named by the NetSpec attribute they are assigned to; unassigned ones get
``<Type><k>`` names. This module needs protobuf only, not torch.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from .errors import CaffeError, LayerError
from .proto import caffe_pb2

__all__ = ["NetSpec", "Top", "Function", "layers", "params", "to_proto", "param_name_dict"]

# Layer types whose kwargs live in another type's parameter message.
_SHARED_PARAM_TYPES = {"Deconvolution": "Convolution", "Im2col": "Convolution"}


def _layer_param_fields() -> dict[str, str]:
    """Map each layer type ("Convolution") to its LayerParameter field
    ("convolution_param"), read from the schema: the field's message type is
    the layer type followed by "Parameter"."""
    fields = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        message = field.message_type
        if field.name.endswith("_param") and message is not None:
            if message.name.endswith("Parameter"):
                fields[message.name[: -len("Parameter")]] = field.name
    for alias, owner in _SHARED_PARAM_TYPES.items():
        fields[alias] = fields[owner]
    return fields


_PARAM_FIELD_OF_TYPE = _layer_param_fields()


def param_name_dict() -> dict[str, str]:
    """pycaffe's map from a parameter message's name to its field's, both
    without suffix: {"Convolution": "convolution", "Pooling": "pooling", ...}."""
    return {message.name[: -len("Parameter")]: field.name[: -len("_param")]
            for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields
            if field.name.endswith("_param") and (message := field.message_type) is not None
            and message.name.endswith("Parameter")}


class NotATopError(CaffeError, TypeError):
    """A layer input that is not a Top (pycaffe raises TypeError)."""


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf >= 5 prefers is_repeated; older releases only have label
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


def _enum_value(field: FieldDescriptor, value: Any, where: str) -> Any:
    """Accept an enum by name as well as by number."""
    if field.enum_type is None or not isinstance(value, str):
        return value
    try:
        return field.enum_type.values_by_name[value].number
    except KeyError:
        names = sorted(field.enum_type.values_by_name)
        raise CaffeError(f"{where}: {value!r} is not one of {names}") from None


def assign_proto(message, name: str, value: Any, where: str = "") -> None:
    """Set field `name` of `message` from a Python value: dicts fill
    sub-messages, lists (or tuples) fill repeated fields, anything else is
    set directly. `where` is the field path used in error messages."""
    where = f"{where}.{name}" if where else name
    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise CaffeError(f"{where}: {message.DESCRIPTOR.name} has no field {name!r}")
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if _is_repeated(field):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        container = getattr(message, name)
        for i, item in enumerate(items):
            if is_message:
                _fill_message(container.add(), item, f"{where}[{i}]")
            else:
                _append_scalar(container, field, item, f"{where}[{i}]")
    elif is_message:
        _fill_message(getattr(message, name), value, where)
    else:
        try:
            setattr(message, name, _enum_value(field, value, where))
        except (TypeError, ValueError) as exc:
            raise CaffeError(f"{where}: cannot set {value!r} ({exc})") from None


def _fill_message(message, value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise CaffeError(
            f"{where}: expects a dict for {message.DESCRIPTOR.name}, got {value!r}"
        )
    for key, item in value.items():
        assign_proto(message, key, item, where)


def _append_scalar(container, field: FieldDescriptor, value: Any, where: str) -> None:
    try:
        container.append(_enum_value(field, value, where))
    except (TypeError, ValueError) as exc:
        raise CaffeError(f"{where}: cannot add {value!r} ({exc})") from None


class Top:
    """One output blob of a layer: the `n`-th top of Function `fn`."""

    def __init__(self, fn: "Function", n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> caffe_pb2.NetParameter:
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers: dict, names: dict, autonames: Counter) -> None:
        self.fn._to_proto(layers, names, autonames)

    def __repr__(self) -> str:
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """One layer: its type, its bottoms (Tops) and its keyword parameters."""

    def __init__(self, type_name: str, inputs: tuple, params: dict):
        self.type_name = type_name
        for i, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                # pycaffe's exact words, which scripts and tests match
                raise NotATopError(f"{type_name} input {i} is not a Top (type is {type(bottom)})")
        self.inputs = tuple(inputs)
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))
        self.netspec_name: str | None = None  # for error messages (coord_map)

    def _top_name(self, top: Top, names: dict, autonames: Counter) -> str:
        if top not in names:
            autonames[self.type_name] += 1
            names[top] = f"{self.type_name}{autonames[self.type_name]}"
        return names[top]

    def _layer_name(self, names: dict, autonames: Counter) -> str:
        # a layer is named after its first top; a layer without tops by type
        if self not in names:
            if self.tops:
                names[self] = self._top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    def _to_proto(self, layers: dict, names: dict, autonames: Counter) -> None:
        if self in layers:
            return
        bottoms = []
        for bottom in self.inputs:
            bottom._to_proto(layers, names, autonames)
            bottoms.append(layers[bottom.fn].top[bottom.n])
        layer = caffe_pb2.LayerParameter(type=self.type_name, bottom=bottoms)
        if self.in_place:
            layer.top.extend(bottoms)
        else:
            layer.top.extend(self._top_name(t, names, autonames) for t in self.tops)
        layer.name = self._layer_name(names, autonames)
        # params come last so that an explicit name=... overrides the default
        type_field = _PARAM_FIELD_OF_TYPE.get(self.type_name)
        type_fields = (
            getattr(layer, type_field).DESCRIPTOR.fields_by_name if type_field else {}
        )
        for key, value in self.params.items():
            try:
                if not key.endswith("param") and key in type_fields:
                    assign_proto(getattr(layer, type_field), key, value, type_field)
                else:
                    assign_proto(layer, key, value)
            except CaffeError as exc:
                raise LayerError(layer.name, self.type_name, str(exc)) from None
        layers[self] = layer


class NetSpec:
    """Tops assigned as attributes (or items); `to_proto()` emits every layer
    they need, naming each assigned top and its layer by the attribute."""

    def __init__(self):
        super().__setattr__("tops", {})

    def __setattr__(self, name: str, value: Top | Function) -> None:
        # a Function stands for a layer without tops (ntop=0), named `name`
        if not isinstance(value, (Top, Function)):
            raise CaffeError(f"NetSpec.{name}: expects a Top (or a layer with ntop=0), "
                             f"got {value!r}")
        fn = value if isinstance(value, Function) else value.fn
        if fn.netspec_name is None:
            fn.netspec_name = name
        self.tops[name] = value

    def __getattr__(self, name: str) -> Top:
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named {name!r}") from None

    def __setitem__(self, name: str, value: Top) -> None:
        self.__setattr__(name, value)

    def __getitem__(self, name: str) -> Top:
        return self.tops[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tops

    def keys(self) -> list[str]:
        return list(self.tops)

    def to_proto(self) -> caffe_pb2.NetParameter:
        names = {top: name for name, top in self.tops.items()}
        return _emit(self.tops.values(), names)


def _emit(tops, names: dict) -> caffe_pb2.NetParameter:
    layers: dict[Function, caffe_pb2.LayerParameter] = {}
    autonames: Counter = Counter()
    for top in tops:
        top._to_proto(layers, names, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


def to_proto(*tops: Top) -> caffe_pb2.NetParameter:
    """A NetParameter with every layer needed to compute `tops` (auto-named)."""
    return _emit(tops, {})


class Layers:
    """`layers.Convolution(bottom, ...)`: a Top (or a tuple of Tops when
    ntop > 1, or the Function itself when ntop == 0) for a layer of that type."""

    def __getattr__(self, type_name: str):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer_fn(*bottoms: Top, **kwargs):
            fn = Function(type_name, bottoms, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops

        layer_fn.__name__ = type_name
        return layer_fn


class _EnumNamespace:
    """The enum constants of one <Name>Parameter message (`params.Pooling.MAX`)."""

    def __init__(self, message_name: str):
        self._message = getattr(caffe_pb2, message_name)
        self._message_name = message_name

    def __getattr__(self, constant: str):
        try:
            return getattr(self._message, constant)
        except AttributeError:
            raise AttributeError(f"{self._message_name} has no constant {constant!r}") from None


class Parameters:
    """`params.Pooling.MAX`, `params.Eltwise.SUM`: enum values from the schema."""

    def __getattr__(self, name: str) -> _EnumNamespace:
        if name.startswith("__"):
            raise AttributeError(name)
        message_name = f"{name}Parameter"
        if not hasattr(caffe_pb2, message_name):
            raise AttributeError(f"the Caffe schema has no message {message_name}")
        return _EnumNamespace(message_name)


layers = Layers()
params = Parameters()
