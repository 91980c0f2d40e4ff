"""infer.py on a tiny net whose prediction can be worked out by hand.

The net is one 1x1 convolution with identity weights, so score channel k is
input channel k of the preprocessed image: BGR order, minus the mean.  The
image is chosen so that forgetting the RGB -> BGR flip or the mean gives a
different label map.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weights.infer import VOC_MEAN_BGR, voc_palette

ROOT = Path(__file__).resolve().parents[1]

DEPLOY = """name: "identity_score"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 3 kernel_size: 1 } }
"""

# RGB pixels; after BGR - mean (104.007, 116.669, 122.679) the largest channel is
#   (123, 100, 111) -> ( 6.99, -16.67,  0.32): label 0
#   (110, 140, 125) -> (20.99,  23.33, -12.68): label 1
#   (140, 118, 105) -> ( 0.99,   1.33,  17.32): label 2
PIXELS = {0: (123, 100, 111), 1: (110, 140, 125), 2: (140, 118, 105)}


def image_and_labels(height=5, width=7):
    labels = (np.arange(height)[:, None] + 2 * np.arange(width)[None, :]) % 3
    image = np.zeros((height, width, 3), np.uint8)
    for label, rgb in PIXELS.items():
        image[labels == label] = rgb
    return image, labels


@pytest.fixture
def model(tmp_path):
    from caffe_backend import caffe

    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(DEPLOY)
    net = caffe.Net(str(deploy), caffe.TEST)
    net.params["score"][0].data[...] = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    weights = tmp_path / "identity.caffemodel"
    net.save(str(weights))
    return deploy, weights


def test_wrong_recipes_would_be_caught():
    image, labels = image_and_labels()
    rgb = image.astype(np.float32)
    assert ((rgb[..., ::-1] - VOC_MEAN_BGR).argmax(-1) == labels).all()
    assert not ((rgb - VOC_MEAN_BGR).argmax(-1) == labels).all()  # no BGR flip
    assert not (rgb[..., ::-1].argmax(-1) == labels).all()  # no mean


def test_voc_palette_known_colours():
    palette = voc_palette()
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]  # aeroplane
    assert palette[2].tolist() == [0, 128, 0]  # bicycle
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[20].tolist() == [0, 64, 128]  # tvmonitor
    assert palette[255].tolist() == [224, 224, 192]  # void


def test_infer_cli_writes_label_png_and_overlay(model, tmp_path):
    deploy, weights = model
    image, labels = image_and_labels()
    image_path = tmp_path / "scene.jpg.png"  # lossless, so the pixels are exact
    Image.fromarray(image).save(image_path)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), "--deploy", str(deploy), "--weights",
         str(weights), str(image_path), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    label_png = Image.open(out / "scene.jpg.png")
    assert label_png.mode == "P"
    np.testing.assert_array_equal(np.array(label_png), labels)
    assert label_png.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    blended = np.array(Image.open(out / "scene.jpg_overlay.png"))
    colours = voc_palette()[labels].astype(np.float64)
    np.testing.assert_array_equal(blended, np.rint(0.5 * image + 0.5 * colours))


def test_infer_refuses_a_missing_score_blob(model, tmp_path, capsys):
    from weights.__main__ import main

    deploy, weights = model
    image_path = tmp_path / "x.png"
    Image.fromarray(image_and_labels()[0]).save(image_path)
    with pytest.raises(SystemExit) as exit_:
        main(["infer", "--deploy", str(deploy), "--weights", str(weights), "--score-blob",
              "score_sem", str(image_path), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 1
    assert "no blob 'score_sem'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "x.png").exists()


TRAIN_LIKE = DEPLOY.replace('type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } }',
                            'type: "Python" top: "data" top: "label" python_param { module: "voc_layers" '
                            'layer: "VOCSegDataLayer" }') + (
    'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }\n')


@pytest.mark.parametrize("case, message", [
    ("train", "not a deploy net (data layers data (Python); loss layers loss (SoftmaxWithLoss))"),
    ("missing-deploy", "--deploy {tmp}/nope.prototxt: no such file"),
    ("missing-image", "image {tmp}/nope.png: no such file"),
])
def test_infer_names_the_real_problem_before_writing(model, tmp_path, capsys, case, message):
    from weights.__main__ import main

    deploy, weights = model
    image_path = tmp_path / "x.png"
    Image.fromarray(image_and_labels()[0]).save(image_path)
    if case == "train":
        deploy = tmp_path / "train.prototxt"
        deploy.write_text(TRAIN_LIKE)
    elif case == "missing-deploy":
        deploy = tmp_path / "nope.prototxt"
    else:
        image_path = tmp_path / "nope.png"
    with pytest.raises(SystemExit) as exit_:
        main(["infer", "--deploy", str(deploy), "--weights", str(weights), str(image_path),
              "--out", str(tmp_path / "o")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(tmp=tmp_path) in err
    assert not (tmp_path / "o").exists()


MIXING = """name: "mixing"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "score" type: "Convolution" bottom: "conv" top: "score"
        convolution_param { num_output: 5 kernel_size: 1 weight_filler { type: "gaussian" std: 0.5 } } }
"""


def test_batches_give_the_results_of_one_image_at_a_time(tmp_path, caplog):
    """Same-size images share a forward; every label map is the one the
    image gets alone (order, sizes and a final short batch included)."""
    import logging

    import torchcaffe
    from weights.infer import infer_files, image_paths

    deploy = tmp_path / "mixing.prototxt"
    deploy.write_text(MIXING)
    torchcaffe.set_random_seed(3)
    net = torchcaffe.Net(str(deploy), torchcaffe.TEST)
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    sizes = [(9, 11), (9, 11), (9, 11), (6, 13), (9, 11), (9, 11)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    (folder / "notes.txt").write_text("not an image")
    paths = image_paths([folder])
    assert [p.name for p in paths] == [f"im{i}.png" for i in range(len(sizes))]
    with caplog.at_level(logging.INFO, logger="weights.infer"):
        infer_files(net, paths, tmp_path / "alone", batch=1)
        infer_files(net, paths, tmp_path / "batched", batch=2)
    for i in range(len(sizes)):
        alone = np.array(Image.open(tmp_path / "alone" / f"im{i}.png"))
        batched = np.array(Image.open(tmp_path / "batched" / f"im{i}.png"))
        assert alone.shape == sizes[i]
        np.testing.assert_array_equal(batched, alone)
    assert any("segmented 6 images" in r.getMessage() and "images/s" in r.getMessage()
               for r in caplog.records)


def test_batched_scores_equal_single_scores(tmp_path):
    import torchcaffe
    from weights.infer import preprocess, segment_batch

    deploy = tmp_path / "mixing.prototxt"
    deploy.write_text(MIXING)
    torchcaffe.set_random_seed(4)
    net = torchcaffe.Net(str(deploy), torchcaffe.TEST)
    rng = np.random.default_rng(1)
    data = np.stack([preprocess(rng.integers(0, 256, (7, 10, 3), dtype=np.uint8))
                     for _ in range(3)])
    segment_batch(net, data)
    together = net.blobs["score"].data.copy()
    for i in range(3):
        segment_batch(net, data[i:i + 1])
        # equal up to float rounding (a batch may sum in another order)
        scale = np.abs(together[i]).max()
        np.testing.assert_allclose(net.blobs["score"].data[0], together[i], rtol=0,
                                   atol=1e-6 * scale)
