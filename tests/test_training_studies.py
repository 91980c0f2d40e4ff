"""The paper's training studies (Section 4.3) as data-layer / solver options:
loss sampling and its batch enlargement, class balancing, mirror and jitter.
Hand-computed expectations: the random draws are fixed by a stand-in
generator, so every kept or dropped pixel follows from the option's rule."""
from types import SimpleNamespace

import numpy as np
import pytest

from data_layers.seg_data import Augmenter, shift
from data_layers.voc_layers import VOCSegDataLayer
from dataset_fixtures import write_voc
from netspec.datasets import TrainingOptions
from netspec.models import NETS
from solvers.solve import training_options
from test_data_layers import make_layer, step, voc_params
from torchcaffe.errors import CaffeError

DEFAULTS = dict(mirror=False, jitter=0, loss_p=1.0, loss_cell=32, class_weights=None, seed=0)


class Draws:
    """A generator whose draws are given: `random` values in order (arrays
    take the next one whole), `integers` pairs in order."""

    def __init__(self, random=(), integers=()):
        self._random, self._integers = list(random), list(integers)

    def random(self, size=None):
        return np.asarray(self._random.pop(0)) if size is not None else self._random.pop(0)

    def integers(self, low, high, size):
        return np.asarray(self._integers.pop(0))


def augmenter(draws, **params):
    aug = Augmenter({**DEFAULTS, **params}, [False, True], "TestLayer")
    aug.rng = draws
    return aug


IMAGE = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
LABEL = np.array([[[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]], dtype=np.uint8)


def test_shift_by_hand():
    moved = shift(LABEL, 1, -2, 255)
    np.testing.assert_array_equal(moved[0], [[255, 255, 255, 255], [3, 4, 255, 255],
                                             [7, 8, 255, 255]])
    assert (shift(LABEL, 0, 4, 255) == 255).all()


def test_mirror_flips_every_top_on_a_low_draw():
    image, label = augmenter(Draws(random=[0.49]), mirror=True)([IMAGE, LABEL])
    np.testing.assert_array_equal(image, IMAGE[..., ::-1])
    np.testing.assert_array_equal(label, LABEL[..., ::-1])
    image, label = augmenter(Draws(random=[0.5]), mirror=True)([IMAGE, LABEL])
    np.testing.assert_array_equal(label, LABEL)


def test_jitter_moves_image_and_label_together():
    image, label = augmenter(Draws(integers=[(-1, 2)]), jitter=2)([IMAGE, LABEL])
    np.testing.assert_array_equal(label[0], [[255, 255, 5, 6], [255, 255, 9, 10],
                                             [255, 255, 255, 255]])
    expected = np.zeros_like(IMAGE)
    expected[:, :2, 2:] = IMAGE[:, 1:, :2]
    np.testing.assert_array_equal(image, expected)


def test_loss_sampling_drops_whole_cells():
    # cells of 2 x 2 over the 3 x 4 label: 2 x 2 cells, kept where the draw < p
    aug = augmenter(Draws(random=[[[0.1, 0.7], [0.6, 0.2]]]), loss_p=0.5, loss_cell=2)
    image, label = aug([IMAGE, LABEL])
    np.testing.assert_array_equal(label[0], [[1, 2, 255, 255], [5, 6, 255, 255],
                                             [255, 255, 11, 12]])
    np.testing.assert_array_equal(image, IMAGE)  # images are never sampled


def test_class_balancing_keeps_class_c_with_probability_w_over_max():
    label = np.array([[[0, 1, 1, 2], [2, 255, 0, 1]]], dtype=np.uint8)
    # weights 2, 1, 0 -> keep 1, 0.5, 0
    draws = [[[0.99, 0.4, 0.6, 0.0], [0.1, 0.0, 0.5, 0.49]]]
    (kept,) = augmenter_for_labels(draws, [2, 1, 0])([label])
    np.testing.assert_array_equal(kept[0], [[0, 1, 255, 255], [255, 255, 0, 1]])


def augmenter_for_labels(draws, weights):
    aug = Augmenter({**DEFAULTS, "class_weights": weights}, [True], "TestLayer")
    aug.rng = Draws(random=draws)
    return aug


def test_class_weights_must_cover_the_labels():
    aug = augmenter_for_labels([np.zeros((1, 2))], [1, 1])
    with pytest.raises(CaffeError, match="2 weights but a label holds class 5"):
        aug([np.array([[[0, 5]]], dtype=np.uint8)])


def test_loss_sampling_keeps_about_p_of_the_cells():
    aug = Augmenter({**DEFAULTS, "loss_p": 0.25, "loss_cell": 4}, [True], "TestLayer")
    (label,) = aug([np.ones((1, 400, 400), dtype=np.uint8)])
    assert abs((label != 255).mean() - 0.25) < 0.03


def test_data_layer_options_and_resuming(tmp_path):
    voc = write_voc(tmp_path)
    plain, plain_tops = make_layer(VOCSegDataLayer, voc_params(voc, "train"), 2)
    layer, tops = make_layer(VOCSegDataLayer, voc_params(voc, "train", mirror=True, jitter=1), 2)
    moved = 0
    for _ in range(12):
        want, got = step(plain, plain_tops), step(layer, tops)
        # the same image (the order is not disturbed), at most a pixel off
        assert set(np.unique(got[1])) - {255} == set(np.unique(want[1])) - {255}
        assert got[0].shape == want[0].shape
        moved += not np.array_equal(got[1], want[1])
    assert moved > 0
    state = layer.get_state()
    assert state["augment"] is not None
    ahead = [step(layer, tops) for _ in range(3)]
    layer.set_state(state)
    again = [step(layer, tops) for _ in range(3)]
    for a, b in zip(ahead, again):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert plain.get_state()["augment"] is None


@pytest.mark.parametrize("params, match", [
    (dict(loss_p=0), "loss_p"), (dict(loss_p=1.5), "loss_p"), (dict(jitter=-1), "jitter"),
    (dict(class_weights=[0, 0]), "class_weights"), (dict(class_weights=["a"]), "class_weights"),
    (dict(mirror=1), "mirror"),
])
def test_bad_options_are_named(tmp_path, params, match):
    voc = write_voc(tmp_path)
    with pytest.raises(CaffeError, match=match):
        make_layer(VOCSegDataLayer, voc_params(voc, "train", **params), 2)


def test_netspec_options_reach_the_train_layer_and_the_batch():
    model = NETS["voc-fcn-alexnet"]  # iter_size 20 in the release
    assert model.prototxts(options=TrainingOptions()) == model.prototxts()
    files = model.prototxts(options=TrainingOptions(loss_p=0.25, mirror=True, jitter=32))
    train = files["train.prototxt"].layer[0].python_param.param_str
    assert "'loss_p': 0.25" in train and "'mirror': True" in train and "'jitter': 32" in train
    assert "loss_p" not in files["val.prototxt"].layer[0].python_param.param_str
    assert files["solver.prototxt"].iter_size == 80  # 20 / 0.25
    assert TrainingOptions(loss_p=0.5).iter_size(1) == 2


def test_solve_command_line_options():
    args = SimpleNamespace(model="voc-fcn32s", loss_p=0.5, class_weights="1,2.5",
                           class_balance="loss", mirror=True, jitter=32)
    assert training_options(args) == TrainingOptions(loss_p=0.5, class_weights=(1.0, 2.5),
                                                     class_balance="loss", mirror=True, jitter=32)
    off = dict(loss_p=1.0, class_weights=None, class_balance="sample", mirror=False, jitter=0)
    assert training_options(SimpleNamespace(**off)) is None
    for bad in (dict(loss_p=0.0), dict(class_weights="1,x"), dict(jitter=-2)):
        with pytest.raises(ValueError):
            training_options(SimpleNamespace(**{**off, **bad}))


def test_the_driver_writes_the_studies_into_the_model_folder(tmp_path):
    from google.protobuf import text_format

    from solvers.solve import emit_model
    from torchcaffe.proto import caffe_pb2

    folder = emit_model("voc-fcn32s", tmp_path / "m", tmp_path / "data",
                        training=TrainingOptions(loss_p=0.5, jitter=32))
    solver = text_format.Parse((folder / "solver.prototxt").read_text(),
                               caffe_pb2.SolverParameter())
    assert solver.iter_size == 2
    train, val = (text_format.Parse((folder / f).read_text(), caffe_pb2.NetParameter())
                  .layer[0].python_param.param_str for f in ("train.prototxt", "val.prototxt"))
    assert "'loss_p': 0.5" in train and "'jitter': 32" in train
    assert "loss_p" not in val


def test_balanced_class_weights_by_hand(tmp_path):
    from dataset_fixtures import write_sbd
    from solvers.labels import median_frequency_weights

    # three 4 x 5 labels: image k is class k but one background pixel; counts
    # 3 (class 0) and 19 (classes 1-3) of 60; the median frequency is 19 / 60
    write_sbd(tmp_path / "sbdd")
    weights = median_frequency_weights("voc-fcn32s", tmp_path)
    assert len(weights) == 21
    assert weights[:4] == pytest.approx((19 / 3, 1.0, 1.0, 1.0))
    assert weights[4:] == (0.0,) * 17


def test_loss_weighting_swaps_the_loss_for_a_diagonal_infogain(tmp_path):
    from google.protobuf import text_format

    from solvers.solve import emit_model
    from torchcaffe.proto import caffe_pb2

    weights = tuple(float(k + 1) for k in range(21))
    folder = emit_model("voc-fcn32s", tmp_path / "m", tmp_path / "data", width=0.0625,
                        training=TrainingOptions(class_weights=weights, class_balance="loss"))
    train = text_format.Parse((folder / "train.prototxt").read_text(), caffe_pb2.NetParameter())
    assert "class_weights" not in train.layer[0].python_param.param_str  # no sampling too
    (loss,) = [layer for layer in train.layer if layer.name == "loss"]
    assert loss.type == "InfogainLoss"
    assert loss.infogain_loss_param.source == "class_weights.binaryproto"
    assert loss.loss_param.ignore_label == 255 and not loss.loss_param.HasField("normalize")
    assert loss.loss_param.normalization == caffe_pb2.LossParameter.BATCH_SIZE  # normalize: false
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString((folder / "class_weights.binaryproto").read_bytes())
    assert list(blob.shape.dim) == [1, 1, 21, 21]
    np.testing.assert_array_equal(np.array(blob.data).reshape(21, 21), np.diag(weights))
    val = (folder / "val.prototxt").read_text()
    assert "SoftmaxWithLoss" in val and "Infogain" not in val


def test_weighted_loss_is_the_class_weighted_softmax_loss(tmp_path, monkeypatch):
    """The emitted loss, run by the runtime: loss = sum over pixels of
    w_label * -log softmax_label (batch 1, unnormalized, 255 ignored),
    gradient w_label * (p - onehot), computed here in numpy."""
    import torchcaffe as caffe
    from netspec.models import weighted_loss
    from torchcaffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    for name, dims in (("score", [1, 3, 2, 2]), ("label", [1, 1, 2, 2])):
        layer = net.layer.add(name=name, type="Input", top=[name])
        layer.input_param.shape.add().dim.extend(dims)
    loss = net.layer.add(name="loss", type="SoftmaxWithLoss", bottom=["score", "label"],
                         top=["loss"])
    loss.loss_param.ignore_label = 255
    loss.loss_param.normalize = False
    net.force_backward = True
    weights = (0.5, 2.0, 3.0)
    blob = weighted_loss(net, weights, "tiny")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "class_weights.binaryproto").write_bytes(blob.SerializeToString())
    (tmp_path / "net.prototxt").write_text(str(net))
    runtime = caffe.Net("net.prototxt", caffe.TRAIN)
    score = np.array([[[1.0, -2.0], [0.5, 3.0]], [[0.0, 1.0], [2.0, -1.0]],
                      [[-1.0, 0.5], [1.5, 0.0]]], np.float32)[None]
    label = np.array([[[0, 2], [255, 1]]], np.float32)[None]
    runtime.blobs["score"].data[...] = score
    runtime.blobs["label"].data[...] = label
    runtime.forward()
    runtime.backward()
    prob = np.exp(score[0]) / np.exp(score[0]).sum(axis=0)
    want_loss, want_diff = 0.0, np.zeros_like(score[0])
    for i in range(2):
        for j in range(2):
            c = int(label[0, 0, i, j])
            if c == 255:
                continue
            want_loss -= weights[c] * np.log(prob[c, i, j])
            want_diff[:, i, j] = weights[c] * prob[:, i, j]
            want_diff[c, i, j] -= weights[c]
    assert float(runtime.blobs["loss"].data) == pytest.approx(want_loss, rel=1e-6)
    np.testing.assert_allclose(runtime.blobs["score"].diff[0], want_diff, rtol=1e-5, atol=1e-7)


def test_loss_weighting_needs_one_softmax_loss():
    from netspec.models import weighted_loss

    files = NETS["siftflow-fcn32s"].prototxts(width=0.0625)
    with pytest.raises(ValueError, match="siftflow-fcn32s has 2 softmax losses"):
        weighted_loss(files["trainval.prototxt"], (1.0,) * 33, "siftflow-fcn32s")
