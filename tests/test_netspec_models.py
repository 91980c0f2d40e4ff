"""The reference models against facts of the FCN release (hand-written)."""
import ast
import logging
import os

import pytest
from google.protobuf import text_format

from netspec.__main__ import main
from netspec.models import NETS
from netspec.writer import to_prototxt
from torchcaffe.proto import caffe_pb2

MODELS = ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet",
          "nyud-fcn32s-color", "nyud-fcn32s-hha", "nyud-fcn32s-color-d",
          "nyud-fcn32s-color-hha", "siftflow-fcn32s", "siftflow-fcn16s", "siftflow-fcn8s",
          "pascalcontext-fcn32s", "pascalcontext-fcn16s", "pascalcontext-fcn8s"]
BASE_NETS = ["vgg16", "vgg16fcn", "alexnet", "alexnetfcn"]
PAPER_MODELS = ["voc-fcn-googlenet", "voc-fcn32s-fixed"]
PAPER_BASE_NETS = ["googlenet", "googlenetfcn"]

VGG_BODY = ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
            "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
            "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "pool3",
            "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "pool4",
            "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "pool5",
            "fc6", "relu6", "drop6", "fc7", "relu7", "drop7"]
HEAD_8S = ["score_fr", "upscore2", "score_pool4", "score_pool4c", "fuse_pool4",
           "upscore_pool4", "score_pool3", "score_pool3c", "fuse_pool3", "upscore8", "score"]
MEAN = (104.00699, 116.66877, 122.67892)


@pytest.fixture(scope="module")
def protos():
    return {name: NETS[name].prototxts() for name in MODELS + BASE_NETS}


def layer(net, name):
    (found,) = [l for l in net.layer if l.name == name]
    return found


def crops(net):
    return {l.name: list(l.crop_param.offset) for l in net.layer if l.type == "Crop"}


def data_param(net):
    python = net.layer[0].python_param
    return python.module, python.layer, ast.literal_eval(python.param_str)


def test_names_are_exactly_the_make_targets():
    assert list(NETS) == MODELS + BASE_NETS + PAPER_MODELS + PAPER_BASE_NETS


@pytest.mark.parametrize("name", MODELS + BASE_NETS)
def test_every_prototxt_parses_back_equal(protos, name):
    for file_name, message in protos[name].items():
        parsed = text_format.Parse(to_prototxt(message), type(message)())
        assert parsed == message, file_name


def test_voc_fcn8s_train(protos):
    net = protos["voc-fcn8s"]["train.prototxt"]
    assert [l.name for l in net.layer] == ["data", *VGG_BODY, *HEAD_8S, "loss"]
    assert crops(net) == {"score_pool4c": [5], "score_pool3c": [9], "score": [31]}
    assert all(l.crop_param.axis == 2 for l in net.layer if l.type == "Crop")
    assert data_param(net) == ("voc_layers", "SBDDSegDataLayer", {
        "sbdd_dir": "../data/sbdd/dataset", "seed": 1337, "split": "train", "mean": MEAN})
    conv1 = layer(net, "conv1_1").convolution_param
    assert (conv1.num_output, list(conv1.pad), list(conv1.kernel_size)) == (64, [100], [3])
    fc6 = layer(net, "fc6").convolution_param
    assert (fc6.num_output, list(fc6.kernel_size), list(fc6.pad)) == (4096, [7], [0])
    assert [(p.lr_mult, p.decay_mult) for p in layer(net, "score_pool3").param] == [(1, 1), (2, 0)]
    for name, kernel, stride in (("upscore2", 4, 2), ("upscore_pool4", 4, 2), ("upscore8", 16, 8)):
        up = layer(net, name)
        assert up.type == "Deconvolution" and [p.lr_mult for p in up.param] == [0]
        cp = up.convolution_param
        assert (cp.num_output, list(cp.kernel_size), list(cp.stride), cp.bias_term) == (
            21, [kernel], [stride], False)
    assert layer(net, "drop6").dropout_param.dropout_ratio == 0.5
    assert list(layer(net, "drop6").top) == ["fc6"]  # in place
    assert layer(net, "fuse_pool4").eltwise_param.operation == caffe_pb2.EltwiseParameter.SUM
    loss = layer(net, "loss")
    assert (loss.type, loss.loss_param.normalize, loss.loss_param.ignore_label) == (
        "SoftmaxWithLoss", False, 255)


def test_voc_val_reads_seg11valid(protos):
    assert data_param(protos["voc-fcn32s"]["val.prototxt"]) == ("voc_layers", "VOCSegDataLayer", {
        "voc_dir": "../data/pascal/VOC2011", "seed": 1337, "split": "seg11valid", "mean": MEAN})


def test_voc_fcn16s_keeps_the_release_data_paths(protos):
    # the release's voc-fcn16s points two folders up
    assert data_param(protos["voc-fcn16s"]["train.prototxt"])[2]["sbdd_dir"] == "../../data/sbdd/dataset"


@pytest.mark.parametrize("name, offsets", [
    ("voc-fcn32s", {"score": [19]}),
    ("voc-fcn16s", {"score_pool4c": [5], "score": [27]}),
    ("voc-fcn8s-atonce", {"score_pool4c": [5], "score_pool3c": [9], "score": [31]}),
    ("voc-fcn-alexnet", {"score": [18]}),
    ("nyud-fcn32s-color-hha", {"score": [19]}),
    ("siftflow-fcn16s", {"score_pool4_semc": [5], "score_sem": [27],
                         "score_pool4_geoc": [5], "score_geo": [27]}),
    ("pascalcontext-fcn8s", {"score_pool4c": [5], "score_pool3c": [9], "score": [31]}),
])
def test_crop_offsets(protos, name, offsets):
    train_file = "train.prototxt" if name.startswith(("voc", "pascal")) else "trainval.prototxt"
    assert crops(protos[name][train_file]) == offsets


def test_atonce_scales_the_skips(protos):
    net = protos["voc-fcn8s-atonce"]["train.prototxt"]
    for pool, value in (("pool4", 0.01), ("pool3", 0.0001)):
        scale = layer(net, f"scale_{pool}")
        assert (scale.type, list(scale.bottom)) == ("Scale", [pool])
        assert scale.scale_param.filler.type == "constant"
        assert scale.scale_param.filler.value == pytest.approx(value)
        assert [p.lr_mult for p in scale.param] == [0]
        assert list(layer(net, f"score_{pool}").bottom) == [f"scale_{pool}"]


def test_fcn_alexnet(protos):
    net = protos["voc-fcn-alexnet"]["train.prototxt"]
    assert [l.name for l in net.layer] == [
        "data", "conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2",
        "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5",
        "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "score_fr", "upscore", "score", "loss"]
    conv1 = layer(net, "conv1").convolution_param
    assert (list(conv1.kernel_size), list(conv1.stride), list(conv1.pad)) == ([11], [4], [100])
    assert [layer(net, c).convolution_param.group for c in ("conv2", "conv4", "conv5")] == [2, 2, 2]
    assert list(layer(net, "fc6").convolution_param.kernel_size) == [6]
    assert not layer(net, "conv1").param
    up = layer(net, "upscore").convolution_param
    assert (list(up.kernel_size), list(up.stride)) == ([63], [32])
    assert layer(net, "norm1").lrn_param.local_size == 5
    assert layer(net, "loss").loss_param.normalize is True


def test_nyud_color_d_concatenates_bgr_and_depth(protos):
    net = protos["nyud-fcn32s-color-d"]["trainval.prototxt"]
    assert [l.name for l in net.layer[:4]] == ["color", "data", "conv1_1_bgrd", "relu1_1"]
    assert list(net.layer[0].top) == ["color", "depth", "label"]
    assert (net.layer[1].type, list(net.layer[1].bottom)) == ("Concat", ["color", "depth"])
    assert data_param(net) == ("nyud_layers", "NYUDSegDataLayer", {
        "nyud_dir": "../data/nyud", "split": "trainval",
        "tops": ["color", "depth", "label"], "seed": 1337})
    assert layer(net, "score_fr").convolution_param.num_output == 40


def test_nyud_color_hha_late_fusion(protos):
    net = protos["nyud-fcn32s-color-hha"]["test.prototxt"]
    names = [l.name for l in net.layer]
    assert names[1:3] == ["conv1_1color", "relu1_1color"]
    assert names.index("score_frcolor") < names.index("conv1_1hha")
    assert names[-5:] == ["score_frhha", "score_fused", "upscore", "score", "loss"]
    fused = layer(net, "score_fused")
    assert list(fused.bottom) == ["score_frcolor", "score_frhha"]
    assert list(fused.eltwise_param.coeff) == [0.5, 0.5]
    assert list(layer(net, "score").bottom) == ["upscore", "color"]
    assert data_param(net)[2]["tops"] == ["color", "hha", "label"]


def test_siftflow_two_heads(protos):
    net = protos["siftflow-fcn32s"]["trainval.prototxt"]
    assert list(net.layer[0].top) == ["data", "sem", "geo"]
    names = [l.name for l in net.layer]
    assert names[-8:] == ["score_fr_sem", "upscore_sem", "score_sem", "loss",
                          "score_fr_geo", "upscore_geo", "score_geo", "loss_geo"]
    assert layer(net, "score_fr_sem").convolution_param.num_output == 33
    assert layer(net, "score_fr_geo").convolution_param.num_output == 3
    assert list(layer(net, "loss_geo").bottom) == ["score_geo", "geo"]
    assert data_param(net) == ("siftflow_layers", "SIFTFlowSegDataLayer", {
        "siftflow_dir": "../data/sift-flow", "split": "trainval", "seed": 1337})


def test_pascalcontext_data_layer(protos):
    net = protos["pascalcontext-fcn16s"]["val.prototxt"]
    assert data_param(net) == ("pascalcontext_layers", "PASCALContextSegDataLayer", {
        "voc_dir": "../../data/pascal", "context_dir": "../../data/pascal-context",
        "split": "val", "seed": 1337})
    assert layer(net, "score_fr").convolution_param.num_output == 60


@pytest.mark.parametrize("name, files", [
    ("voc-fcn8s", ("train.prototxt", "val.prototxt")),
    ("nyud-fcn32s-hha", ("trainval.prototxt", "test.prototxt")),
    ("siftflow-fcn8s", ("trainval.prototxt", "test.prototxt")),
    ("pascalcontext-fcn32s", ("train.prototxt", "val.prototxt")),
])
def test_release_file_names(protos, name, files):
    assert sorted(protos[name]) == sorted((*files, "deploy.prototxt", "solver.prototxt"))


# base_lr, max_iter, test_iter, momentum, iter_size, snapshot
SOLVERS = {
    "voc-fcn32s": (1e-10, 100000, 736, 0.99, 1, 4000),
    "voc-fcn16s": (1e-12, 100000, 736, 0.99, 1, 4000),
    "voc-fcn8s": (1e-14, 100000, 736, 0.99, 1, 4000),
    "voc-fcn8s-atonce": (1e-10, 300000, 736, 0.99, 1, 4000),
    "voc-fcn-alexnet": (1e-4, 100000, 736, 0.9, 20, 4000),
    "nyud-fcn32s-color": (1e-10, 300000, 654, 0.99, 1, 2000),
    "nyud-fcn32s-hha": (1e-10, 300000, 654, 0.99, 1, 2000),
    "nyud-fcn32s-color-d": (1e-10, 300000, 654, 0.99, 1, 2000),
    "nyud-fcn32s-color-hha": (1e-12, 300000, 654, 0.99, 1, 2000),
    "siftflow-fcn32s": (1e-10, 300000, 200, 0.99, 1, None),
    "siftflow-fcn16s": (1e-12, 300000, 200, 0.99, 1, None),
    "siftflow-fcn8s": (1e-12, 300000, 200, 0.99, 1, None),
    "pascalcontext-fcn32s": (1e-10, 300000, 5105, 0.99, 1, 4000),
    "pascalcontext-fcn16s": (1e-12, 300000, 5105, 0.99, 1, 4000),
    "pascalcontext-fcn8s": (1e-14, 300000, 5105, 0.99, 1, 4000),
}


@pytest.mark.parametrize("name", MODELS)
def test_solver(protos, name):
    base_lr, max_iter, test_iter, momentum, iter_size, snapshot = SOLVERS[name]
    s = protos[name]["solver.prototxt"]
    train, test = ("train", "val") if name.startswith(("voc", "pascal")) else ("trainval", "test")
    assert (s.train_net, list(s.test_net)) == (f"{train}.prototxt", [f"{test}.prototxt"])
    assert s.base_lr == pytest.approx(base_lr, rel=1e-6)  # a float32 field
    assert (s.max_iter, list(s.test_iter), s.iter_size) == (max_iter, [test_iter], iter_size)
    assert s.momentum == pytest.approx(momentum)
    assert s.weight_decay == pytest.approx(0.0005)
    assert (s.lr_policy, s.display, s.average_loss, s.test_interval, s.test_initialization) == (
        "fixed", 20, 20, 999999999, False)
    if snapshot is None:
        assert not s.HasField("snapshot") and not s.HasField("snapshot_prefix")
    else:
        assert (s.snapshot, s.snapshot_prefix) == (snapshot, "snapshot/train")


def test_voc_fcn8s_deploy(protos):
    net = protos["voc-fcn8s"]["deploy.prototxt"]
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["data"])
    assert list(first.input_param.shape[0].dim) == [1, 3, 500, 500]
    names = [l.name for l in net.layer]
    assert names == ["input", *[n for n in VGG_BODY if not n.startswith("drop")], *HEAD_8S]
    assert list(layer(net, "fc7").bottom) == ["fc6"]


def test_deploy_inputs_of_multi_input_nets(protos):
    color_d = protos["nyud-fcn32s-color-d"]["deploy.prototxt"].layer[0]
    assert list(color_d.top) == ["color", "depth"]
    assert [list(s.dim) for s in color_d.input_param.shape] == [[1, 3, 500, 500], [1, 1, 500, 500]]
    color_hha = protos["nyud-fcn32s-color-hha"]["deploy.prototxt"]
    assert list(color_hha.layer[0].top) == ["color", "hha"]
    assert [l.type for l in color_hha.layer].count("Dropout") == 0
    sift = protos["siftflow-fcn8s"]["deploy.prototxt"]
    assert "loss" not in [l.name for l in sift.layer] and "loss_geo" not in [l.name for l in sift.layer]


@pytest.mark.parametrize("name", MODELS)
def test_deploy_has_no_data_layer_dropout_or_loss(protos, name):
    types = {l.type for l in protos[name]["deploy.prototxt"].layer}
    assert not types & {"Python", "Dropout", "SoftmaxWithLoss"}


def test_vgg16_classifier_base_net(protos):
    net = protos["vgg16"]["deploy.prototxt"]
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 224, 224]
    assert [l.name for l in net.layer] == ["data", *VGG_BODY, "fc8", "prob"]
    assert layer(net, "conv1_1").convolution_param.pad == [1]
    assert [layer(net, f).type for f in ("fc6", "fc7", "fc8")] == ["InnerProduct"] * 3
    assert [layer(net, f).inner_product_param.num_output for f in ("fc6", "fc7", "fc8")] == [
        4096, 4096, 1000]


def test_vgg16fcn_base_net(protos):
    net = protos["vgg16fcn"]["deploy.prototxt"]
    kernels = [(layer(net, f).type, layer(net, f).convolution_param.num_output,
                list(layer(net, f).convolution_param.kernel_size)) for f in ("fc6", "fc7", "fc8")]
    assert kernels == [("Convolution", 4096, [7]), ("Convolution", 4096, [1]),
                       ("Convolution", 1000, [1])]


def test_alexnet_base_nets(protos):
    net = protos["alexnet"]["deploy.prototxt"]
    assert net.name == "AlexNet"
    assert list(net.layer[0].input_param.shape[0].dim) == [10, 3, 227, 227]
    assert [l.name for l in net.layer] == [
        "data", "conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2",
        "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5",
        "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8", "prob"]
    conv1 = layer(net, "conv1").convolution_param
    assert (conv1.num_output, list(conv1.kernel_size), list(conv1.stride), list(conv1.pad)) == (
        96, [11], [4], [])
    assert layer(net, "conv2").convolution_param.group == 2
    fcn = protos["alexnetfcn"]["deploy.prototxt"]
    assert [list(layer(fcn, f).convolution_param.kernel_size) for f in ("fc6", "fc7", "fc8")] == [
        [6], [1], [1]]


def test_cli_writes_the_four_files_and_a_solve_script(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "voc-fcn8s", "vgg16"]) == 0
    folder = tmp_path / "voc-fcn8s"
    assert sorted(p.name for p in folder.iterdir()) == [
        "deploy.prototxt", "solve.py", "solver.prototxt", "train.prototxt", "val.prototxt"]
    # the model folder's solve.py trains that model in place, like the release's
    stub = (folder / "solve.py").read_text()
    compile(stub, "solve.py", "exec")
    assert '"voc-fcn8s", "--here"' in stub
    assert sorted(p.name for p in (tmp_path / "vgg16").iterdir()) == ["deploy.prototxt"]
    text = (folder / "train.prototxt").read_text()
    assert "lr_mult: 1\n" in text and "lr_mult: 1.0" not in text  # Caffe-style numbers
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    assert crops(net)["score"] == [31]


def test_cli_list_and_unknown_name(capsys):
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.split() == MODELS + BASE_NETS + PAPER_MODELS + PAPER_BASE_NETS
    with pytest.raises(SystemExit):
        main(["--out", "unused", "voc-fcn7s"])
    err = capsys.readouterr().err
    assert "voc-fcn7s" in err and "voc-fcn8s" in err and "alexnetfcn" in err


# ---------------------------------------------------------------- details of the release text


def test_vgg_convs_write_stride_and_score_convs_do_not(protos):
    # the release's VGG convs (fc6/fc7 included) carry an explicit `stride: 1`;
    # its 1x1 score convs name only num_output, pad and kernel_size
    net = protos["voc-fcn8s"]["train.prototxt"]
    for name in ("conv1_1", "conv3_3", "fc6", "fc7"):
        assert list(layer(net, name).convolution_param.stride) == [1], name
    for name in ("score_fr", "score_pool4", "score_pool3"):
        cp = layer(net, name).convolution_param
        assert (list(cp.stride), list(cp.pad), list(cp.kernel_size)) == ([], [0], [1]), name


def test_fcn_alexnet_writes_every_conv_field(protos):
    net = protos["voc-fcn-alexnet"]["val.prototxt"]
    # group and stride are written even where they are 1, unlike in bvlc_alexnet
    for name, group, stride, pad in (("conv1", 1, 4, 100), ("conv3", 1, 1, 1),
                                     ("fc6", 1, 1, 0), ("fc7", 1, 1, 0)):
        cp = layer(net, name).convolution_param
        assert cp.HasField("group") and cp.group == group, name
        assert (list(cp.stride), list(cp.pad)) == ([stride], [pad]), name
    lrn = layer(net, "norm2").lrn_param
    assert (lrn.local_size, lrn.alpha, lrn.beta) == (5, pytest.approx(1e-4), 0.75)
    assert [l.name for l in net.layer if l.type == "Dropout"] == ["drop6", "drop7"]


@pytest.mark.parametrize("name, test_file", [
    ("voc-fcn32s", "val.prototxt"), ("nyud-fcn32s-hha", "test.prototxt"),
    ("siftflow-fcn8s", "test.prototxt"), ("pascalcontext-fcn16s", "val.prototxt")])
def test_test_nets_keep_dropout(protos, name, test_file):
    net = protos[name][test_file]
    drops = {l.name: (list(l.bottom), l.dropout_param.dropout_ratio)
             for l in net.layer if l.type == "Dropout"}
    assert drops == {"drop6": (["fc6"], 0.5), "drop7": (["fc7"], 0.5)}


def test_voc_fcn16s_val_also_points_two_folders_up(protos):
    assert data_param(protos["voc-fcn16s"]["val.prototxt"])[2]["voc_dir"] == \
        "../../data/pascal/VOC2011"


def test_nyud_single_modality_calls_its_image_top_data(protos):
    net = protos["nyud-fcn32s-hha"]["test.prototxt"]
    assert list(net.layer[0].top) == ["data", "label"]
    assert data_param(net) == ("nyud_layers", "NYUDSegDataLayer", {
        "tops": ["hha", "label"], "seed": 1337, "nyud_dir": "../data/nyud", "split": "test"})
    assert list(layer(net, "conv1_1").bottom) == ["data"]


def test_nyud_color_hha_suffixes_every_stream_layer(protos):
    names = [l.name for l in protos["nyud-fcn32s-color-hha"]["trainval.prototxt"].layer]
    for stream in ("color", "hha"):
        for base in ("pool5", "fc6", "drop6", "fc7", "drop7", "score_fr"):
            assert base + stream in names


def test_siftflow_fcn8s_head_names(protos):
    net = protos["siftflow-fcn8s"]["trainval.prototxt"]
    names = [l.name for l in net.layer]
    for task in ("_sem", "_geo"):
        head = [n for n in HEAD_8S if n != "score"]
        expected = [n[:-1] + task + "c" if n.endswith("c") else n + task for n in head]
        assert [n for n in names if n in expected] == expected
    assert list(layer(net, "upscore8_geo").bottom) == ["fuse_pool3_geo"]
    assert crops(net)["score_pool3_semc"] == [9] and crops(net)["score_geo"] == [31]


@pytest.mark.parametrize("name, split", [("pascalcontext-fcn32s", "train"),
                                         ("pascalcontext-fcn8s", "val")])
def test_pascalcontext_param_str_key_order(protos, name, split):
    # the release writes the keys alphabetically (context_dir first)
    param_str = protos[name][f"{split}.prototxt"].layer[0].python_param.param_str
    assert list(ast.literal_eval(param_str)) == ["context_dir", "seed", "split", "voc_dir"]


# ---------------------------------------------------------------- one data root


def test_cli_links_one_data_root(tmp_path):
    out = tmp_path / "models"
    assert main(["--out", str(out), "voc-fcn32s", "voc-fcn16s", "pascalcontext-fcn8s"]) == 0
    link = out / "data"
    assert link.is_symlink() and os.readlink(link) == os.path.join("..", "data")
    (tmp_path / "data" / "sbdd" / "dataset").mkdir(parents=True)
    (tmp_path / "data" / "pascal-context").mkdir(parents=True)

    def resolved(model, file_name, key):
        net = text_format.Parse((out / model / file_name).read_text(), caffe_pb2.NetParameter())
        return (out / model / data_param(net)[2][key]).resolve()

    one_up = resolved("voc-fcn32s", "train.prototxt", "sbdd_dir")       # ../data/...
    two_up = resolved("voc-fcn16s", "train.prototxt", "sbdd_dir")       # ../../data/...
    assert one_up == two_up == (tmp_path / "data" / "sbdd" / "dataset").resolve()
    assert resolved("pascalcontext-fcn8s", "val.prototxt", "context_dir") == \
        (tmp_path / "data" / "pascal-context").resolve()
    assert main(["--out", str(out), "voc-fcn32s"]) == 0  # a second run keeps the link
    assert os.readlink(link) == os.path.join("..", "data")


def test_cli_leaves_an_existing_data_folder_and_says_so(tmp_path, caplog):
    out = tmp_path / "models"
    (out / "data").mkdir(parents=True)
    with caplog.at_level(logging.INFO, logger="netspec.writer"):
        assert main(["--out", str(out), "voc-fcn32s"]) == 0
    assert (out / "data").is_dir() and not (out / "data").is_symlink()
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(out / "data") in warning and str(tmp_path / "data") in warning


def test_cli_leaves_another_link(tmp_path, caplog):
    out, elsewhere = tmp_path / "models", tmp_path / "datasets"
    elsewhere.mkdir()
    out.mkdir()
    (out / "data").symlink_to(elsewhere)
    with caplog.at_level(logging.INFO, logger="netspec.writer"):
        assert main(["--out", str(out), "voc-fcn32s"]) == 0
    assert os.readlink(out / "data") == str(elsewhere)
    assert any(f"a link to {elsewhere}" in r.getMessage() for r in caplog.records)


def test_width_narrows_the_backbone_only():
    # 1/16 of VGG16's 64/128/256/512/4096 channels; class scores, upsampling
    # and the crop offsets (the geometry) stay those of the reference net
    net = NETS["voc-fcn8s"].prototxts(width=1 / 16)["train.prototxt"]
    expected = {"conv1_1": 4, "conv2_2": 8, "conv3_3": 16, "conv4_1": 32, "conv5_3": 32,
                "fc6": 256, "fc7": 256, "score_fr": 21, "score_pool4": 21,
                "score_pool3": 21, "upscore2": 21, "upscore8": 21}
    for name, outputs in expected.items():
        assert layer(net, name).convolution_param.num_output == outputs, name
    assert crops(net) == {"score_pool4c": [5], "score_pool3c": [9], "score": [31]}


def test_width_option_of_the_command(tmp_path):
    assert main(["--out", str(tmp_path), "--width", "0.5", "vgg16"]) == 0
    net = caffe_pb2.NetParameter()
    text_format.Parse((tmp_path / "vgg16" / "deploy.prototxt").read_text(), net)
    assert layer(net, "conv1_1").convolution_param.num_output == 32
    assert layer(net, "fc6").inner_product_param.num_output == 2048
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--width", "0", "vgg16"])
