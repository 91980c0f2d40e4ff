"""Backward semantics against hand-derived gradients: split gradient sums,
shared params, lr_mult 0, loss_weight, force_backward, propagate_down,
accumulation of param diffs, kept intermediate diffs."""
import numpy as np
import pytest

import torchcaffe as caffe
from torchcaffe.errors import CaffeError, LayerError
from torchcaffe.prototxt import parse_net_text

X = np.array([[1, -2, 3], [-1, 0.5, 2]], np.float32)
INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'


def ip(name, bottom, num_output, extra="", filler='type: "gaussian" std: 1'):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" {extra}'
            f' inner_product_param {{ num_output: {num_output} bias_term: false '
            f'weight_filler {{ {filler} }} }} }}\n')


def total(name, bottoms, weight=1):
    """An Eltwise SUM whose top is weighted as a loss: L = weight * sum(top)."""
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    return f'layer {{ name: "{name}" type: "Eltwise" {b} top: "{name}" loss_weight: {weight} }}\n'


def build(text, **kwargs):
    return caffe.Net(parse_net_text(text), phase=caffe.TRAIN, **kwargs)


def run(net, x=X):
    net.forward(data=x)
    return net.backward()


def test_blob_read_twice_gets_summed_gradient():
    # L = sum(x W1^T) + sum(x W2^T): dL/dx[n] = colsum(W1 + W2), dL/dWk[o] = sum_n x[n]
    net = build("force_backward: true\n" + INPUT + ip("ip1", "data", 2) + ip("ip2", "data", 2)
                + total("sum", ["ip1", "ip2"]))
    w1, w2 = (net.params[k][0].data.copy() for k in ("ip1", "ip2"))
    net.forward(data=X)
    np.testing.assert_allclose(net.loss(), (X @ w1.T).sum() + (X @ w2.T).sum(), rtol=1e-5)
    diffs = net.backward()
    expected = np.tile((w1 + w2).sum(0), (2, 1))
    np.testing.assert_allclose(diffs["data"], expected, rtol=1e-5)
    np.testing.assert_allclose(net.blobs["data"].diff, expected, rtol=1e-5)
    for k in ("ip1", "ip2"):
        np.testing.assert_allclose(net.params[k][0].diff, np.tile(X.sum(0), (2, 1)), rtol=1e-5)


def test_split_tops_and_intermediate_diffs_are_kept_once_read():
    net = build("force_backward: true\n" + INPUT + ip("ip1", "data", 2) + ip("ip2", "data", 2)
                + total("sum", ["ip1", "ip2"], weight=3))
    # a loss top's diff holds its loss weight, as Caffe sets it
    np.testing.assert_array_equal(net.blobs["sum"].diff, np.full((2, 2), 3))
    w2 = net.params["ip2"][0].data.copy()
    for name in ("ip1", "data_data_0_split_1"):
        assert not net.blobs[name].diff.any()  # read once: kept from now on
    run(net)
    np.testing.assert_allclose(net.blobs["ip1"].diff, np.full((2, 2), 3))
    np.testing.assert_allclose(net.blobs["data_data_0_split_1"].diff,
                               np.tile(3 * w2.sum(0), (2, 1)), rtol=1e-5)
    # backward(diffs=...) returns a blob's diff without reading it before
    net.forward(data=X)
    out = net.backward(diffs=["ip2"])
    np.testing.assert_allclose(out["ip2"], np.full((2, 2), 3))


def test_shared_param_is_one_blob_with_summed_diff():
    net = build("force_backward: true\n" + INPUT
                + ip("ip1", "data", 2, 'param { name: "w" }')
                + ip("ip2", "data", 2, 'param { name: "w" }')
                + total("sum", ["ip1", "ip2"]))
    assert net.params["ip1"][0] is net.params["ip2"][0]
    assert len(net.learnable_params) == 1
    net.params["ip1"][0].data[...] = [[1, 0, 0], [0, 1, 0]]
    run(net)
    np.testing.assert_array_equal(net.blobs["ip2"].data, X[:, :2])
    np.testing.assert_allclose(net.params["ip2"][0].diff, 2 * np.tile(X.sum(0), (2, 1)))


def test_shared_param_shape_mismatch_names_both_layers():
    with pytest.raises(LayerError, match="layer 'ip2'.*shared param 'w'.*layer 'ip1'"):
        build(INPUT + ip("ip1", "data", 2, 'param { name: "w" }')
              + ip("ip2", "data", 3, 'param { name: "w" }'))
    with pytest.raises(LayerError, match="mismatched lr_mult"):
        build(INPUT + ip("ip1", "data", 2, 'param { name: "w" lr_mult: 1 }')
              + ip("ip2", "data", 2, 'param { name: "w" lr_mult: 2 }'))


def chain(ip1_extra="", force=False, weight=1):
    # data -> ip0 (W0 = 1) -> ip1 (W1 = 2) -> L = weight * sum(ip1)
    text = (("force_backward: true\n" if force else "") + INPUT
            + ip("ip0", "data", 2, filler='type: "constant" value: 1')
            + ip("ip1", "ip0", 2, ip1_extra, filler='type: "constant" value: 2')
            + f'layer {{ name: "loss" type: "ReLU" bottom: "ip1" top: "loss" loss_weight: {weight} }}\n')
    return build(text)


def test_lr_mult_zero_gets_no_diff_but_passes_gradient():
    net = chain('param { lr_mult: 0 }')
    diffs = run(net, np.abs(X))
    assert not net.params["ip1"][0].diff.any()
    # dL/dW0[o] = sum_n x[n] * sum_k W1[k, o] = 4 * sum_n x[n]
    np.testing.assert_allclose(net.params["ip0"][0].diff, np.tile(4 * np.abs(X).sum(0), (2, 1)))
    assert not diffs["data"].any()  # no force_backward: inputs get no diff
    # force_backward gives every param a diff, lr_mult 0 included
    net = chain('param { lr_mult: 0 }', force=True)
    diffs = run(net, np.abs(X))
    np.testing.assert_allclose(net.params["ip1"][0].diff,
                               np.tile(np.abs(X).sum(0).sum(), (2, 2)))
    np.testing.assert_allclose(diffs["data"], np.full((2, 3), 8.0))


def test_loss_weight_scales_gradients():
    one, two = chain(weight=1), chain(weight=2)
    run(one, np.abs(X))
    run(two, np.abs(X))
    np.testing.assert_allclose(two.params["ip0"][0].diff, 2 * one.params["ip0"][0].diff)
    np.testing.assert_allclose(two.loss(), 2 * one.loss())
    np.testing.assert_array_equal(two.blobs["loss"].diff, np.full((2, 2), 2))


def test_propagate_down_false_stops_at_that_bottom():
    net = chain('propagate_down: false')
    run(net, np.abs(X))
    assert net.params["ip1"][0].diff.any()
    assert not net.params["ip0"][0].diff.any()


def test_param_diffs_accumulate_until_cleared_and_bottom_diffs_are_overwritten():
    net = build("force_backward: true\n" + INPUT + ip("ip1", "data", 2) + total("s", ["ip1", "ip1"]))
    first = run(net)["data"].copy()
    once = net.params["ip1"][0].diff.copy()
    second = run(net)["data"]
    np.testing.assert_allclose(second, first)
    np.testing.assert_allclose(net.params["ip1"][0].diff, 2 * once, rtol=1e-6)
    net.clear_param_diffs()
    assert not net.params["ip1"][0].diff.any()
    run(net)
    np.testing.assert_allclose(net.params["ip1"][0].diff, once, rtol=1e-6)


def test_output_diffs_seed_backward_and_partial_backward():
    net = build("force_backward: true\n" + INPUT + ip("ip1", "data", 2, filler='type: "constant" value: 1'))
    net.forward(data=X)
    top = np.array([[1, 0], [0, 2]], np.float32)
    diffs = net.backward(ip1=top)
    np.testing.assert_allclose(diffs["data"], [[1, 1, 1], [2, 2, 2]])
    np.testing.assert_allclose(net.params["ip1"][0].diff, top.T @ X)
    # a second backward after one forward (Caffe allows it): the same blob
    # diffs, and the param diffs accumulate until cleared
    again = net.backward(ip1=top)
    np.testing.assert_allclose(again["data"], [[1, 1, 1], [2, 2, 2]])
    np.testing.assert_allclose(net.params["ip1"][0].diff, 2 * top.T @ X)
    net.forward(data=X)
    # backward(end=L) answers with L's bottoms, as pycaffe does
    out = net.backward(start="ip1", end="ip1")
    assert set(out) == {"data"}
    np.testing.assert_allclose(out["data"], [[1, 1, 1], [2, 2, 2]])


def test_no_backward_without_loss_or_force():
    net = build(INPUT + ip("ip1", "data", 2))
    net.forward(data=X)
    assert not net.backward()["data"].any()
    assert not net.params["ip1"][0].diff.any()


def test_in_place_blob_diff_is_the_gradient_of_its_first_producer():
    # data -> ip (W) -> relu in place -> out (ones) with L = sum(out):
    # the blob 'ip' ends up holding dL/d(ip output) = (ip > 0), as in Caffe
    net = build(INPUT + ip("ip", "data", 2)
                + 'layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }\n'
                + ip("out", "ip", 1, 'loss_weight: 1', filler='type: "constant" value: 1'))
    net.blobs["ip"].diff  # ask for it: kept from the next forward on
    run(net)
    pre = X @ net.params["ip"][0].data.T
    np.testing.assert_array_equal(net.blobs["ip"].diff, (pre > 0).astype(np.float32))


def test_in_place_relu_without_graph_gives_caffe_values(tmp_path):
    # a deploy-style net (no loss: nothing records a graph) lets in-place
    # ReLU overwrite its bottom; the conv blob then holds the ReLU result,
    # as Caffe's shared blob does, and the sum reads it after the ReLU
    path = tmp_path / "net.prototxt"
    path.write_text('''
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 1 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 1 kernel_size: 1 bias_term: false } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "data" top: "sum" }
''')
    import numpy as np
    import torchcaffe

    net = torchcaffe.Net(str(path), torchcaffe.TEST)
    net.params["conv"][0].data[...] = 2.0
    net.blobs["data"].data[...] = np.array([-1.0, 0.5, 3.0]).reshape(1, 1, 1, 3)
    net.forward()
    np.testing.assert_array_equal(net.blobs["conv"].data.ravel(), [0.0, 1.0, 6.0])
    np.testing.assert_array_equal(net.blobs["sum"].data.ravel(), [-1.0, 1.5, 9.0])
    np.testing.assert_array_equal(net.blobs["data"].data.ravel(), [-1.0, 0.5, 3.0])


LOSS_NET = '''
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 3 kernel_size: 1
                            weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
'''


def _softmax_loss_diff(score, label):
    # Caffe: (softmax - onehot) / number of valid positions (VALID default)
    e = np.exp(score - score.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, label.astype(int), 1.0, axis=1)
    return (p - onehot) / label.size


@pytest.mark.parametrize("keep_diffs", [True, False])
def test_intermediate_diffs_kept_as_caffe_or_lean(tmp_path, keep_diffs):
    import torchcaffe

    path = tmp_path / "net.prototxt"
    path.write_text(LOSS_NET)
    net = torchcaffe.Net(str(path), torchcaffe.TRAIN, keep_diffs=keep_diffs)
    net.blobs["data"].data[...] = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2) / 4
    net.blobs["label"].data[...] = np.array([0, 1, 2, 1]).reshape(1, 1, 2, 2)
    net.forward()
    net.backward()
    expected = _softmax_loss_diff(net.blobs["score"].data, net.blobs["label"].data)
    if keep_diffs:  # the default: every diff after the first backward, as Caffe
        np.testing.assert_allclose(net.blobs["score"].diff, expected, rtol=1e-5, atol=1e-7)
    else:  # lean (solvers): kept from the first forward after it was read
        assert not net.blobs["score"].diff.any()
        net.forward()
        net.backward()
        np.testing.assert_allclose(net.blobs["score"].diff, expected, rtol=1e-5, atol=1e-7)


def test_backward_keyword_diffs_must_name_the_outputs(tmp_path):
    import torchcaffe

    path = tmp_path / "net.prototxt"
    path.write_text('''force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 3 kernel_size: 1 bias_term: false
                            weight_filler { type: "gaussian" std: 1 } } }
''')
    net = torchcaffe.Net(str(path), torchcaffe.TRAIN)
    net.forward()
    with pytest.raises(CaffeError, match="do not match the net outputs"):
        net.backward(other=np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(CaffeError, match="batch size"):
        net.backward(score=np.zeros((2, 3, 2, 2), np.float32))
    # a diff given for the output reaches the input: score = w * data, 1x1
    w = net.params["score"][0].data.reshape(3)
    top = np.ones((1, 3, 2, 2), np.float32)
    diffs = net.backward(score=top)
    np.testing.assert_allclose(diffs["data"], np.full((1, 1, 2, 2), w.sum()), rtol=1e-6)
