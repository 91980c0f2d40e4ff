"""Caffe's fillers against hand-derived values and distribution statistics."""
import math

import pytest
import torch

from torchcaffe.errors import CaffeError
from torchcaffe.fillers import fill
from torchcaffe.proto import caffe_pb2


def filler(**fields) -> caffe_pb2.FillerParameter:
    return caffe_pb2.FillerParameter(**fields)


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_default_filler_is_constant_zero():
    blob = fill(caffe_pb2.FillerParameter(), (3, 2, 4), gen())
    assert blob.dtype == torch.float32 and blob.shape == (3, 2, 4)
    assert torch.equal(blob, torch.zeros(3, 2, 4))


def test_constant_value():
    blob = fill(filler(type="constant", value=0.01), (4,), gen())
    assert torch.equal(blob, torch.full((4,), 0.01, dtype=torch.float32))


def test_uniform_range_and_mean():
    blob = fill(filler(type="uniform", min=-2.0, max=6.0), (200, 500), gen())
    assert blob.min() >= -2.0 and blob.max() < 6.0
    assert blob.min() < -1.99 and blob.max() > 5.99
    assert abs(blob.mean().item() - 2.0) < 0.03
    # variance of U(a, b) is (b - a)^2 / 12
    assert abs(blob.var().item() - 64 / 12) < 0.05


def test_uniform_refuses_min_above_max():
    with pytest.raises(CaffeError, match="min"):
        fill(filler(type="uniform", min=1.0, max=0.0), (3,), gen())


def test_gaussian_mean_and_std():
    blob = fill(filler(type="gaussian", mean=3.0, std=0.5), (400, 250), gen())
    assert abs(blob.mean().item() - 3.0) < 0.005
    assert abs(blob.std().item() - 0.5) < 0.005


def test_gaussian_sparse_keeps_sparse_over_outputs():
    # 20 outputs, sparse 5: each weight is nonzero with probability 5 / 20
    blob = fill(filler(type="gaussian", std=1.0, sparse=5), (20, 10000), gen())
    assert abs((blob != 0).float().mean().item() - 0.25) < 0.005


def test_sparse_only_for_gaussian():
    with pytest.raises(CaffeError, match="sparse"):
        fill(filler(type="uniform", sparse=3), (3, 3), gen())


@pytest.mark.parametrize(
    "norm, n",
    [
        (caffe_pb2.FillerParameter.FAN_IN, 20 * 3 * 3),   # count / shape[0]
        (caffe_pb2.FillerParameter.FAN_OUT, 50 * 3 * 3),  # count / shape[1]
        (caffe_pb2.FillerParameter.AVERAGE, (180 + 450) / 2),
    ],
)
def test_xavier_bound_is_sqrt_3_over_n(norm, n):
    shape = (50, 20, 3, 3)
    bound = math.sqrt(3.0 / n)
    blobs = torch.cat([fill(filler(type="xavier", variance_norm=norm), shape, gen(s)).flatten()
                       for s in range(20)])
    assert blobs.abs().max() <= bound
    assert blobs.abs().max() > 0.999 * bound
    # uniform on [-b, b]: variance b^2 / 3 = 1 / n
    assert abs(blobs.var().item() * n - 1.0) < 0.02


@pytest.mark.parametrize(
    "norm, n",
    [(caffe_pb2.FillerParameter.FAN_IN, 180), (caffe_pb2.FillerParameter.FAN_OUT, 450),
     (caffe_pb2.FillerParameter.AVERAGE, 315)],
)
def test_msra_std_is_sqrt_2_over_n(norm, n):
    blobs = torch.cat([fill(filler(type="msra", variance_norm=norm), (50, 20, 3, 3), gen(s)).flatten()
                       for s in range(20)])
    assert abs(blobs.mean().item()) < 0.003
    assert abs(blobs.std().item() / math.sqrt(2.0 / n) - 1.0) < 0.01


def test_bilinear_k4_is_outer_product_of_quarter_profile():
    blob = fill(filler(type="bilinear"), (3, 3, 4, 4), gen())
    profile = torch.tensor([0.25, 0.75, 0.75, 0.25])
    expected = profile[:, None] * profile[None, :]
    for i in range(3):
        for j in range(3):
            assert torch.equal(blob[i, j], expected)


def test_bilinear_odd_kernel_k5_for_factor_3():
    blob = fill(filler(type="bilinear"), (1, 1, 5, 5), gen())
    profile = torch.tensor([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3])
    torch.testing.assert_close(blob[0, 0], profile[:, None] * profile[None, :], rtol=0, atol=1e-7)


@pytest.mark.parametrize("k", [4, 16, 32, 64])
def test_bilinear_matches_interpolation_weights(k):
    # the FCN upsampling weights: 1 - |x - centre| / factor per axis
    factor = (k + 1) // 2
    centre = factor - 0.5
    x = torch.arange(k, dtype=torch.float64)
    profile = 1 - (x - centre).abs() / factor
    expected = (profile[:, None] * profile[None, :]).float()
    blob = fill(filler(type="bilinear"), (2, 1, k, k), gen())
    torch.testing.assert_close(blob[1, 0], expected, rtol=0, atol=1e-6)


def test_bilinear_refuses_non_square_and_non_4d():
    with pytest.raises(CaffeError, match="square"):
        fill(filler(type="bilinear"), (1, 1, 4, 3), gen())
    with pytest.raises(CaffeError, match="4 axes"):
        fill(filler(type="bilinear"), (4, 4), gen())


def test_positive_unitball_rows_sum_to_one():
    blob = fill(filler(type="positive_unitball"), (6, 3, 2, 2), gen())
    assert blob.min() >= 0 and blob.max() <= 1
    torch.testing.assert_close(blob.reshape(6, -1).sum(1), torch.ones(6))


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "xavier", "msra", "positive_unitball"])
def test_draws_follow_the_generator(kind):
    a = fill(filler(type=kind), (8, 4, 3, 3), gen(7))
    b = fill(filler(type=kind), (8, 4, 3, 3), gen(7))
    c = fill(filler(type=kind), (8, 4, 3, 3), gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_unknown_type_is_named():
    with pytest.raises(CaffeError, match="unknown filler type 'gausian'"):
        fill(filler(type="gausian"), (3,), gen())
