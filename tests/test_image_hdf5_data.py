"""ImageData, HDF5Data and HDF5Output on real files: image lists read as
OpenCV reads them, HDF5 files written and read back with h5py."""
from __future__ import annotations

import numpy as np
import pytest

import torchcaffe
from image_fixtures import chw, cv2, cv_read, write_images, write_list
from torchcaffe import layers as L
from torchcaffe.errors import CaffeError

h5py = pytest.importorskip("h5py", reason="the [data] extra (h5py) reads HDF5 files")


def image_net(listing, root, batch_size=1, phase=torchcaffe.TEST, transform=None, **param):
    n = torchcaffe.NetSpec()
    n.data, n.label = L.ImageData(image_data_param=dict(source=str(listing), root_folder=root,
                                                        batch_size=batch_size, **param),
                                  transform_param=transform or {}, ntop=2)
    return torchcaffe.Net(n.to_proto(), phase)


# ---------------------------------------------------------------- ImageData

def test_imagedata_reads_list_in_order_with_root_folder(tmp_path):
    entries = write_images(tmp_path / "images", [(10, 12)] * 3, "jpg")
    listing = write_list(tmp_path / "list.txt", entries)
    net = image_net(listing, f"{tmp_path / 'images'}/", 2, transform=dict(mean_value=[5, 6, 7], scale=0.25))
    for indices in ([0, 1], [2, 0], [1, 2]):
        net.forward()
        expected = [(chw(cv_read(tmp_path / "images" / entries[i][0])) - np.float32([5, 6, 7])[:, None, None])
                    * np.float32(0.25) for i in indices]
        np.testing.assert_array_equal(net.blobs["data"].data, np.stack(expected))
        np.testing.assert_array_equal(net.blobs["label"].data, [10 + i for i in indices])


def test_imagedata_resize_and_gray_follow_opencv(tmp_path):
    entries = write_images(tmp_path / "images", [(30, 41), (17, 9)], "png")
    listing = write_list(tmp_path / "list.txt", entries)
    root = f"{tmp_path / 'images'}/"
    net = image_net(listing, root, 2, new_height=20, new_width=25)
    net.forward()
    for got, (name, _) in zip(net.blobs["data"].data, entries):
        expected = chw(cv2.resize(cv_read(tmp_path / "images" / name), (25, 20)))
        assert np.abs(got - expected).max() <= 1  # OpenCV's rounding paths differ by one level
        assert np.mean(got != expected) < 0.02
    gray = image_net(listing, root, 1, is_color=False)
    gray.forward()
    np.testing.assert_array_equal(gray.blobs["data"].data[0],
                                  chw(cv_read(tmp_path / "images" / entries[0][0], color=False)))


def test_imagedata_seeded_shuffle_is_a_repeatable_permutation(tmp_path):
    entries = write_images(tmp_path / "images", [(4, 4)] * 6)
    listing = write_list(tmp_path / "list.txt", entries)

    def labels(seed):
        torchcaffe.set_random_seed(seed)
        net = image_net(listing, f"{tmp_path / 'images'}/", 6, shuffle=True)
        epochs = []
        for _ in range(3):
            net.forward()
            epochs.append(net.blobs["label"].data.astype(int).tolist())
        return epochs

    first = labels(1)
    assert all(sorted(epoch) == list(range(10, 16)) for epoch in first)
    assert len({tuple(e) for e in first}) > 1  # reshuffled at each pass
    assert labels(1) == first and labels(2) != first


def test_imagedata_missing_image_and_size_errors(tmp_path):
    entries = write_images(tmp_path / "images", [(6, 6), (5, 7)])
    root = f"{tmp_path / 'images'}/"
    listing = write_list(tmp_path / "list.txt", [entries[0], ("gone.png", 1)])
    net = image_net(listing, root, 1)
    net.forward()
    with pytest.raises(CaffeError, match=r"ImageData.*could not open or find the image .*gone\.png"):
        net.forward()
    with pytest.raises(CaffeError, match=r"gone\.png"):
        image_net(write_list(tmp_path / "first.txt", [("gone.png", 1)]), root, 1)
    with pytest.raises(CaffeError, match="no such file|No such file"):
        image_net(tmp_path / "nolist.txt", root, 1)
    mixed = image_net(write_list(tmp_path / "mixed.txt", entries), root, 2)
    with pytest.raises(CaffeError, match="batch_size 1"):
        mixed.forward()
    with pytest.raises(CaffeError, match="new_height and new_width together"):
        image_net(listing, root, 1, new_height=4)


# ---------------------------------------------------------------- HDF5Data

def write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)


def hdf5_net(source, batch_size, tops=("data", "label"), shuffle=False):
    n = torchcaffe.NetSpec()
    outs = L.HDF5Data(hdf5_data_param=dict(source=str(source), batch_size=batch_size, shuffle=shuffle),
                      ntop=len(tops))
    for name, top in zip(tops, outs if len(tops) > 1 else [outs]):
        n[name] = top
    return torchcaffe.Net(n.to_proto(), torchcaffe.TEST)


def test_hdf5data_shuffle_permutes_rows_each_pass(tmp_path):
    write_h5(tmp_path / "a.h5", data=np.arange(4, dtype=np.float32).reshape(4, 1), label=np.arange(4.0))
    write_h5(tmp_path / "b.h5", data=np.arange(4, 7, dtype=np.float64).reshape(3, 1), label=np.arange(4.0, 7))
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.h5'}\n{tmp_path / 'b.h5'}\n")
    torchcaffe.set_random_seed(5)
    net = hdf5_net(tmp_path / "list.txt", 7, shuffle=True)
    passes = []
    for _ in range(4):
        net.forward()
        rows = net.blobs["data"].data.ravel()
        np.testing.assert_array_equal(rows, net.blobs["label"].data)
        passes.append(rows.astype(int).tolist())
    assert all(sorted(p) == list(range(7)) for p in passes)
    # rows of one file stay together within a pass
    assert all({tuple(sorted(p[:4])), tuple(sorted(p[:3]))} & {(0, 1, 2, 3), (4, 5, 6)} for p in passes)
    assert len({tuple(p) for p in passes}) > 1


def test_hdf5data_bad_files_name_file_and_dataset(tmp_path):
    write_h5(tmp_path / "a.h5", data=np.zeros((2, 3)), label=np.zeros(2))
    write_h5(tmp_path / "wide.h5", data=np.zeros((2, 4)), label=np.zeros(2))
    write_h5(tmp_path / "short.h5", data=np.zeros((2, 3)), label=np.zeros(3))
    write_h5(tmp_path / "nolabel.h5", data=np.zeros((2, 3)))
    for bad, message in (("wide.h5", r"wide\.h5: dataset 'data' has rows of shape \[4\], the first "
                                     r"file's have \[3\]"),
                         ("short.h5", r"short\.h5: dataset 'label' has 3 rows, 'data' has 2"),
                         ("nolabel.h5", r"nolabel\.h5 has no dataset 'label'"),
                         ("absent.h5", r"failed to open HDF5 file .*absent\.h5")):
        listing = tmp_path / f"{bad}.txt"
        listing.write_text(f"{tmp_path / 'a.h5'}\n{tmp_path / bad}\n")
        net = hdf5_net(listing, 2)
        with pytest.raises(CaffeError, match=message) as info:
            net.forward()  # the next file loads once the first one's rows are used
            net.forward()
        assert "HDF5Data" in str(info.value)
    n = torchcaffe.NetSpec()
    n.data, n.label = L.HDF5Data(hdf5_data_param=dict(source=str(tmp_path / "wide.h5.txt"), batch_size=1),
                                 transform_param=dict(scale=2), ntop=2)
    with pytest.raises(CaffeError, match="does not transform"):
        torchcaffe.Net(n.to_proto(), torchcaffe.TEST)


# ---------------------------------------------------------------- HDF5Output

def test_hdf5output_writes_4d_datasets_atomically(tmp_path):
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(f"""
        layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
        layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ dim: 2 }} }} }}
        layer {{ name: "out" type: "HDF5Output" bottom: "data" bottom: "label"
                 hdf5_output_param {{ file_name: "{tmp_path / 'out.h5'}" }} }}""")
    net = torchcaffe.Net(str(prototxt), torchcaffe.TEST)
    for scale in (1, 2):
        net.blobs["data"].data[...] = np.arange(6).reshape(2, 3) * scale
        net.blobs["label"].data[...] = [7 * scale, 8]
        net.forward()
        with h5py.File(tmp_path / "out.h5", "r") as f:
            np.testing.assert_array_equal(f["data"][()], np.arange(6).reshape(2, 3, 1, 1) * scale)
            np.testing.assert_array_equal(f["label"][()], np.array([7 * scale, 8]).reshape(2, 1, 1, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.prototxt", "out.h5"]  # no temporary left behind
