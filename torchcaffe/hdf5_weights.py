"""Net weights in Caffe's HDF5 layout (Net::ToHDF5 / CopyTrainedLayersFromHDF5).

The file has a group `data` with one group per layer (every layer, in net
order, also those without params) holding datasets `0`, `1`, ... in the
blobs' shapes, float32. A param shared by name is written once, under the
layer that owns it; the layers sharing it have no dataset for it.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import CaffeError


def _h5py():
    try:
        import h5py
    except ImportError:
        raise CaffeError("HDF5 weights need h5py (pip install h5py)") from None
    return h5py


def write_weights(path: str | os.PathLike, layers: list[tuple[str, list[np.ndarray | None]]]) -> None:
    """`layers`: (layer name, blobs) in net order; a None blob (a shared
    param the layer does not own) gets no dataset."""
    h5py = _h5py()
    with h5py.File(os.fspath(path), "w") as f:
        data = f.create_group("data")
        for name, blobs in layers:
            group = data.require_group(name)
            for index, array in enumerate(blobs):
                if array is not None:
                    group.create_dataset(str(index), data=np.asarray(array, np.float32))


def read_weights(path: str | os.PathLike) -> list[tuple[str, dict[int, np.ndarray]]]:
    """(layer name, {blob index: array}) for every layer group of the file."""
    h5py = _h5py()
    path = os.fspath(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CaffeError(f"cannot open HDF5 weights {path}: {exc}") from None
    with f:
        if "data" not in f:
            raise CaffeError(f"HDF5 weights {path}: no 'data' group (not written by "
                             "Caffe's Net::ToHDF5 or save_hdf5)")
        layers = []
        for name, group in f["data"].items():
            try:
                blobs = {int(key): np.asarray(dataset, np.float32) for key, dataset in group.items()}
            except ValueError:
                raise CaffeError(f"HDF5 weights {path}: layer '{name}' has datasets "
                                 f"{sorted(group)}, expected 0, 1, ...") from None
            layers.append((name, blobs))
    return layers
