"""Upgrade old NetParameters (V0 and V1 layer formats) as Caffe does on load.

Mirrors the steps of Caffe's `UpgradeNetAsNeeded` (util/upgrade_proto.cpp),
in its order:
1. V0 (`layers { layer { type: "conv" ... } }`): padding layers are folded
   into the conv/pool that reads them, then each V0 layer becomes a V1 layer;
2. old data-layer transformation fields (scale, mean_file, crop_size, mirror
   on data_param / image_data_param / window_data_param) move to
   transform_param;
3. V1 (`layers`, enum types, blobs_lr, weight_decay) -> `layer` with string
   types and ParamSpecs (lr_mult, decay_mult, name, share_mode);
4. net-level `input` / `input_shape` / `input_dim` -> an "Input" layer first;
5. BatchNorm layers declaring three params get lr_mult = decay_mult = 0.

Where Caffe only logs that a field could not be carried over, a warning is
logged here; where Caffe aborts (unknown V0 type, broken padding layers), a
CaffeError is raised.
"""
from __future__ import annotations

import logging

from google.protobuf.descriptor import FieldDescriptor

from torchcaffe.errors import CaffeError
from torchcaffe.proto import caffe_pb2

log = logging.getLogger(__name__)

_V1 = caffe_pb2.V1LayerParameter

# V1 enum name -> new-style type string (Caffe's UpgradeV1LayerType)
_V1_TYPE_STRINGS = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax",
    "BNLL": "BNLL", "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution", "DATA": "Data",
    "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct", "LRN": "LRN", "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss", "MVN": "MVN",
    "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split",
    "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}
_V1_TYPE_BY_NUMBER = {_V1.LayerType.Value(name): text for name, text in _V1_TYPE_STRINGS.items()}

# V0 type string -> V1 enum name (Caffe's UpgradeV0LayerType)
_V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT", "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

# V0 field -> {V0 type (None: any type): (V1 sub-message, field in it)}
_ANY = None
_V0_FIELD_TARGETS = {
    "num_output": {"conv": ("convolution_param", "num_output"),
                   "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"),
                 "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"),
                      "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"),
                    "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"),
                   "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},  # MAX/AVE/STOCHASTIC share numbers
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"),
               "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {_ANY: ("transform_param", "scale")},
    "meanfile": {_ANY: ("transform_param", "mean_file")},
    "batchsize": {"data": ("data_param", "batch_size"),
                  "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"),
                  "window_data": ("window_data_param", "batch_size")},
    "cropsize": {_ANY: ("transform_param", "crop_size")},
    "mirror": {_ANY: ("transform_param", "mirror")},
    "rand_skip": {"data": ("data_param", "rand_skip"),
                  "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},  # whole message
}

# data layers whose own transformation fields moved to transform_param
_DATA_TRANSFORM_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                          "WINDOW_DATA": "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def v1_type_name(enum_value: int) -> str:
    """New-style type string of a V1 LayerType enum value (Caffe's UpgradeV1LayerType)."""
    try:
        return _V1_TYPE_BY_NUMBER[enum_value]
    except KeyError:
        raise CaffeError(f"unknown V1 layer type enum value {enum_value}") from None


def v0_type_to_v1(v0_type: str) -> int:
    """V1 LayerType enum value of a V0 type string such as "conv"."""
    try:
        return _V1.LayerType.Value(_V0_TYPES[v0_type])
    except KeyError:
        raise CaffeError(f"unknown V0 layer type '{v0_type}'") from None


def _is_repeated(field: FieldDescriptor) -> bool:
    rep = getattr(field, "is_repeated", None)
    if rep is not None:
        return rep() if callable(rep) else bool(rep)
    return field.label == FieldDescriptor.LABEL_REPEATED


def _assign(message, field_name: str, value) -> None:
    """Set a scalar/message field, or append to it where the schema has it repeated."""
    field = message.DESCRIPTOR.fields_by_name[field_name]
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if _is_repeated(field):
            getattr(message, field_name).add().CopyFrom(value)
        else:
            getattr(message, field_name).CopyFrom(value)
    elif _is_repeated(field):
        getattr(message, field_name).append(value)
    else:
        setattr(message, field_name, value)


# --------------------------------------------------------------------------- V0 -> V1

def _fold_v0_padding_layers(net):
    """Drop V0 "padding" layers, moving their pad onto the conv/pool reading them."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    out.ClearField("layers")
    last_top: dict[str, int] = {name: -1 for name in net.input}
    for i, connection in enumerate(net.layers):
        v0 = connection.layer
        if v0.type != "padding":
            out.layers.add().CopyFrom(connection)
        for j, bottom in enumerate(connection.bottom):
            if bottom not in last_top:
                raise CaffeError(f"V0 net: unknown blob input '{bottom}' to layer "
                                 f"'{v0.name}'")
            source_index = last_top[bottom]
            if source_index < 0:
                continue
            source = net.layers[source_index]
            if source.layer.type != "padding":
                continue
            if v0.type not in ("conv", "pool"):
                raise CaffeError(f"V0 net: padding layer '{source.layer.name}' feeds layer "
                                 f"'{v0.name}' of type '{v0.type}' (only conv or pool can "
                                 "take padding)")
            if len(connection.bottom) != 1 or len(source.bottom) != 1 or len(source.top) != 1:
                raise CaffeError(f"V0 net: padding layer '{source.layer.name}' and its "
                                 f"consumer '{v0.name}' must each have one input and output")
            target = out.layers[len(out.layers) - 1]
            target.layer.pad = source.layer.pad
            target.bottom[j] = source.bottom[0]
        for top in connection.top:
            last_top[top] = i
    return out


def _upgrade_v0_layer(connection, layer) -> bool:
    """Fill V1 `layer` from a V0 wrapper; False where a field could not be carried."""
    compatible = True
    layer.bottom.extend(connection.bottom)
    layer.top.extend(connection.top)
    if not connection.HasField("layer"):
        return compatible
    v0 = connection.layer
    if v0.HasField("name"):
        layer.name = v0.name
    if v0.HasField("type"):
        layer.type = v0_type_to_v1(v0.type)
    layer.blobs.extend(v0.blobs)
    layer.blobs_lr.extend(v0.blobs_lr)
    layer.weight_decay.extend(v0.weight_decay)
    for v0_field, targets in _V0_FIELD_TARGETS.items():
        if not v0.HasField(v0_field):
            continue
        target = targets.get(v0.type) or targets.get(_ANY)
        if target is None:
            log.warning("V0 layer '%s': parameter %s does not apply to type '%s'; dropped",
                        v0.name, v0_field, v0.type)
            compatible = False
            continue
        sub_name, field_name = target
        value = getattr(v0, v0_field)
        if field_name is None:
            getattr(layer, sub_name).CopyFrom(value)
        else:
            _assign(getattr(layer, sub_name), field_name, value)
    return compatible


def _upgrade_v0_net(net):
    padded = _fold_v0_padding_layers(net)
    out = caffe_pb2.NetParameter()
    compatible = True
    if padded.HasField("name"):
        out.name = padded.name
    for connection in padded.layers:
        compatible &= _upgrade_v0_layer(connection, out.layers.add())
    out.input.extend(padded.input)
    out.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        out.force_backward = padded.force_backward
    return out, compatible


# --------------------------------------------------------------------------- data transform

def _move_data_transform_fields(net) -> None:
    for layer in net.layers:
        type_name = _V1.LayerType.Name(layer.type) if layer.HasField("type") else ""
        param_name = _DATA_TRANSFORM_PARAMS.get(type_name)
        if param_name is None or not layer.HasField(param_name):
            continue
        param = getattr(layer, param_name)
        for field_name in _TRANSFORM_FIELDS:
            if param.HasField(field_name):
                setattr(layer.transform_param, field_name, getattr(param, field_name))
                param.ClearField(field_name)


# --------------------------------------------------------------------------- V1 -> current

_V1_PARAM_MESSAGES = [f.name for f in _V1.DESCRIPTOR.fields
                      if f.name.endswith("_param") and f.type == FieldDescriptor.TYPE_MESSAGE]


def upgrade_v1_layer(v1, layer) -> bool:
    """Fill LayerParameter `layer` from V1LayerParameter `v1` (Caffe's UpgradeV1LayerParameter)."""
    compatible = True
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        layer.type = v1_type_name(v1.type)
    layer.blobs.extend(v1.blobs)

    def spec(i: int):
        while len(layer.param) <= i:
            layer.param.add()
        return layer.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):  # STRICT/PERMISSIVE share numbers
        spec(i).share_mode = mode
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    layer.loss_weight.extend(v1.loss_weight)
    for param_name in _V1_PARAM_MESSAGES:
        if v1.HasField(param_name):
            getattr(layer, param_name).CopyFrom(getattr(v1, param_name))
    if v1.HasField("layer"):
        log.warning("V1 layer '%s' also holds a V0 layer; ignored", v1.name)
        compatible = False
    return compatible


def _upgrade_v1_net(net):
    compatible = True
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    out.ClearField("layers")
    out.ClearField("layer")
    for i, v1 in enumerate(net.layers):
        if not upgrade_v1_layer(v1, out.layer.add()):
            log.warning("upgrade of legacy layer %d ('%s') was incomplete", i, v1.name)
            compatible = False
    return out, compatible


# --------------------------------------------------------------------------- input, BatchNorm

def _upgrade_net_input(net, source: str) -> None:
    inputs = len(net.input)
    if net.input_shape and len(net.input_shape) != inputs:
        raise CaffeError(f"{source}: {inputs} input(s) but {len(net.input_shape)} input_shape(s); "
                         "give one input_shape per input")
    if not net.input_shape and net.input_dim and len(net.input_dim) != 4 * inputs:
        raise CaffeError(f"{source}: {inputs} input(s) need {4 * inputs} input_dim values, "
                         f"{len(net.input_dim)} given")
    if net.input_shape or net.input_dim:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, blob_name in enumerate(net.input):
            layer.top.append(blob_name)
            shape = layer.input_param.shape.add()
            if net.input_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        layers = [layer] + list(net.layer)
        net.ClearField("layer")
        net.layer.extend(layers)
    # a caffemodel lists inputs without shapes: dropping them is enough
    for name in ("input", "input_shape", "input_dim"):
        net.ClearField(name)


def _upgrade_batch_norm(net) -> None:
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


# --------------------------------------------------------------------------- entry points

#: Caffe's UpgradeV1Net refuses (fatally) a net with both layer lists
MIXED_FORMATS = ("{source}: has both 'layer' and legacy 'layers' fields; Caffe refuses to "
                 "upgrade such a net: switch every definition to the 'layer' format")


def net_needs_upgrade(net) -> bool:
    return (len(net.layers) > 0 or len(net.input) > 0
            or any(l.type == "BatchNorm" and len(l.param) == 3 for l in net.layer))


def upgrade_net_param(net, source: str = "net") -> caffe_pb2.NetParameter:
    """A current-format copy of NetParameter `net` (the input is left unchanged).

    `source` names the file in log messages. Nets that need no upgrade come
    back as an unchanged copy.
    """
    if len(net.layers) and len(net.layer):
        raise CaffeError(MIXED_FORMATS.format(source=source))
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    if any(l.HasField("layer") for l in out.layers):
        log.info("%s: upgrading V0 layer definitions", source)
        out, compatible = _upgrade_v0_net(out)
        if not compatible:
            log.warning("%s: some V0 parameters could not be carried over", source)
    _move_data_transform_fields(out)
    if len(out.layers):
        log.info("%s: upgrading V1 layer definitions", source)
        out, compatible = _upgrade_v1_net(out)
        if not compatible:
            log.warning("%s: some V1 parameters could not be carried over", source)
    if len(out.input):
        _upgrade_net_input(out, source)
    _upgrade_batch_norm(out)
    return out
