"""NetSpec against hand-written prototxt text (parsed into messages)."""
import subprocess
import sys

import pytest
from google.protobuf import text_format

from torchcaffe.errors import CaffeError
from torchcaffe.net_spec import Function, NetSpec, Top, layers as L, params as P, to_proto
from torchcaffe.proto import caffe_pb2


def net(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def test_names_in_place_param_lists_and_enums():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1,
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                           weight_filler=dict(type="gaussian", std=0.01))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.pool = L.Pooling(n.relu, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.sum = L.Eltwise(n.pool, n.pool, operation=P.Eltwise.SUM, coeff=[0.5, 0.5])
    expected = net('''
      layer { name: "data" type: "Input" top: "data"
              input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
      layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
              param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
              convolution_param { num_output: 4 pad: 1 kernel_size: 3
                                  weight_filler { type: "gaussian" std: 0.01 } } }
      layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
      layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
              pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
      layer { name: "sum" type: "Eltwise" bottom: "pool" bottom: "pool" top: "sum"
              eltwise_param { operation: SUM coeff: 0.5 coeff: 0.5 } }''')
    assert n.to_proto() == expected


def test_ntop_layer_fields_and_explicit_name():
    n = NetSpec()
    n.data, n.label = L.Python(module="voc_layers", layer="VOCSegDataLayer", ntop=2,
                               param_str="{'split': 'val'}")
    n.loss = L.SoftmaxWithLoss(n.data, n.label, loss_weight=2,
                               include=dict(phase=caffe_pb2.TRAIN),
                               loss_param=dict(normalize=False, ignore_label=255))
    n.out = L.Input(name="input", shape=dict(dim=[1]))
    expected = net('''
      layer { name: "data" type: "Python" top: "data" top: "label"
              python_param { module: "voc_layers" layer: "VOCSegDataLayer"
                             param_str: "{\\'split\\': \\'val\\'}" } }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label"
              top: "loss" loss_weight: 2 include { phase: TRAIN }
              loss_param { ignore_label: 255 normalize: false } }
      layer { name: "input" type: "Input" top: "out" input_param { shape { dim: 1 } } }''')
    assert n.to_proto() == expected


def test_unnamed_tops_get_type_numbered_names():
    data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    relu = L.ReLU(L.ReLU(data))
    proto = to_proto(relu)
    assert [(l.name, list(l.bottom), list(l.top)) for l in proto.layer] == [
        ("Input1", [], ["Input1"]),
        ("ReLU1", ["Input1"], ["ReLU1"]),
        ("ReLU2", ["ReLU1"], ["ReLU2"]),
    ]


def test_ntop_zero_returns_function_and_multi_top_tuple():
    tops = L.Python(ntop=3, module="m", layer="x")
    assert isinstance(tops, tuple) and len(tops) == 3 and all(isinstance(t, Top) for t in tops)
    silence = L.Silence(tops[0], ntop=0)
    assert isinstance(silence, Function) and silence.tops == ()


def test_enum_by_name_and_deconvolution_kwargs_go_to_convolution_param():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.pool = L.Pooling(n.data, pool="AVE", kernel_size=2)
    n.up = L.Deconvolution(n.data, num_output=2, kernel_size=4, stride=2, bias_term=False)
    proto = n.to_proto()
    assert proto.layer[1].pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    assert proto.layer[2].convolution_param.kernel_size == [4]
    assert proto.layer[2].convolution_param.bias_term is False


def test_params_resolves_schema_enums():
    assert P.Pooling.MAX == 0 and P.Pooling.AVE == 1 and P.Eltwise.SUM == 1
    with pytest.raises(AttributeError):
        P.Pooling.MEDIAN


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_output=2, kernel_size=3, bogus=1), "bogus"),
    (dict(num_output="two", kernel_size=3), "num_output"),
    (dict(num_output=2, kernel_size=3, weight_filler=5), "weight_filler"),
])
def test_bad_fields_name_the_layer_and_field(kwargs, message):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1]))
    n.conv1 = L.Convolution(n.data, **kwargs)
    with pytest.raises(CaffeError, match=rf"'conv1'.*{message}"):
        n.to_proto()


def test_bad_enum_name_lists_choices():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1]))
    n.pool = L.Pooling(n.data, pool="MEDIAN", kernel_size=2)
    with pytest.raises(CaffeError, match="MAX"):
        n.to_proto()


def test_netspec_attribute_and_item_access():
    n = NetSpec()
    n["a"] = L.Input(shape=dict(dim=[1]))
    assert n.a is n["a"] and "a" in n and n.keys() == ["a"]
    with pytest.raises(AttributeError, match="no top named 'b'"):
        n.b
    with pytest.raises(CaffeError):
        n.c = 3


def test_imports_without_torch():
    code = ("import sys, torchcaffe.net_spec, torchcaffe.coord_map; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_top_less_layer_assigned_to_netspec_is_named_by_it():
    n = NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=[3]), ntop=2)
    n.silence_data = L.Silence(n.data, n.data2, ntop=0)
    layer = n.to_proto().layer[-1]
    assert (layer.name, layer.type, list(layer.bottom), list(layer.top)) == \
        ("silence_data", "Silence", ["data", "data2"], [])


def test_non_top_input_is_a_type_error_in_pycaffes_words():
    tops = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Silence(tops, ntop=0)


def test_param_name_dict_maps_message_names_to_field_names():
    from torchcaffe.net_spec import param_name_dict

    names = param_name_dict()
    assert names["Convolution"] == "convolution" and names["Pooling"] == "pooling"
    assert names["InnerProduct"] == "inner_product" and names["Python"] == "python"
