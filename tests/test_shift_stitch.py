"""Section 3.2: shift-and-stitch and filter rarefaction give the same dense
output (on the units whose receptive field lies in the image), here on a
narrow FCN-AlexNet with random weights; and the rarefied nets' structure
and receptive fields by hand."""
from types import SimpleNamespace

import numpy as np
import pytest

from netspec.models import NETS
from surgery.shift_stitch import (dense_outputs, field_of, load_deploy, main, rarefied_layers,
                                  rarefy, truncate)
from torchcaffe.errors import CaffeError

WIDTH = 0.0625


def deploy(name, width=1.0):
    return NETS[name].prototxts(width)["deploy.prototxt"]


def layer(net, name):
    (found,) = [l for l in net.layer if l.name == name]
    return found


def test_truncate_keeps_what_the_coarse_scores_need():
    cut = truncate(deploy("voc-fcn8s"), "score_fr")
    names = [l.name for l in cut.layer]
    assert names[0] == "input" and names[-1] == "score_fr"
    assert "upscore2" not in names and "score_pool4" not in names and "relu7" in names


def test_rarefied_vgg16_by_hand():
    cut = truncate(deploy("voc-fcn32s"), "score_fr")
    assert rarefied_layers(cut, 4) == ["pool4", "pool5"]
    rare = rarefy(cut, 4)
    conv5 = layer(rare, "conv5_1").convolution_param
    assert (list(conv5.dilation), list(conv5.pad)) == ([2], [2])
    # pool5 (2x2, now taps 2 apart) is an Eltwise MAX of four crops
    pool5 = layer(rare, "pool5")
    assert pool5.type == "Eltwise" and len(pool5.bottom) == 4
    assert [list(layer(rare, b).crop_param.offset) for b in pool5.bottom] == [
        [0, 0], [0, 2], [2, 0], [2, 2]]
    assert list(layer(rare, "fc6").convolution_param.dilation) == [4]
    assert layer(rare, "pool4").pooling_param.stride == 1
    # stride 32 -> 8, the field stays 404 (VGG16's)
    assert field_of(cut, "score_fr")[::2] == (32, 404)
    assert field_of(rare, "score_fr")[::2] == (8, 404)


def test_factor_must_be_a_product_of_the_last_strides():
    cut = truncate(deploy("voc-fcn32s"), "score_fr")
    with pytest.raises(CaffeError, match="factor 3"):
        rarefied_layers(cut, 3)


def test_shift_and_stitch_equals_rarefaction(tmp_path):
    proto, net = load_deploy("voc-fcn-alexnet", WIDTH, None, tmp_path, seed=0)
    image = np.random.default_rng(1).standard_normal((3, 384, 384)).astype(np.float32) * 50
    check_agreement(dense_outputs(proto, "score_fr", 4, image, net), 4)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "dense.npz"
    assert main(["voc-fcn-alexnet", "--width", str(WIDTH), "--size", "384", "--factor", "2",
                 "--save", str(out)]) == 0
    assert "4 units with their field inside the image" in capsys.readouterr().out
    saved = np.load(out)
    check_agreement(SimpleNamespace(**{k: saved[k] for k in saved.files}), 2)
    with pytest.raises(SystemExit):
        main(["voc-fcn-alexnet", "--width", str(WIDTH), "--factor", "3"])
    assert "factor 3" in capsys.readouterr().err


def check_agreement(dense, factor):
    """Both ways agree to float tolerance on every unit whose field (355 for
    AlexNet) fits in the 384-pixel image: (384 - 355) // (32 / f) + 1 per axis."""
    interior = dense.interior
    assert interior.sum() == ((384 - 355) // (32 // factor) + 1) ** 2
    stitched, rarefied = dense.stitched[:, interior], dense.rarefied[:, interior]
    assert not np.isnan(stitched).any()
    scale = np.abs(rarefied).max()
    assert scale > 1
    np.testing.assert_allclose(stitched, rarefied, atol=1e-5 * scale, rtol=0)
