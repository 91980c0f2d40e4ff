"""Model Zoo train_val style nets fed by Data layers train with SGDSolver:
LeNet on an MNIST-shaped LMDB, CIFAR-10 quick on a CIFAR-shaped one with a
mean file (both on the layers of their netspec.zoo deploy nets) and a narrow
CaffeNet with a mean file, 227 crops and mirroring. The labels each
iteration sees follow the DB's key order."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest

import torchcaffe
from torchcaffe import layers as L
from torchcaffe import params as P
from torchcaffe.datum import image_datum
from torchcaffe.db import Writer
from torchcaffe.proto import caffe_pb2
from torchcaffe.tools import compute_image_mean, convert_imageset

from netspec.zoo import cifar10_quick_classifier, lenet_classifier

pytest.importorskip("lmdb", reason="the [data] extra (lmdb) reads LMDBs")

GAUSS = dict(type="gaussian", std=0.01)
LEARN = [dict(lr_mult=1), dict(lr_mult=2)]


def bar_images_lmdb(path, count=24, shape=(28, 28, 1)) -> list[int]:
    """Dark images (28x28 gray: MNIST-shaped) of 4 classes, each class a
    bright bar at its own place."""
    rng = np.random.default_rng(0)
    labels = [i % 4 for i in range(count)]
    with Writer(path, "lmdb") as db:
        for i, label in enumerate(labels):
            image = rng.integers(0, 40, shape).astype(np.uint8)
            image[4 + 5 * label:8 + 5 * label, 4:24] = 255
            db.put(f"{i:08d}".encode(), image_datum(image, label).SerializeToString())
    return labels


def example_train_net(name, classifier, source, batch_size, phase, transform):
    """A train / test net of Caffe's examples: Data layer, the deploy net's
    layers up to ip2 (shared with netspec.zoo), [accuracy], loss."""
    n = torchcaffe.NetSpec()
    n.data, n.label = L.Data(data_param=dict(source=str(source), batch_size=batch_size,
                                             backend=P.Data.LMDB),
                             transform_param=transform, ntop=2)
    ip2 = classifier(n, n.data)
    if phase == torchcaffe.TEST:
        n.accuracy = L.Accuracy(ip2, n.label)
    n.loss = L.SoftmaxWithLoss(ip2, n.label)
    net = n.to_proto()
    net.name = name
    return net


def lenet(source, batch_size, phase) -> caffe_pb2.NetParameter:
    return example_train_net("LeNet", lenet_classifier, source, batch_size, phase,
                             dict(scale=0.00390625))


def solver_for(train: caffe_pb2.NetParameter, test: caffe_pb2.NetParameter | None = None, **fields):
    solver = caffe_pb2.SolverParameter(train_net_param=train, random_seed=1, display=0, **fields)
    if test is not None:
        solver.test_net_param.append(test)
        solver.test_iter.append(1)
        solver.test_interval = 1000
    return torchcaffe.SGDSolver(solver)


def test_lenet_trains_on_an_mnist_shaped_lmdb_in_key_order(tmp_path):
    labels = bar_images_lmdb(tmp_path / "mnist_train_lmdb")
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


def test_cifar10_quick_trains_on_a_cifar_shaped_lmdb_with_a_mean_file(tmp_path):
    labels = bar_images_lmdb(tmp_path / "cifar10_train_lmdb", count=16, shape=(32, 32, 3))
    mean = tmp_path / "mean.binaryproto"
    assert compute_image_mean.main([str(tmp_path / "cifar10_train_lmdb"), str(mean)]) == 0

    def net(phase):
        return example_train_net("CIFAR10_quick", partial(cifar10_quick_classifier, fillers=True),
                                 tmp_path / "cifar10_train_lmdb", 8, phase,
                                 dict(mean_file=str(mean)))

    # cifar10_quick_solver's settings
    solver = solver_for(net(torchcaffe.TRAIN), net(torchcaffe.TEST), base_lr=0.001,
                        momentum=0.9, weight_decay=0.004, lr_policy="fixed", max_iter=100)
    assert solver.net.params["conv1"][0].data.std() < 1e-3  # gaussian std 1e-4, as released
    losses = []
    for it in range(4):
        solver.step(1)
        np.testing.assert_array_equal(solver.net.blobs["label"].data,
                                      labels[8 * (it % 2):8 * (it % 2) + 8])
        losses.append(float(solver.net.blobs["loss"].data))
    # ten classes and near-zero initial weights: the loss starts at ln 10
    assert abs(losses[0] - np.log(10)) < 0.05 and np.isfinite(losses).all(), losses
    solver.test_nets[0].forward()
    assert 0 <= float(solver.test_nets[0].blobs["accuracy"].data) <= 1


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
