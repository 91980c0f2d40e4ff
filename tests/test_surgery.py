"""Net surgery against hand-derived values and BVLC-written upsampling kernels.

The nets here are minimal stand-ins with pycaffe's `net.params[name][i].data`
shape; surgery needs nothing more.  The bilinear kernels are checked against
numbers worked out by hand, against the interpolation properties they must
have, and against the kernels BVLC Caffe saved in the golden FCN-8s file.
"""
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from surgery import expand_score, interp, transplant, upsample_filt
from torchcaffe.errors import CaffeError, LayerError

from golden_sets import COMPACT, materialize

GOLDEN_NETS = COMPACT / "nets"  # BVLC Caffe's files and outputs, in the committed copy


class FakeBlob:
    def __init__(self, data):
        self.data = np.asarray(data, dtype=np.float32)


class FakeNet:
    """`params` by layer name, in order, like pycaffe's Net."""

    def __init__(self, **shapes):
        self.params = OrderedDict(
            (name, [FakeBlob(np.zeros(s)) for s in blob_shapes])
            for name, blob_shapes in shapes.items())


def arange(shape, start=0.0):
    return start + np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


# ---------------------------------------------------------------- upsample_filt

def test_upsample_filt_4_is_outer_product_of_hand_tent():
    tent = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_array_equal(upsample_filt(4), np.outer(tent, tent))


def test_upsample_filt_3_peaks_at_centre():
    # factor 2, centre 1: 1 - |x - 1| / 2
    tent = np.array([0.5, 1.0, 0.5])
    np.testing.assert_array_equal(upsample_filt(3), np.outer(tent, tent))


def test_upsample_filt_1_is_identity():
    np.testing.assert_array_equal(upsample_filt(1), [[1.0]])


@pytest.mark.parametrize("size, factor", [(16, 8), (64, 32), (4, 2), (63, 32), (3, 2)])
def test_upsample_filt_partition_of_unity(size, factor):
    """Upsampling by `factor`: the taps that land on one output pixel sum to 1
    per axis, so a constant map stays constant (bilinear interpolation)."""
    filt = upsample_filt(size)
    tent = np.sqrt(np.diag(filt))  # the kernel is tent x tent with tent >= 0
    np.testing.assert_allclose(np.outer(tent, tent), filt, rtol=1e-12)
    for phase in range(factor):
        assert tent[phase::factor].sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("size", [16, 64])
def test_upsample_filt_even_sizes(size):
    factor = size // 2
    filt = upsample_filt(size)
    assert filt.shape == (size, size)
    np.testing.assert_array_equal(filt, filt.T)
    np.testing.assert_array_equal(filt, filt[::-1, ::-1])
    # axis values are (2j + 1) / (2 factor) rising to the centre pair
    rising = (2 * np.arange(factor) + 1) / (2 * factor)
    np.testing.assert_allclose(filt[factor - 1], rising[factor - 1] * np.r_[rising, rising[::-1]])
    assert filt.max() == pytest.approx((1 - 0.5 / factor) ** 2)
    assert filt.sum() == pytest.approx(factor ** 2)
    assert filt.min() == pytest.approx((0.5 / factor) ** 2)


@pytest.mark.parametrize("bad", [0, -4, 2.5, "4", True])
def test_upsample_filt_rejects_bad_size(bad):
    with pytest.raises(CaffeError, match="positive integer"):
        upsample_filt(bad)


# ----------------------------------------------------------------------- interp

def test_interp_sets_the_diagonal_only():
    net = FakeNet(upscore=[(3, 3, 4, 4)])
    net.params["upscore"][0].data[...] = 7.0  # off-diagonal values must survive
    interp(net, ["upscore"])
    w = net.params["upscore"][0].data
    tent = np.array([0.25, 0.75, 0.75, 0.25])
    for i in range(3):
        for j in range(3):
            expected = np.outer(tent, tent) if i == j else np.full((4, 4), 7.0)
            np.testing.assert_array_equal(w[i, j], expected.astype(np.float32))


def test_interp_single_output_per_group_fills_every_channel():
    net = FakeNet(up=[(5, 1, 3, 3)])
    interp(net, ["up"])
    for c in range(5):
        np.testing.assert_array_equal(net.params["up"][0].data[c, 0],
                                      np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]))


def test_interp_refuses_channel_mismatch_naming_the_layer():
    net = FakeNet(upscore_bad=[(3, 2, 4, 4)])
    with pytest.raises(LayerError, match="upscore_bad.*input as output channels"):
        interp(net, ["upscore_bad"])


def test_interp_refuses_rectangular_kernel():
    net = FakeNet(upscore_rect=[(2, 2, 4, 3)])
    with pytest.raises(LayerError, match="upscore_rect.*square"):
        interp(net, ["upscore_rect"])


def test_interp_refuses_unknown_layer():
    with pytest.raises(CaffeError, match="no learnable layer 'nope'"):
        interp(FakeNet(up=[(1, 1, 2, 2)]), ["nope"])


def _golden_blobs(path):
    from torchcaffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    net.ParseFromString(path.read_bytes())
    return {layer.name: [np.array(b.data, dtype=np.float32).reshape(tuple(b.shape.dim))
                         for b in layer.blobs] for layer in net.layer}


def test_interp_matches_kernels_bvlc_caffe_saved(tmp_path):
    path = materialize(GOLDEN_NETS, tmp_path / "nets") / "fcn8s_w16.caffemodel"
    saved = _golden_blobs(path)
    ups = [name for name, blobs in saved.items() if name.startswith("upscore") and blobs]
    assert ups == ["upscore2", "upscore_pool4", "upscore8"]
    net = FakeNet(**{name: [saved[name][0].shape] for name in ups})
    interp(net, ups)
    for name in ups:
        np.testing.assert_allclose(net.params[name][0].data, saved[name][0], rtol=0, atol=1e-7)


# ------------------------------------------------------------------- transplant

def test_transplant_casts_fc_to_conv_in_flat_order():
    old = FakeNet(conv1=[(2, 3, 3, 3), (2,)], fc6=[(4, 18), (4,)])
    new = FakeNet(conv1=[(2, 3, 3, 3), (2,)], fc6=[(4, 2, 3, 3), (4,)])
    for blobs in old.params.values():
        for k, b in enumerate(blobs):
            b.data[...] = arange(b.data.shape, start=100 * k + 1)
    report = transplant(new, old)
    fc, conv = old.params["fc6"][0].data, new.params["fc6"][0].data
    for o in range(4):
        for c in range(2):
            for i in range(3):
                for j in range(3):
                    assert conv[o, c, i, j] == fc[o, c * 9 + i * 3 + j]
    np.testing.assert_array_equal(new.params["fc6"][1].data, old.params["fc6"][1].data)
    np.testing.assert_array_equal(new.params["conv1"][0].data, old.params["conv1"][0].data)
    assert [(m.layer, m.index) for m in report.copied] == [("conv1", 0), ("conv1", 1), ("fc6", 1)]
    assert [(m.layer, m.index, m.old_shape, m.new_shape) for m in report.coerced] == [
        ("fc6", 0, (4, 18), (4, 2, 3, 3))]
    assert report.dropped == [] and report.untouched == []


def test_transplant_drops_and_leaves_untouched():
    old = FakeNet(conv1=[(2, 1, 1, 1), (2,)], fc8=[(10, 2), (10,)])
    new = FakeNet(conv1=[(2, 1, 1, 1)], score_fr=[(3, 2, 1, 1), (3,)])
    new.params["score_fr"][0].data[...] = 5.0
    old.params["conv1"][0].data[...] = 2.0
    report = transplant(new, old)
    assert [(m.layer, m.index) for m in report.dropped] == [("conv1", 1), ("fc8", 0), ("fc8", 1)]
    assert report.untouched == ["score_fr"]
    assert (new.params["score_fr"][0].data == 5.0).all()
    assert (new.params["conv1"][0].data == 2.0).all()


def test_transplant_suffix_names_the_new_layers():
    old = FakeNet(conv1_1=[(2, 3, 1, 1)])
    new = FakeNet(conv1_1_hha=[(2, 3, 1, 1)], conv1_1=[(2, 3, 1, 1)])
    old.params["conv1_1"][0].data[...] = arange((2, 3, 1, 1))
    report = transplant(new, old, suffix="_hha")
    np.testing.assert_array_equal(new.params["conv1_1_hha"][0].data, arange((2, 3, 1, 1)))
    assert (new.params["conv1_1"][0].data == 0).all()
    assert report.copied[0].target == "conv1_1_hha"
    assert report.untouched == ["conv1_1"]


def test_transplant_refuses_count_mismatch_and_changes_nothing():
    old = FakeNet(conv1=[(2, 3, 1, 1)], fc6=[(4, 20)])
    new = FakeNet(conv1=[(2, 3, 1, 1)], fc6=[(4, 2, 3, 3)])
    old.params["conv1"][0].data[...] = 1.0
    with pytest.raises(CaffeError) as err:
        transplant(new, old)
    msg = str(err.value)
    assert "'fc6'" in msg and "(4, 20)" in msg and "(4, 2, 3, 3)" in msg
    assert (new.params["conv1"][0].data == 0).all()


# ----------------------------------------------------------------- expand_score

def test_expand_score_keeps_old_classes_first():
    old = FakeNet(score=[(3, 4, 1, 1), (3,)])
    new = FakeNet(score_big=[(5, 4, 1, 1), (5,)])
    old.params["score"][0].data[...] = arange((3, 4, 1, 1), 1)
    old.params["score"][1].data[...] = [10, 20, 30]
    new.params["score_big"][0].data[...] = -1.0
    new.params["score_big"][1].data[...] = -1.0
    expand_score(new, "score_big", old, "score")
    w, b = new.params["score_big"][0].data, new.params["score_big"][1].data
    np.testing.assert_array_equal(w[:3], arange((3, 4, 1, 1), 1))
    assert (w[3:] == -1).all()
    np.testing.assert_array_equal(b, [10, 20, 30, -1, -1])


def test_expand_score_accepts_legacy_4d_bias():
    old = FakeNet(score=[(2, 1, 1, 1), (1, 1, 1, 2)])
    new = FakeNet(score=[(3, 1, 1, 1), (3,)])
    old.params["score"][1].data[...] = [[[[4, 5]]]]
    expand_score(new, "score", old, "score")
    np.testing.assert_array_equal(new.params["score"][1].data, [4, 5, 0])


def test_expand_score_refuses_shrinking():
    old = FakeNet(score=[(5, 4, 1, 1)])
    new = FakeNet(score=[(3, 4, 1, 1)])
    with pytest.raises(CaffeError, match="'score'.*does not fit"):
        expand_score(new, "score", old, "score")


def test_interp_on_a_runtime_net_gives_bvlc_outputs(tmp_path):
    """Zero the golden net's upsampling kernels, restore them with interp, and
    the forward must again match what BVLC Caffe computed."""
    from caffe_backend import caffe

    net_path = materialize(GOLDEN_NETS, tmp_path / "nets") / "fcn8s_w16"
    golden = np.load(net_path.with_suffix(".npz"))
    net = caffe.Net(str(net_path.with_suffix(".prototxt")),
                    str(net_path.with_suffix(".caffemodel")), caffe.TEST)
    ups = [name for name in net.params if name.startswith("upscore")]
    for name in ups:
        net.params[name][0].data[...] = 0
    interp(net, ups)
    net.forward(data=golden["in/data"], label=golden["in/label"])
    want = golden["out/score"]
    np.testing.assert_allclose(net.blobs["score"].data, want, rtol=0,
                               atol=1e-4 * np.abs(want).max())
    with pytest.raises(LayerError, match="layer 'score_fr' \\(type Convolution\\)"):
        interp(net, ["score_fr"])
