"""Appendix A's upper bound: coarsened ground truth scored against itself,
on hand-made label maps with hand-computed IUs and on the synthetic set."""
import numpy as np
import pytest

from data_layers.synthetic import generate
from solvers.upper_bound import coarsen, main, read_labels, upper_bounds
from torchcaffe.errors import CaffeError

# a 2 x 2 object of class 1 in the middle of a 4 x 4 background
SQUARE = np.zeros((4, 4), dtype=np.uint8)
SQUARE[1:3, 1:3] = 1


def test_nearest_takes_each_cells_centre_pixel():
    # cells of 2 x 2; centres (1, 1), (1, 3), (3, 1), (3, 3): only (1, 1) is object
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[:2, :2] = 1
    np.testing.assert_array_equal(coarsen(SQUARE, 2, "nearest"), expected)


def test_mode_takes_each_cells_majority():
    # every 2 x 2 cell holds one object pixel and three background ones
    np.testing.assert_array_equal(coarsen(SQUARE, 2, "mode"), np.zeros((4, 4)))
    label = np.array([[3, 3, 255], [3, 1, 255], [255, 255, 255]], dtype=np.uint8)
    # one 2 x 2 cell (3 wins 3:1), partial cells: only void -> background
    np.testing.assert_array_equal(coarsen(label, 2, "mode"),
                                  [[3, 3, 0], [3, 3, 0], [0, 0, 0]])


def test_partial_cells_and_void_centres():
    label = np.arange(25, dtype=np.uint8).reshape(5, 5)
    label[2, 2] = 255
    # factor 4: centres at rows / columns 2 and min(6, 4) = 4; the void centre -> 0
    expected = np.empty((5, 5), dtype=np.int64)
    expected[:4, :4], expected[:4, 4:] = 0, label[2, 4]
    expected[4:, :4], expected[4:, 4:] = label[4, 2], label[4, 4]
    np.testing.assert_array_equal(coarsen(label, 4, "nearest"), expected)


def test_ious_by_hand():
    scores = upper_bounds([SQUARE], 2, [1, 2], "nearest")
    assert scores[1].mean_iu == 1.0
    # nearest: class 1 predicted on the top-left cell: intersection 1, union 4 + 4 - 1;
    # class 0: truth 12, predicted 12, intersection 9 -> 9 / 15
    assert scores[2].mean_iu == pytest.approx((1 / 7 + 9 / 15) / 2)
    assert scores[2].overall_acc == pytest.approx(10 / 16)
    mode = upper_bounds([SQUARE], 2, [2], "mode")[2]
    assert mode.mean_iu == pytest.approx((12 / 16 + 0) / 2)


def test_void_truth_counts_nowhere():
    label = SQUARE.copy()
    label[0, :] = 255  # the coarse label there is background, but nothing is scored
    score = upper_bounds([label], 2, [2], "mode")[2]
    assert score.pixels == 12


def test_bad_inputs():
    with pytest.raises(ValueError):
        coarsen(SQUARE, 0)
    with pytest.raises(ValueError):
        coarsen(SQUARE, 2, "bilinear")
    with pytest.raises(CaffeError, match="class 7"):
        upper_bounds([SQUARE * 7], 2, [2])


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=3, train=2, val=8)
    return root


def test_synthetic_bounds_fall_with_the_factor(synthetic):
    classes, names, count, labels = read_labels("voc-fcn32s", synthetic)
    assert (classes, count) == (21, 8)
    scores = upper_bounds(labels, classes, [32, 16, 8, 4, 1], "nearest", names)
    ious = [scores[f].mean_iu for f in (32, 16, 8, 4, 1)]
    assert ious == sorted(ious) and ious[0] < ious[-2] < ious[-1] == 1.0


def test_command(synthetic, tmp_path, capsys):
    out = tmp_path / "bounds.json"
    assert main(["voc-fcn32s", "--data", str(synthetic), "--factors", "8,1",
                 "--images", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "100.0" in printed and '"images": 3' in out.read_text()
    with pytest.raises(SystemExit):
        main(["voc-fcn32s", "--data", str(tmp_path / "missing")])
    assert "no such folder" in capsys.readouterr().err
