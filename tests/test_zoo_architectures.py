"""GoogLeNet (bvlc_googlenet) and ResNet-50 deploy nets, written here with
NetSpec from the papers' architecture tables, build and run forward with the
published parameter counts; ResNet's net uses the legacy net-level `input` /
`input_dim` fields, as its released deploy file does."""
import math

import numpy as np
import pytest

import torchcaffe
from test_golden_zoo import seeded_blob
from torchcaffe import layers as L
from torchcaffe import params as P


def fill_seeded(net, seed: int = 7) -> None:
    """Plausible values for every blob (He-scaled weights, BatchNorm
    statistics near 0 / 1), by the golden zoo weight rule."""
    k = 0
    for layer, blobs in net.params.items():
        layer_type = net.layer_dict[layer].type
        for index, blob in enumerate(blobs):
            blob.data[...] = seeded_blob(seed, k, layer_type, index, blob.shape)
            k += 1


def run_forward(net, input_name: str = "data") -> np.ndarray:
    torchcaffe.set_mode_cpu()
    fill_seeded(net)
    image = np.random.default_rng(0).standard_normal(net.blobs[input_name].shape)
    net.blobs[input_name].data[...] = image.astype(np.float32)
    return net.forward()["prob"]


def param_count(net, skip_types=()) -> int:
    return sum(math.prod(blob.shape) for layer, blobs in net.params.items()
               if net.layer_dict[layer].type not in skip_types for blob in blobs)


# ---------------------------------------------------------------- GoogLeNet

# (name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj), Szegedy et al. Table 1
INCEPTION = [("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64),
             ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64),
             ("4c", 128, 128, 256, 24, 64, 64), ("4d", 112, 144, 288, 32, 64, 64),
             ("4e", 256, 160, 320, 32, 128, 128), ("5a", 256, 160, 320, 32, 128, 128),
             ("5b", 384, 192, 384, 48, 128, 128)]
XAVIER = dict(weight_filler=dict(type="xavier"), bias_filler=dict(type="constant", value=0.2))


def conv_relu(n, name: str, bottom, num_output: int, kernel: int, stride: int = 1, pad: int = 0):
    n[name] = L.Convolution(bottom, num_output=num_output, kernel_size=kernel, stride=stride,
                            pad=pad, **XAVIER)
    n[name + "_relu"] = L.ReLU(n[name], in_place=True)
    return n[name]


def max_pool(bottom, kernel: int, stride: int, pad: int = 0):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=kernel, stride=stride, pad=pad)


def googlenet(batch: int = 1) -> torchcaffe.NetSpec:
    n = torchcaffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, 224, 224]))
    top = conv_relu(n, "conv1/7x7_s2", n.data, 64, 7, 2, 3)
    n["pool1/3x3_s2"] = max_pool(top, 3, 2)
    n["pool1/norm1"] = L.LRN(n["pool1/3x3_s2"], local_size=5, alpha=1e-4, beta=0.75)
    top = conv_relu(n, "conv2/3x3_reduce", n["pool1/norm1"], 64, 1)
    top = conv_relu(n, "conv2/3x3", top, 192, 3, pad=1)
    n["conv2/norm2"] = L.LRN(top, local_size=5, alpha=1e-4, beta=0.75)
    top = n["pool2/3x3_s2"] = max_pool(n["conv2/norm2"], 3, 2)
    for name, n1, r3, n3, r5, n5, proj in INCEPTION:
        if name in ("4a", "5a"):
            top = n[f"pool{name[0]}/3x3_s2"] = max_pool(top, 3, 2)
        p = f"inception_{name}/"
        branches = [conv_relu(n, p + "1x1", top, n1, 1),
                    conv_relu(n, p + "3x3", conv_relu(n, p + "3x3_reduce", top, r3, 1), n3, 3, pad=1),
                    conv_relu(n, p + "5x5", conv_relu(n, p + "5x5_reduce", top, r5, 1), n5, 5, pad=2)]
        n[p + "pool"] = max_pool(top, 3, 1, 1)
        branches.append(conv_relu(n, p + "pool_proj", n[p + "pool"], proj, 1))
        top = n[p + "output"] = L.Concat(*branches)
    n["pool5/7x7_s1"] = L.Pooling(top, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n["pool5/drop_7x7_s1"] = L.Dropout(n["pool5/7x7_s1"], dropout_ratio=0.4, in_place=True)
    n["loss3/classifier"] = L.InnerProduct(n["pool5/7x7_s1"], num_output=1000, **XAVIER)
    n.prob = L.Softmax(n["loss3/classifier"])
    return n


def test_googlenet_deploy_builds_and_runs():
    net = torchcaffe.Net(googlenet().to_proto(), torchcaffe.TEST)
    # conv1 9,472; conv2 4,160 + 110,784; inception 3a..5b 5,849,136 (each
    # module: in x (1x1 + 3x3 reduce + 5x5 reduce + pool proj) + reduce x 9 x
    # 3x3 + reduce x 25 x 5x5 + biases); classifier 1,025,000
    assert param_count(net) == 6_998_552
    assert net.blobs["inception_5b/output"].shape == (1, 1024, 7, 7)
    prob = run_forward(net)
    assert prob.shape == (1, 1000)
    assert np.isfinite(prob).all() and abs(float(prob.sum()) - 1) < 1e-5


# ---------------------------------------------------------------- ResNet-50

# (stage, blocks, bottleneck width), He et al. Table 1; outputs are 4x the width
RESNET50 = [(2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512)]


def conv_bn(n, name: str, bottom, num_output: int, kernel: int, stride: int = 1, pad: int = 0,
            relu: bool = True):
    """Convolution without bias, BatchNorm with stored statistics and a Scale
    with bias (in place), as the released ResNet deploy nets are built."""
    suffix = name[len("res"):] if name.startswith("res") else "_" + name
    n[name] = L.Convolution(bottom, num_output=num_output, kernel_size=kernel, stride=stride,
                            pad=pad, bias_term=False)
    n["bn" + suffix] = L.BatchNorm(n[name], use_global_stats=True, in_place=True)
    n["scale" + suffix] = L.Scale(n[name], bias_term=True, in_place=True)
    if relu:
        n[name + "_relu"] = L.ReLU(n[name], in_place=True)
    return n[name]


def resnet50() -> torchcaffe.NetSpec:
    n = torchcaffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 224, 224]))
    n.pool1 = max_pool(conv_bn(n, "conv1", n.data, 64, 7, 2, 3), 3, 2)
    top = n.pool1
    for stage, blocks, width in RESNET50:
        for b in range(blocks):
            name = f"res{stage}{chr(ord('a') + b)}"
            stride = 2 if b == 0 and stage > 2 else 1
            shortcut = (conv_bn(n, name + "_branch1", top, 4 * width, 1, stride, relu=False)
                        if b == 0 else top)
            branch = conv_bn(n, name + "_branch2a", top, width, 1, stride)
            branch = conv_bn(n, name + "_branch2b", branch, width, 3, pad=1)
            branch = conv_bn(n, name + "_branch2c", branch, 4 * width, 1, relu=False)
            n[name] = L.Eltwise(shortcut, branch)
            top = n[name + "_relu"] = L.ReLU(n[name], in_place=True)
    n.pool5 = L.Pooling(top, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n.fc1000 = L.InnerProduct(n.pool5, num_output=1000)
    n.prob = L.Softmax(n.fc1000)
    return n


def legacy_input_prototxt(spec: torchcaffe.NetSpec, path) -> None:
    """The net with its Input layer replaced by `input:` / `input_dim:` fields."""
    net = spec.to_proto()
    data = net.layer[0]
    assert data.type == "Input"
    net.input.append(data.top[0])
    net.input_dim.extend(data.input_param.shape[0].dim)
    del net.layer[0]
    path.write_text(str(net))


needs_batchnorm = pytest.mark.skipif("BatchNorm" not in torchcaffe.layer_type_list(),
                                     reason="the BatchNorm layer type is not registered")


@needs_batchnorm
def test_resnet50_deploy_with_legacy_inputs_builds_and_runs(tmp_path):
    path = tmp_path / "ResNet-50-deploy.prototxt"
    legacy_input_prototxt(resnet50(), path)
    assert "input_dim: 224" in path.read_text() and 'type: "Input"' not in path.read_text()
    net = torchcaffe.Net(str(path), torchcaffe.TEST)
    assert net.inputs == ["data"] and net.blobs["data"].shape == (1, 3, 224, 224)
    # 25,557,032 learnable values: convolutions 23,454,912, fc1000 2,049,000
    # and Scale's gamma and beta over the 26,560 channels of the 53
    # BatchNorm layers (53,120). Caffe's net.params also holds BatchNorm's
    # mean and variance (53,120) and scale factor (53).
    assert param_count(net, skip_types=("BatchNorm",)) == 25_557_032
    assert param_count(net) == 25_557_032 + 53_120 + 53
    assert net.blobs["res5c"].shape == (1, 2048, 7, 7)
    prob = run_forward(net)
    assert prob.shape == (1, 1000)
    assert np.isfinite(prob).all() and abs(float(prob.sum()) - 1) < 1e-5
