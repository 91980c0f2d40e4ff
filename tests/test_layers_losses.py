"""The loss layers beyond SoftmaxWithLoss on tiny hand-computed examples:
Caffe's normalization modes, its probability floor (1e-20) and the
gradients it forms there, the margins of Hinge and Contrastive, H read from
a binaryproto file, which bottoms take a diff, and the parameter and shape
errors."""
import math

import numpy as np
import pytest
import torch

import torchcaffe as caffe
from test_layers_neuron_norm import input_layer, net_from
from test_layers_shapes import make_layer
from torchcaffe.errors import LayerError
from torchcaffe.proto import caffe_pb2

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


def loss_and_grads(text, *bottoms, loss_weight=1.0, grad_of=(0,)):
    """Loss value and the gradient of loss_weight * loss for bottoms `grad_of`."""
    leaves = [b.clone().requires_grad_(i in grad_of) for i, b in enumerate(bottoms)]
    layer, tops = make_layer(text, [tuple(b.shape) for b in bottoms])
    assert tops[0] == ()
    (loss,) = layer.forward(leaves)
    loss.backward(torch.tensor(loss_weight))
    return loss.item(), [leaves[i].grad for i in grad_of]


# ---------------------------------------------------------------- SigmoidCrossEntropyLoss

SIGMOID_XENT = 'name: "loss" type: "SigmoidCrossEntropyLoss" '


def sigmoid_case():
    # terms: x=0,t=1: ln 2; x=ln 3,t=0: -log(1/4) = ln 4; t=-1 ignored; x=0,t=0: ln 2
    x = torch.tensor([[0.0, LN3], [5.0, 0.0]])
    t = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    return x, t


@pytest.mark.parametrize("params, normalizer", [
    ("", 2.0),                                          # no field: BATCH_SIZE (N = 2)
    ("normalization: VALID", 3.0),
    ("normalization: FULL", 4.0),
    ("normalization: BATCH_SIZE", 2.0),
    ("normalization: NONE", 1.0),
    ("normalize: true", 3.0),                           # legacy true: VALID
    ("normalize: false", 2.0),                          # legacy false: BATCH_SIZE
    ("normalize: true normalization: NONE", 1.0),       # normalization wins
])
def test_sigmoid_cross_entropy_normalization(params, normalizer):
    x, t = sigmoid_case()
    loss, (gx,) = loss_and_grads(SIGMOID_XENT + f"loss_param {{ ignore_label: -1 {params} }}",
                                 x, t, loss_weight=3.0)
    assert loss == pytest.approx((LN2 + LN4 + LN2) / normalizer, rel=1e-6)
    # (sigmoid(x) - t) where counted, times loss weight / normalizer
    expected = torch.tensor([[-0.5, 0.75], [0.0, 0.5]]) * 3.0 / normalizer
    torch.testing.assert_close(gx, expected)


def test_sigmoid_cross_entropy_is_stable_for_large_inputs():
    loss, (gx,) = loss_and_grads(SIGMOID_XENT + "loss_param { normalization: NONE }",
                                 torch.tensor([[200.0, -200.0]]), torch.tensor([[0.0, 0.0]]))
    assert loss == pytest.approx(200.0, rel=1e-6)
    torch.testing.assert_close(gx, torch.tensor([[1.0, 0.0]]))


def test_sigmoid_cross_entropy_ignores_by_the_integer_part_of_the_target():
    # Caffe compares static_cast<int>(target) with ignore_label: 0.7 counts as 0
    loss, _ = loss_and_grads(SIGMOID_XENT + "loss_param { ignore_label: 0 normalization: NONE }",
                             torch.tensor([[0.0, 0.0]]), torch.tensor([[0.7, 1.0]]))
    assert loss == pytest.approx(LN2, rel=1e-6)


def test_sigmoid_cross_entropy_count_mismatch():
    with pytest.raises(LayerError, match="layer 'loss'.*same count"):
        make_layer(SIGMOID_XENT, [(2, 3), (2, 4)])
    with pytest.raises(LayerError, match="same first dimension"):
        make_layer(SIGMOID_XENT, [(2, 3), (3, 2)])


# ---------------------------------------------------------------- Euclidean, Hinge

def test_euclidean_loss_and_gradients_of_both_bottoms():
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    loss, (ga, gb) = loss_and_grads('type: "EuclideanLoss"', a, b, loss_weight=3.0,
                                    grad_of=(0, 1))
    assert loss == pytest.approx((1 + 4 + 1 + 1) / 2 / 2)
    torch.testing.assert_close(ga, (a - b) * 3.0 / 2)
    torch.testing.assert_close(gb, -(a - b) * 3.0 / 2)
    with pytest.raises(LayerError, match="same number of values per item"):
        make_layer('type: "EuclideanLoss"', [(2, 2), (2, 3)])


@pytest.mark.parametrize("norm, loss, grad", [
    # margins max(0, 1 + t x), t = -1 at the label: row 0 0.5, 0, 1.2; row 1 0 and two exact 0s
    ("L1", 1.7 / 2, [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]),
    ("L2", (0.25 + 1.44) / 2, [[-1.0, 0.0, 2.4], [0.0, 0.0, 0.0]]),
])
def test_hinge_loss_norms_and_zero_margin(norm, loss, grad):
    x = torch.tensor([[0.5, -2.0, 0.2], [-5.0, -1.0, 1.0]])
    labels = torch.tensor([0.0, 2.0])
    value, (gx,) = loss_and_grads(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}',
                                  x, labels, loss_weight=2.0)
    assert value == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close(gx, torch.tensor(grad) * 2.0 / 2)


def test_hinge_loss_label_errors():
    layer, _ = make_layer('name: "h" type: "HingeLoss"', [(2, 3), (2,)])
    with pytest.raises(LayerError, match="layer 'h'.*label 3 is outside 0..2"):
        layer.forward([torch.zeros(2, 3), torch.tensor([0.0, 3.0])])
    with pytest.raises(LayerError, match="one label per item"):
        make_layer('type: "HingeLoss"', [(2, 3), (2, 2)])


# ---------------------------------------------------------------- MultinomialLogistic

def test_multinomial_logistic_floor_and_its_gradient():
    prob = torch.tensor([[0.25, 0.75], [0.0, 1.0]])
    loss, (gp,) = loss_and_grads('type: "MultinomialLogisticLoss"', prob, torch.tensor([1.0, 0.0]))
    floor = float(np.float32(1e-20))
    assert loss == pytest.approx((-math.log(0.75) - math.log(floor)) / 2, rel=1e-6)
    # Caffe's gradient -1 / (N max(p, 1e-20)) at the label, also below the floor
    expected = torch.tensor([[0.0, -1 / (2 * 0.75)], [-1 / (2 * floor), 0.0]])
    torch.testing.assert_close(gp, expected)


def test_multinomial_logistic_label_shape():
    with pytest.raises(LayerError, match=r"label \(bottom 1\) of shape \[2, 2\]"):
        make_layer('type: "MultinomialLogisticLoss"', [(2, 3), (2, 2)])


# ---------------------------------------------------------------- InfogainLoss

def write_infogain(path, matrix: np.ndarray, legacy_dims: bool) -> None:
    blob = caffe_pb2.BlobProto()
    if legacy_dims:
        blob.num, blob.channels = 1, 1
        blob.height, blob.width = matrix.shape
    else:
        blob.shape.dim.extend(matrix.shape)
    blob.data.extend(matrix.ravel().tolist())
    path.write_bytes(blob.SerializeToString())


@pytest.mark.parametrize("legacy_dims", [False, True])
def test_infogain_source_is_read_relative_to_the_current_directory(tmp_path, monkeypatch,
                                                                   legacy_dims):
    # H weights the log-probabilities of label row l: -(2 log p0 + 1 log p1) for label 0
    write_infogain(tmp_path / "H.binaryproto", np.array([[2, 1], [0, 1]], np.float32), legacy_dims)
    monkeypatch.chdir(tmp_path)
    scores = torch.tensor([[0.0, LN3], [0.0, 0.0]])     # p = (1/4, 3/4) and (1/2, 1/2)
    loss, (gs,) = loss_and_grads('type: "InfogainLoss" infogain_loss_param { source: "H.binaryproto" }',
                                 scores, torch.tensor([0.0, 1.0]))
    assert loss == pytest.approx((2 * LN4 + math.log(4 / 3) + LN2) / 2, rel=1e-6)
    # p * rowsum(H)[label] - H[label]: (3/4, 9/4) - (2, 1); (1/2, 1/2) - (0, 1)
    torch.testing.assert_close(gs, torch.tensor([[-1.25, 1.25], [0.5, -0.5]]) / 2)


def test_infogain_with_h_bottom_ignore_label_and_probability_floor():
    h = torch.eye(2).reshape(1, 1, 2, 2)
    scores = torch.tensor([[0.0, 200.0], [1.0, 2.0]])    # p0 underflows to 0 in item 0
    labels = torch.tensor([0.0, 7.0])
    loss, (gs,) = loss_and_grads('type: "InfogainLoss" loss_param { ignore_label: 7 }',
                                 scores, labels, h)
    assert loss == pytest.approx(-math.log(float(np.float32(1e-20))), rel=1e-6)  # VALID: 1
    # Caffe's gradient ignores the floor: p - onehot; ignored item 0
    torch.testing.assert_close(gs, torch.tensor([[-1.0, 1.0], [0.0, 0.0]]))


def test_infogain_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LayerError, match="infogain_loss_param.source must name"):
        make_layer('type: "InfogainLoss"', [(2, 2), (2,)])
    with pytest.raises(LayerError, match="infogain_loss_param.source 'missing.binaryproto' cannot be read"):
        make_layer('type: "InfogainLoss" infogain_loss_param { source: "missing.binaryproto" }',
                   [(2, 2), (2,)])
    (tmp_path / "junk.binaryproto").write_bytes(b"\xff\xff\xff")
    with pytest.raises(LayerError, match="is not a binary BlobProto"):
        make_layer('type: "InfogainLoss" infogain_loss_param { source: "junk.binaryproto" }',
                   [(2, 2), (2,)])
    with pytest.raises(LayerError, match="H has 9 values; it must be 2 x 2"):
        make_layer('type: "InfogainLoss"', [(2, 2), (2,), (3, 3)])
    with pytest.raises(LayerError, match="normalize is deprecated"):
        make_layer('type: "InfogainLoss" loss_param { normalize: true }', [(2, 2), (2,), (2, 2)])


# ---------------------------------------------------------------- ContrastiveLoss

CONTRASTIVE = 'type: "ContrastiveLoss" contrastive_loss_param {{ margin: {margin} {extra} }}'


@pytest.mark.parametrize("similar, margin, extra, loss, coefficient", [
    (1.0, 6.0, "", 25 / 2, 1.0),                                   # d^2 / 2
    (0.0, 6.0, "", 1 / 2, -(6 - 5) / (5 + 1e-4)),                  # (margin - d)^2 / 2, d + 1e-4
    (0.0, 4.0, "", 0.0, 0.0),                                      # beyond the margin
    (0.0, 30.0, "legacy_version: true", 5 / 2, -1.0),              # (margin - d^2) / 2
])
def test_contrastive_loss(similar, margin, extra, loss, coefficient):
    a = torch.tensor([[3.0, 4.0]]).reshape(1, 2, 1, 1)              # |a - b| = 5
    b = torch.zeros(1, 2, 1, 1)
    y = torch.tensor([similar]).reshape(1, 1, 1, 1)
    value, (ga, gb) = loss_and_grads(CONTRASTIVE.format(margin=margin, extra=extra), a, b, y,
                                     grad_of=(0, 1))
    assert value == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close(ga, coefficient * a)
    torch.testing.assert_close(gb, -coefficient * a)


def test_contrastive_loss_shapes():
    text = CONTRASTIVE.format(margin=1, extra="")
    with pytest.raises(LayerError, match="must both be N x C x 1 x 1"):
        make_layer(text, [(2, 3, 2, 1), (2, 3, 2, 1), (2, 1, 1, 1)])
    with pytest.raises(LayerError, match="one similarity label per pair"):
        make_layer(text, [(2, 3), (2, 3), (2, 2)])


# ---------------------------------------------------------------- in a net

def test_losses_weigh_one_by_default_and_diff_only_their_data():
    text = ("force_backward: true\n" + input_layer("a", 2, 2) + input_layer("b", 2, 2)
            + input_layer("y", 2)
            + 'layer { name: "euclid" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "e" }\n'
            + 'layer { name: "xent" type: "SigmoidCrossEntropyLoss" bottom: "a" bottom: "b" '
              'top: "x" loss_weight: 0.5 }\n'
            + 'layer { name: "c" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "y" top: "c" }\n')
    net = net_from(text, caffe.TRAIN)
    a = np.array([[1, 2], [3, 4]], np.float32)
    b = np.array([[0, 1], [1, 0]], np.float32)
    net.forward(a=a, b=b, y=np.array([1, 1], np.float32))
    net.backward()
    sigmoid = 1 / (1 + np.exp(-a))
    # Euclidean (a - b) / N, SigmoidCE 0.5 (sigmoid - t) / N, Contrastive (a - b) / N
    np.testing.assert_allclose(net.blobs["a"].diff, (a - b) / 2 + 0.5 * (sigmoid - b) / 2
                               + (a - b) / 2, rtol=1e-5)
    # b is a target for SigmoidCE (no diff) but data for Euclidean and Contrastive
    np.testing.assert_allclose(net.blobs["b"].diff, -(a - b) / 2 - (a - b) / 2, rtol=1e-5)
    np.testing.assert_array_equal(net.blobs["y"].diff, 0)


def test_loss_bottom_counts():
    text = (input_layer("a", 2, 2) + input_layer("b", 2, 2)
            + 'layer { name: "c" type: "ContrastiveLoss" bottom: "a" bottom: "b" top: "c" }\n')
    with pytest.raises(LayerError, match="layer 'c'.*takes 3 bottom"):
        net_from(text)
