"""Layer values and gradients against hand-derived numbers and Caffe's rules
(tie breaking, normalisation, pooling windows) on tiny inputs."""
import math

import numpy as np
import pytest
import torch

from test_layers_shapes import TEST, TRAIN, make_layer
from torchcaffe.errors import LayerError

FLT_MAX = 3.4028234663852886e38


def run(text, *bottoms, phase=TEST):
    """Forward of a freshly built layer on these tensors."""
    layer, _ = make_layer(text, [tuple(b.shape) for b in bottoms], phase)
    return layer.forward(list(bottoms))


def grads(text, *bottoms, topdiff=None):
    """d(sum(top * topdiff)) / d(bottoms) for a one-top layer."""
    leaves = [b.clone().requires_grad_(True) for b in bottoms]
    (top,) = run(text, *leaves)
    top.backward(torch.ones_like(top) if topdiff is None else topdiff)
    return top.detach(), [leaf.grad for leaf in leaves]


def caffe_pool_reference(x, k, s, p, method, out_size):
    """Caffe's pooling loops, written out for one 2-d plane."""
    h, w = x.shape
    out = torch.empty(out_size)
    for oh in range(out_size[0]):
        for ow in range(out_size[1]):
            hs, ws = oh * s - p, ow * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            area = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            if method == "MAX":
                best = -FLT_MAX
                for i in range(hs, he):
                    for j in range(ws, we):
                        best = max(best, x[i, j].item())
                out[oh, ow] = best
            else:
                out[oh, ow] = x[hs:he, ws:we].sum() / area
    return out


# ---------------------------------------------------------------- pooling

@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize(
    "size, k, s, p",
    [(7, 3, 2, 1), (5, 2, 2, 1), (4, 3, 2, 1), (5, 3, 2, 2), (6, 4, 3, 3), (5, 1, 3, 0), (9, 3, 2, 0)],
)
def test_pooling_matches_caffe_windows(method, size, k, s, p):
    x = torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(size * 31 + k))
    (y,) = run(f'type: "Pooling" pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }}', x)
    expected = caffe_pool_reference(x[0, 0], k, s, p, method, tuple(y.shape[2:]))
    torch.testing.assert_close(y[0, 0], expected, rtol=1e-6, atol=1e-7)


def test_ave_pooling_divides_by_window_clipped_to_padded_input():
    # 4x4 ones, k3 s2 p1: 3 outputs per axis; the last window starts at 3 and
    # ends at the padded edge 5, so its area is 2x2 with one real pixel
    (y,) = run('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }',
               torch.ones(1, 1, 4, 4))
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 0, 0].item() == pytest.approx(4 / 9)
    assert y[0, 0, 2, 2].item() == pytest.approx(1 / 4)
    assert y[0, 0, 0, 2].item() == pytest.approx(2 / 6)


def test_max_pooling_gradient_goes_to_first_maximum_in_scan_order():
    x = torch.zeros(1, 1, 2, 4)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 5.0  # two equal maxima in the first window
    top, (g,) = grads('type: "Pooling" pooling_param { kernel_size: 2 stride: 2 }', x)
    assert top.flatten().tolist() == [5.0, 0.0]
    # window 1: row 0 is scanned first, so (0, 1) wins; window 2: all zero, (0, 2) wins
    expected = torch.zeros(1, 1, 2, 4)
    expected[0, 0, 0, 1] = expected[0, 0, 0, 2] = 1.0
    assert torch.equal(g, expected)


def test_max_pooling_mask_top_is_flat_index():
    x = torch.tensor([[[[1.0, 9.0, 2.0], [3.0, 4.0, 8.0], [7.0, 0.0, 6.0]]]])
    top, mask = run('type: "Pooling" top: "y" top: "mask" pooling_param { kernel_size: 2 stride: 1 }', x)
    assert top.flatten().tolist() == [9.0, 9.0, 7.0, 8.0]
    assert mask.flatten().tolist() == [1.0, 1.0, 6.0, 5.0]


def test_padded_fallback_mask_and_gradient():
    # pad 2 > kernel 3 // 2 takes the explicit-padding path
    x = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    top, mask = run('type: "Pooling" top: "y" top: "mask" '
                    'pooling_param { kernel_size: 3 stride: 2 pad: 2 }', x)
    # window (0, 0) covers only pixel (0, 0); window (3, 3) covers rows/cols 4..4
    assert top[0, 0, 0, 0].item() == 0.0 and mask[0, 0, 0, 0].item() == 0.0
    assert top[0, 0, 3, 3].item() == 24.0 and mask[0, 0, 3, 3].item() == 24.0
    _, (g,) = grads('type: "Pooling" pooling_param { kernel_size: 3 stride: 2 pad: 2 }', x)
    assert g.sum().item() == 16.0  # one unit per output window


# ---------------------------------------------------------------- eltwise

def test_eltwise_max_tie_rule():
    a = torch.tensor([1.0, 2.0, 3.0, 3.0])
    b = torch.tensor([2.0, 2.0, 1.0, 3.0])
    c = torch.tensor([0.0, 2.0, 3.0, 4.0])
    # first pair: a wins only when strictly greater, so ties go to b;
    # later bottoms win only when strictly greater
    top, (ga, gb, gc) = grads('type: "Eltwise" eltwise_param { operation: MAX }', a, b, c)
    assert top.tolist() == [2.0, 2.0, 3.0, 4.0]
    assert ga.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert gb.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert gc.tolist() == [0.0, 0.0, 0.0, 1.0]


def test_eltwise_sum_coeff_and_prod():
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([4.0, 3.0])
    top, (ga, gb) = grads('type: "Eltwise" eltwise_param { coeff: 0.5 coeff: -2 }', a, b)
    assert top.tolist() == [0.5 - 8.0, -1.0 - 6.0]
    assert ga.tolist() == [0.5, 0.5] and gb.tolist() == [-2.0, -2.0]
    top, (ga, gb) = grads('type: "Eltwise" eltwise_param { operation: PROD }', a, b)
    assert top.tolist() == [4.0, -6.0]
    assert ga.tolist() == [4.0, 3.0] and gb.tolist() == [1.0, -2.0]


# ---------------------------------------------------------------- neurons

def test_relu_negative_slope_and_gradient_at_zero():
    x = torch.tensor([-2.0, 0.0, 3.0])
    top, (g,) = grads('type: "ReLU" relu_param { negative_slope: 0.1 }', x)
    torch.testing.assert_close(top, torch.tensor([-0.2, 0.0, 3.0]))
    torch.testing.assert_close(g, torch.tensor([0.1, 0.1, 1.0]))  # x <= 0 takes the slope
    top, (g,) = grads('type: "ReLU"', x)
    assert top.tolist() == [0.0, 0.0, 3.0] and g.tolist() == [0.0, 0.0, 1.0]


def test_sigmoid_and_tanh_values():
    x = torch.tensor([0.0, math.log(3.0)])
    (y,) = run('type: "Sigmoid"', x)
    torch.testing.assert_close(y, torch.tensor([0.5, 0.75]))
    (y,) = run('type: "TanH"', x)
    torch.testing.assert_close(y, torch.tensor([0.0, 0.8]))


def test_dropout_train_scales_kept_units_and_test_is_identity():
    torch.manual_seed(0)
    x = torch.full((100, 1000), 3.0)
    (y,) = run('type: "Dropout" dropout_param { dropout_ratio: 0.8 }', x, phase=TRAIN)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.2) < 0.01
    torch.testing.assert_close(y[kept], torch.full((int(kept.sum()),), 15.0))  # 3 / (1 - 0.8)
    (y,) = run('type: "Dropout" dropout_param { dropout_ratio: 0.8 }', x, phase=TEST)
    assert torch.equal(y, x)


# ---------------------------------------------------------------- loss

LOSS = 'name: "loss" type: "SoftmaxWithLoss" top: "loss" '


def loss_and_grad(params, scores, labels, loss_weight=1.0):
    leaf = scores.clone().requires_grad_(True)
    layer, _ = make_layer(LOSS + params, [tuple(scores.shape), tuple(labels.shape)])
    (loss,) = layer.forward([leaf, labels])
    loss.backward(torch.tensor(loss_weight))
    return loss.item(), leaf.grad


def two_pixel_case():
    # two classes; p(class 1) = 3/4 at pixel 0, p = 1/2 at pixel 1, pixel 2 ignored
    scores = torch.tensor([[[0.0, 0.0, 5.0], [math.log(3.0), 0.0, 1.0]]])  # (1, 2, 3)
    labels = torch.tensor([[1.0, 0.0, 255.0]])
    return scores, labels


@pytest.mark.parametrize(
    "params, normalizer",
    [
        ("loss_param { ignore_label: 255 }", 2.0),                                  # VALID
        ("loss_param { ignore_label: 255 normalization: FULL }", 3.0),
        ("loss_param { ignore_label: 255 normalization: BATCH_SIZE }", 1.0),
        ("loss_param { ignore_label: 255 normalization: NONE }", 1.0),
        ("loss_param { ignore_label: 255 normalize: false }", 1.0),                 # BATCH_SIZE
        ("loss_param { ignore_label: 255 normalize: true }", 2.0),                  # VALID
        ("loss_param { ignore_label: 255 normalize: false normalization: FULL }", 3.0),
    ],
)
def test_softmax_loss_normalization(params, normalizer):
    scores, labels = two_pixel_case()
    loss, grad = loss_and_grad(params, scores, labels, loss_weight=2.0)
    assert loss == pytest.approx((-math.log(0.75) - math.log(0.5)) / normalizer, rel=1e-6)
    # Caffe: (p - onehot) at counted pixels, zero at ignored ones, x weight / normalizer
    expected = torch.tensor([[[0.25, -0.5, 0.0], [-0.25, 0.5, 0.0]]]) * 2.0 / normalizer
    torch.testing.assert_close(grad, expected)


def test_softmax_loss_valid_normalizer_is_at_least_one():
    scores = torch.zeros(1, 3, 2)
    loss, grad = loss_and_grad("loss_param { ignore_label: 7 }", scores, torch.full((1, 2), 7.0))
    assert loss == 0.0 and torch.count_nonzero(grad) == 0


def test_softmax_loss_clamps_probability_at_flt_min():
    scores = torch.tensor([[[0.0], [200.0]]])  # p(class 0) underflows to 0
    loss, _ = loss_and_grad("", scores, torch.tensor([[0.0]]))
    assert loss == pytest.approx(-math.log(1.1754943508222875e-38), rel=1e-6)  # 87.3365


def test_softmax_loss_sums_like_caffe_cpu_loop():
    # 4096 pixels, two equal logits: every term is -log(0.5). Caffe adds them
    # one by one into a float32 accumulator, which drifts from 4096 ln 2 by
    # 2e-5 relative; the reference numbers carry that drift.
    scores = torch.zeros(1, 2, 64, 64)
    labels = torch.zeros(1, 1, 64, 64)
    term = np.float32(-np.log(np.float32(0.5)))
    expected = np.float32(0)
    for _ in range(64 * 64):
        expected = np.float32(expected + term)
    loss, _ = loss_and_grad("loss_param { normalization: NONE }", scores, labels)
    assert loss == float(expected)
    assert abs(float(expected) - 4096 * math.log(2)) > 0.05


def test_softmax_loss_second_top_and_label_errors():
    scores, labels = two_pixel_case()
    layer, tops = make_layer(LOSS + 'top: "prob" loss_param { ignore_label: 255 }',
                             [tuple(scores.shape), tuple(labels.shape)])
    assert tops == [(), (1, 2, 3)]
    loss, prob = layer.forward([scores, labels])
    torch.testing.assert_close(prob[0, 1, :2], torch.tensor([0.75, 0.5]))
    with pytest.raises(LayerError, match="layer 'loss' .*label 2"):
        layer.forward([scores, torch.tensor([[1.0, 2.0, 0.0]])])


def test_accuracy_top_k_ties_ignore_and_per_class():
    scores = torch.tensor([
        [0.1, 0.6, 0.3],   # label 1: rank 0
        [0.5, 0.5, 0.0],   # label 0: tie with class 1 counts against it -> rank 1
        [0.2, 0.3, 0.5],   # label 0: rank 2
        [0.9, 0.0, 0.1],   # ignored
    ])
    labels = torch.tensor([1.0, 0.0, 0.0, -1.0])
    text = 'type: "Accuracy" top: "acc" top: "per_class" accuracy_param { ignore_label: -1 %s }'
    acc, per_class = run(text % "", scores, labels)
    assert acc.item() == pytest.approx(1 / 3)
    torch.testing.assert_close(per_class, torch.tensor([0.0, 1.0, 0.0]))
    acc, per_class = run(text % "top_k: 2", scores, labels)
    assert acc.item() == pytest.approx(2 / 3)
    torch.testing.assert_close(per_class, torch.tensor([0.5, 1.0, 0.0]))


def test_softmax_over_axis():
    x = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    (y,) = run('type: "Softmax" softmax_param { axis: 0 }', x)
    torch.testing.assert_close(y, torch.tensor([[0.5, 0.75], [0.5, 0.25]]))


# ---------------------------------------------------------------- others

def test_argmax_ties_take_larger_index_and_values():
    x = torch.tensor([[1.0, 5.0, 5.0, 2.0]])
    (y,) = run('type: "ArgMax" argmax_param { top_k: 3 out_max_val: true }', x)
    assert y.tolist() == [[[2.0, 1.0, 3.0], [5.0, 5.0, 2.0]]]
    (y,) = run('type: "ArgMax" argmax_param { axis: 1 }', x)
    assert y.tolist() == [[2.0]]


def test_scale_defaults_two_bottom_form_and_bias():
    x = torch.arange(12, dtype=torch.float32).reshape(1, 3, 2, 2)
    layer, _ = make_layer('type: "Scale" scale_param { bias_term: true }', [(1, 3, 2, 2)])
    assert layer.blobs[0].tolist() == [1.0, 1.0, 1.0] and layer.blobs[1].tolist() == [0.0, 0.0, 0.0]
    s = torch.tensor([2.0, 0.0, -1.0])
    top, (gx, gs) = grads('type: "Scale"', x, s)
    torch.testing.assert_close(top, x * s.view(1, 3, 1, 1))
    torch.testing.assert_close(gs, torch.tensor([0 + 1 + 2 + 3, 4 + 5 + 6 + 7, 8 + 9 + 10 + 11.0]))
    layer.blobs[1] = torch.tensor([1.0, 2.0, 3.0])
    (y,) = layer.forward([x])
    torch.testing.assert_close(y, x + torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1))


def test_lrn_across_channels_value():
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    (y,) = run('type: "LRN" lrn_param { local_size: 3 alpha: 0.3 beta: 0.75 k: 2 }', x)
    # channel 0 sees channels 0..1: scale = 2 + 0.3 / 3 * (1 + 4)
    assert y[0, 0, 0, 0].item() == pytest.approx(1.0 * (2 + 0.1 * 5) ** -0.75, rel=1e-6)
    assert y[0, 1, 0, 0].item() == pytest.approx(2.0 * (2 + 0.1 * 14) ** -0.75, rel=1e-6)


def test_lrn_within_channel_value():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 2.0
    (y,) = run('type: "LRN" lrn_param { local_size: 3 alpha: 0.9 norm_region: WITHIN_CHANNEL }', x)
    # 1 + alpha * (sum of squares over the 3x3 window) / 9, k not used
    assert y[0, 0, 1, 1].item() == pytest.approx(2.0 * (1 + 0.9 * 4 / 9) ** -0.75, rel=1e-6)


def test_innerproduct_and_convolution_defaults_are_zero():
    x = torch.randn(2, 3, 5, 5)
    (y,) = run('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 }', x)
    assert torch.count_nonzero(y) == 0
    (y,) = run('type: "InnerProduct" inner_product_param { num_output: 4 }', x)
    assert y.shape == (2, 4) and torch.count_nonzero(y) == 0


def test_innerproduct_transpose_value():
    layer, _ = make_layer('type: "InnerProduct" inner_product_param { num_output: 2 transpose: true }',
                          [(1, 3)])
    layer.blobs = [torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 3.0]]), torch.tensor([0.5, -0.5])]
    (y,) = layer.forward([torch.tensor([[1.0, 2.0, 3.0]])])
    assert y.tolist() == [[7.5, 10.5]]


def test_slice_concat_split_round_trip():
    x = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    a, b, c = run('type: "Slice" top: "a" top: "b" top: "c" slice_param { slice_point: 1 slice_point: 4 }', x)
    assert a.tolist() == [[0.0], [6.0]] and c.tolist() == [[4.0, 5.0], [10.0, 11.0]]
    (y,) = run('type: "Concat" top: "y"', a, b, c)
    assert torch.equal(y, x)
    leaf = x.clone().requires_grad_(True)
    s1, s2 = run('type: "Split" top: "s1" top: "s2"', leaf)
    (2 * s1 + 3 * s2).sum().backward()
    assert torch.equal(leaf.grad, torch.full_like(x, 5.0))


# ---------------------------------------------------------------- deconvolution

UPSAMPLE = ('type: "Deconvolution" convolution_param { num_output: 3 kernel_size: 4 stride: 2 '
            'bias_term: false weight_filler { type: "bilinear" } }')


def diagonal_bilinear(layer):
    """Keep the bilinear kernel only on the channel diagonal (FCN's surgery)."""
    weight = layer.blobs[0]
    eye = torch.eye(weight.shape[0]).view(weight.shape[0], weight.shape[0], 1, 1)
    layer.blobs[0] = weight * eye


def test_bilinear_upsampling_of_constant_is_constant_inside():
    layer, _ = make_layer(UPSAMPLE, [(1, 3, 5, 5)])
    diagonal_bilinear(layer)
    x = torch.stack([torch.full((5, 5), v) for v in (1.0, 2.0, -3.0)]).unsqueeze(0)
    (y,) = layer.forward([x])
    assert y.shape == (1, 3, 12, 12)
    # away from the border each output pixel gets weights summing to 1
    torch.testing.assert_close(y[0, :, 2:10, 2:10], x[0, :, :1, :1].expand(3, 8, 8))


def test_diagonal_deconvolution_fast_path_equals_full_transposed_convolution():
    layer, _ = make_layer(UPSAMPLE, [(2, 3, 6, 7)])
    diagonal_bilinear(layer)
    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(3))
    expected = torch.nn.functional.conv_transpose2d(x, layer.blobs[0], stride=2)
    assert layer._depthwise_weight(layer.blobs[0]) is not None
    (y,) = layer.forward([x])
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)
    # an off-diagonal weight turns the fast path off
    layer.blobs[0][0, 1, 0, 0] = 0.5
    assert layer._depthwise_weight(layer.blobs[0]) is None
    (y,) = layer.forward([x])
    torch.testing.assert_close(y, torch.nn.functional.conv_transpose2d(x, layer.blobs[0], stride=2))


def test_deconvolution_weight_gradient_covers_off_diagonal_entries():
    layer, _ = make_layer(UPSAMPLE, [(1, 3, 4, 4)])
    diagonal_bilinear(layer)
    layer.blobs[0].requires_grad_(True)
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    (y,) = layer.forward([x])
    y.sum().backward()
    # d/dw[i, j] = sum over input pixels of x[i] times window ones: nonzero off the diagonal
    assert layer.blobs[0].grad[0, 1].abs().sum() > 0
