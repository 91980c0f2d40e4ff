"""The structure, index, recurrent and stochastic-pooling layers beyond what
the golden cases cover: hand-derived values, Caffe's edge behaviour (nothing
selected, stored blobs, state carried across forwards) and the errors for
parameters and inputs Caffe refuses."""
import math

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import torchcaffe
from test_layers_shapes import TEST, TRAIN, make_layer
from torchcaffe.errors import LayerError
from torchcaffe.proto import caffe_pb2


def net_from(text: str, phase: int = TEST) -> torchcaffe.Net:
    return torchcaffe.Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


def inputs(**shapes) -> str:
    return "".join(
        f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ '
        + " ".join(f"dim: {d}" for d in shape) + " } } }\n"
        for name, shape in shapes.items())


# ---------------------------------------------------------------- registry

# BVLC Caffe's layer registry (every REGISTER_LAYER_CLASS / _CREATOR name in
# src/caffe/layers, Python with WITH_PYTHON_LAYER), written out by hand
BVLC_LAYER_TYPES = """
AbsVal Accuracy ArgMax BNLL BatchNorm BatchReindex Bias Clip Concat ContrastiveLoss
Convolution Crop Data Deconvolution Dropout DummyData ELU Eltwise Embed EuclideanLoss Exp
Filter Flatten HDF5Data HDF5Output HingeLoss Im2col ImageData InfogainLoss InnerProduct Input
LRN LSTM LSTMUnit Log MVN MemoryData MultinomialLogisticLoss PReLU Parameter Pooling Power
Python RNN ReLU Reduction Reshape SPP Scale Sigmoid SigmoidCrossEntropyLoss Silence Slice
Softmax SoftmaxWithLoss Split Swish TanH Threshold Tile WindowData
""".split()


def test_layer_type_list_is_bvlcs_registry_in_its_order():
    # LayerRegistry keeps a std::map<string, ...>: byte order, upper case first
    assert len(BVLC_LAYER_TYPES) == 61
    assert torchcaffe.layer_type_list() == sorted(BVLC_LAYER_TYPES)


# ---------------------------------------------------------------- index layers

@pytest.mark.parametrize("index, message", [(7.0, "index 7 is not an integer in \\[0, 7\\)"),
                                            (-1.0, "index -1 is not"),
                                            (2.5, "index 2.5 is not")])
def test_embed_refuses_bad_indices(index, message):
    net = net_from(inputs(idx=[3]) + 'layer { name: "emb" type: "Embed" bottom: "idx" top: "y" '
                   'embed_param { num_output: 2 input_dim: 7 } }')
    net.blobs["idx"].data[...] = [0, index, 1]
    with pytest.raises(LayerError, match=f"layer 'emb' \\(type Embed\\): {message}"):
        net.forward()


def test_embed_sums_the_gradient_of_repeated_indices():
    net = net_from("force_backward: true\n" + inputs(idx=[4]) +
                   'layer { name: "emb" type: "Embed" bottom: "idx" top: "y" '
                   'embed_param { num_output: 2 input_dim: 3 bias_term: false } }')
    net.params["emb"][0].data[...] = [[1, 2], [3, 4], [5, 6]]
    net.blobs["idx"].data[...] = [2, 0, 2, 2]
    net.forward()
    np.testing.assert_array_equal(net.blobs["y"].data, [[5, 6], [1, 2], [5, 6], [5, 6]])
    net.blobs["y"].diff[...] = [[1, 10], [2, 20], [3, 30], [4, 40]]
    net.backward()
    np.testing.assert_array_equal(net.params["emb"][0].diff, [[2, 20], [0, 0], [8, 80]])
    np.testing.assert_array_equal(net.blobs["idx"].diff, 0)  # indices take no gradient


@pytest.mark.parametrize("params, message", [("num_output: 2", "input_dim"),
                                             ("input_dim: 2", "num_output")])
def test_embed_needs_its_sizes(params, message):
    with pytest.raises(LayerError, match=f"layer 'e' .*{message}"):
        make_layer(f'name: "e" type: "Embed" embed_param {{ {params} }}', [(3,)])


FILTER_NET = inputs(x=[4, 3], sel=[4, 1]) + (
    'layer { name: "f" type: "Filter" bottom: "x" bottom: "sel" top: "y" }\n'
    'layer { name: "s" type: "Reduction" bottom: "y" top: "total" }\n')


def test_filter_keeps_selected_items_and_gives_an_empty_batch_when_none_is():
    net = net_from(FILTER_NET)
    assert net.blobs["y"].shape == (4, 3)  # Caffe's first reshape: the full batch
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    net.blobs["x"].data[...] = x
    net.blobs["sel"].data[...] = [[0], [1], [0], [1]]
    net.forward()
    np.testing.assert_array_equal(net.blobs["y"].data, x[[1, 3]])
    net.blobs["sel"].data[...] = 0
    net.forward()
    assert net.blobs["y"].shape == (0, 3)
    assert float(net.blobs["total"].data) == 0.0
    net.blobs["sel"].data[...] = [[1], [1], [1], [0]]
    net.forward()
    np.testing.assert_array_equal(net.blobs["y"].data, x[:3])


def test_filter_routes_gradients_to_selected_items_only():
    net = net_from("force_backward: true\n" + FILTER_NET)
    net.blobs["x"].data[...] = 1
    net.blobs["sel"].data[...] = [[2], [0], [0], [-1]]  # any nonzero value selects
    net.forward()
    net.blobs["total"].diff[...] = 3
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, [[3] * 3, [0] * 3, [0] * 3, [3] * 3])


@pytest.mark.parametrize("shapes, tops, message", [
    ([(4, 3), (4, 2)], 1, "singleton axes"),
    ([(4, 3), (5,)], 1, "does not have the selector's 5 items"),
    ([(4, 3), (4, 2), (4,)], 1, "one top per data bottom"),
])
def test_filter_refuses_mismatched_bottoms(shapes, tops, message):
    text = 'name: "f" type: "Filter" ' + " ".join(f'top: "t{i}"' for i in range(tops))
    with pytest.raises(LayerError, match=f"layer 'f' .*{message}"):
        make_layer(text, shapes)


def test_batch_reindex_refuses_indices_outside_the_batch():
    net = net_from(inputs(x=[2, 3], idx=[3]) +
                   'layer { name: "r" type: "BatchReindex" bottom: "x" bottom: "idx" top: "y" }')
    net.blobs["idx"].data[...] = [1, 0, 2]
    with pytest.raises(LayerError, match="layer 'r' .*index 2 is not an integer in \\[0, 2\\)"):
        net.forward()
    with pytest.raises(LayerError, match="layer 'r' .*1 axis"):
        make_layer('name: "r" type: "BatchReindex"', [(2, 3), (3, 1)])


# ---------------------------------------------------------------- structure layers

def test_tile_needs_positive_tiles():
    for params in ("axis: 1", "tiles: 0"):
        with pytest.raises(LayerError, match="layer 't' .*tiles"):
            make_layer(f'name: "t" type: "Tile" tile_param {{ {params} }}', [(2, 3)])


def test_reduction_mean_and_scalar_top():
    layer, tops = make_layer('type: "Reduction" reduction_param { operation: MEAN axis: 1 coeff: 3 }',
                             [(2, 2, 2)])
    assert tops == [(2,)]
    x = torch.tensor([[[1., 2.], [3., 4.]], [[-1., 0.], [0., 5.]]])
    np.testing.assert_allclose(layer.forward([x])[0], [3 * 2.5, 3 * 1.0])
    assert make_layer('type: "Reduction"', [(2, 3)])[1] == [()]


def test_parameter_starts_at_zero_or_at_its_stored_blob():
    net = net_from('layer { name: "p" type: "Parameter" top: "p" '
                   'parameter_param { shape { dim: 2 dim: 2 } } }')
    np.testing.assert_array_equal(net.params["p"][0].data, np.zeros((2, 2)))
    stored = net_from('layer { name: "p" type: "Parameter" top: "p" '
                      'parameter_param { shape { dim: 2 dim: 1 } } '
                      'blobs { shape { dim: 2 dim: 1 } data: 1.5 data: -2 } }')
    stored.forward()
    np.testing.assert_array_equal(stored.blobs["p"].data, [[1.5], [-2]])
    with pytest.raises(LayerError, match="layer 'p' .*stored blob has shape \\[3\\]"):
        make_layer('name: "p" type: "Parameter" parameter_param { shape { dim: 2 } } '
                   'blobs { shape { dim: 3 } data: 1 data: 2 data: 3 }', [])


def test_im2col_one_spatial_axis():
    layer, tops = make_layer('type: "Im2col" convolution_param { kernel_size: 2 pad: 1 stride: 2 }',
                             [(1, 2, 4)])
    assert tops == [(1, 4, 3)]
    x = torch.tensor([[[1., 2., 3., 4.], [5., 6., 7., 8.]]])
    # rows: (channel 0, offset 0), (0, 1), (1, 0), (1, 1); columns start at -1, 1, 3
    expected = [[0, 2, 4], [1, 3, 0], [0, 6, 8], [5, 7, 0]]
    np.testing.assert_array_equal(layer.forward([x])[0][0], expected)


def test_spp_height_one_is_a_global_pool_and_levels_follow_the_input_size():
    layer, tops = make_layer('type: "SPP" spp_param { pyramid_height: 1 }', [(2, 3, 5, 7)])
    assert tops == [(2, 3, 1, 1)]
    x = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(layer.forward([x])[0], x.amax(dim=(2, 3), keepdim=True))
    layer, tops = make_layer('type: "SPP" spp_param { pyramid_height: 3 pool: AVE }', [(1, 2, 8, 8)])
    assert tops == [(1, 2 * 21)]
    assert layer.reshape([(1, 2, 13, 9)]) == [(1, 2 * 21)]
    # 4 bins: 13 rows, kernel 4, pad (16 - 13 + 1) // 2 = 2; 9 columns, kernel 3, pad 2
    assert layer.levels[2].kernel == (4, 3) and layer.levels[2].pad == (2, 2)


def test_spp_refuses_bad_pyramids():
    with pytest.raises(LayerError, match="layer 's' .*4 axes"):
        make_layer('name: "s" type: "SPP" spp_param { pyramid_height: 2 }', [(1, 2, 8)])
    # 2 rows in 4 bins need a pad of 1 for a kernel of 1, which pooling refuses
    with pytest.raises(LayerError, match="layer 's' .*pyramid level 2 .*pad"):
        make_layer('name: "s" type: "SPP" spp_param { pyramid_height: 3 }', [(1, 2, 2, 8)])


# ---------------------------------------------------------------- Eltwise PROD gradients

def test_eltwise_unstable_prod_gradient_divides_the_top():
    a = torch.tensor([2.0, 0.0, -3.0], requires_grad=True)
    b = torch.tensor([5.0, 4.0, 0.5], requires_grad=True)
    layer, _ = make_layer('type: "Eltwise" eltwise_param { operation: PROD stable_prod_grad: false }',
                          [(3,), (3,)])
    (top,) = layer.forward([a, b])
    top.backward(torch.tensor([1.0, 1.0, 2.0]))
    # top * topdiff / bottom: 0 / 0 where a bottom is 0, as in Caffe
    np.testing.assert_array_equal(a.grad, [5.0, np.nan, 1.0])
    np.testing.assert_array_equal(b.grad, [2.0, 0.0, -6.0])


# ---------------------------------------------------------------- recurrent layers

def lstm_unit_reference(c_prev, gates, cont, grad_c, grad_h):
    """Caffe's LSTMUnit forward and backward loops, element by element."""
    hidden = c_prev.shape[-1]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    c = np.zeros_like(c_prev)
    h = np.zeros_like(c_prev)
    d_prev = np.zeros_like(c_prev)
    d_gates = np.zeros_like(gates)
    for n in range(c_prev.shape[1]):
        for d in range(hidden):
            x = gates[0, n]
            i, o, g = sig(x[d]), sig(x[2 * hidden + d]), math.tanh(x[3 * hidden + d])
            f = 0.0 if cont[0, n] == 0 else cont[0, n] * sig(x[hidden + d])
            c[0, n, d] = f * c_prev[0, n, d] + i * g
            tanh_c = math.tanh(c[0, n, d])
            h[0, n, d] = o * tanh_c
            term = grad_c[0, n, d] + grad_h[0, n, d] * o * (1 - tanh_c ** 2)
            d_prev[0, n, d] = term * f
            d_gates[0, n, d] = term * g * i * (1 - i)
            d_gates[0, n, hidden + d] = term * c_prev[0, n, d] * f * (1 - f)
            d_gates[0, n, 2 * hidden + d] = grad_h[0, n, d] * tanh_c * o * (1 - o)
            d_gates[0, n, 3 * hidden + d] = term * i * (1 - g * g)
    return c, h, d_prev, d_gates


def test_lstm_unit_uses_caffes_gradient_for_fractional_cont():
    rng = np.random.default_rng(3)
    c_prev = rng.standard_normal((1, 3, 2)).astype(np.float32)
    gates = rng.standard_normal((1, 3, 8)).astype(np.float32)
    cont = np.array([[0.0, 0.5, 1.0]], np.float32)
    grad_c = rng.standard_normal((1, 3, 2)).astype(np.float32)
    grad_h = rng.standard_normal((1, 3, 2)).astype(np.float32)
    layer, _ = make_layer('type: "LSTMUnit" top: "c" top: "h"', [(1, 3, 2), (1, 3, 8), (1, 3)])
    leaves = [torch.from_numpy(a).requires_grad_() for a in (c_prev, gates)]
    c, h = layer.forward(leaves + [torch.from_numpy(cont)])
    torch.autograd.backward([c, h], [torch.from_numpy(grad_c), torch.from_numpy(grad_h)])
    expected = lstm_unit_reference(c_prev, gates, cont, grad_c, grad_h)
    for got, want in zip((c, h, leaves[0].grad, leaves[1].grad), expected):
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-5, atol=1e-6)


def recurrent_net(kind: str, timesteps: int) -> torchcaffe.Net:
    return net_from(inputs(x=[timesteps, 2, 3], cont=[timesteps, 2]) + (
        f'layer {{ name: "r" type: "{kind}" bottom: "x" bottom: "cont" top: "y" '
        'recurrent_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } '
        'bias_filler { type: "constant" value: 0.1 } } }'))


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_recurrent_state_carries_over_to_the_next_forward(kind):
    """Two forwards of 2 steps continue the sequence as one forward of 4."""
    torchcaffe.set_random_seed(5)
    long, short = recurrent_net(kind, 4), recurrent_net(kind, 2)
    for mine, theirs in zip(short.params["r"], long.params["r"]):
        mine.data[...] = theirs.data
    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype(np.float32)
    cont = np.array([[0, 0], [1, 1], [1, 0], [1, 1]], np.float32)
    long.forward(x=x, cont=cont)
    halves = [short.forward(x=x[i:i + 2], cont=cont[i:i + 2])["y"].copy() for i in (0, 2)]
    np.testing.assert_allclose(np.concatenate(halves), long.blobs["y"].data, rtol=1e-6, atol=1e-6)


def test_recurrent_layers_check_their_bottoms():
    text = ('name: "r" type: "LSTM" bottom: "x" bottom: "cont" '
            'recurrent_param { num_output: 4 }')
    with pytest.raises(LayerError, match="layer 'r' .*cont of shape \\[3, 3\\]"):
        make_layer(text, [(3, 2, 5), (3, 3)])
    layer, _ = make_layer(text, [(3, 2, 5), (3, 2)])
    with pytest.raises(LayerError, match="layer 'r' .*keep the 3 timesteps"):
        layer.reshape([(4, 2, 5), (4, 2)])
    with pytest.raises(LayerError, match="layer 'r' .*num_output"):
        make_layer('name: "r" type: "RNN"', [(3, 2, 5), (3, 2)])
    with pytest.raises(LayerError, match="layer 'r' .*initial c of shape"):
        make_layer('name: "r" type: "LSTM" top: "y" top: "hT" top: "cT" '
                   'recurrent_param { num_output: 4 expose_hidden: true }',
                   [(3, 2, 5), (3, 2), (1, 2, 4), (1, 2, 3)])


# ---------------------------------------------------------------- stochastic pooling

STOCHASTIC = 'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }'


def test_stochastic_pooling_test_phase_weights_by_value():
    x = torch.tensor([[[[1., 2., 0.], [3., 4., 5.], [0., 0., 6.]]]])
    layer, tops = make_layer(STOCHASTIC, [x.shape], TEST)
    assert tops == [(1, 1, 2, 2)]  # ceil rounding: the last windows are clipped
    (y,) = layer.forward([x])
    expected = [[(1 + 4 + 9 + 16) / 10, (0 + 25) / 5], [0.0, 36 / 6]]  # all-zero window gives 0
    np.testing.assert_allclose(y[0, 0], expected, rtol=1e-6)


def test_stochastic_pooling_train_samples_in_proportion_and_routes_the_gradient():
    values = torch.tensor([1., 2., 3., 4.])
    channels = 20000
    x = values.reshape(1, 1, 2, 2).expand(1, channels, 2, 2).contiguous().requires_grad_()
    layer, _ = make_layer(STOCHASTIC, [x.shape], TRAIN)
    torch.manual_seed(0)
    (y,) = layer.forward([x])
    picks = y.detach().reshape(-1)
    for value in values:
        p = float(value / values.sum())
        freq = float((picks == value).float().mean())
        assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / channels), (float(value), freq, p)
    assert bool(torch.isin(picks, values).all())
    y.backward(torch.full_like(y, 2.0))
    chosen = (x.detach() == y.detach()).float()  # values in a window are distinct
    np.testing.assert_array_equal(x.grad, 2.0 * chosen)
    # the clipped last window of a 3-wide row only ever picks its one element
    layer, _ = make_layer(STOCHASTIC, [(1, 1, 2, 3)], TRAIN)
    (y,) = layer.forward([torch.tensor([[[[1., 1., 7.], [1., 1., 0.]]]])])
    assert float(y[0, 0, 0, 1]) == 7.0
