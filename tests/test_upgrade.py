"""Legacy net definitions upgrade as Caffe's upgrade_proto.cpp does.

Expected results are written out by hand from Caffe's upgrade rules
(V0 -> V1 field moves, V1 enum -> type string, blobs_lr -> lr_mult, ...).
"""
import pytest
from google.protobuf import text_format

from torchcaffe.errors import CaffeError
from torchcaffe.proto import caffe_pb2
from torchcaffe.upgrade import net_needs_upgrade, upgrade_net_param, v0_type_to_v1, v1_type_name


def parse(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


def test_v1_layers_become_current_layers():
    old = parse("""
        name: "v1"
        layers { name: "data" type: DATA top: "data" top: "label"
                 data_param { source: "train_lmdb" batch_size: 4 scale: 0.5 mirror: true }
                 include { phase: TRAIN } }
        layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
                 param: "shared_w" blob_share_mode: PERMISSIVE
                 convolution_param { num_output: 8 kernel_size: 3 } }
        layers { name: "up" type: DECONVOLUTION bottom: "conv1" top: "up" blobs_lr: 0
                 convolution_param { num_output: 8 kernel_size: 4 stride: 2 } }
        layers { name: "loss" type: SOFTMAX_LOSS bottom: "up" bottom: "label" top: "loss"
                 loss_weight: 2 loss_param { ignore_label: 255 normalize: false }
                 exclude { phase: TEST } }
        """)
    expected = parse("""
        name: "v1"
        layer { name: "data" type: "Data" top: "data" top: "label"
                include { phase: TRAIN }
                transform_param { scale: 0.5 mirror: true }
                data_param { source: "train_lmdb" batch_size: 4 } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
                param { name: "shared_w" share_mode: PERMISSIVE lr_mult: 1 decay_mult: 1 }
                param { lr_mult: 2 decay_mult: 0 }
                convolution_param { num_output: 8 kernel_size: 3 } }
        layer { name: "up" type: "Deconvolution" bottom: "conv1" top: "up"
                param { lr_mult: 0 }
                convolution_param { num_output: 8 kernel_size: 4 stride: 2 } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "up" bottom: "label" top: "loss"
                loss_weight: 2 exclude { phase: TEST }
                loss_param { ignore_label: 255 normalize: false } }
        """)
    assert net_needs_upgrade(old)
    upgraded = upgrade_net_param(old)
    assert upgraded == expected, text_format.MessageToString(upgraded)
    assert len(old.layers) == 4 and not old.layer  # the input is left alone


def test_v0_net_with_padding_layer():
    old = parse("""
        name: "v0"
        input: "data" input_dim: 1 input_dim: 3 input_dim: 9 input_dim: 9
        layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
        layers { layer { name: "conv1" type: "conv" num_output: 16 kernelsize: 5 stride: 2
                         group: 2 biasterm: false blobs_lr: 1 blobs_lr: 2
                         weight_filler { type: "gaussian" std: 0.01 } }
                 bottom: "pad1" top: "conv1" }
        layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 pad: 1 }
                 bottom: "conv1" top: "pool1" }
        layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.001 beta: 0.5 }
                 bottom: "pool1" top: "norm1" }
        layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 }
                 bottom: "norm1" top: "norm1" }
        layers { layer { name: "fc" type: "innerproduct" num_output: 10 }
                 bottom: "norm1" top: "fc" }
        """)
    expected = parse("""
        name: "v0"
        layer { name: "input" type: "Input" top: "data"
                input_param { shape { dim: 1 dim: 3 dim: 9 dim: 9 } } }
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
                param { lr_mult: 1 } param { lr_mult: 2 }
                convolution_param { num_output: 16 bias_term: false pad: 2 kernel_size: 5
                                    group: 2 stride: 2
                                    weight_filler { type: "gaussian" std: 0.01 } } }
        layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
                pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
        layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
                lrn_param { local_size: 3 alpha: 0.001 beta: 0.5 } }
        layer { name: "drop" type: "Dropout" bottom: "norm1" top: "norm1"
                dropout_param { dropout_ratio: 0.3 } }
        layer { name: "fc" type: "InnerProduct" bottom: "norm1" top: "fc"
                inner_product_param { num_output: 10 } }
        """)
    upgraded = upgrade_net_param(old)
    assert upgraded == expected, text_format.MessageToString(upgraded)


def test_v0_data_layer_fields():
    old = parse("""
        layers { layer { name: "d" type: "data" source: "db" batchsize: 8 cropsize: 227
                         mirror: true meanfile: "mean.binaryproto" scale: 0.1 rand_skip: 3 }
                 top: "data" top: "label" }
        """)
    (layer,) = upgrade_net_param(old).layer
    assert layer.type == "Data"
    assert (layer.data_param.source, layer.data_param.batch_size, layer.data_param.rand_skip) == (
        "db", 8, 3)
    t = layer.transform_param
    assert (t.crop_size, t.mirror, t.mean_file) == (227, True, "mean.binaryproto")
    assert t.scale == pytest.approx(0.1)


def test_v0_errors():
    with pytest.raises(CaffeError, match="'mystery'"):
        upgrade_net_param(parse('layers { layer { name: "x" type: "mystery" } }'))
    with pytest.raises(CaffeError, match="relu"):
        upgrade_net_param(parse("""
            input: "data"
            layers { layer { name: "p" type: "padding" pad: 1 } bottom: "data" top: "p" }
            layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }"""))
    with pytest.raises(CaffeError, match="unknown blob input 'nowhere'"):
        upgrade_net_param(parse(
            'layers { layer { name: "c" type: "conv" } bottom: "nowhere" top: "c" }'))


def test_input_fields_become_an_input_layer():
    old = parse("""
        input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }
        input: "label" input_shape { dim: 1 dim: 1 dim: 4 dim: 4 }
        layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }""")
    upgraded = upgrade_net_param(old)
    assert [l.name for l in upgraded.layer] == ["input", "relu"]
    first = upgraded.layer[0]
    assert first.type == "Input" and list(first.top) == ["data", "label"]
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 3, 4, 4], [1, 1, 4, 4]]
    assert not upgraded.input and not upgraded.input_shape and not upgraded.input_dim


def test_batch_norm_with_three_params_is_frozen():
    old = parse("""
        layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 }
                param { lr_mult: 1 decay_mult: 3 } }
        layer { name: "bn2" type: "BatchNorm" param { lr_mult: 1 } }""")
    upgraded = upgrade_net_param(old)
    assert [(p.lr_mult, p.decay_mult) for p in upgraded.layer[0].param] == [(0, 0)] * 3
    assert [(p.lr_mult, p.decay_mult) for p in upgraded.layer[1].param] == [(1, 1)]


def test_current_net_is_unchanged():
    net = parse("""
        name: "now"
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 } } }
        layer { name: "c" type: "Convolution" bottom: "x" top: "c" param { lr_mult: 3 } }""")
    assert not net_needs_upgrade(net)
    assert upgrade_net_param(net) == net


def test_type_tables():
    # enum numbers typed from caffe.proto's V1LayerParameter.LayerType
    assert v1_type_name(4) == "Convolution"
    assert v1_type_name(39) == "Deconvolution"
    assert v1_type_name(21) == "SoftmaxWithLoss"
    assert v1_type_name(14) == "InnerProduct"
    assert v1_type_name(36) == "Silence"
    assert v1_type_name(0) == ""
    assert v0_type_to_v1("images") == 12  # IMAGE_DATA
    assert v0_type_to_v1("pool") == 17  # POOLING
    with pytest.raises(CaffeError):
        v1_type_name(99)
