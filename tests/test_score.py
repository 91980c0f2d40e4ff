"""Scoring against hand-computed confusion matrices and metrics."""
import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from data_layers.palette import voc_palette
from solvers.score import do_seg_tests, fast_hist, scores_from_hist, seg_tests

# truth / prediction pairs: class 2 is only predicted, class 3 occurs only
# under ignored (255) truth, so it is absent from both for scoring
TRUTH = np.array([0, 0, 0, 0, 1, 1, 1, 255, 255], dtype=np.uint8)
PRED = np.array([0, 0, 0, 1, 1, 1, 2, 3, 3], dtype=np.int64)
HIST = np.array([[3, 1, 0, 0],
                 [0, 2, 1, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0]])


def test_fast_hist_counts_pairs_and_ignores_void():
    np.testing.assert_array_equal(fast_hist(TRUTH, PRED, 4), HIST)
    # rows are truth, columns prediction
    assert fast_hist(np.array([1]), np.array([0]), 2).tolist() == [[0, 0], [1, 0]]


def test_fast_hist_ignores_truth_out_of_range_and_refuses_bad_predictions():
    assert fast_hist(np.array([5, -1, 0]), np.array([0, 0, 0]), 2).sum() == 1
    with pytest.raises(ValueError, match="predictions must lie in"):
        fast_hist(np.array([0]), np.array([4]), 2)
    with pytest.raises(ValueError, match="pixels"):
        fast_hist(np.array([0, 1]), np.array([0]), 2)


def test_metrics_by_hand_with_absent_classes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nan-safe: no division or empty-mean warnings
        s = scores_from_hist(HIST, names=["a", "b", "c", "d"])
    assert s.overall_acc == pytest.approx(5 / 7)
    # per-class accuracy 3/4 and 2/3; classes 2 and 3 have no truth pixels
    assert s.mean_acc == pytest.approx((3 / 4 + 2 / 3) / 2)
    # IU: 3/4, 2/4, 0 (only predicted), NaN (absent from both, left out)
    assert s.per_class_iu["a"] == pytest.approx(0.75)
    assert s.per_class_iu["b"] == pytest.approx(0.5)
    assert s.per_class_iu["c"] == 0
    assert np.isnan(s.per_class_iu["d"])
    assert s.mean_iu == pytest.approx((0.75 + 0.5 + 0) / 3)
    assert s.fwavacc == pytest.approx(4 / 7 * 0.75 + 3 / 7 * 0.5)
    assert s.pixels == 7


def test_empty_matrix_gives_nan_not_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = scores_from_hist(np.zeros((3, 3)))
    assert np.isnan(s.overall_acc) and np.isnan(s.mean_iu) and np.isnan(s.fwavacc)
    assert list(s.per_class_iu) == ["class_0", "class_1", "class_2"]


class FakeBlob:
    def __init__(self, data):
        self.data = data

    @property
    def channels(self):
        return self.data.shape[1]


class FakeNet:
    """Yields fixed (score, label, loss) triples, one per forward."""

    def __init__(self, batches):
        self.batches = batches
        self.calls = 0
        self.shared_with = None
        self.blobs = {}
        self._load(0)

    def _load(self, i):
        score, label, loss = self.batches[i % len(self.batches)]
        self.blobs.update(score=FakeBlob(score), label=FakeBlob(label),
                          loss=FakeBlob(np.array(loss, np.float32)))

    def forward(self):
        self._load(self.calls)
        self.calls += 1

    def share_with(self, other):
        self.shared_with = other


def one_hot_scores(pred, n):
    return np.eye(n, dtype=np.float32)[pred].transpose(2, 0, 1)[None]


def test_seg_tests_scores_saves_palette_pngs_and_json(tmp_path):
    truth = TRUTH.reshape(3, 3)
    pred = PRED.reshape(3, 3)
    batches = [(one_hot_scores(pred, 4), truth[None, None].astype(np.float32), 2.0),
               (one_hot_scores(np.zeros((3, 3), int), 4),
                np.zeros((1, 1, 3, 3), np.float32), 4.0)]
    net = FakeNet(batches)

    solver = SimpleNamespace(iter=7, net="train-net", test_nets=[net])
    fmt = str(tmp_path / "preds-{}")
    scores = seg_tests(solver, fmt, ["first", "second"], names=list("abcd"))
    assert net.shared_with == "train-net"
    expected = HIST.copy()
    expected[0, 0] += 9  # the second image: all background, all right
    np.testing.assert_array_equal(scores.hist, expected)
    assert scores.loss == pytest.approx(3.0)
    assert scores.overall_acc == pytest.approx(14 / 16)
    png = Image.open(tmp_path / "preds-7" / "first.png")
    assert png.mode == "P"
    np.testing.assert_array_equal(np.array(png), pred)
    assert np.array(png.getpalette()[:12]).reshape(4, 3).tolist() == voc_palette(4).tolist()
    document = json.loads((tmp_path / "preds-7" / "scores.json").read_text())
    assert document["iter"] == 7
    assert document["per_class_iu"]["d"] is None
    assert document["confusion"] == expected.tolist()


def test_do_seg_tests_without_saving_or_loss(tmp_path):
    truth = np.array([[0, 1]], np.float32)[None, None]
    net = FakeNet([(one_hot_scores(np.array([[1, 1]]), 2), truth, 0.0)])
    del net.blobs["loss"]
    net._load = lambda i: None
    scores = do_seg_tests(net, 3, False, ["x"], loss=None, results=tmp_path / "r.json")
    assert scores.loss is None
    assert scores.mean_iu == pytest.approx((0 + 1 / 2) / 2)
    assert json.loads((tmp_path / "r.json").read_text())["mean_iu"] == pytest.approx(0.25)
