"""DummyData and MemoryData beyond the golden cases: refill rules, the
batch order of set_input_arrays, and the errors pycaffe raises."""
from __future__ import annotations

import numpy as np
import pytest

import torchcaffe
from torchcaffe import layers as L
from torchcaffe.errors import CaffeError


def build(spec: torchcaffe.NetSpec, phase=torchcaffe.TEST) -> torchcaffe.Net:
    return torchcaffe.Net(spec.to_proto(), phase)


def dummy_net(**param) -> torchcaffe.Net:
    n = torchcaffe.NetSpec()
    n.a, n.b = L.DummyData(dummy_data_param=param, ntop=2)
    return build(n)


def test_dummydata_refills_random_tops_and_keeps_constant_ones():
    torchcaffe.set_random_seed(3)
    net = dummy_net(data_filler=[dict(type="constant", value=7), dict(type="uniform", min=2, max=3)],
                    shape=[dict(dim=[2, 3]), dict(dim=[4, 5, 6])])
    net.forward()
    first = net.blobs["b"].data.copy()
    net.blobs["a"].data[...] = -1  # a constant top is never refilled: the write stays
    net.forward()
    second = net.blobs["b"].data
    assert first.shape == (4, 5, 6) and (first >= 2).all() and (first <= 3).all()
    assert not np.array_equal(first, second)
    assert (net.blobs["a"].data == -1).all()


def test_dummydata_one_filler_for_all_tops_and_default_zero():
    net = dummy_net(data_filler=[dict(type="constant", value=1.5)], num=[2], channels=[1, 3],
                    height=[4], width=[5])
    net.forward()
    assert net.blobs["a"].data.shape == (2, 1, 4, 5) and net.blobs["b"].data.shape == (2, 3, 4, 5)
    assert (net.blobs["a"].data == 1.5).all() and (net.blobs["b"].data == 1.5).all()
    zero = dummy_net(shape=[dict(dim=[3])])
    zero.forward()
    assert (zero.blobs["a"].data == 0).all() and zero.blobs["b"].data.shape == (3,)


@pytest.mark.parametrize("param, message", [
    (dict(data_filler=[dict()] * 3, shape=[dict(dim=[1])]), "3 data_filler for 2 tops"),
    (dict(shape=[dict(dim=[1])], num=[1], channels=[1], height=[1], width=[1]), "both shape and"),
    (dict(num=[1, 2, 3], channels=[1], height=[1], width=[1]), "num must be given once"),
    (dict(shape=[dict(dim=[1])] * 3), "shape must be given once"),
])
def test_dummydata_bad_params_name_the_field(param, message):
    with pytest.raises(CaffeError, match=message) as info:
        dummy_net(**param)
    assert "DummyData" in str(info.value)


def memory_net(batch_size=2, channels=1, height=2, width=3) -> torchcaffe.Net:
    n = torchcaffe.NetSpec()
    n.data, n.label = L.MemoryData(memory_data_param=dict(
        batch_size=batch_size, channels=channels, height=height, width=width), ntop=2)
    n.flat = L.Flatten(n.data)
    return build(n)


def test_memorydata_batches_in_order_and_wraps():
    net = memory_net()
    data = np.arange(6 * 6, dtype=np.float32).reshape(6, 1, 2, 3)
    labels = np.array([10, 11, 12, 13, 14, 15], dtype=np.float32)
    net.set_input_arrays(data, labels)
    assert net.blobs["label"].data.shape == (2,)  # before the first forward, as Caffe's setup
    for rows in ([0, 1], [2, 3], [4, 5], [0, 1]):
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, data[rows])
        np.testing.assert_array_equal(net.blobs["label"].data.ravel(), labels[rows])
        assert net.blobs["label"].data.shape == (2, 1, 1, 1)
        np.testing.assert_array_equal(net.blobs["flat"].data, data[rows].reshape(2, 6))
    # a new call starts again from the first row
    net.set_input_arrays(data[:2] * -1, labels[:2])
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, -data[:2])


@pytest.mark.parametrize("data, labels, message", [
    (np.zeros((3, 1, 2, 3), np.float32), np.zeros(3, np.float32), "multiple of batch size 2"),
    (np.zeros((2, 1, 2, 3), np.float32), np.zeros(4, np.float32), "same first dimension"),
    (np.zeros((2, 1, 2, 3), np.float64), np.zeros(2, np.float32), "data array must be float32"),
    (np.zeros((2, 1, 3, 2), np.float32), np.zeros(2, np.float32), "expected N x 1 x 2 x 3"),
    (np.zeros((2, 6), np.float32), np.zeros(2, np.float32), "must be 4-d"),
    (np.zeros((2, 1, 3, 2), np.float32).transpose(0, 1, 3, 2), np.zeros(2, np.float32),
     "C contiguous"),
    (np.zeros((2, 1, 2, 3), np.float32), np.zeros((2, 2), np.float32), "labels array must be 4-d"),
])
def test_memorydata_refuses_bad_arrays(data, labels, message):
    net = memory_net()
    with pytest.raises(CaffeError, match=message) as info:
        net.set_input_arrays(data, labels)
    assert "MemoryData" in str(info.value)


def test_memorydata_forward_before_arrays_and_set_arrays_without_memorydata():
    net = memory_net()
    with pytest.raises(CaffeError, match="set_input_arrays"):
        net.forward()
    n = torchcaffe.NetSpec()
    n.data = L.Input(input_param=dict(shape=dict(dim=[2, 1, 2, 3])))
    with pytest.raises(CaffeError, match="first layer is a MemoryData"):
        build(n).set_input_arrays(np.zeros((2, 1, 2, 3), np.float32), np.zeros(2, np.float32))
