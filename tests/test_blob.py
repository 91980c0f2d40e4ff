"""Blob: pycaffe's shape accessors, reshape, and data/diff arrays that are
views of the tensors the net computes with (GPU mirror sync where a GPU is)."""
import numpy as np
import pytest
import torch

from torchcaffe.blob import Blob
from torchcaffe.errors import CaffeError


def test_shape_count_and_legacy_dims():
    blob = Blob((2, 3, 4, 5))
    assert blob.shape == (2, 3, 4, 5)
    assert blob.count == 120
    assert (blob.num, blob.channels, blob.height, blob.width) == (2, 3, 4, 5)
    blob.reshape(6, 7)
    assert blob.data.shape == (6, 7) and blob.diff.shape == (6, 7)
    assert (blob.num, blob.channels, blob.height, blob.width) == (6, 7, 1, 1)
    blob.reshape((1, 2, 3, 4, 5))
    with pytest.raises(CaffeError, match="at most 4 axes"):
        blob.num
    with pytest.raises(CaffeError, match="negative"):
        blob.reshape(-1, 2)


def test_new_memory_is_zero_and_arrays_are_float32():
    blob = Blob((3, 2))
    assert blob.data.dtype == np.float32 and not blob.data.any()
    assert blob.diff.dtype == np.float32 and not blob.diff.any()


def test_data_is_a_view_of_the_tensor_both_ways():
    blob = Blob((2, 2))
    view = blob.data
    view[...] = [[1, 2], [3, 4]]
    assert blob.data_tensor.tolist() == [[1, 2], [3, 4]]
    blob.data_tensor.mul_(2)
    np.testing.assert_array_equal(view, [[2, 4], [6, 8]])
    blob.diff[...] = 7
    assert blob.diff_tensor.sum().item() == 28


def test_reshape_to_same_shape_keeps_values():
    blob = Blob((2,))
    blob.data[...] = [5, 6]
    blob.reshape(2)
    np.testing.assert_array_equal(blob.data, [5, 6])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_mirror_syncs_like_synced_memory():
    blob = Blob((2, 3), device="cuda")
    blob.data[...] = 1.5                      # host write ...
    assert blob._tensor().sum().item() == 9   # ... reaches the device once used there
    blob.data_tensor.add_(1)                  # device write ...
    np.testing.assert_array_equal(blob.data, np.full((2, 3), 2.5))  # ... read on the host
    blob._set_tensor(torch.full((2, 3), 4.0, device="cuda"))  # a forward's new result
    np.testing.assert_array_equal(blob.data, np.full((2, 3), 4.0))
