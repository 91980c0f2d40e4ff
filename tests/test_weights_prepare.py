"""prepare-base: ILSVRC classifier weights cast into the fully convolutional base net.

Full-size VGG16 / AlexNet weights are hundreds of MB, so the cast is run on
stand-ins: netspec's own classifier and FCN deploy nets with every width cut
down (same layer names, kinds, kernels and strides) and a synthetic caffemodel
in the old V1 format, as the VGG16 release is.  Expectations are derived by
hand (the conv kernel is the fc weight reshaped in C order) and from the
identity fc(x) == conv_{full extent}(x); the golden legacy case checks the same
cast against a classifier output BVLC Caffe computed.
"""
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from torchcaffe.caffemodel import read_caffemodel
from torchcaffe.errors import CaffeError
from torchcaffe.proto import caffe_pb2
from weights.prepare import BASES, cast_to_fcn, deploy_path, prepare_base

from golden_sets import COMPACT, materialize

V1 = caffe_pb2.V1LayerParameter
V1_TYPES = {"Convolution": V1.CONVOLUTION, "InnerProduct": V1.INNER_PRODUCT}


@pytest.fixture(scope="module")
def full_nets(tmp_path_factory):
    """netspec's deploy nets for both base nets, full size (read as text only),
    written the way prepare-base writes missing ones: by netspec's command."""
    out = tmp_path_factory.mktemp("nets")
    nets = {}
    for base in BASES.values():
        for name in (base.classifier, base.fcn):
            net = caffe_pb2.NetParameter()
            text_format.Merge(deploy_path(name, out).read_text(), net)
            nets[name] = net
    return nets


def param_layers(net):
    return [(layer.name, layer.type) for layer in net.layer
            if layer.type in ("Convolution", "InnerProduct")]


@pytest.mark.parametrize("base, fc6", [("vgg16", (512, 7)), ("alexnet", (256, 6))])
def test_netspec_base_nets_differ_only_in_fc_form(full_nets, base, fc6):
    classifier = full_nets[BASES[base].classifier]
    fcn = full_nets[BASES[base].fcn]
    kinds = dict(param_layers(classifier))
    fcn_kinds = dict(param_layers(fcn))
    assert list(kinds) == list(fcn_kinds)
    assert {k for k in kinds if kinds[k] == "InnerProduct"} == {"fc6", "fc7", "fc8"}
    assert all(t == "Convolution" for t in fcn_kinds.values())
    by_name = {layer.name: layer for layer in fcn.layer}
    channels, kernel = fc6
    assert list(by_name["fc6"].convolution_param.kernel_size) == [kernel]
    assert by_name["fc6"].convolution_param.num_output == 4096
    assert list(by_name["fc7"].convolution_param.kernel_size) == [1]
    # fc6's input is `channels` maps of kernel x kernel: 25088 for VGG16, 9216 for AlexNet
    assert channels * kernel * kernel == {"vgg16": 25088, "alexnet": 9216}[base]


def narrow(net, divisor, fc_width=32, classes=10):
    """The same net with widths cut: convs / divisor, fc6-7 fc_width, fc8 classes, batch 1."""
    small = caffe_pb2.NetParameter()
    small.CopyFrom(net)
    for layer in small.layer:
        if layer.type == "Input":
            layer.input_param.shape[0].dim[0] = 1
        param = (layer.inner_product_param if layer.type == "InnerProduct"
                 else layer.convolution_param if layer.type == "Convolution" else None)
        if param is None:
            continue
        if layer.name == "fc8":
            param.num_output = classes
        elif layer.name in ("fc6", "fc7"):
            param.num_output = fc_width
        else:
            param.num_output //= divisor
    return small


def write_v1_caffemodel(path, net_proto, rng):
    """Random weights for every param layer, in the V1 format with 4-d legacy shapes."""
    from caffe_backend import caffe

    prototxt = path.with_suffix(".prototxt")
    prototxt.write_text(text_format.MessageToString(net_proto))
    shapes = {name: [b.data.shape for b in blobs]
              for name, blobs in caffe.Net(str(prototxt), caffe.TEST).params.items()}
    kinds = dict(param_layers(net_proto))
    model = caffe_pb2.NetParameter(name=net_proto.name)
    values = {}
    for name, blob_shapes in shapes.items():
        layer = model.layers.add(name=name, type=V1_TYPES[kinds[name]])
        values[name] = []
        for shape in blob_shapes:
            data = rng.standard_normal(shape).astype(np.float32) * 0.1
            values[name].append(data)
            legacy = (1,) * (4 - len(shape)) + tuple(shape)
            layer.blobs.add(num=legacy[0], channels=legacy[1], height=legacy[2],
                            width=legacy[3], data=data.ravel().tolist())
    path.write_bytes(model.SerializeToString())
    return values


@pytest.mark.parametrize("base, divisor", [("vgg16", 32), ("alexnet", 16)])
def test_cast_narrow_base_from_v1_file(full_nets, tmp_path, base, divisor):
    from caffe_backend import caffe

    spec = BASES[base]
    classifier = tmp_path / "classifier.prototxt"
    fcn = tmp_path / "fcn.prototxt"
    classifier.write_text(text_format.MessageToString(
        narrow(full_nets[spec.classifier], divisor)))
    fcn.write_text(text_format.MessageToString(narrow(full_nets[spec.fcn], divisor)))
    weights = tmp_path / "ilsvrc_v1.caffemodel"
    values = write_v1_caffemodel(weights, narrow(full_nets[spec.classifier], divisor),
                                 np.random.default_rng(1))
    out = tmp_path / spec.output
    report = cast_to_fcn(classifier, fcn, weights, out)
    assert {(m.layer, m.index) for m in report.coerced} == {("fc6", 0), ("fc7", 0), ("fc8", 0)}
    assert report.dropped == [] and report.untouched == []

    cast = {layer.name: layer.blobs for layer in read_caffemodel(out) if layer.blobs}
    assert set(cast) == set(values)
    fc6_fc, fc6_conv = values["fc6"][0], cast["fc6"][0]
    outputs, channels, kh, kw = fc6_conv.shape
    assert fc6_fc.shape == (outputs, channels * kh * kw) == (32, channels * kh * kw)
    rng = np.random.default_rng(2)
    for _ in range(50):  # conv[o, c, i, j] is fc[o, (c * kh + i) * kw + j]
        o, c, i, j = (int(rng.integers(n)) for n in fc6_conv.shape)
        assert fc6_conv[o, c, i, j] == fc6_fc[o, (c * kh + i) * kw + j]
    assert cast["fc8"][0].shape == (10, 32, 1, 1)
    np.testing.assert_array_equal(cast["fc8"][0][:, :, 0, 0], values["fc8"][0])
    for name in values:
        for k, blob in enumerate(values[name]):
            np.testing.assert_array_equal(cast[name][k].ravel(), blob.ravel(), err_msg=name)

    # the two forms compute the same class scores
    data = np.random.default_rng(3).uniform(-50, 50, (1, 3) + tuple(
        full_nets[spec.classifier].layer[0].input_param.shape[0].dim[2:])).astype(np.float32)
    classifier_net = caffe.Net(str(classifier), str(weights), caffe.TEST)
    assert "prob" in classifier_net.forward(data=data)  # the classifier ends in its softmax
    want = classifier_net.blobs["fc8"].data.copy()
    assert want.std() > 1e-3 * np.abs(want).max() > 0  # varied, non-vanishing scores
    fcn_net = caffe.Net(str(fcn), str(out), caffe.TEST)
    fcn_net.forward(data=data)
    scores = fcn_net.blobs["fc8"].data
    assert scores.shape == (1, 10, 1, 1)
    np.testing.assert_allclose(scores[:, :, 0, 0], want, rtol=1e-4,
                               atol=1e-5 * np.abs(want).max())


GOLDEN_FCN = """name: "tiny_v1_fcn"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 10 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc6" type: "Convolution" bottom: "pool1" top: "fc6" convolution_param { num_output: 6 kernel_h: 4 kernel_w: 5 } }
"""


def test_cast_reproduces_bvlc_classifier_output(tmp_path):
    """BVLC Caffe loaded the V1 file into the classifier and computed fc6; the
    fully convolutional form of the cast weights must give the same numbers."""
    from caffe_backend import caffe

    legacy = materialize(COMPACT / "legacy", tmp_path / "legacy")
    golden = np.load(legacy / "tiny_v1.npz")
    fcn = tmp_path / "fcn.prototxt"
    fcn.write_text(GOLDEN_FCN)
    out = tmp_path / "tiny-fcn.caffemodel"
    report = cast_to_fcn(legacy / "tiny_v1_deploy.prototxt", fcn,
                         legacy / "tiny_v1.caffemodel", out)
    assert [(m.layer, m.old_shape, m.new_shape) for m in report.coerced] == [
        ("fc6", (6, 80), (6, 4, 4, 5))]
    net = caffe.Net(str(fcn), str(out), caffe.TEST)
    np.testing.assert_array_equal(net.params["fc6"][0].data.reshape(6, 80),
                                  golden["param/fc6/0"])
    net.forward(data=golden["in/data"])
    want = golden["out/fc6"]
    np.testing.assert_allclose(net.blobs["fc6"].data[:, :, 0, 0], want, rtol=1e-5, atol=1e-5)


def test_cast_refuses_fcn_layers_without_weights(tmp_path):
    legacy = materialize(COMPACT / "legacy", tmp_path / "legacy")
    fcn = tmp_path / "fcn.prototxt"
    fcn.write_text(GOLDEN_FCN + 'layer { name: "score_fr" type: "Convolution" bottom: "fc6" '
                   'top: "score_fr" convolution_param { num_output: 3 kernel_size: 1 } }\n')
    out = tmp_path / "x.caffemodel"
    with pytest.raises(CaffeError, match=r"no weights for the layers \['score_fr'\]"):
        cast_to_fcn(legacy / "tiny_v1_deploy.prototxt", fcn, legacy / "tiny_v1.caffemodel", out)
    assert not out.exists() and sorted(tmp_path.iterdir()) == sorted([fcn, legacy])


def test_prepare_base_refuses_unknown_base(tmp_path):
    with pytest.raises(CaffeError, match="unknown base net 'resnet'"):
        prepare_base("resnet", out_dir=tmp_path)


def test_prepare_base_fetches_weights_and_uses_existing_deploys(full_nets, tmp_path):
    """The whole command path: deploys already under nets_dir are used as they
    are, the weights come through the downloader (a file:// URL here)."""
    spec = BASES["vgg16"]
    nets_dir = tmp_path / "models"
    for name in (spec.classifier, spec.fcn):
        (nets_dir / name).mkdir(parents=True)
        (nets_dir / name / "deploy.prototxt").write_text(
            text_format.MessageToString(narrow(full_nets[name], 32)))
    source = tmp_path / "src" / "VGG_ILSVRC_16_layers.caffemodel"
    source.parent.mkdir()
    values = write_v1_caffemodel(source, narrow(full_nets[spec.classifier], 32),
                                 np.random.default_rng(4))
    out_dir = tmp_path / "ilsvrc-nets"
    result = prepare_base("vgg16", weights=source.as_uri(), out_dir=out_dir,
                          nets_dir=nets_dir, progress=False)
    assert result == out_dir / "vgg16-fcn.caffemodel"
    assert (out_dir / source.name).read_bytes() == source.read_bytes()
    cast = {layer.name: layer.blobs for layer in read_caffemodel(result) if layer.blobs}
    np.testing.assert_array_equal(cast["fc7"][0].reshape(32, 32), values["fc7"][0])
