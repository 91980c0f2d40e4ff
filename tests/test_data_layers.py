"""The data layers against hand-made fixtures in each dataset's real layout
(written by `dataset_fixtures`).

Every fixture image has its own label values, so the sequence of labels a
layer produces tells which ids it read, in which order.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from data_layers.nyud_layers import NYUDSegDataLayer
from data_layers.pascalcontext_layers import PASCALContextSegDataLayer
from data_layers.siftflow_layers import SIFTFlowSegDataLayer
from data_layers.voc_layers import SBDDSegDataLayer, VOCSegDataLayer
from dataset_fixtures import (
    H, SIFTFLOW_SUBFOLDER, VOC_IDS, W, solid_rgb, write_context, write_nyud, write_sbd, write_siftflow, write_voc,
)
from torchcaffe.errors import CaffeError

VOC_MEAN = (104.00699, 116.66877, 122.67892)


class FakeBlob:
    """The part of pycaffe's Blob a data layer uses."""

    def __init__(self):
        self.data = np.zeros((0,), dtype=np.float32)

    def reshape(self, *shape):
        self.data = np.zeros(shape, dtype=np.float32)


def make_layer(cls, params: dict | str, ntops: int):
    layer = cls()
    layer.param_str = params if isinstance(params, str) else repr(params)
    tops = [FakeBlob() for _ in range(ntops)]
    layer.setup([], tops)
    layer.reshape([], tops)  # Caffe reshapes once at setup
    return layer, tops


def step(layer, tops) -> list[np.ndarray]:
    """One Caffe forward of the layer: reshape, then forward; the tops' copies."""
    layer.reshape([], tops)
    layer.forward([], tops)
    return [t.data.copy() for t in tops]


# -- PASCAL VOC / SBD ---------------------------------------------------------------

def voc_params(voc: Path, split: str, **extra) -> dict:
    return {"voc_dir": str(voc), "split": split, "mean": VOC_MEAN, "seed": 1337, **extra}


def label_id(label: np.ndarray) -> int:
    """Which fixture image a label top came from (its non-void value)."""
    values = set(np.unique(label).tolist()) - {255.0}
    assert len(values) == 1
    return int(values.pop())


def test_voc_tops_are_bgr_minus_mean_and_palette_indices(tmp_path):
    voc = write_voc(tmp_path)
    layer, tops = make_layer(VOCSegDataLayer, voc_params(voc, "seg11valid"), 2)
    data, label = step(layer, tops)
    assert data.shape == (1, 3, H, W) and label.shape == (1, 1, H, W)
    assert data.dtype == np.float32 and label.dtype == np.float32
    rgb = np.array(Image.open(voc / "JPEGImages" / f"{VOC_IDS[0]}.jpg")).astype(np.float64)
    for c in range(3):  # channel c of the blob is BGR channel c: RGB channel 2 - c
        expected = (rgb[:, :, 2 - c] - VOC_MEAN[c]).astype(np.float32)
        np.testing.assert_array_equal(data[0, c], expected)
    # the decoded JPEG is near what was written: blue first, red last
    assert abs(data[0, 0, 0, 0] - (11 - 104.00699)) < 4
    assert abs(data[0, 2, 0, 0] - (200 - 122.67892)) < 4
    expected_label = np.full((H, W), 1.0)
    expected_label[0, :] = 255
    np.testing.assert_array_equal(label[0, 0], expected_label)


def test_eval_split_reads_in_file_order_and_wraps(tmp_path):
    voc = write_voc(tmp_path)
    layer, tops = make_layer(VOCSegDataLayer, voc_params(voc, "seg11valid"), 2)
    assert [label_id(step(layer, tops)[1]) for _ in range(7)] == [1, 2, 3, 4, 5, 1, 2]


def reference_order(seed: int, count: int, steps: int) -> list[int]:
    """The reference layer's draws: seed the global `random`, one randint per image."""
    random.seed(seed)
    return [random.randint(0, count - 1) for _ in range(steps)]


def test_train_split_order_is_the_references_random_draws(tmp_path):
    voc = write_voc(tmp_path)
    expected = [i + 1 for i in reference_order(1337, len(VOC_IDS), 12)]
    random.seed(5)  # the layer's order must not depend on the global generator ...
    layer, tops = make_layer(VOCSegDataLayer, voc_params(voc, "train"), 2)
    got = []
    for _ in range(12):
        got.append(label_id(step(layer, tops)[1]))
        random.random()  # ... nor disturb it
    assert got == expected
    assert len(set(got)) > 1


def test_randomize_false_keeps_file_order_on_train(tmp_path):
    voc = write_voc(tmp_path)
    layer, tops = make_layer(VOCSegDataLayer, voc_params(voc, "train", randomize=False), 2)
    assert [label_id(step(layer, tops)[1]) for _ in range(6)] == [1, 2, 3, 4, 5, 1]


def test_same_seed_same_sequence_other_seed_other_sequence(tmp_path):
    voc = write_voc(tmp_path)

    def run(seed):
        layer, tops = make_layer(VOCSegDataLayer, voc_params(voc, "train", seed=seed), 2)
        return [label_id(step(layer, tops)[1]) for _ in range(15)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_get_state_set_state_resumes_the_order(tmp_path):
    voc = write_voc(tmp_path)
    layer, tops = make_layer(VOCSegDataLayer, voc_params(voc, "train"), 2)
    for _ in range(4):
        step(layer, tops)
    state = json.loads(json.dumps(layer.get_state()))  # what a snapshot can store
    rest = [step(layer, tops) for _ in range(6)]

    resumed, resumed_tops = make_layer(VOCSegDataLayer, voc_params(voc, "train", seed=99), 2)
    resumed.set_state(state)
    for want in rest:
        for a, b in zip(step(resumed, resumed_tops), want):
            np.testing.assert_array_equal(a, b)


def test_set_state_refuses_a_state_of_another_split(tmp_path):
    voc = write_voc(tmp_path)
    train, _ = make_layer(VOCSegDataLayer, voc_params(voc, "train"), 2)
    val, _ = make_layer(VOCSegDataLayer, voc_params(voc, "seg11valid"), 2)
    with pytest.raises(CaffeError, match="split 'train'"):
        val.set_state(train.get_state())
    with pytest.raises(CaffeError, match="keys split, count, idx, rng"):
        val.set_state({"idx": 0})


def test_sequential_state_resumes(tmp_path):
    voc = write_voc(tmp_path)
    layer, tops = make_layer(VOCSegDataLayer, voc_params(voc, "seg11valid"), 2)
    step(layer, tops), step(layer, tops)
    other, other_tops = make_layer(VOCSegDataLayer, voc_params(voc, "seg11valid"), 2)
    other.set_state(layer.get_state())
    assert [label_id(step(other, other_tops)[1]) for _ in range(4)] == [3, 4, 5, 1]


@pytest.mark.parametrize("split", ["train", "seg11valid"])
def test_prefetch_gives_the_same_sequence(tmp_path, split):
    voc = write_voc(tmp_path)
    plain, plain_tops = make_layer(VOCSegDataLayer, voc_params(voc, split), 2)
    ahead, ahead_tops = make_layer(VOCSegDataLayer, voc_params(voc, split, prefetch=3), 2)
    for _ in range(12):
        for a, b in zip(step(ahead, ahead_tops), step(plain, plain_tops)):
            np.testing.assert_array_equal(a, b)
    assert ahead.get_state() == plain.get_state()


def test_prefetch_reports_a_missing_image_by_id(tmp_path):
    voc = write_voc(tmp_path)
    (voc / "JPEGImages" / f"{VOC_IDS[2]}.jpg").unlink()
    layer, tops = make_layer(VOCSegDataLayer, voc_params(voc, "seg11valid", prefetch=2), 2)
    step(layer, tops)
    step(layer, tops)
    with pytest.raises(CaffeError, match=VOC_IDS[2]):
        step(layer, tops)


def test_sbdd_reads_gtcls_segmentation(tmp_path):
    sbd = write_sbd(tmp_path)
    params = {"sbdd_dir": str(sbd), "split": "train", "mean": VOC_MEAN, "seed": 1337}
    layer, tops = make_layer(SBDDSegDataLayer, params, 2)
    order = reference_order(1337, 3, 5)
    for i in order:
        data, label = step(layer, tops)
        expected = np.full((H, W), i + 1.0)
        expected[1, 1] = 0
        np.testing.assert_array_equal(label[0, 0], expected)
        rgb = np.array(Image.open(sbd / "img" / f"{VOC_IDS[i]}.jpg")).astype(np.float64)
        np.testing.assert_array_equal(data[0, 1], (rgb[:, :, 1] - VOC_MEAN[1]).astype(np.float32))


def test_sbdd_mat_without_gtcls_is_named(tmp_path):
    sbd = write_sbd(tmp_path)
    scipy.io.savemat(sbd / "cls" / f"{VOC_IDS[0]}.mat", {"GTinst": {"Segmentation": np.zeros((H, W))}})
    params = {"sbdd_dir": str(sbd), "split": "train", "mean": VOC_MEAN, "randomize": False}
    with pytest.raises(CaffeError, match=rf"'{VOC_IDS[0]}'.*has no variable 'GTcls'"):
        make_layer(SBDDSegDataLayer, params, 2)


# -- NYUDv2 --------------------------------------------------------------------------


def test_nyud_color_depth_hha_label(tmp_path):
    nyud = write_nyud(tmp_path)
    params = {"nyud_dir": str(nyud), "split": "test", "tops": ["color", "depth", "hha", "label"], "seed": 1337}
    layer, tops = make_layer(NYUDSegDataLayer, params, 4)
    color, depth, hha, label = step(layer, tops)
    rgb = solid_rgb(1).astype(np.float32)
    np.testing.assert_array_equal(color[0, 0], rgb[:, :, 2] - np.float32(116.190))
    np.testing.assert_array_equal(color[0, 2], rgb[:, :, 0] - np.float32(92.318))
    # HHA keeps its stored channel order (the file holds B, G, R of solid_rgb here)
    np.testing.assert_array_equal(hha[0, 0], rgb[:, :, 2] - np.float32(132.431))
    np.testing.assert_array_equal(hha[0, 2], rgb[:, :, 0] - np.float32(118.477))
    raw = np.arange(H * W, dtype=np.float64).reshape(H, W) * 100 + 500
    assert depth.shape == (1, 1, H, W)
    np.testing.assert_allclose(depth[0, 0], np.log(raw) - 7.844, rtol=0, atol=2e-6)
    assert depth[0, 0, 0, 0] == pytest.approx(np.log(500) - 7.844, abs=1e-5)
    assert label.shape == (1, 1, H, W)
    assert label[0, 0, 0, :3].tolist() == [255, 0, 39]  # void 0 -> 255, 1 -> 0, 40 -> 39
    assert label[0, 0, 1, 0] == 9
    assert label_id(step(layer, tops)[3][:, :, 1:]) == 19  # second image, file order


def test_nyud_tops_select_and_order_outputs(tmp_path):
    nyud = write_nyud(tmp_path)
    params = {"nyud_dir": str(nyud), "split": "test", "tops": ["label", "color"]}
    layer, tops = make_layer(NYUDSegDataLayer, params, 2)
    label, color = step(layer, tops)
    assert label.shape == (1, 1, H, W) and color.shape == (1, 3, H, W)
    with pytest.raises(CaffeError, match="needs 3 tops"):
        make_layer(NYUDSegDataLayer, {**params, "tops": ["color", "depth", "label"]}, 2)
    with pytest.raises(CaffeError, match="'tops' must list"):
        make_layer(NYUDSegDataLayer, {**params, "tops": ["color", "normals"]}, 2)


def test_nyud_zero_depth_is_refused_not_minus_inf(tmp_path):
    nyud = write_nyud(tmp_path)
    Image.fromarray(np.zeros((H, W), np.uint16)).save(nyud / "data" / "depth" / "img_5001.png")
    params = {"nyud_dir": str(nyud), "split": "test", "tops": ["depth"]}
    with pytest.raises(CaffeError, match="'5001'.*depth"):
        make_layer(NYUDSegDataLayer, params, 1)


# -- SIFT Flow -------------------------------------------------------------------------

def test_siftflow_data_sem_geo(tmp_path):
    sf = write_siftflow(tmp_path)
    layer, tops = make_layer(SIFTFlowSegDataLayer, {"siftflow_dir": str(sf), "split": "test"}, 3)
    data, sem, geo = step(layer, tops)
    assert data.shape == (1, 3, H, W) and sem.shape == geo.shape == (1, 1, H, W)
    rgb = np.array(Image.open(sf / "Images" / SIFTFLOW_SUBFOLDER / "coast_arnat59.jpg")).astype(np.float32)
    np.testing.assert_array_equal(data[0, 0], rgb[:, :, 2] - np.float32(114.578))
    np.testing.assert_array_equal(data[0, 2], rgb[:, :, 0] - np.float32(108.353))
    assert sem[0, 0, 0].tolist() == [255, 0, 1, 32, 16]
    assert geo[0, 0, 0].tolist() == [255, 255, 0, 1, 2]
    with pytest.raises(CaffeError, match="needs 3 tops"):
        make_layer(SIFTFlowSegDataLayer, {"siftflow_dir": str(sf), "split": "test"}, 2)


# -- PASCAL-Context ----------------------------------------------------------------------


def test_pascalcontext_maps_full_labels_to_the_59_task(tmp_path):
    voc, ctx = write_context(tmp_path)
    params = {"voc_dir": str(voc), "context_dir": str(ctx), "split": "val", "seed": 1337}
    layer, tops = make_layer(PASCALContextSegDataLayer, params, 2)
    data, label = step(layer, tops)
    # code -> task class: aeroplane 2 -> 1, table 4 -> 2, bedclothes 5 -> 3, cloth 6 -> 4,
    # sky 7 -> 5, potted plant 8 -> 6; unlabelled 0, accordion 1, air conditioner 3 and
    # an unknown code all -> 0 (background)
    assert label[0, 0, :2].tolist() == [[0, 0, 1, 0, 2], [3, 4, 5, 6, 0]]
    rgb = np.array(Image.open(voc / "VOC2010" / "JPEGImages" / "2008_000002.jpg")).astype(np.float32)
    np.testing.assert_array_equal(data[0, 1], rgb[:, :, 1] - np.float32(116.669))


def test_pascalcontext_unknown_task_class_is_named(tmp_path):
    voc, ctx = write_context(tmp_path)
    (ctx / "59_labels.txt").write_text("1: aeroplane\n2: unicorn\n")
    params = {"voc_dir": str(voc), "context_dir": str(ctx), "split": "val"}
    with pytest.raises(CaffeError, match="'unicorn'.*labels.txt"):
        make_layer(PASCALContextSegDataLayer, params, 2)


# -- bad configuration and bad files ------------------------------------------------


def test_malicious_param_str_is_rejected_not_run(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(CaffeError, match="dict literal"):
        make_layer(VOCSegDataLayer, f"__import__('os').system('touch {marker}')", 2)
    assert not marker.exists()


@pytest.mark.parametrize("params, message", [
    ("{'voc_dir': 'x', 'split': 'val'", "dict literal"),
    ("['voc_dir', 'val']", "must be a dict literal"),
    ({"voc_dir": "x", "split": "val", "mean": VOC_MEAN, "shuffle": True}, r"unknown param_str key\(s\) \['shuffle'\]"),
    ({"voc_dir": "x", "mean": VOC_MEAN}, "lacks the required key 'split'"),
    ({"voc_dir": "x", "split": "val"}, "lacks the required key 'mean'"),
    ({"voc_dir": "x", "split": "val", "mean": VOC_MEAN, "seed": "1337"}, "'seed' must be int"),
    ({"voc_dir": "x", "split": "val", "mean": VOC_MEAN, "seed": True}, "'seed' must be int"),
    ({"voc_dir": "x", "split": "val", "mean": VOC_MEAN, "randomize": 1}, "'randomize' must be bool"),
    ({"voc_dir": "x", "split": "val", "mean": ("a", 1, 2)}, "'mean' must be a tuple of numbers"),
    ({"voc_dir": "x", "split": "val", "mean": VOC_MEAN, "prefetch": -1}, "'prefetch' must be >= 0"),
])
def test_bad_param_str_is_a_named_error(params, message):
    with pytest.raises(CaffeError, match=message):
        make_layer(VOCSegDataLayer, params, 2)


def test_missing_split_file_names_the_path(tmp_path):
    with pytest.raises(CaffeError, match=r"split file .*VOC2011.*seg11valid\.txt"):
        make_layer(VOCSegDataLayer, voc_params(tmp_path / "VOC2011", "seg11valid"), 2)


def test_missing_and_unreadable_images_name_the_id_and_path(tmp_path):
    voc = write_voc(tmp_path)
    (voc / "SegmentationClass" / f"{VOC_IDS[0]}.png").unlink()
    with pytest.raises(CaffeError, match=rf"'{VOC_IDS[0]}': no file .*SegmentationClass"):
        make_layer(VOCSegDataLayer, voc_params(voc, "seg11valid"), 2)
    (voc / "JPEGImages" / f"{VOC_IDS[0]}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CaffeError, match=rf"'{VOC_IDS[0]}': cannot read .*JPEGImages"):
        make_layer(VOCSegDataLayer, voc_params(voc, "seg11valid"), 2)


def test_colour_label_png_is_refused(tmp_path):
    voc = write_voc(tmp_path)
    Image.new("RGB", (W, H)).save(voc / "SegmentationClass" / f"{VOC_IDS[0]}.png")
    with pytest.raises(CaffeError, match="palette or gray"):
        make_layer(VOCSegDataLayer, voc_params(voc, "seg11valid"), 2)


def test_wrong_top_or_bottom_count(tmp_path):
    voc = write_voc(tmp_path)
    with pytest.raises(CaffeError, match="needs 2 tops"):
        make_layer(VOCSegDataLayer, voc_params(voc, "seg11valid"), 3)
    layer = VOCSegDataLayer()
    layer.param_str = repr(voc_params(voc, "seg11valid"))
    with pytest.raises(CaffeError, match="no bottoms"):
        layer.setup([FakeBlob()], [FakeBlob(), FakeBlob()])


# -- the synthetic set through the layers the voc-fcn nets use ---------------------------


def test_synthetic_set_feeds_sbdd_train_and_voc_seg11valid(tmp_path):
    from data_layers.synthetic import CLASS_LABELS, generate

    generate(tmp_path, seed=0, train=6, val=3, height=32, width=40)
    sbdd = {"sbdd_dir": str(tmp_path / "sbdd" / "dataset"), "split": "train", "mean": VOC_MEAN, "seed": 1337}
    voc = voc_params(tmp_path / "pascal" / "VOC2011", "seg11valid")
    for cls, params in ((SBDDSegDataLayer, sbdd), (VOCSegDataLayer, voc)):
        layer, tops = make_layer(cls, params, 2)
        for _ in range(4):
            data, label = step(layer, tops)
            assert data.shape == (1, 3, 32, 40) and label.shape == (1, 1, 32, 40)
            assert set(np.unique(label).tolist()) <= {0, 255, *CLASS_LABELS}


# -- through the runtime's Blob and Net ----------------------------------------------


def test_layer_fills_torchcaffe_blobs(tmp_path):
    blob_module = pytest.importorskip("torchcaffe.blob")
    voc = write_voc(tmp_path)
    layer = VOCSegDataLayer()
    layer.param_str = repr(voc_params(voc, "seg11valid"))
    tops = [blob_module.Blob(), blob_module.Blob()]
    layer.setup([], tops)
    for k in (1, 2):
        layer.reshape([], tops)
        layer.forward([], tops)
        assert tops[0].shape == (1, 3, H, W) and tops[1].shape == (1, 1, H, W)
        assert label_id(tops[1].data) == k
    rgb = np.array(Image.open(voc / "JPEGImages" / f"{VOC_IDS[1]}.jpg")).astype(np.float64)
    np.testing.assert_array_equal(tops[0].data[0, 1], (rgb[:, :, 1] - VOC_MEAN[1]).astype(np.float32))



def test_voc_layer_inside_a_torchcaffe_net(tmp_path):
    pytest.importorskip("torchcaffe.net", reason="torchcaffe's Net is not in this checkout yet")
    import torchcaffe as caffe

    voc = write_voc(tmp_path)
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(
        'layer { name: "data" type: "Python" top: "data" top: "label"\n'
        '  python_param { module: "voc_layers" layer: "VOCSegDataLayer"\n'
        f'    param_str: {json.dumps(repr(voc_params(voc, "seg11valid")))} }} }}\n'
    )
    net = caffe.Net(str(prototxt), caffe.TEST)
    labels = []
    for _ in range(3):
        net.forward()
        assert net.blobs["data"].data.shape == (1, 3, H, W)
        labels.append(label_id(net.blobs["label"].data))
    assert labels == [1, 2, 3]
    rgb = np.array(Image.open(voc / "JPEGImages" / f"{VOC_IDS[2]}.jpg")).astype(np.float64)
    np.testing.assert_array_equal(net.blobs["data"].data[0, 0], (rgb[:, :, 2] - VOC_MEAN[0]).astype(np.float32))
