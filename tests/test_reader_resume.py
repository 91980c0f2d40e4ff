"""Caffe's built-in readers (Data, ImageData, WindowData, HDF5Data) save
their read position: a net that takes a saved state, even one seeded
otherwise, produces exactly the batches the uninterrupted net produced next,
across wraps, reshuffles and however far the prefetch thread has read
ahead. A state that does not fit the layer is refused and changes nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest

import torchcaffe as caffe
from image_fixtures import write_images, write_list
from test_window_data import window_file
from torchcaffe import layers as L
from torchcaffe.errors import CaffeError
from torchcaffe.proto import caffe_pb2
from torchcaffe.tools import convert_imageset

SIZES = [(9, 11), (10, 12), (8, 13), (11, 9), (12, 10)]
TRANSFORM = dict(crop_size=6, mirror=True, mean_value=[1, 2, 3])


def build(spec_top, seed):
    n = caffe.NetSpec()
    tops = spec_top()
    names = ["data", "label"][:len(tops)] if isinstance(tops, tuple) else ["data"]
    for name, top in zip(names, tops if isinstance(tops, tuple) else (tops,)):
        setattr(n, name, top)
    caffe.set_random_seed(seed)
    return caffe.Net(n.to_proto(), caffe.TRAIN)


def reader(net):
    return next(h.impl for h in net._handles if h.name == "data")


def batches(net, count):
    out = []
    for _ in range(count):
        net.forward()
        out.append({name: net.blobs[name].data.copy() for name in net.outputs})
    return out


def assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture
def images(tmp_path):
    entries = write_images(tmp_path / "images", SIZES)
    return tmp_path, entries, write_list(tmp_path / "list.txt", entries)


def image_data(images):
    folder, _, listing = images
    return lambda: L.ImageData(image_data_param=dict(
        source=str(listing), root_folder=f"{folder / 'images'}/", batch_size=2, shuffle=True,
        rand_skip=3), transform_param=TRANSFORM, ntop=2)


def lmdb_data(images):
    pytest.importorskip("lmdb")
    folder, _, listing = images
    db = folder / "db"
    if not db.exists():
        assert convert_imageset.main([f"{folder / 'images'}/", str(listing), str(db),
                                      "--resize_height", "10", "--resize_width", "10"]) == 0
    return lambda: L.Data(data_param=dict(source=str(db), batch_size=2, rand_skip=4,
                                          backend=caffe_pb2.DataParameter.LMDB),
                          transform_param=TRANSFORM, ntop=2)


def hdf5_data(images):
    h5py = pytest.importorskip("h5py")
    folder = images[0]
    for name, rows in (("a.h5", range(0, 5)), ("b.h5", range(5, 8))):
        with h5py.File(folder / name, "w") as f:
            f.create_dataset("data", data=np.array(rows, np.float32).reshape(-1, 1))
    (folder / "h5.txt").write_text(f"{folder / 'a.h5'}\n{folder / 'b.h5'}\n")
    return lambda: L.HDF5Data(hdf5_data_param=dict(source=str(folder / "h5.txt"), batch_size=3,
                                                   shuffle=True))


def window_data(images):
    folder, entries, _ = images
    listed = [(name, size) for (name, _), size in zip(entries[:2], SIZES[:2])]
    source = window_file(folder / "windows.txt", listed,
                         [[(1, 0.9, 1, 1, 8, 7), (2, 0.1, 0, 0, 10, 8)],
                          [(3, 0.8, 2, 2, 11, 9), (4, 0.2, 1, 0, 6, 5)]])
    return lambda: L.WindowData(window_data_param=dict(
        source=str(source), root_folder=f"{folder / 'images'}/", batch_size=4, fg_threshold=0.5,
        bg_threshold=0.3), transform_param=dict(crop_size=5, mirror=True), ntop=2)


READERS = {"ImageData": image_data, "Data": lmdb_data, "HDF5Data": hdf5_data,
           "WindowData": window_data}


@pytest.mark.parametrize("kind", READERS)
@pytest.mark.parametrize("taken", [0, 3, 7])
def test_a_saved_position_continues_exactly(images, kind, taken):
    spec = READERS[kind](images)
    straight = build(spec, seed=11)
    batches(straight, taken)
    state = json.loads(json.dumps(reader(straight).get_state()))  # as the sidecar holds it
    expected = batches(straight, 6)  # past a wrap and a reshuffle of the 5 images or 8 rows
    resumed = build(spec, seed=12)
    batches(resumed, 1)  # its prefetch thread is busy reading ahead when the state arrives
    reader(resumed).set_state(state)
    assert_same(batches(resumed, 6), expected)
    # the state is where the next batch starts: the other seed's net differs without it
    other = build(spec, seed=12)
    assert any(not np.array_equal(a["data"], b["data"])
               for a, b in zip(batches(other, taken + 6)[taken:], expected))


@pytest.mark.parametrize("kind", READERS)
def test_a_state_that_does_not_fit_is_refused_and_changes_nothing(images, kind):
    spec = READERS[kind](images)
    net = build(spec, seed=11)
    batches(net, 2)
    state = reader(net).get_state()
    twin = build(spec, seed=11)
    batches(twin, 2)
    with pytest.raises(CaffeError, match="type"):
        reader(net).set_state(dict(state, type="Other"))
    unshuffled = {"ImageData": "order", "HDF5Data": "file_order"}.get(kind)
    if unshuffled:  # a state saved by a layer that did not shuffle
        with pytest.raises(CaffeError, match="shuffled or not"):
            reader(net).set_state(dict(state, **{unshuffled: None}))
    for key in [k for k in state if k != "type"]:
        damaged = dict(state)
        damaged[key] = "garbage"
        with pytest.raises(CaffeError):
            reader(net).set_state(damaged)
    assert_same(batches(net, 4), batches(twin, 4))
