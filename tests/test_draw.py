"""caffe.draw: the pydot graph of a net (nodes, labels, edges, colours,
phase filtering) and, with Graphviz's dot, rendered files."""
import shutil

import pytest
from google.protobuf import text_format

from torchcaffe import draw
from torchcaffe.errors import CaffeError
from torchcaffe.proto import caffe_pb2

pydot = pytest.importorskip("pydot", reason="caffe.draw needs pydot (the draw extra)")

NET = '''name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 5 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "drop" type: "Dropout" bottom: "pool" top: "pool" include { phase: TRAIN } }
'''


def net():
    return text_format.Parse(NET, caffe_pb2.NetParameter())


def nodes(graph):
    return {n.get_name().strip('"'): n for n in graph.get_nodes()}


def test_graph_nodes_labels_and_edges():
    graph = draw.get_pydot_graph(net(), "LR", display_lrm=True)
    found = nodes(graph)
    assert set(found) == {"data_Input", "conv_Convolution", "relu_ReLU", "pool_Pooling",
                          "drop_Dropout", "data_blob", "conv_blob", "pool_blob"}
    conv = found["conv_Convolution"].get_attributes()
    assert conv["label"] == r'"conv\n(Convolution)\nkernel size: 3\nstride: 2\npad: 1\nlr mult: 1.0, 2.0"'
    assert conv["fillcolor"] == "#FF5050"
    assert found["relu_ReLU"].get_attributes()["fillcolor"] == "#90EE90"  # in place
    assert found["pool_Pooling"].get_attributes()["label"].startswith(r'"pool\n(Pooling AVE)')
    edges = {(e.get_source(), e.get_destination(), e.get_attributes()["label"])
             for e in graph.get_edges()}
    assert ("conv_Convolution", "conv_blob", '"5"') in edges  # num_output on the edge
    assert ("conv_blob", "relu_ReLU", '""') in edges
    assert len(graph.get_edges()) == 9
    vertical = draw.get_pydot_graph(net(), "TB", label_edges=False)
    assert nodes(vertical)["conv_Convolution"].get_attributes()["label"].startswith(
        '"conv (Convolution) kernel size: 3 stride: 2 pad: 1"')


def test_phase_filter_drops_other_phases_layers():
    test_graph = draw.get_pydot_graph(net(), "LR", phase=caffe_pb2.TEST)
    assert "drop_Dropout" not in nodes(test_graph)
    assert "drop_Dropout" in nodes(draw.get_pydot_graph(net(), "LR", phase=caffe_pb2.TRAIN))
    both = net()
    both.layer[1].exclude.add(phase=caffe_pb2.TEST)
    both.layer[1].include.add(phase=caffe_pb2.TRAIN)
    with pytest.raises(CaffeError, match="'conv' has both include and exclude"):
        draw.get_pydot_graph(both, "LR", phase=caffe_pb2.TEST)


@pytest.mark.skipif(shutil.which("dot") is None,
                    reason="rendering needs Graphviz's dot (apt install graphviz)")
def test_rendered_png_and_svg(tmp_path):
    assert draw.draw_net(net(), "LR").startswith(b"\x89PNG")
    draw.draw_net_to_file(net(), str(tmp_path / "net.svg"), "TB")
    svg = (tmp_path / "net.svg").read_text()
    assert "<svg" in svg and "conv_Convolution" in svg
