"""Net construction and forward: NetState filtering, Split insertion, shapes
before any forward, in-place blobs, partial forward, input views, errors."""
import numpy as np
import pytest

import torchcaffe as caffe
from torchcaffe.errors import CaffeError, LayerError
from torchcaffe.prototxt import parse_net_text

INPUT_2x3 = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'


def ip(name, bottom, num_output, value=None, extra=""):
    filler = (f'weight_filler {{ type: "constant" value: {value} }}' if value is not None
              else 'weight_filler { type: "gaussian" std: 1 }')
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" {extra}'
            f' inner_product_param {{ num_output: {num_output} bias_term: false {filler} }} }}\n')


def build(text, phase=caffe.TEST, **kwargs):
    return caffe.Net(parse_net_text(text), phase=phase, **kwargs)


FILTERED = INPUT_2x3 + """
layer { name: "train_only" type: "ReLU" bottom: "data" top: "t" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "data" top: "t" include { phase: TEST } }
layer { name: "deploy_only" type: "ReLU" bottom: "data" top: "d" include { stage: "deploy" } }
layer { name: "not_deploy" type: "ReLU" bottom: "data" top: "nd" exclude { stage: "deploy" } }
layer { name: "two_stages" type: "ReLU" bottom: "data" top: "ab" include { stage: "a" stage: "b" } }
layer { name: "level2" type: "ReLU" bottom: "data" top: "l2" include { min_level: 2 } }
layer { name: "upto1" type: "ReLU" bottom: "data" top: "l1" include { max_level: 1 } }
layer { name: "not_a" type: "ReLU" bottom: "data" top: "na" include { not_stage: "a" } }
"""


def real_layers(net):
    return [name for name, layer in zip(net._layer_names, net.layers) if layer.type != "Split"]


@pytest.mark.parametrize("phase, level, stages, expected", [
    (caffe.TRAIN, 0, [], ["train_only", "not_deploy", "upto1", "not_a"]),
    (caffe.TEST, 0, [], ["test_only", "not_deploy", "upto1", "not_a"]),
    (caffe.TEST, 2, ["deploy"], ["test_only", "deploy_only", "level2", "not_a"]),
    (caffe.TEST, 1, ["a"], ["test_only", "not_deploy", "upto1"]),
    (caffe.TEST, 1, ["a", "b"], ["test_only", "not_deploy", "two_stages", "upto1"]),
])
def test_layers_filtered_by_phase_stage_level(tmp_path, phase, level, stages, expected):
    path = tmp_path / "net.prototxt"
    path.write_text(FILTERED)
    net = caffe.Net(str(path), phase, level=level, stages=stages)
    assert real_layers(net) == ["data"] + expected
    assert net.phase == phase


def test_net_parameter_keeps_its_own_stages():
    param = parse_net_text('state { stage: "deploy" }\n' + FILTERED)
    net = caffe.Net(param, phase=caffe.TEST, level=2)
    assert real_layers(net) == ["data", "test_only", "deploy_only", "level2", "not_a"]


def test_include_and_exclude_together_is_an_error():
    with pytest.raises(LayerError, match="'both'.*either include rules or exclude"):
        build(INPUT_2x3 + 'layer { name: "both" type: "ReLU" bottom: "data" top: "r" '
              'include { phase: TEST } exclude { phase: TRAIN } }')


def test_blob_used_twice_gets_caffe_split_layer():
    net = build(INPUT_2x3 + ip("ip1", "data", 2) + ip("ip2", "data", 2))
    assert list(net.blobs) == ["data", "data_data_0_split_0", "data_data_0_split_1", "ip1", "ip2"]
    assert net._layer_names[1] == "data_data_0_split"
    assert net.layers[1].type == "Split"
    assert net.bottom_names["ip2"] == ["data_data_0_split_1"]
    # Caffe lists outputs in name order, inputs in layer order
    assert net.outputs == ["ip1", "ip2"]
    assert net.inputs == ["data"]


def test_shapes_known_before_forward_and_reshape_propagates():
    text = ('layer { name: "data" type: "Input" top: "data" '
            'input_param { shape { dim: 1 dim: 2 dim: 6 dim: 8 } } }\n'
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
            'convolution_param { num_output: 3 kernel_size: 3 stride: 2 } }\n'
            'layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" '
            'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n')
    net = build(text)
    # conv: floor((6 - 3) / 2) + 1 = 2, floor((8 - 3) / 2) + 1 = 3; pool: ceil((2-2)/2)+1, ceil((3-2)/2)+1
    assert net.blobs["conv"].data.shape == (1, 3, 2, 3)
    assert net.blobs["pool"].shape == (1, 3, 1, 2)
    assert net.params["conv"][0].data.shape == (3, 2, 3, 3)
    net.blobs["data"].reshape(2, 2, 10, 10)
    net.reshape()
    assert net.blobs["conv"].shape == (2, 3, 4, 4)
    assert net.blobs["pool"].shape == (2, 3, 2, 2)
    # a forward after the user reshaped an input also reshapes
    net.blobs["data"].reshape(1, 2, 7, 7)
    net.forward()
    assert net.blobs["pool"].data.shape == (1, 3, 2, 2)


IN_PLACE = INPUT_2x3 + ip("ip", "data", 2) + \
    'layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }\n' + ip("out", "ip", 1, value=1)


def test_in_place_blob_holds_last_result_and_partial_forward():
    net = build(IN_PLACE)
    assert list(net.blobs) == ["data", "ip", "out"]
    x = np.array([[1, -2, 3], [-1, 0.5, 2]], np.float32)
    w = net.params["ip"][0].data.copy()
    out = net.forward(data=x)
    pre = x @ w.T
    np.testing.assert_allclose(net.blobs["ip"].data, np.maximum(pre, 0), rtol=1e-6)
    np.testing.assert_allclose(out["out"], np.maximum(pre, 0).sum(1, keepdims=True), rtol=1e-5)
    # forward up to ip: the blob holds the pre-ReLU values
    assert set(net.forward(end="ip")) == {"ip"}
    np.testing.assert_allclose(net.blobs["ip"].data, pre, rtol=1e-6)
    # forward from relu reads what was written into the blob
    written = np.array([[-1, 4], [2, -3]], np.float32)
    net.blobs["ip"].data[...] = written
    out = net.forward(start="relu")
    np.testing.assert_array_equal(net.blobs["ip"].data, np.maximum(written, 0))
    np.testing.assert_array_equal(out["out"], [[4], [2]])


def test_input_data_view_reaches_next_forward():
    net = build(INPUT_2x3 + ip("ip", "data", 1, value=1))
    view = net.blobs["data"].data
    view[...] = [[1, 2, 3], [4, 5, 6]]
    net.forward()
    np.testing.assert_array_equal(net.blobs["ip"].data, [[6], [15]])
    view[0] = 0
    assert net.forward()["ip"].tolist() == [[0], [15]]
    with pytest.raises(CaffeError, match="do not match the net inputs"):
        net.forward(other=np.zeros((2, 3), np.float32))
    with pytest.raises(CaffeError, match="batch size"):
        net.forward(data=np.zeros((3, 3), np.float32))


def test_unknown_layer_type_names_layer_and_type():
    with pytest.raises(LayerError, match="layer 'mystery' \\(type Bogus\\).*unknown layer type"):
        build(INPUT_2x3 + 'layer { name: "mystery" type: "Bogus" bottom: "data" top: "m" }')


def test_missing_bottom_names_layer_and_bottom():
    with pytest.raises(LayerError, match="layer 'ip' \\(type InnerProduct\\).*'nowhere'"):
        build(INPUT_2x3 + ip("ip", "nowhere", 2))


def test_duplicate_top_is_an_error():
    with pytest.raises(LayerError, match="top 'data' is already produced"):
        build(INPUT_2x3 + 'layer { name: "r1" type: "ReLU" bottom: "data" top: "x" }\n'
              'layer { name: "r2" type: "ReLU" bottom: "x" top: "data" }')


def test_parse_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  tpye: "ReLU"\n}\n')
    with pytest.raises(CaffeError, match=r"broken\.prototxt:4:\d+: .*tpye"):
        caffe.Net(str(path), caffe.TEST)
    with pytest.raises(CaffeError, match="cannot read net prototxt"):
        caffe.Net(str(tmp_path / "absent.prototxt"), caffe.TEST)


def test_phase_is_required_and_checked(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(INPUT_2x3)
    with pytest.raises(CaffeError, match="give the phase"):
        caffe.Net(str(path))
    with pytest.raises(CaffeError, match="phase must be"):
        caffe.Net(str(path), 7)


def test_legacy_input_fields_become_an_input_layer():
    net = build('input: "data" input_shape { dim: 1 dim: 3 }\n' + ip("ip", "data", 2))
    assert net.inputs == ["data"]
    assert net.layers[0].type == "Input"
    assert net.blobs["ip"].shape == (1, 2)


def test_building_a_net_keeps_pycaffe_layers_as_netspec_factory(tmp_path):
    # pycaffe's caffe.layers is NetSpec's layer factory; loading the runtime's
    # layer implementations must not rebind that name
    import torchcaffe

    path = tmp_path / "net.prototxt"
    path.write_text('layer { name: "data" type: "Input" top: "data" '
                    'input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }')
    torchcaffe.Net(str(path), torchcaffe.TEST)
    assert isinstance(torchcaffe.layers, torchcaffe.net_spec.Layers)
    assert torchcaffe.layers.ReLU(torchcaffe.layers.Input()).fn.type_name == "ReLU"
