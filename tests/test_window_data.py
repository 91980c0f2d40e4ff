"""WindowData on real image files and a window file, against geometry
derived by hand from BVLC's window_data_layer.cpp and OpenCV's resize."""
from __future__ import annotations

import numpy as np
import pytest

import torchcaffe
from image_fixtures import chw, cv2, cv_read, write_images
from torchcaffe import layers as L
from torchcaffe.errors import CaffeError


def window_file(path, images, windows_per_image):
    """images: [(name, (h, w))]; windows: per image [(label, overlap, x1, y1, x2, y2)]."""
    lines = []
    for index, ((name, (h, w)), windows) in enumerate(zip(images, windows_per_image)):
        lines += [f"# {index}", name, f"3 {h} {w}", str(len(windows))]
        lines += [" ".join(map(str, window)) for window in windows]
    path.write_text("\n".join(lines) + "\n")
    return path


def window_net(source, root, batch_size, crop_size, phase=torchcaffe.TRAIN, transform=None, **param):
    n = torchcaffe.NetSpec()
    n.data, n.label = L.WindowData(
        window_data_param=dict(source=str(source), root_folder=root, batch_size=batch_size, **param),
        transform_param=dict(crop_size=crop_size, **(transform or {})), ntop=2)
    return torchcaffe.Net(n.to_proto(), phase)


@pytest.fixture
def scene(tmp_path):
    entries = write_images(tmp_path, [(20, 20), (16, 24)])
    images = [(name, size) for (name, _), size in zip(entries, [(20, 20), (16, 24)])]
    pixels = [cv_read(tmp_path / name) for name, _ in images]
    return tmp_path, images, pixels


def test_fg_bg_sampling_and_warp(scene):
    folder, images, pixels = scene
    windows = [[(1, 0.9, 2, 3, 11, 9), (5, 0.3, 0, 0, 19, 19), (2, 0.7, 10, 10, 19, 19)],
               [(3, 0.1, 4, 2, 15, 13), (4, 0.5, 0, 0, 5, 5)]]
    source = window_file(folder / "windows.txt", images, windows)
    net = window_net(source, f"{folder}/", 8, 6, transform=dict(mean_value=[10, 20, 30]), scale=0.5,
                     fg_threshold=0.6, bg_threshold=0.2)
    # label -> (image, x1, y1, x2, y2); overlaps 0.3 and 0.5 fall between the thresholds: unused
    expected = {1: (0, 2, 3, 11, 9), 2: (0, 10, 10, 19, 19), 0: (1, 4, 2, 15, 13)}
    seen = set()
    for _ in range(6):
        net.forward()
        labels = net.blobs["label"].data.astype(int)
        assert (labels[:6] == 0).all() and (labels[6:] > 0).all()  # int(8 * 0.25) = 2 foreground, last
        for window, label in zip(net.blobs["data"].data, labels):
            image, x1, y1, x2, y2 = expected[label]
            warped = chw(cv2.resize(pixels[image][y1:y2 + 1, x1:x2 + 1], (6, 6)))
            reference = (warped - np.float32([10, 20, 30])[:, None, None]) * np.float32(0.5)
            assert np.abs(window - reference).max() <= 0.5  # one level of OpenCV rounding, scaled
            seen.add(label)
    assert seen == {0, 1, 2}


def test_context_pad_square_clipping_and_mirror(scene):
    folder, images, pixels = scene
    # one fg window at the image corner, one bg window; crop 10, context_pad 1:
    # scale 10/8; box 0..9 grows to -1..11 (13 px), clipped to 0..11, warped
    # to round(12 * 10/13) = 9 px, placed after round(1 * 10/13) = 1 px of zeros
    source = window_file(folder / "w.txt", images[:1], [[(1, 1.0, 0, 0, 9, 9), (0, 0.0, 4, 4, 15, 15)]])
    net = window_net(source, f"{folder}/", 2, 10, context_pad=1, fg_fraction=0.5, crop_mode="square",
                     transform=dict(mirror=True))
    corner = chw(cv2.resize(pixels[0][0:12, 0:12], (9, 9)))
    flips = 0
    for _ in range(10):
        net.forward()
        fg = net.blobs["data"].data[1]
        if (fg[:, :, 0] == 0).all():  # unmirrored: the zero padding is on the left
            assert (fg[:, 0] == 0).all() and np.abs(fg[:, 1:, 1:] - corner).max() <= 1
        else:  # mirrored: the padding flips too (Caffe uses the right-hand pad, 0 here)
            assert (fg[:, 0] == 0).all() and np.abs(fg[:, 1:, :9] - corner[:, :, ::-1]).max() <= 1
            flips += 1
        # the bg box 4..15 (12 px, centre 10) grows to 2.5..17.5 -> 3..18 (rounded
        # half away from zero), inside the image, warped to round(16 * 10/16) = 10
        bg = net.blobs["data"].data[0]
        inner = chw(cv2.resize(pixels[0][3:19, 3:19], (10, 10)))
        assert min(np.abs(bg - inner).max(), np.abs(bg - inner[:, :, ::-1]).max()) <= 1
    assert 1 <= flips <= 9


def test_window_file_errors(scene):
    folder, images, _ = scene
    root = f"{folder}/"
    bad_label = window_file(folder / "a.txt", images[:1], [[(0, 0.9, 0, 0, 5, 5), (0, 0.0, 0, 0, 5, 5)]])
    with pytest.raises(CaffeError, match="foreground window of image 0 has class 0"):
        window_net(bad_label, root, 2, 4)
    no_bg = window_file(folder / "b.txt", images[:1], [[(1, 0.9, 0, 0, 5, 5)]])
    with pytest.raises(CaffeError, match="1 foreground and 0 background"):
        window_net(no_bg, root, 2, 4)
    missing = window_file(folder / "c.txt", [("gone.png", (8, 8))], [[(1, 0.9, 0, 0, 5, 5), (0, 0.0, 0, 0, 5, 5)]])
    net = window_net(missing, root, 2, 4)
    with pytest.raises(CaffeError, match=r"WindowData.*gone\.png"):
        net.forward()
    (folder / "d.txt").write_text("# 0\nimg_0.png\n3 20 x\n")
    with pytest.raises(CaffeError, match=r"d\.txt: expected width, got 'x'"):
        window_net(folder / "d.txt", root, 2, 4)
