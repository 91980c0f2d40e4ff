"""Python layers in a net: forward and backward through autograd (checked
against a hand-derived gradient), param_str and phase, data layers that
reshape per forward, module resolution through entry points, and errors
naming the layer, module and class."""
import importlib
import textwrap

import numpy as np
import pytest

import torchcaffe as caffe
from torchcaffe.errors import LayerError
from torchcaffe.prototxt import parse_net_text

LAYER_SOURCE = textwrap.dedent('''
    import ast

    import numpy as np

    import torchcaffe as caffe


    class Square(caffe.Layer):
        """top = scale * bottom ** 2"""

        def setup(self, bottom, top):
            params = ast.literal_eval(self.param_str) if self.param_str else {}
            self.scale = params.get("scale", 1.0)
            self.seen_phase = self.phase
            if len(bottom) != 1:
                raise Exception("Square needs exactly one bottom")

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = self.scale * bottom[0].data ** 2

        def backward(self, top, propagate_down, bottom):
            if propagate_down[0]:
                bottom[0].diff[...] = 2 * self.scale * bottom[0].data * top[0].diff


    class Ramp(caffe.Layer):
        """A data layer whose top grows by one value per forward."""

        def setup(self, bottom, top):
            self.n = 0

        def reshape(self, bottom, top):
            top[0].reshape(1, self.n + 1)

        def forward(self, bottom, top):
            top[0].data[...] = np.arange(self.n + 1) - 1
            self.n += 1
''')


@pytest.fixture
def layer_module(tmp_path, monkeypatch):
    (tmp_path / "pylayers_for_test.py").write_text(LAYER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    return "pylayers_for_test"


def python_layer(name, bottom, top, module, cls, param_str="", extra=""):
    bottoms = f'bottom: "{bottom}"' if bottom else ""
    return (f'layer {{ name: "{name}" type: "Python" {bottoms} top: "{top}" {extra} '
            f'python_param {{ module: "{module}" layer: "{cls}" param_str: "{param_str}" }} }}\n')


def square_net(module, phase=caffe.TRAIN):
    text = ("force_backward: true\n"
            'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param '
            '{ num_output: 2 bias_term: false weight_filler { type: "gaussian" std: 1 } } }\n'
            + python_layer("sq", "ip", "sq", module, "Square", "{'scale': 0.5}", "loss_weight: 1"))
    return caffe.Net(parse_net_text(text), phase=phase)


def test_python_layer_forward_and_backward_in_a_net(layer_module):
    net = square_net(layer_module)
    assert net.blobs["sq"].shape == (2, 2)  # the user's reshape ran at construction
    x = np.array([[1, -2, 3], [-1, 0.5, 2]], np.float32)
    w = net.params["ip"][0].data.copy()
    y = x @ w.T
    out = net.forward(data=x)
    np.testing.assert_allclose(out["sq"], 0.5 * y ** 2, rtol=1e-5)
    # L = sum(0.5 y^2): dL/dW = y^T x, dL/dx = y W
    diffs = net.backward()
    np.testing.assert_allclose(net.params["ip"][0].diff, y.T @ x, rtol=1e-5)
    np.testing.assert_allclose(diffs["data"], y @ w, rtol=1e-5)


def test_param_str_and_phase_reach_the_instance(layer_module):
    for phase in (caffe.TRAIN, caffe.TEST):
        instance = square_net(layer_module, phase).layer_dict["sq"]
        assert instance.param_str == "{'scale': 0.5}"
        assert instance.scale == 0.5
        assert instance.seen_phase == phase == instance.phase


def test_python_data_layer_reshapes_every_forward(layer_module):
    text = (python_layer("ramp", None, "ramp", layer_module, "Ramp")
            + 'layer { name: "relu" type: "ReLU" bottom: "ramp" top: "relu" }\n')
    net = caffe.Net(parse_net_text(text), phase=caffe.TRAIN)
    assert net.blobs["relu"].shape == (1, 1)
    net.forward()
    np.testing.assert_array_equal(net.blobs["ramp"].data, [[-1]])
    net.forward()
    np.testing.assert_array_equal(net.blobs["ramp"].data, [[-1, 0]])
    np.testing.assert_array_equal(net.blobs["relu"].data, [[0, 0]])
    net.forward()
    np.testing.assert_array_equal(net.blobs["relu"].data, [[0, 0, 1]])


def test_module_found_through_entry_point(tmp_path, monkeypatch):
    package = tmp_path / "realpkg_for_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "impl.py").write_text(LAYER_SOURCE)
    dist = tmp_path / "fakedist_for_test-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakedist-for-test\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[torchcaffe.python_layers]\nalias_layers_for_test = realpkg_for_test.impl\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    net = square_net("alias_layers_for_test")
    assert type(net.layer_dict["sq"]).__module__ == "realpkg_for_test.impl"


def test_missing_module_names_layer_module_and_class():
    with pytest.raises(LayerError, match="layer 'sq' \\(type Python\\).*'no_such_module_xyz'"
                                         ".*'Square'"):
        square_net("no_such_module_xyz")


def test_missing_class_names_module_and_class(layer_module):
    text = python_layer("odd", None, "odd", layer_module, "Nope")
    with pytest.raises(LayerError, match="layer 'odd'.*'pylayers_for_test' has no class 'Nope'"):
        caffe.Net(parse_net_text(text), phase=caffe.TRAIN)


def test_error_in_user_setup_names_the_layer(layer_module):
    text = ('layer { name: "data" type: "Input" top: "a" top: "b" '
            'input_param { shape { dim: 1 } } }\n'
            'layer { name: "two" type: "Python" bottom: "a" bottom: "b" top: "t" '
            f'python_param {{ module: "{layer_module}" layer: "Square" }} }}\n')
    with pytest.raises(LayerError, match="layer 'two'.*Square.setup failed.*exactly one bottom"):
        caffe.Net(parse_net_text(text), phase=caffe.TRAIN)
