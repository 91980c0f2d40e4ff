"""Model Zoo train_val style nets fed by Data layers train with SGDSolver:
LeNet on an MNIST-shaped LMDB and a narrow CaffeNet with a mean file,
227 crops and mirroring. The labels each iteration sees follow the DB's
key order."""
from __future__ import annotations

import numpy as np
import pytest

import torchcaffe
from torchcaffe import layers as L
from torchcaffe import params as P
from torchcaffe.datum import image_datum
from torchcaffe.db import Writer
from torchcaffe.proto import caffe_pb2
from torchcaffe.tools import compute_image_mean, convert_imageset

pytest.importorskip("lmdb", reason="the [data] extra (lmdb) reads LMDBs")

GAUSS = dict(type="gaussian", std=0.01)
LEARN = [dict(lr_mult=1), dict(lr_mult=2)]


def mnist_like_lmdb(path, count=24) -> list[int]:
    """28x28 gray digits-like images: each class a bright bar at its own place."""
    rng = np.random.default_rng(0)
    labels = [i % 4 for i in range(count)]
    with Writer(path, "lmdb") as db:
        for i, label in enumerate(labels):
            image = rng.integers(0, 40, (28, 28, 1)).astype(np.uint8)
            image[4 + 5 * label:8 + 5 * label, 4:24] = 255
            db.put(f"{i:08d}".encode(), image_datum(image, label).SerializeToString())
    return labels


def lenet(source, batch_size, phase) -> caffe_pb2.NetParameter:
    n = torchcaffe.NetSpec()
    n.data, n.label = L.Data(data_param=dict(source=str(source), batch_size=batch_size,
                                             backend=P.Data.LMDB),
                             transform_param=dict(scale=0.00390625), ntop=2)
    n.conv1 = L.Convolution(n.data, num_output=20, kernel_size=5, weight_filler=dict(type="xavier"),
                            param=LEARN)
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, num_output=50, kernel_size=5, weight_filler=dict(type="xavier"),
                            param=LEARN)
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type="xavier"), param=LEARN)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"), param=LEARN)
    if phase == torchcaffe.TEST:
        n.accuracy = L.Accuracy(n.ip2, n.label)
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    net = n.to_proto()
    net.name = "LeNet"
    return net


def solver_for(train: caffe_pb2.NetParameter, test: caffe_pb2.NetParameter | None = None, **fields):
    solver = caffe_pb2.SolverParameter(train_net_param=train, random_seed=1, display=0, **fields)
    if test is not None:
        solver.test_net_param.append(test)
        solver.test_iter.append(1)
        solver.test_interval = 1000
    return torchcaffe.SGDSolver(solver)


def test_lenet_trains_on_an_mnist_shaped_lmdb_in_key_order(tmp_path):
    labels = mnist_like_lmdb(tmp_path / "mnist_train_lmdb")
    solver = solver_for(lenet(tmp_path / "mnist_train_lmdb", 8, torchcaffe.TRAIN),
                        lenet(tmp_path / "mnist_train_lmdb", 8, torchcaffe.TEST),
                        base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="inv",
                        gamma=0.0001, power=0.75, max_iter=100)
    losses = []
    for it in range(8):
        solver.step(1)
        start = (it * 8) % len(labels)
        np.testing.assert_array_equal(solver.net.blobs["label"].data,
                                      [labels[(start + k) % len(labels)] for k in range(8)])
        losses.append(float(solver.net.blobs["loss"].data))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.5 * losses[0], losses
    test_net = solver.test_nets[0]
    test_net.forward()
    assert test_net.blobs["accuracy"].data >= 0.75
    np.testing.assert_array_equal(test_net.blobs["label"].data, labels[:8])


def caffenet(source, mean_file, batch_size, classes) -> caffe_pb2.NetParameter:
    """CaffeNet's train layers at 1/8 width (96 -> 12 ... fc 4096 -> 64)."""
    n = torchcaffe.NetSpec()
    n.data, n.label = L.Data(data_param=dict(source=str(source), batch_size=batch_size,
                                             backend=P.Data.LMDB),
                             transform_param=dict(mirror=True, crop_size=227, mean_file=str(mean_file)),
                             ntop=2)

    def conv(bottom, num_output, kernel_size, **kw):
        return L.Convolution(bottom, num_output=num_output, kernel_size=kernel_size, param=LEARN,
                             weight_filler=GAUSS, bias_filler=dict(type="constant", value=0.1), **kw)

    def relu_pool_norm(top, norm=True):
        relu = L.ReLU(top, in_place=True)
        pool = L.Pooling(relu, pool=P.Pooling.MAX, kernel_size=3, stride=2)
        return L.LRN(pool, local_size=5, alpha=1e-4, beta=0.75) if norm else pool

    n.conv1 = conv(n.data, 12, 11, stride=4)
    n.norm1 = relu_pool_norm(n.conv1)
    n.conv2 = conv(n.norm1, 32, 5, pad=2, group=2)
    n.norm2 = relu_pool_norm(n.conv2)
    n.conv3 = conv(n.norm2, 48, 3, pad=1)
    n.relu3 = L.ReLU(n.conv3, in_place=True)
    n.conv4 = conv(n.relu3, 48, 3, pad=1, group=2)
    n.relu4 = L.ReLU(n.conv4, in_place=True)
    n.conv5 = conv(n.relu4, 32, 3, pad=1, group=2)
    n.pool5 = relu_pool_norm(n.conv5, norm=False)
    n.fc6 = L.InnerProduct(n.pool5, num_output=64, weight_filler=dict(type="gaussian", std=0.005),
                           bias_filler=dict(type="constant", value=0.1), param=LEARN)
    n.drop6 = L.Dropout(L.ReLU(n.fc6, in_place=True), in_place=True, dropout_ratio=0.5)
    n.fc7 = L.InnerProduct(n.drop6, num_output=64, weight_filler=dict(type="gaussian", std=0.005),
                           bias_filler=dict(type="constant", value=0.1), param=LEARN)
    n.drop7 = L.Dropout(L.ReLU(n.fc7, in_place=True), in_place=True, dropout_ratio=0.5)
    n.fc8 = L.InnerProduct(n.drop7, num_output=classes, weight_filler=GAUSS, param=LEARN)
    n.loss = L.SoftmaxWithLoss(n.fc8, n.label)
    net = n.to_proto()
    net.name = "CaffeNet"
    return net


def test_caffenet_style_mean_file_crop_227_trains(tmp_path):
    from image_fixtures import write_images, write_list

    entries = write_images(tmp_path / "images", [(256, 256)] * 4, "jpg")
    entries = [(name, i % 2) for i, (name, _) in enumerate(entries)]
    listing = write_list(tmp_path / "train.txt", entries)
    assert convert_imageset.main([f"{tmp_path / 'images'}/", str(listing), str(tmp_path / "train_lmdb")]) == 0
    assert compute_image_mean.main([str(tmp_path / "train_lmdb"), str(tmp_path / "mean.binaryproto")]) == 0
    solver = solver_for(caffenet(tmp_path / "train_lmdb", tmp_path / "mean.binaryproto", 2, 2),
                        base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="step",
                        gamma=0.1, stepsize=100, max_iter=100)
    losses = []
    for it in range(4):
        solver.step(1)
        assert solver.net.blobs["data"].data.shape == (2, 3, 227, 227)
        np.testing.assert_array_equal(solver.net.blobs["label"].data,
                                      [entries[(2 * it + k) % 4][1] for k in range(2)])
        losses.append(float(solver.net.blobs["loss"].data))
    assert np.isfinite(losses).all() and all(0 < loss < 5 for loss in losses), losses
