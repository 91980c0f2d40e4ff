"""The paper's nets beyond the release (FCN-GoogLeNet, FCN-32s-fixed) and the
Table 1 figures, against facts of bvlc_googlenet's definition and the paper,
and hand-derived receptive fields and parameter counts."""
import numpy as np
import pytest

from netspec.models import NETS
from netspec.table1 import analyse, check, main as table1_main

INCEPTION_BRANCHES = ["1x1", "3x3", "5x5", "pool_proj"]


@pytest.fixture(scope="module")
def googlenet():
    return NETS["voc-fcn-googlenet"].prototxts()


def layer(net, name):
    (found,) = [l for l in net.layer if l.name == name]
    return found


def test_googlenet_follows_bvlc_googlenet(googlenet):
    deploy = googlenet["deploy.prototxt"]
    conv1 = layer(deploy, "conv1/7x7_s2").convolution_param
    assert (conv1.num_output, list(conv1.kernel_size), list(conv1.stride)) == (64, [7], [2])
    norm = layer(deploy, "pool1/norm1").lrn_param
    assert (norm.local_size, norm.alpha, norm.beta) == (5, pytest.approx(1e-4), 0.75)
    # LRN after conv2/3x3, before pool2, as in bvlc_googlenet
    names = [l.name for l in deploy.layer]
    assert names.index("conv2/norm2") < names.index("pool2/3x3_s2")
    for module, widths in {"3a": [64, 128, 32, 32], "4e": [256, 320, 128, 128],
                           "5b": [384, 384, 128, 128]}.items():
        concat = layer(deploy, f"inception_{module}/output")
        assert list(concat.bottom) == [f"inception_{module}/{b}" for b in INCEPTION_BRANCHES]
        assert [layer(deploy, b).convolution_param.num_output for b in concat.bottom] == widths
    pool = layer(deploy, "inception_4e/pool").pooling_param
    assert (pool.kernel_size, pool.stride, pool.pad) == (3, 1, 1)
    # the final average pool and the classifier are gone; the score layer reads 5b
    assert "pool5/7x7_s1" not in names and "loss3/classifier" not in names
    assert list(layer(deploy, "score_fr").bottom) == ["inception_5b/output"]
    assert layer(deploy, "score").crop_param.offset == [98]


def test_googlenet_train_net_and_solver(googlenet):
    train = googlenet["train.prototxt"]
    drop = layer(train, "inception_5b/drop")
    assert drop.dropout_param.dropout_ratio == pytest.approx(0.4)
    assert layer(train, "loss").loss_param.normalize is True
    solver = googlenet["solver.prototxt"]
    assert (solver.base_lr, solver.momentum, solver.weight_decay, solver.iter_size) == (
        pytest.approx(5e-5), pytest.approx(0.9), pytest.approx(2e-4), 20)


def test_googlenet_base_nets_name_every_layer_as_the_caffemodel():
    classifier = NETS["googlenet"].prototxts()["deploy.prototxt"]
    fcn = NETS["googlenetfcn"].prototxts()["deploy.prototxt"]
    learned = [l.name for l in classifier.layer if l.type in ("Convolution", "InnerProduct")]
    # 3 stem convolutions, 6 per inception module, the classifier
    assert len(learned) == 3 + 9 * 6 + 1 and learned[-1] == "loss3/classifier"
    assert layer(classifier, "loss3/classifier").type == "InnerProduct"
    assert layer(fcn, "loss3/classifier").type == "Convolution"
    assert layer(classifier, "conv1/7x7_s2").convolution_param.pad == [3]
    pool5 = layer(classifier, "pool5/7x7_s1").pooling_param
    assert (pool5.pool, pool5.kernel_size, pool5.stride) == (1, 7, 1)  # AVE


def test_fcn32s_fixed_learns_only_its_score_layer():
    train = NETS["voc-fcn32s-fixed"].prototxts()["train.prototxt"]
    learning = {l.name for l in train.layer if any(p.lr_mult != 0 for p in l.param)}
    frozen = {l.name for l in train.layer if l.param and all(p.lr_mult == 0 for p in l.param)}
    assert learning == {"score_fr"}
    assert {"conv1_1", "conv5_3", "fc6", "fc7", "upscore"} <= frozen
    # apart from the learning rates it is FCN-32s
    reference = NETS["voc-fcn32s"].prototxts()["train.prototxt"]
    for net in (train, reference):
        for l in net.layer:
            del l.param[:]
    assert train == reference


def alexnet_fcn_params():
    """FCN-AlexNet by hand: weights + biases of conv1-5 (groups of 2 in conv2,
    conv4, conv5), fc6 (6x6 over 256), fc7, score_fr (21 classes)."""
    return sum([96 * 3 * 11 * 11 + 96, 256 * 48 * 5 * 5 + 256, 384 * 256 * 3 * 3 + 384,
                384 * 192 * 3 * 3 + 384, 256 * 192 * 3 * 3 + 256, 4096 * 256 * 6 * 6 + 4096,
                4096 * 4096 + 4096, 21 * 4096 + 21])


def test_table1_fcn_alexnet_by_hand():
    row = analyse("voc-fcn-alexnet")
    assert row.params == alexnet_fcn_params()
    # conv1 k11/4: 11; pool1 k3/2: +2*4; conv2 k5: +4*8; pool2: +2*8; conv3-5 k3:
    # +3*2*16; pool5 k3/2: +2*16; fc6 k6: +5*32
    assert row.rf == 11 + 8 + 32 + 16 + 96 + 32 + 160 == 355
    assert (row.layers, row.stride, row.coarsest) == (8, 32, "score_fr")


def test_table1_googlenet_rf_counts_the_discarded_pool():
    # the largest branch of every module is the 5x5 one: conv1 7/2 (7), pool1 3/2
    # (+2*2), conv2 3x3 (+2*4), pool2 (+2*4); 3a-3b 5x5 at jump 8 (+2*4*8), pool3
    # (+2*8); 4a-4e at 16 (+5*4*16), pool4 (+2*16); 5a-5b at 32 (+2*4*32)
    fcn = 7 + 4 + 8 + 8 + 64 + 16 + 320 + 32 + 256
    assert analyse("voc-fcn-googlenet").rf == fcn == 715
    assert analyse("googlenetfcn").rf == fcn + 6 * 32 == 907  # pool5 7x7 at jump 32


def test_table1_matches_the_paper():
    rows = {name: analyse(name) for name in ("voc-fcn-alexnet", "voc-fcn32s",
                                              "voc-fcn-googlenet")}
    assert check(rows) == []
    assert [rows[n].layers for n in rows] == [8, 16, 22]
    assert [round(rows[n].params / 1e6) for n in rows] == [57, 134, 6]


def test_table1_check_reports_a_mismatch():
    rows = {name: analyse(name) for name in ("voc-fcn-alexnet", "voc-fcn32s",
                                              "voc-fcn-googlenet")}
    rows["voc-fcn32s"] = analyse("voc-fcn16s", width=0.5)
    (miss,) = check(rows)
    assert miss.startswith("voc-fcn32s")


def test_table1_command(capsys):
    assert table1_main(["--check", "voc-fcn8s"]) == 0
    out = capsys.readouterr().out
    assert "voc-fcn8s" in out and "voc-fcn-googlenet" in out and "MISMATCH" not in out
    with pytest.raises(SystemExit):
        table1_main(["voc-fcn7s"])


def test_prepare_base_casts_the_googlenet_classifier(tmp_path):
    from solvers.solve import _deploy_text
    from test_paper_solve import random_googlenet
    from torchcaffe.caffemodel import read_caffemodel
    from weights.prepare import BASES, cast_to_fcn

    spec = BASES["googlenet"]
    base, blobs = random_googlenet(tmp_path, 0.0625)
    fcn = tmp_path / "googlenetfcn.prototxt"
    fcn.write_text(_deploy_text(spec.fcn, 0.0625))
    out = tmp_path / spec.output
    report = cast_to_fcn(tmp_path / "googlenet.prototxt", fcn, base, out)
    assert [(m.layer, m.new_shape) for m in report.coerced] == [
        ("loss3/classifier", (1000, 64, 1, 1))]
    assert report.dropped == [] and report.untouched == []
    cast = {layer.name: layer.blobs for layer in read_caffemodel(out) if layer.blobs}
    np.testing.assert_array_equal(cast["loss3/classifier"][0][:, :, 0, 0],
                                  blobs["loss3/classifier"][0])
    np.testing.assert_array_equal(cast["inception_3a/5x5"][0], blobs["inception_3a/5x5"][0])


def test_table1_times_the_forward_pass(capsys):
    assert table1_main(["--time", "--width", "0.0625", "voc-fcn-alexnet"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.endswith("forward ms") and float(row.split()[-1]) > 0
