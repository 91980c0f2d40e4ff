"""Layer output shapes by Caffe's formulas (hand-worked for odd sizes) and the
errors for shapes Caffe refuses."""
import pytest
import torch
from google.protobuf import text_format

import torchcaffe.layer_types  # noqa: F401  (registers the built-in types)
from torchcaffe.errors import LayerError
from torchcaffe.layer_types.base import LAYER_TYPES
from torchcaffe.proto import caffe_pb2

TRAIN, TEST = 0, 1


def make_layer(text: str, bottom_shapes, phase: int = TEST, seed: int = 0):
    """Build, set up and reshape one layer from its prototxt text; returns
    (layer, top shapes)."""
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    if not param.name:
        param.name = "under_test"
    if not param.top and param.type != "Silence":
        param.top.append("y")
    layer = LAYER_TYPES[param.type](param, phase)
    shapes = [tuple(s) for s in bottom_shapes]
    layer.setup(shapes, torch.Generator().manual_seed(seed))
    return layer, layer.reshape(shapes)


def top_shape(text: str, *bottom_shapes):
    return make_layer(text, bottom_shapes)[1][0]


def pool(size: int, params: str) -> int:
    return top_shape(f'type: "Pooling" top: "y" pooling_param {{ {params} }}', (1, 1, size, size))[2]


@pytest.mark.parametrize(
    "size, params, expected",
    [
        (7, "kernel_size: 3 stride: 2 pad: 1", 4),   # ceil(6/2)+1, last window starts at 6 < 8
        (6, "kernel_size: 2 stride: 2", 3),
        (5, "kernel_size: 2 stride: 2", 3),          # ceil(3/2)+1: the last window hangs over
        (12, "kernel_size: 3 stride: 2", 6),         # ceil(9/2)+1
        (5, "kernel_size: 2 stride: 2 pad: 1", 3),   # ceil(5/2)+1 = 4, clipped: 3*2 >= 5+1
        (6, "kernel_size: 3 stride: 2 pad: 1", 4),   # ceil(5/2)+1 = 4, 3*2 < 6+1 keeps it
        (5, "kernel_size: 3 stride: 2 pad: 2", 4),   # pad beyond kernel/2: ceil(6/2)+1, 6 < 7
        (5, "kernel_size: 1 stride: 3", 3),          # no pad, so no clip: ceil(4/3)+1
        (5, "kernel_size: 2 stride: 2 round_mode: FLOOR", 2),
        (500 + 198, "kernel_size: 2 stride: 2", 349),  # VGG pool1 after conv1 pad 100
        (349, "kernel_size: 2 stride: 2", 175),
    ],
)
def test_pooling_output_size(size, params, expected):
    assert pool(size, params) == expected


def test_global_pooling_and_rectangular_kernels():
    assert top_shape('type: "Pooling" pooling_param { pool: AVE global_pooling: true }',
                     (2, 3, 7, 9)) == (2, 3, 1, 1)
    assert top_shape('type: "Pooling" pooling_param { kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 }',
                     (1, 2, 9, 8)) == (1, 2, 4, 7)


@pytest.mark.parametrize(
    "params, message",
    [
        ("kernel_size: 2 pad: 2", "pad"),
        ("global_pooling: true kernel_size: 2", "global_pooling"),
        ("kernel_h: 3", "kernel_h and kernel_w"),
        ("stride: 2", "kernel_size"),
        ("pool: STOCHASTIC kernel_size: 3 pad: 1", "STOCHASTIC"),
    ],
)
def test_pooling_refuses_bad_parameters(params, message):
    with pytest.raises(LayerError, match=f"layer 'p1' .*{message}"):
        make_layer(f'name: "p1" type: "Pooling" pooling_param {{ {params} }}', [(1, 1, 8, 8)])


def conv(kind: str, bottom, params: str):
    return top_shape(f'type: "{kind}" convolution_param {{ {params} }}', bottom)


@pytest.mark.parametrize(
    "bottom, params, expected",
    [
        ((1, 3, 500, 500), "num_output: 8 kernel_size: 11 stride: 4 pad: 100", (1, 8, 173, 173)),
        ((1, 3, 500, 500), "num_output: 4 kernel_size: 3 pad: 100", (1, 4, 698, 698)),
        ((1, 4, 22, 22), "num_output: 6 kernel_size: 7", (1, 6, 16, 16)),
        ((2, 4, 12, 15), "num_output: 3 kernel_size: 3 pad: 2 dilation: 2", (2, 3, 12, 15)),
        ((2, 4, 12, 15), "num_output: 3 kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1 pad_h: 1", (2, 3, 6, 11)),
        ((2, 4, 13, 13), "num_output: 3 kernel_size: 3 kernel_size: 1 stride: 2 stride: 3", (2, 3, 6, 5)),
        ((1, 2, 9), "num_output: 2 kernel_size: 3 stride: 2", (1, 2, 4)),  # 1-d
    ],
)
def test_convolution_output_size(bottom, params, expected):
    assert conv("Convolution", bottom, params) == expected


@pytest.mark.parametrize(
    "bottom, params, expected",
    [
        ((1, 21, 5, 5), "num_output: 21 kernel_size: 4 stride: 2", (1, 21, 12, 12)),
        ((1, 21, 16, 16), "num_output: 21 kernel_size: 64 stride: 32", (1, 21, 544, 544)),
        ((1, 21, 7, 9), "num_output: 21 kernel_size: 16 stride: 8", (1, 21, 64, 80)),
        ((1, 4, 6, 6), "num_output: 6 kernel_size: 3 pad: 1 group: 2", (1, 6, 6, 6)),
        ((1, 2, 5, 5), "num_output: 2 kernel_size: 3 stride: 2 dilation: 2", (1, 2, 13, 13)),
    ],
)
def test_deconvolution_output_size(bottom, params, expected):
    assert conv("Deconvolution", bottom, params) == expected


def test_weight_shapes_follow_caffe_layout():
    layer, _ = make_layer('type: "Convolution" top: "y" convolution_param '
                          '{ num_output: 6 kernel_h: 3 kernel_w: 5 group: 2 }', [(1, 4, 9, 9)])
    assert [tuple(b.shape) for b in layer.blobs] == [(6, 2, 3, 5), (6,)]
    layer, _ = make_layer('type: "Deconvolution" top: "y" convolution_param '
                          '{ num_output: 6 kernel_size: 4 group: 2 bias_term: false }', [(1, 4, 9, 9)])
    assert [tuple(b.shape) for b in layer.blobs] == [(4, 3, 4, 4)]


@pytest.mark.parametrize(
    "params, message",
    [
        ("num_output: 5 kernel_size: 3 group: 2", "group 2"),
        ("kernel_size: 3", "num_output"),
        ("num_output: 2", "kernel_size"),
        ("num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
        ("num_output: 2 kernel_size: 3 kernel_size: 3 kernel_size: 3", "3 values"),
    ],
)
def test_convolution_refuses_bad_parameters(params, message):
    with pytest.raises(LayerError, match=f"layer 'c1' \\(type Convolution\\).*{message}"):
        make_layer(f'name: "c1" type: "Convolution" top: "y" convolution_param {{ {params} }}',
                   [(1, 4, 8, 8)])


def test_convolution_refuses_too_small_input_and_channel_change():
    with pytest.raises(LayerError, match="layer 'c1'.*too small"):
        make_layer('name: "c1" type: "Convolution" top: "y" convolution_param '
                   '{ num_output: 2 kernel_size: 7 }', [(1, 3, 5, 5)])
    layer, _ = make_layer('name: "c1" type: "Convolution" top: "y" convolution_param '
                          '{ num_output: 2 kernel_size: 1 }', [(1, 3, 5, 5)])
    with pytest.raises(LayerError, match="layer 'c1'.*3-channel"):
        layer.reshape([(1, 4, 5, 5)])


@pytest.mark.parametrize(
    "params, bottom, ref, expected",
    [
        ("axis: 2 offset: 19", (1, 21, 544, 544), (1, 3, 500, 500), (1, 21, 500, 500)),
        ("", (1, 4, 20, 24), (1, 4, 12, 15), (1, 4, 12, 15)),
        ("axis: 1 offset: 1 offset: 2 offset: 5", (1, 6, 20, 24), (1, 3, 12, 15), (1, 3, 12, 15)),
        ("axis: -1 offset: 3", (2, 3, 4, 10), (1, 1, 1, 5), (2, 3, 4, 5)),
    ],
)
def test_crop_shape(params, bottom, ref, expected):
    layer, tops = make_layer(f'type: "Crop" crop_param {{ {params} }}', [bottom, ref])
    assert tops == [expected]


def test_crop_offsets_select_the_window():
    layer, _ = make_layer('type: "Crop" crop_param { axis: 1 offset: 1 offset: 2 offset: 5 }',
                          [(1, 6, 20, 24), (1, 3, 12, 15)])
    x = torch.arange(6 * 20 * 24, dtype=torch.float32).reshape(1, 6, 20, 24)
    (y,) = layer.forward([x, torch.zeros(1, 3, 12, 15)])
    # first element is x[0, 1, 2, 5]; last is x[0, 3, 13, 19]
    assert y[0, 0, 0, 0].item() == 1 * 480 + 2 * 24 + 5
    assert y[0, -1, -1, -1].item() == 3 * 480 + 13 * 24 + 19


def test_crop_errors_name_the_layer():
    with pytest.raises(LayerError, match="layer 'score_crop' \\(type Crop\\).*axis 3"):
        make_layer('name: "score_crop" type: "Crop" crop_param { axis: 2 offset: 10 }',
                   [(1, 21, 30, 20), (1, 3, 20, 15)])
    with pytest.raises(LayerError, match="layer 'score_crop'.*2 offsets"):
        make_layer('name: "score_crop" type: "Crop" crop_param { axis: 1 offset: 1 offset: 2 }',
                   [(1, 21, 30, 20), (1, 3, 20, 15)])


def test_eltwise_shape_mismatch_names_the_layer():
    with pytest.raises(LayerError, match="layer 'fuse_pool4' \\(type Eltwise\\).*bottom 1"):
        make_layer('name: "fuse_pool4" type: "Eltwise"', [(1, 21, 34, 34), (1, 21, 35, 34)])
    with pytest.raises(LayerError, match="layer 'e'.*coeff"):
        make_layer('name: "e" type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 2 }',
                   [(1, 2), (1, 2)])


@pytest.mark.parametrize(
    "text, bottoms, expected",
    [
        ('type: "InnerProduct" inner_product_param { num_output: 9 }', [(2, 4, 3, 5)], [(2, 9)]),
        ('type: "InnerProduct" inner_product_param { num_output: 9 axis: 2 }', [(2, 4, 3, 5)],
         [(2, 4, 9)]),
        ('type: "Flatten"', [(2, 4, 3, 5)], [(2, 60)]),
        ('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', [(2, 4, 3, 5)], [(2, 12, 5)]),
        ('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 5 } }', [(2, 4, 3, 5)],
         [(2, 12, 5)]),
        ('type: "Reshape" reshape_param { shape { dim: 2 dim: 2 } axis: 1 num_axes: 1 }',
         [(2, 4, 3, 5)], [(2, 2, 2, 3, 5)]),
        ('type: "Reshape" reshape_param { shape { dim: -1 } axis: -3 }', [(2, 4, 3, 5)],
         [(2, 4, 15)]),
        ('type: "Concat" top: "y"', [(2, 3, 5, 6), (2, 1, 5, 6)], [(2, 4, 5, 6)]),
        ('type: "Concat" concat_param { axis: -1 }', [(2, 3, 5, 6), (2, 3, 5, 1)], [(2, 3, 5, 7)]),
        ('type: "Slice" top: "a" top: "b" top: "c" slice_param { slice_point: 1 slice_point: 4 }',
         [(2, 6, 3)], [(2, 1, 3), (2, 3, 3), (2, 2, 3)]),
        ('type: "Slice" top: "a" top: "b" slice_param { axis: 2 }', [(2, 6, 4)],
         [(2, 6, 2), (2, 6, 2)]),
        ('type: "Split" top: "a" top: "b"', [(2, 6, 4)], [(2, 6, 4), (2, 6, 4)]),
        ('type: "ArgMax" argmax_param { top_k: 3 }', [(2, 5, 4, 4)], [(2, 1, 3, 1)]),
        ('type: "ArgMax" argmax_param { out_max_val: true top_k: 2 }', [(2, 5)], [(2, 2, 2)]),
        ('type: "ArgMax" argmax_param { axis: 1 }', [(2, 5, 4, 4)], [(2, 1, 4, 4)]),
        ('type: "Softmax" top: "y"', [(2, 5, 4, 4)], [(2, 5, 4, 4)]),
        ('type: "SoftmaxWithLoss" top: "loss" top: "prob"', [(2, 5, 4, 4), (2, 1, 4, 4)],
         [(), (2, 5, 4, 4)]),
        ('type: "Accuracy" top: "acc" top: "per_class"', [(2, 5, 4, 4), (2, 1, 4, 4)],
         [(), (5,)]),
        ('type: "Scale" scale_param { axis: 0 num_axes: -1 }', [(2, 3, 4)], [(2, 3, 4)]),
        ('type: "Scale"', [(2, 3, 4, 4), (3, 4)], [(2, 3, 4, 4)]),
        ('type: "Silence"', [(2, 3)], []),
        ('type: "Input" top: "data" top: "label" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } '
         'shape { dim: 1 dim: 1 dim: 8 dim: 8 } }', [], [(1, 3, 8, 8), (1, 1, 8, 8)]),
    ],
)
def test_structural_layer_shapes(text, bottoms, expected):
    assert make_layer(text, bottoms)[1] == expected


def test_param_blob_shapes():
    ip, _ = make_layer('type: "InnerProduct" inner_product_param { num_output: 9 transpose: true }',
                       [(2, 4, 3, 5)])
    assert [tuple(b.shape) for b in ip.blobs] == [(60, 9), (9,)]
    scale, _ = make_layer('type: "Scale" scale_param { axis: 1 num_axes: 2 bias_term: true }',
                          [(2, 3, 4, 5)])
    assert [tuple(b.shape) for b in scale.blobs] == [(3, 4), (3, 4)]
    scale2, _ = make_layer('type: "Scale" scale_param { bias_term: true }', [(2, 3, 4, 5), (3,)])
    assert [tuple(b.shape) for b in scale2.blobs] == [(3,)]


@pytest.mark.parametrize(
    "text, bottoms, message",
    [
        ('type: "InnerProduct" inner_product_param { num_output: 3 }', [(2, 4)], None),
        ('type: "Reshape" reshape_param { shape { dim: 7 dim: -1 } }', [(2, 4, 3)], "infer"),
        ('type: "Reshape" reshape_param { shape { dim: -1 dim: -1 } }', [(2, 4, 3)], "one -1"),
        ('type: "Concat" top: "y"', [(2, 3, 5, 6), (2, 1, 5, 7)], "bottom 1"),
        ('type: "Slice" top: "a" top: "b"', [(2, 5, 4)], "equal"),
        ('type: "Scale"', [(2, 3, 4, 4), (4,)], "does not match"),
        ('type: "SoftmaxWithLoss" top: "loss"', [(2, 5, 4, 4), (2, 1, 4, 5)], "label count"),
        ('type: "Flatten" flatten_param { axis: 4 }', [(2, 3, 4, 4)], "axis 4"),
    ],
)
def test_shape_errors_name_the_layer(text, bottoms, message):
    if message is None:  # the InnerProduct case: valid at setup, refused on a new input size
        layer, _ = make_layer('name: "bad" ' + text, bottoms)
        with pytest.raises(LayerError, match="layer 'bad'.*expect 4"):
            layer.reshape([(2, 5)])
        return
    with pytest.raises(LayerError, match=f"layer 'bad' .*{message}"):
        make_layer('name: "bad" ' + text, bottoms)
