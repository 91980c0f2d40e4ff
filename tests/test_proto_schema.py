"""The schema must match BVLC Caffe's caffe.proto, or real files will not read.

Every number below was typed from BVLC Caffe master's src/caffe/proto/caffe.proto;
none is derived from the generated module.
"""
import pytest
from google.protobuf import descriptor, text_format

from torchcaffe.proto import caffe_pb2

FD = descriptor.FieldDescriptor


def field(message, name):
    return message.DESCRIPTOR.fields_by_name[name]


def number(message, name):
    return field(message, name).number


def is_repeated(f):
    # `label` is deprecated in newer runtimes; `is_repeated` is not in older ones.
    rep = getattr(f, "is_repeated", None)
    if rep is not None:
        return rep() if callable(rep) else rep
    return f.label == FD.LABEL_REPEATED


def is_required(f):
    req = getattr(f, "is_required", None)
    if req is not None:
        return req() if callable(req) else req
    return f.label == FD.LABEL_REQUIRED


def is_packed(f):
    return f.GetOptions().packed if f.GetOptions().HasField("packed") else False


@pytest.mark.parametrize("message, name, num", [
    (caffe_pb2.NetParameter, "name", 1),
    (caffe_pb2.NetParameter, "layers", 2),
    (caffe_pb2.NetParameter, "input", 3),
    (caffe_pb2.NetParameter, "input_dim", 4),
    (caffe_pb2.NetParameter, "force_backward", 5),
    (caffe_pb2.NetParameter, "state", 6),
    (caffe_pb2.NetParameter, "debug_info", 7),
    (caffe_pb2.NetParameter, "input_shape", 8),
    (caffe_pb2.NetParameter, "layer", 100),
    (caffe_pb2.BlobShape, "dim", 1),
    (caffe_pb2.BlobProto, "num", 1),
    (caffe_pb2.BlobProto, "channels", 2),
    (caffe_pb2.BlobProto, "height", 3),
    (caffe_pb2.BlobProto, "width", 4),
    (caffe_pb2.BlobProto, "data", 5),
    (caffe_pb2.BlobProto, "diff", 6),
    (caffe_pb2.BlobProto, "shape", 7),
    (caffe_pb2.BlobProto, "double_data", 8),
    (caffe_pb2.BlobProto, "double_diff", 9),
    (caffe_pb2.BlobProtoVector, "blobs", 1),
    (caffe_pb2.Datum, "data", 4),
    (caffe_pb2.Datum, "float_data", 6),
    (caffe_pb2.Datum, "encoded", 7),
    (caffe_pb2.LayerParameter, "name", 1),
    (caffe_pb2.LayerParameter, "type", 2),
    (caffe_pb2.LayerParameter, "bottom", 3),
    (caffe_pb2.LayerParameter, "top", 4),
    (caffe_pb2.LayerParameter, "loss_weight", 5),
    (caffe_pb2.LayerParameter, "param", 6),
    (caffe_pb2.LayerParameter, "blobs", 7),
    (caffe_pb2.LayerParameter, "include", 8),
    (caffe_pb2.LayerParameter, "exclude", 9),
    (caffe_pb2.LayerParameter, "phase", 10),
    (caffe_pb2.LayerParameter, "propagate_down", 11),
    (caffe_pb2.LayerParameter, "transform_param", 100),
    (caffe_pb2.LayerParameter, "loss_param", 101),
    (caffe_pb2.LayerParameter, "accuracy_param", 102),
    (caffe_pb2.LayerParameter, "concat_param", 104),
    (caffe_pb2.LayerParameter, "convolution_param", 106),
    (caffe_pb2.LayerParameter, "data_param", 107),
    (caffe_pb2.LayerParameter, "dropout_param", 108),
    (caffe_pb2.LayerParameter, "eltwise_param", 110),
    (caffe_pb2.LayerParameter, "inner_product_param", 117),
    (caffe_pb2.LayerParameter, "lrn_param", 118),
    (caffe_pb2.LayerParameter, "pooling_param", 121),
    (caffe_pb2.LayerParameter, "relu_param", 123),
    (caffe_pb2.LayerParameter, "softmax_param", 125),
    (caffe_pb2.LayerParameter, "python_param", 130),
    (caffe_pb2.LayerParameter, "batch_norm_param", 139),
    (caffe_pb2.LayerParameter, "scale_param", 142),
    (caffe_pb2.LayerParameter, "input_param", 143),
    (caffe_pb2.LayerParameter, "crop_param", 144),
    (caffe_pb2.LayerParameter, "parameter_param", 145),
    (caffe_pb2.LayerParameter, "recurrent_param", 146),
    (caffe_pb2.LayerParameter, "swish_param", 147),
    (caffe_pb2.LayerParameter, "clip_param", 148),
    (caffe_pb2.ParamSpec, "name", 1),
    (caffe_pb2.ParamSpec, "share_mode", 2),
    (caffe_pb2.ParamSpec, "lr_mult", 3),
    (caffe_pb2.ParamSpec, "decay_mult", 4),
    (caffe_pb2.NetStateRule, "phase", 1),
    (caffe_pb2.NetStateRule, "stage", 4),
    (caffe_pb2.NetStateRule, "not_stage", 5),
    (caffe_pb2.ConvolutionParameter, "num_output", 1),
    (caffe_pb2.ConvolutionParameter, "bias_term", 2),
    (caffe_pb2.ConvolutionParameter, "pad", 3),
    (caffe_pb2.ConvolutionParameter, "kernel_size", 4),
    (caffe_pb2.ConvolutionParameter, "group", 5),
    (caffe_pb2.ConvolutionParameter, "stride", 6),
    (caffe_pb2.ConvolutionParameter, "weight_filler", 7),
    (caffe_pb2.ConvolutionParameter, "bias_filler", 8),
    (caffe_pb2.ConvolutionParameter, "engine", 15),
    (caffe_pb2.ConvolutionParameter, "dilation", 18),
    (caffe_pb2.CropParameter, "axis", 1),
    (caffe_pb2.CropParameter, "offset", 2),
    (caffe_pb2.PoolingParameter, "pool", 1),
    (caffe_pb2.PoolingParameter, "kernel_size", 2),
    (caffe_pb2.PoolingParameter, "stride", 3),
    (caffe_pb2.PoolingParameter, "pad", 4),
    (caffe_pb2.PoolingParameter, "global_pooling", 12),
    (caffe_pb2.PoolingParameter, "round_mode", 13),
    (caffe_pb2.LossParameter, "ignore_label", 1),
    (caffe_pb2.LossParameter, "normalize", 2),
    (caffe_pb2.LossParameter, "normalization", 3),
    (caffe_pb2.PythonParameter, "module", 1),
    (caffe_pb2.PythonParameter, "layer", 2),
    (caffe_pb2.PythonParameter, "param_str", 3),
    (caffe_pb2.PythonParameter, "share_in_parallel", 4),
    (caffe_pb2.EltwiseParameter, "operation", 1),
    (caffe_pb2.EltwiseParameter, "coeff", 2),
    (caffe_pb2.InputParameter, "shape", 1),
    (caffe_pb2.FillerParameter, "type", 1),
    (caffe_pb2.FillerParameter, "value", 2),
    (caffe_pb2.FillerParameter, "std", 6),
    (caffe_pb2.FillerParameter, "variance_norm", 8),
    (caffe_pb2.SolverParameter, "train_net", 1),
    (caffe_pb2.SolverParameter, "test_net", 2),
    (caffe_pb2.SolverParameter, "test_iter", 3),
    (caffe_pb2.SolverParameter, "test_interval", 4),
    (caffe_pb2.SolverParameter, "base_lr", 5),
    (caffe_pb2.SolverParameter, "display", 6),
    (caffe_pb2.SolverParameter, "max_iter", 7),
    (caffe_pb2.SolverParameter, "lr_policy", 8),
    (caffe_pb2.SolverParameter, "gamma", 9),
    (caffe_pb2.SolverParameter, "power", 10),
    (caffe_pb2.SolverParameter, "momentum", 11),
    (caffe_pb2.SolverParameter, "weight_decay", 12),
    (caffe_pb2.SolverParameter, "stepsize", 13),
    (caffe_pb2.SolverParameter, "snapshot", 14),
    (caffe_pb2.SolverParameter, "snapshot_prefix", 15),
    (caffe_pb2.SolverParameter, "snapshot_diff", 16),
    (caffe_pb2.SolverParameter, "solver_mode", 17),
    (caffe_pb2.SolverParameter, "device_id", 18),
    (caffe_pb2.SolverParameter, "test_compute_loss", 19),
    (caffe_pb2.SolverParameter, "random_seed", 20),
    (caffe_pb2.SolverParameter, "train_net_param", 21),
    (caffe_pb2.SolverParameter, "test_net_param", 22),
    (caffe_pb2.SolverParameter, "debug_info", 23),
    (caffe_pb2.SolverParameter, "net", 24),
    (caffe_pb2.SolverParameter, "net_param", 25),
    (caffe_pb2.SolverParameter, "train_state", 26),
    (caffe_pb2.SolverParameter, "test_state", 27),
    (caffe_pb2.SolverParameter, "snapshot_after_train", 28),
    (caffe_pb2.SolverParameter, "regularization_type", 29),
    (caffe_pb2.SolverParameter, "solver_type", 30),
    (caffe_pb2.SolverParameter, "delta", 31),
    (caffe_pb2.SolverParameter, "test_initialization", 32),
    (caffe_pb2.SolverParameter, "average_loss", 33),
    (caffe_pb2.SolverParameter, "stepvalue", 34),
    (caffe_pb2.SolverParameter, "clip_gradients", 35),
    (caffe_pb2.SolverParameter, "iter_size", 36),
    (caffe_pb2.SolverParameter, "snapshot_format", 37),
    (caffe_pb2.SolverParameter, "rms_decay", 38),
    (caffe_pb2.SolverParameter, "momentum2", 39),
    (caffe_pb2.SolverParameter, "type", 40),
    (caffe_pb2.SolverParameter, "layer_wise_reduce", 41),
    (caffe_pb2.SolverParameter, "weights", 42),
    (caffe_pb2.SolverState, "iter", 1),
    (caffe_pb2.SolverState, "learned_net", 2),
    (caffe_pb2.SolverState, "history", 3),
    (caffe_pb2.SolverState, "current_step", 4),
    (caffe_pb2.V1LayerParameter, "layer", 1),
    (caffe_pb2.V1LayerParameter, "bottom", 2),
    (caffe_pb2.V1LayerParameter, "top", 3),
    (caffe_pb2.V1LayerParameter, "name", 4),
    (caffe_pb2.V1LayerParameter, "type", 5),
    (caffe_pb2.V1LayerParameter, "blobs", 6),
    (caffe_pb2.V1LayerParameter, "blobs_lr", 7),
    (caffe_pb2.V1LayerParameter, "weight_decay", 8),
    (caffe_pb2.V1LayerParameter, "concat_param", 9),
    (caffe_pb2.V1LayerParameter, "convolution_param", 10),
    (caffe_pb2.V1LayerParameter, "inner_product_param", 17),
    (caffe_pb2.V1LayerParameter, "pooling_param", 19),
    (caffe_pb2.V1LayerParameter, "include", 32),
    (caffe_pb2.V1LayerParameter, "exclude", 33),
    (caffe_pb2.V1LayerParameter, "loss_weight", 35),
    (caffe_pb2.V1LayerParameter, "transform_param", 36),
    (caffe_pb2.V1LayerParameter, "loss_param", 42),
    (caffe_pb2.V1LayerParameter, "param", 1001),
    (caffe_pb2.V1LayerParameter, "blob_share_mode", 1002),
    (caffe_pb2.V0LayerParameter, "name", 1),
    (caffe_pb2.V0LayerParameter, "type", 2),
    (caffe_pb2.V0LayerParameter, "num_output", 3),
    (caffe_pb2.V0LayerParameter, "kernelsize", 8),
    (caffe_pb2.V0LayerParameter, "blobs", 50),
    (caffe_pb2.V0LayerParameter, "blobs_lr", 51),
    (caffe_pb2.V0LayerParameter, "weight_decay", 52),
    (caffe_pb2.V0LayerParameter, "det_context_pad", 58),
    (caffe_pb2.V0LayerParameter, "concat_dim", 65),
    (caffe_pb2.V0LayerParameter, "hdf5_output_param", 1001),
])
def test_field_numbers(message, name, num):
    assert number(message, name) == num


def test_blob_data_fields_are_packed_and_typed():
    for name, ftype in [("data", FD.TYPE_FLOAT), ("diff", FD.TYPE_FLOAT),
                        ("double_data", FD.TYPE_DOUBLE),
                        ("double_diff", FD.TYPE_DOUBLE)]:
        f = field(caffe_pb2.BlobProto, name)
        assert is_repeated(f) and is_packed(f) and f.type == ftype, name
    dim = field(caffe_pb2.BlobShape, "dim")
    assert is_repeated(dim) and is_packed(dim) and dim.type == FD.TYPE_INT64
    for name in ("num", "channels", "height", "width"):
        assert field(caffe_pb2.BlobProto, name).type == FD.TYPE_INT32
    # Caffe leaves these unpacked; packing them would change the wire bytes.
    assert not is_packed(field(caffe_pb2.Datum, "float_data"))
    assert not is_packed(field(caffe_pb2.V1LayerParameter, "blobs_lr"))
    assert not is_packed(field(caffe_pb2.LayerParameter, "loss_weight"))


def test_scalar_types():
    assert field(caffe_pb2.SolverParameter, "test_iter").type == FD.TYPE_INT32
    assert field(caffe_pb2.SolverParameter, "max_iter").type == FD.TYPE_INT32
    assert field(caffe_pb2.SolverParameter, "random_seed").type == FD.TYPE_INT64
    assert field(caffe_pb2.SolverParameter, "base_lr").type == FD.TYPE_FLOAT
    assert field(caffe_pb2.SolverState, "iter").type == FD.TYPE_INT32
    assert field(caffe_pb2.ConvolutionParameter, "pad").type == FD.TYPE_UINT32
    assert is_repeated(field(caffe_pb2.ConvolutionParameter, "kernel_size"))
    assert field(caffe_pb2.CropParameter, "offset").type == FD.TYPE_UINT32
    assert field(caffe_pb2.CropParameter, "axis").type == FD.TYPE_INT32
    assert field(caffe_pb2.FillerParameter, "sparse").type == FD.TYPE_INT32
    clip_min = field(caffe_pb2.ClipParameter, "min")
    assert is_required(clip_min) and clip_min.number == 1
    assert number(caffe_pb2.ClipParameter, "max") == 2


def test_v1_layer_type_enum():
    v1 = caffe_pb2.V1LayerParameter
    expected = {
        "NONE": 0, "ACCURACY": 1, "BNLL": 2, "CONCAT": 3, "CONVOLUTION": 4,
        "DATA": 5, "DROPOUT": 6, "EUCLIDEAN_LOSS": 7, "FLATTEN": 8,
        "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "IM2COL": 11, "IMAGE_DATA": 12,
        "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15,
        "MULTINOMIAL_LOGISTIC_LOSS": 16, "POOLING": 17, "RELU": 18,
        "SIGMOID": 19, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22,
        "TANH": 23, "WINDOW_DATA": 24, "ELTWISE": 25, "POWER": 26,
        "SIGMOID_CROSS_ENTROPY_LOSS": 27, "HINGE_LOSS": 28, "MEMORY_DATA": 29,
        "ARGMAX": 30, "THRESHOLD": 31, "DUMMY_DATA": 32, "SLICE": 33,
        "MVN": 34, "ABSVAL": 35, "SILENCE": 36, "CONTRASTIVE_LOSS": 37,
        "EXP": 38, "DECONVOLUTION": 39,
    }
    values = {v.name: v.number for v in v1.LayerType.DESCRIPTOR.values}
    assert values == expected
    assert v1.CONVOLUTION == 4 and v1.INNER_PRODUCT == 14
    assert v1.DECONVOLUTION == 39 and v1.SOFTMAX_LOSS == 21


def test_enums():
    assert caffe_pb2.TRAIN == 0 and caffe_pb2.TEST == 1
    assert caffe_pb2.PoolingParameter.MAX == 0
    assert caffe_pb2.PoolingParameter.AVE == 1
    assert caffe_pb2.PoolingParameter.STOCHASTIC == 2
    assert caffe_pb2.PoolingParameter.CEIL == 0
    assert caffe_pb2.PoolingParameter.FLOOR == 1
    assert caffe_pb2.EltwiseParameter.PROD == 0
    assert caffe_pb2.EltwiseParameter.SUM == 1
    assert caffe_pb2.EltwiseParameter.MAX == 2
    assert caffe_pb2.LossParameter.FULL == 0
    assert caffe_pb2.LossParameter.VALID == 1
    assert caffe_pb2.LossParameter.BATCH_SIZE == 2
    assert caffe_pb2.LossParameter.NONE == 3
    assert caffe_pb2.SolverParameter.HDF5 == 0
    assert caffe_pb2.SolverParameter.BINARYPROTO == 1
    assert caffe_pb2.SolverParameter.CPU == 0
    assert caffe_pb2.SolverParameter.GPU == 1
    assert caffe_pb2.SolverParameter.ADAM == 5
    assert caffe_pb2.ReductionParameter.SUM == 1
    assert caffe_pb2.HingeLossParameter.L1 == 1
    assert caffe_pb2.FillerParameter.FAN_IN == 0
    assert caffe_pb2.FillerParameter.AVERAGE == 2
    assert caffe_pb2.DataParameter.LEVELDB == 0
    assert caffe_pb2.DataParameter.LMDB == 1


def test_defaults():
    conv = caffe_pb2.ConvolutionParameter()
    assert conv.bias_term is True and conv.group == 1 and conv.axis == 1
    assert conv.pad_h == 0 and conv.engine == caffe_pb2.ConvolutionParameter.DEFAULT
    pool = caffe_pb2.PoolingParameter()
    assert pool.pool == caffe_pb2.PoolingParameter.MAX
    assert pool.stride == 1 and pool.pad == 0
    assert pool.round_mode == caffe_pb2.PoolingParameter.CEIL
    loss = caffe_pb2.LossParameter()
    assert loss.normalization == caffe_pb2.LossParameter.VALID
    assert not loss.HasField("normalize") and not loss.HasField("ignore_label")
    assert caffe_pb2.CropParameter().axis == 2
    assert caffe_pb2.DropoutParameter().dropout_ratio == 0.5
    assert caffe_pb2.EltwiseParameter().operation == caffe_pb2.EltwiseParameter.SUM
    assert caffe_pb2.EltwiseParameter().stable_prod_grad is True
    assert caffe_pb2.InnerProductParameter().bias_term is True
    assert caffe_pb2.ConcatParameter().axis == 1
    assert caffe_pb2.SoftmaxParameter().axis == 1
    assert caffe_pb2.ScaleParameter().bias_term is False
    assert caffe_pb2.PythonParameter().param_str == ""
    lrn = caffe_pb2.LRNParameter()
    assert lrn.local_size == 5 and lrn.alpha == 1.0 and lrn.beta == 0.75 and lrn.k == 1.0
    filler = caffe_pb2.FillerParameter()
    assert filler.type == "constant" and filler.value == 0.0
    assert filler.std == 1.0 and filler.max == 1.0 and filler.sparse == -1
    spec = caffe_pb2.ParamSpec()
    assert spec.lr_mult == 1.0 and spec.decay_mult == 1.0
    state = caffe_pb2.NetState()
    assert state.phase == caffe_pb2.TEST and state.level == 0

    s = caffe_pb2.SolverParameter()
    assert s.snapshot_format == caffe_pb2.SolverParameter.BINARYPROTO
    assert s.solver_mode == caffe_pb2.SolverParameter.GPU
    assert s.type == "SGD" and s.regularization_type == "L2"
    assert s.iter_size == 1 and s.average_loss == 1
    assert s.clip_gradients == -1.0 and s.random_seed == -1
    assert s.test_initialization is True and s.snapshot_after_train is True
    assert s.snapshot == 0 and s.test_interval == 0 and s.device_id == 0
    assert s.momentum == 0.0 and not s.HasField("momentum")
    assert s.momentum2 == pytest.approx(0.999)
    assert s.rms_decay == pytest.approx(0.99)
    assert s.delta == pytest.approx(1e-8)
    assert s.layer_wise_reduce is True
    assert caffe_pb2.SolverState().current_step == 0

    v0 = caffe_pb2.V0LayerParameter()
    assert v0.biasterm is True and v0.det_crop_mode == "warp" and v0.concat_dim == 1


NET = """
name: "tiny"
layer {
  name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } }
}
layer {
  name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
                      weight_filler { type: "gaussian" std: 0.01 } }
}
layer {
  name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label"
  include { phase: TRAIN }
  loss_param { ignore_label: 255 normalize: false }
}
"""


def test_text_format_parse_and_binary_roundtrip():
    net = text_format.Parse(NET, caffe_pb2.NetParameter())
    assert [l.name for l in net.layer] == ["data", "conv", "loss"]
    conv = net.layer[1]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert list(conv.convolution_param.kernel_size) == [3]
    assert list(conv.convolution_param.pad) == [1]
    assert conv.convolution_param.bias_term is True
    assert conv.convolution_param.weight_filler.std == pytest.approx(0.01)
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]
    loss = net.layer[2]
    assert loss.include[0].phase == caffe_pb2.TRAIN
    assert loss.loss_param.ignore_label == 255
    assert loss.loss_param.HasField("normalize") and not loss.loss_param.normalize

    again = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert again == net


def test_packed_wire_encoding_of_blob_data():
    # field 5, wire type 2 (length-delimited) -> tag byte 0x2a; two floats = 8 bytes
    blob = caffe_pb2.BlobProto(data=[1.0, 2.0])
    raw = blob.SerializeToString()
    assert raw[:2] == b"\x2a\x08"
    # field 7 (shape) -> tag 0x3a; dim packed under field 1 -> tag 0x0a
    shaped = caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[2, 3]))
    assert shaped.SerializeToString() == b"\x3a\x04\x0a\x02\x02\x03"


def test_v1_text_format():
    net = text_format.Parse("""
        layers { name: "fc6" type: INNER_PRODUCT bottom: "pool5" top: "fc6"
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
                 inner_product_param { num_output: 4096 } }
    """, caffe_pb2.NetParameter())
    v1 = net.layers[0]
    assert v1.type == caffe_pb2.V1LayerParameter.INNER_PRODUCT
    assert list(v1.blobs_lr) == [1, 2] and list(v1.weight_decay) == [1, 0]
    assert v1.inner_product_param.num_output == 4096
