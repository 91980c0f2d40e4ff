"""The Data layer over LMDB and LevelDB, the DataTransformer, and the
convert_imageset / compute_image_mean tools, on real files: image files
written with Pillow, DBs written by the tool, values expected from OpenCV's
reading of the same files and hand-applied crop / mean / scale."""
from __future__ import annotations

import numpy as np
import pytest

import torchcaffe
from image_fixtures import chw, cv2, cv_read, write_images, write_list
from torchcaffe import layers as L
from torchcaffe.datum import image_datum, read_mean_file, write_mean_file
from torchcaffe.db import Reader, Writer
from torchcaffe.errors import CaffeError
from torchcaffe.proto import caffe_pb2
from torchcaffe.tools import compute_image_mean, convert_imageset

pytest.importorskip("lmdb", reason="the [data] extra (lmdb) reads LMDBs")

SIZES = [(12, 14)] * 5


def make_db(tmp_path, ext="png", backend="lmdb", sizes=SIZES, *options):
    entries = write_images(tmp_path / "images", sizes, ext)
    listing = write_list(tmp_path / "list.txt", entries)
    db = tmp_path / f"db_{backend}"
    assert convert_imageset.main([f"{tmp_path / 'images'}/", str(listing), str(db),
                                  "--backend", backend, *options]) == 0
    return db, entries


def data_net(db, batch_size, phase=torchcaffe.TEST, backend="LMDB", transform=None, **data):
    n = torchcaffe.NetSpec()
    n.data, n.label = L.Data(data_param=dict(source=str(db), batch_size=batch_size,
                                             backend=getattr(caffe_pb2.DataParameter, backend),
                                             **data),
                             transform_param=transform or {}, ntop=2)
    return torchcaffe.Net(n.to_proto(), phase)


# ---------------------------------------------------------------- tools

@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_convert_imageset_writes_opencv_pixels_in_list_order(tmp_path, backend):
    pytest.importorskip("plyvel" if backend == "leveldb" else "lmdb")
    db, entries = make_db(tmp_path, "jpg", backend, [(9, 11), (12, 7), (10, 10)])
    records = list(Reader(db, backend).walk())
    assert [key for key, _ in records] == [f"{i:08d}_{name}".encode() for i, (name, _) in enumerate(entries)]
    for (name, label), (_, value) in zip(entries, records):
        datum = caffe_pb2.Datum.FromString(value)
        expected = cv_read(tmp_path / "images" / name)
        assert (datum.channels, datum.height, datum.width, datum.label) == (3,) + expected.shape[:2] + (label,)
        np.testing.assert_array_equal(np.frombuffer(datum.data, np.uint8).reshape(3, *expected.shape[:2]),
                                      expected.transpose(2, 0, 1))


def test_convert_imageset_resize_gray_encoded(tmp_path):
    entries = write_images(tmp_path / "images", [(20, 30), (17, 9)], "jpg")
    listing = write_list(tmp_path / "list.txt", entries)
    root = f"{tmp_path / 'images'}/"
    convert_imageset.main([root, str(listing), str(tmp_path / "resized"), "--resize_height", "8",
                           "--resize_width", "12", "--gray"])
    for (name, _), (_, value) in zip(entries, Reader(tmp_path / "resized", "lmdb").walk()):
        datum = caffe_pb2.Datum.FromString(value)
        expected = cv2.resize(cv_read(tmp_path / "images" / name, color=False), (12, 8))
        got = np.frombuffer(datum.data, np.uint8).reshape(8, 12)
        assert np.abs(got.astype(int) - expected).max() <= 1  # OpenCV's own rounding paths differ by 1
    # --encoded keeps the file's bytes; --encode_type png re-encodes losslessly
    convert_imageset.main([root, str(listing), str(tmp_path / "enc"), "--encoded"])
    convert_imageset.main([root, str(listing), str(tmp_path / "png"), "--encode_type", "png"])
    for (name, _), (_, raw), (_, png) in zip(entries, Reader(tmp_path / "enc", "lmdb").walk(),
                                             Reader(tmp_path / "png", "lmdb").walk()):
        raw, png = caffe_pb2.Datum.FromString(raw), caffe_pb2.Datum.FromString(png)
        assert raw.encoded and raw.data == (tmp_path / "images" / name).read_bytes()
        assert png.encoded and png.data.startswith(b"\x89PNG")
        decoded = cv2.imdecode(np.frombuffer(png.data, np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(decoded, cv_read(tmp_path / "images" / name))


def test_convert_imageset_skips_missing_images_and_refuses_existing_db(tmp_path, caplog):
    entries = write_images(tmp_path / "images", [(5, 5)])
    listing = write_list(tmp_path / "list.txt", entries + [("missing.png", 3)])
    root = f"{tmp_path / 'images'}/"
    assert convert_imageset.main([root, str(listing), str(tmp_path / "db")]) == 0
    assert len(Reader(tmp_path / "db", "lmdb")) == 1
    assert "missing.png" in caplog.text
    assert convert_imageset.main([root, str(listing), str(tmp_path / "db")]) == 1
    assert "already exists" in caplog.text


def test_compute_image_mean_matches_numpy(tmp_path):
    db, entries = make_db(tmp_path)
    out = tmp_path / "mean.binaryproto"
    assert compute_image_mean.main([str(db), str(out)]) == 0
    blob = caffe_pb2.BlobProto.FromString(out.read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 12, 14)
    expected = np.mean([chw(cv_read(tmp_path / "images" / name)) for name, _ in entries], axis=0)
    np.testing.assert_allclose(np.asarray(blob.data).reshape(3, 12, 14), expected, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- Data layer

def expected_batch(tmp_path, entries, indices, crop=None, mean=None, scale=1.0):
    out = []
    for i in indices:
        image = chw(cv_read(tmp_path / "images" / entries[i % len(entries)][0]))
        if mean is not None:
            image = image - mean
        if crop:
            top, left = (image.shape[1] - crop) // 2, (image.shape[2] - crop) // 2
            image = image[:, top:top + crop, left:left + crop]
        out.append(image * np.float32(scale))
    return np.stack(out)


@pytest.mark.parametrize("prefetch", [0, 1, 4])
def test_data_layer_test_phase_key_order_wrap_mean_file_crop(tmp_path, prefetch):
    db, entries = make_db(tmp_path)
    mean = np.random.default_rng(0).uniform(0, 255, (3, 12, 14)).astype(np.float32)
    write_mean_file(tmp_path / "mean.binaryproto", mean)
    net = data_net(db, 2, prefetch=prefetch,
                   transform=dict(crop_size=8, mean_file=str(tmp_path / "mean.binaryproto"), scale=0.5))
    for start in (0, 2, 4, 1):  # 5 records: the third batch wraps around
        net.forward()
        indices = [start, start + 1]
        np.testing.assert_allclose(net.blobs["data"].data,
                                   expected_batch(tmp_path, entries, indices, 8, mean, 0.5), atol=1e-5)
        np.testing.assert_array_equal(net.blobs["label"].data, [10 + i % 5 for i in indices])


def test_data_layer_leveldb_encoded_jpeg_matches_opencv(tmp_path):
    pytest.importorskip("plyvel")
    db, entries = make_db(tmp_path, "jpg", "leveldb", SIZES, "--encoded")
    net = data_net(db, 5, backend="LEVELDB", transform=dict(mean_value=[100, 110, 120]))
    net.forward()
    expected = expected_batch(tmp_path, entries, range(5), mean=np.float32([100, 110, 120])[:, None, None])
    np.testing.assert_array_equal(net.blobs["data"].data, expected)


def test_encoded_force_gray_and_force_color(tmp_path):
    db, entries = make_db(tmp_path, "jpg", "lmdb", SIZES, "--encoded")
    gray = data_net(db, 1, transform=dict(force_gray=True))
    gray.forward()
    np.testing.assert_array_equal(gray.blobs["data"].data[0],
                                  chw(cv_read(tmp_path / "images" / entries[0][0], color=False)))
    # (--gray --encoded of a PNG list would keep the colour files as they are,
    # as Caffe's does; re-encoding JPEGs as PNG stores the gray pixels)
    gray_db, _ = make_db(tmp_path / "g", "jpg", "lmdb", SIZES, "--gray", "--encode_type", "png")
    color = data_net(gray_db, 1, transform=dict(force_color=True))
    color.forward()
    data = color.blobs["data"].data[0]
    assert data.shape == (3, 12, 14) and (data[0] == data[1]).all() and (data[1] == data[2]).all()
    with pytest.raises(CaffeError, match="both force_color and force_gray"):
        data_net(db, 1, transform=dict(force_color=True, force_gray=True))


def find_window(image: np.ndarray, window: np.ndarray) -> tuple[int, int, bool]:
    """Where a crop (maybe mirrored) lies in the image: (row, column, mirrored)."""
    size = window.shape[1]
    hits = []
    for mirrored in (False, True):
        target = window[:, :, ::-1] if mirrored else window
        for r in range(image.shape[1] - size + 1):
            for c in range(image.shape[2] - size + 1):
                if np.array_equal(image[:, r:r + size, c:c + size], target):
                    hits.append((r, c, mirrored))
    assert len(hits) == 1, f"crop found at {hits}"
    return hits[0]


def test_train_phase_random_crops_and_mirror(tmp_path):
    db, entries = make_db(tmp_path)
    images = [chw(cv_read(tmp_path / "images" / name)) for name, _ in entries]
    torchcaffe.set_random_seed(7)
    net = data_net(db, 5, phase=torchcaffe.TRAIN, transform=dict(crop_size=9, mirror=True))
    placements = []
    for _ in range(12):
        net.forward()
        for i, window in enumerate(net.blobs["data"].data):
            placements.append(find_window(images[i], window))
    rows, cols, mirrored = zip(*placements)
    # 60 draws: every offset of the 4 x 6 range shows up, about half mirrored
    assert set(rows) == set(range(4)) and set(cols) == set(range(6))
    assert 18 <= sum(mirrored) <= 42
    # the same seed repeats the same crops
    torchcaffe.set_random_seed(7)
    again = data_net(db, 5, phase=torchcaffe.TRAIN, transform=dict(crop_size=9, mirror=True))
    again.forward()
    assert [find_window(images[i], w) for i, w in enumerate(again.blobs["data"].data)] == placements[:5]


def test_test_phase_mirror_flips_some_images_without_cropping(tmp_path):
    db, entries = make_db(tmp_path)
    net = data_net(db, 5, transform=dict(mirror=True, crop_size=12))
    flips = 0
    for _ in range(8):
        net.forward()
        for i, window in enumerate(net.blobs["data"].data):
            row, col, mirrored = find_window(chw(cv_read(tmp_path / "images" / entries[i][0])), window)
            assert (row, col) == (0, 1)  # the centre: (12-12)//2, (14-12)//2
            flips += mirrored
    assert 8 <= flips <= 32


def test_float_data_datums(tmp_path):
    values = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 7
    with Writer(tmp_path / "db", "lmdb") as db:
        datum = caffe_pb2.Datum(channels=2, height=3, width=4, label=5)
        datum.float_data.extend(values.ravel().tolist())
        db.put(b"a", datum.SerializeToString())
    net = data_net(tmp_path / "db", 2, transform=dict(scale=2, mean_value=[1]))
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data, np.stack([(values - 1) * 2] * 2), rtol=1e-6)


# ---------------------------------------------------------------- errors

def test_corrupt_record_names_db_and_key(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    with Writer(tmp_path / "db", "lmdb") as db:
        db.put(b"000", image_datum(image, 1).SerializeToString())
        db.put(b"001", b"\xff\xff\xff garbage")
        truncated = image_datum(image, 2)
        truncated.data = truncated.data[:-5]
        db.put(b"002", truncated.SerializeToString())
    net = data_net(tmp_path / "db", 1, prefetch=2)
    net.forward()
    with pytest.raises(CaffeError, match=r"db, record key b'001': not a Datum") as info:
        net.forward()
    assert "Data" in str(info.value)
    with pytest.raises(CaffeError, match="b'001'"):
        net.forward()  # the reader stopped there; it says so again
    skip = data_net(tmp_path / "db", 1, prefetch=0)
    skip.forward()
    with pytest.raises(CaffeError):
        skip.forward()
    only_bad = tmp_path / "bad"
    with Writer(only_bad, "lmdb") as db:
        db.put(b"k", truncated.SerializeToString())
    with pytest.raises(CaffeError, match=r"record key b'k': Datum data has 43 bytes, its shape \[3, 4, 4\] needs 48"):
        data_net(only_bad, 1)


def test_mean_file_of_wrong_size_names_the_file(tmp_path):
    db, _ = make_db(tmp_path)
    write_mean_file(tmp_path / "mean.binaryproto", np.zeros((3, 10, 14), np.float32))
    net = data_net(db, 1, transform=dict(mean_file=str(tmp_path / "mean.binaryproto"), crop_size=8))
    with pytest.raises(CaffeError, match=r"mean file .*mean.binaryproto is 3x10x14 .* image is 3x12x14"):
        net.forward()
    with pytest.raises(CaffeError, match="mean_file and mean_value"):
        data_net(db, 1, transform=dict(mean_file=str(tmp_path / "mean.binaryproto"), mean_value=[1]))
    (tmp_path / "junk.binaryproto").write_bytes(b"\x0a\xff")
    with pytest.raises(CaffeError, match="junk.binaryproto"):
        data_net(db, 1, transform=dict(mean_file=str(tmp_path / "junk.binaryproto")))


def test_missing_db_and_bad_sizes(tmp_path):
    with pytest.raises(CaffeError, match="no such folder"):
        data_net(tmp_path / "nowhere", 1)
    db, _ = make_db(tmp_path, "png", "lmdb", [(12, 14), (10, 14)])
    with pytest.raises(CaffeError, match="smaller than crop_size 13"):
        data_net(db, 1, transform=dict(crop_size=13))
    net = data_net(db, 2)
    with pytest.raises(CaffeError, match="batch_size 1"):
        net.forward()
    varying = data_net(db, 1)  # batch size 1: each batch takes its image's size
    shapes = []
    for _ in range(2):
        varying.forward()
        shapes.append(varying.blobs["data"].data.shape)
    assert shapes == [(1, 3, 12, 14), (1, 3, 10, 14)]


def test_mean_file_round_trip_through_blobproto(tmp_path):
    mean = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
    write_mean_file(tmp_path / "m.binaryproto", mean)
    blob = caffe_pb2.BlobProto.FromString((tmp_path / "m.binaryproto").read_bytes())
    np.testing.assert_array_equal(np.asarray(blob.data, np.float32).reshape(2, 3, 4), mean)
    shaped = caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[1, 2, 3, 4]))
    shaped.data.extend(mean.ravel().tolist())
    (tmp_path / "s.binaryproto").write_bytes(shaped.SerializeToString())
    np.testing.assert_array_equal(read_mean_file(tmp_path / "s.binaryproto"), mean)


def test_prefetch_thread_ends_with_its_net(tmp_path):
    import gc
    import threading
    import time

    db, _ = make_db(tmp_path)
    net = data_net(db, 2)
    net.forward()
    assert any(t.name == "prefetch data" for t in threading.enumerate())
    del net
    gc.collect()
    deadline = time.monotonic() + 5
    while any(t.name == "prefetch data" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "prefetch data" for t in threading.enumerate())


def test_rand_skip_starts_within_range_then_follows_key_order(tmp_path):
    db, _ = make_db(tmp_path)
    starts = set()
    for seed in range(8):
        torchcaffe.set_random_seed(seed)
        net = data_net(db, 5, rand_skip=3)
        net.forward()
        labels = net.blobs["label"].data.astype(int) - 10
        assert labels.tolist() == [(labels[0] + k) % 5 for k in range(5)]
        starts.add(int(labels[0]))
    assert starts <= {0, 1, 2} and len(starts) > 1


def test_force_encoded_color_decodes_gray_files_in_colour(tmp_path):
    db, entries = make_db(tmp_path, "jpg", "lmdb", SIZES, "--gray", "--encode_type", "png")
    native = data_net(db, 1)
    forced = data_net(db, 1, force_encoded_color=True)
    native.forward()
    forced.forward()
    gray = native.blobs["data"].data[0]
    assert gray.shape == (1, 12, 14)
    np.testing.assert_array_equal(forced.blobs["data"].data[0], np.repeat(gray, 3, axis=0))


def test_missing_backend_package_is_named(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "plyvel", None)
    (tmp_path / "db").mkdir()
    with pytest.raises(CaffeError, match="leveldb backend needs the Python package 'plyvel'"):
        data_net(tmp_path / "db", 1, backend="LEVELDB")


def test_tools_run_as_modules(tmp_path):
    import subprocess
    import sys

    entries = write_images(tmp_path / "images", [(6, 7)] * 2)
    listing = write_list(tmp_path / "list.txt", entries)

    def run(*args):
        return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)

    made = run("torchcaffe.tools.convert_imageset", f"{tmp_path / 'images'}/", str(listing),
               str(tmp_path / "db"), "--backend", "leveldb")
    assert made.returncode == 0, made.stderr
    mean = run("torchcaffe.tools.compute_image_mean", "--backend", "leveldb", str(tmp_path / "db"),
               str(tmp_path / "mean.binaryproto"))
    assert mean.returncode == 0 and "mean_value channel [2]" in mean.stderr, mean.stderr
    assert read_mean_file(tmp_path / "mean.binaryproto").shape == (3, 6, 7)
    missing = run("torchcaffe.tools.compute_image_mean", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "nowhere: no such folder" in missing.stderr
