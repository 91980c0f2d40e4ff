"""caffe.io against hand-derived values and real files: proto <-> array
conversions, image loading, resizing as pycaffe's scikit-image call
samples, ten-crop oversampling, the Transformer, Classifier and Detector."""
import numpy as np
import pytest
from PIL import Image

import torchcaffe as caffe
from torchcaffe import io
from torchcaffe.proto import caffe_pb2


def test_blobproto_shapes_legacy_new_missing_and_scalar():
    blob = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3)
    blob.data.extend(range(6))
    assert io.blobproto_to_array(blob).shape == (1, 1, 2, 3)
    blob = caffe_pb2.BlobProto()
    blob.data.extend(range(6))
    blob.shape.dim.extend([2, 3])
    np.testing.assert_array_equal(io.blobproto_to_array(blob), [[0, 1, 2], [3, 4, 5]])
    unshaped = caffe_pb2.BlobProto()
    unshaped.data.extend(range(6))
    with pytest.raises(ValueError, match="6 values but shape"):
        io.blobproto_to_array(unshaped)
    scalar = caffe_pb2.BlobProto()
    scalar.data.append(123)
    assert io.blobproto_to_array(scalar) == 123


def test_blobproto_and_vector_round_trip_through_bytes():
    data = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    blob = io.array_to_blobproto(data, diff=-data)
    parsed = caffe_pb2.BlobProto.FromString(blob.SerializeToString())
    assert list(parsed.shape.dim) == [1, 2, 3]
    np.testing.assert_array_equal(io.blobproto_to_array(parsed, return_diff=True), -data)
    arrays = [data, np.ones((2, 2), np.float32)]
    back = io.blobprotovector_str_to_arraylist(io.arraylist_to_blobprotovector_str(arrays))
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)


def test_datum_uint8_as_bytes_float_as_floats_label_only_when_given():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = io.array_to_datum(pixels, label=7)
    assert datum.data == pixels.tobytes() and not datum.float_data and datum.label == 7
    np.testing.assert_array_equal(io.datum_to_array(datum), pixels)
    floats = io.array_to_datum(pixels.astype(np.float64) / 2)
    assert not floats.HasField("label") and not floats.data
    np.testing.assert_array_equal(io.datum_to_array(floats), pixels / 2)
    assert len(datum.SerializeToString()) > len(io.array_to_datum(pixels).SerializeToString())
    with pytest.raises(ValueError, match="3-d"):
        io.array_to_datum(np.zeros((2, 2)))


def test_load_image_colour_gray_and_alpha(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [51, 102, 153]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    image = io.load_image(tmp_path / "rgb.png")
    assert image.dtype == np.float32 and image.shape == (2, 2, 3)
    np.testing.assert_allclose(image, rgb / 255.0, atol=1e-7)
    gray = io.load_image(tmp_path / "rgb.png", color=False)
    assert gray.shape == (2, 2, 1)
    np.testing.assert_allclose(gray[0, 0, 0], 0.2125, atol=1e-6)  # red's luma weight
    np.testing.assert_allclose(gray[1, 1, 0], (0.2125 * 51 + 0.7154 * 102 + 0.0721 * 153) / 255,
                               atol=1e-6)
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "gray.png")
    tiled = io.load_image(tmp_path / "gray.png")
    np.testing.assert_array_equal(tiled, [[[0, 0, 0], [1, 1, 1]]])
    rgba = np.concatenate([rgb, np.full((2, 2, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_allclose(io.load_image(tmp_path / "rgba.png"), rgb / 255.0, atol=1e-7)


def test_resize_samples_pixel_centres_with_a_zero_border_in_unit_range():
    # width 2 -> 4: output centres fall at input x = -0.25, 0.25, 0.75, 1.25;
    # linear interpolation with 0 outside gives 0, 0.25, 0.75, 0.75
    im = np.array([[[0.0], [1.0]]], np.float32)
    np.testing.assert_allclose(io.resize_image(im, (1, 4))[0, :, 0], [0, 0.25, 0.75, 0.75],
                               atol=1e-6)
    # values are scaled to [0, 1] first, so "0 outside" is the image minimum
    np.testing.assert_allclose(io.resize_image(im * 10 + 5, (1, 4))[0, :, 0],
                               [5, 7.5, 12.5, 12.5], atol=1e-5)
    constant = np.full((3, 3, 3), 0.4, np.float32)
    np.testing.assert_array_equal(io.resize_image(constant, (5, 2)), np.full((5, 2, 3), 0.4,
                                                                             np.float32))
    assert io.resize_image(np.zeros((4, 4, 2), np.float32), (2, 2)).shape == (2, 2, 2)


def test_oversample_corners_centre_and_mirrors():
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    crops = io.oversample([image], (2, 2))[..., 0]
    assert crops.shape == (10, 2, 2)
    expected = [[[0, 1], [4, 5]], [[2, 3], [6, 7]], [[8, 9], [12, 13]], [[10, 11], [14, 15]],
                [[5, 6], [9, 10]]]
    np.testing.assert_array_equal(crops[:5], expected)
    np.testing.assert_array_equal(crops[5:], np.array(expected)[:, :, ::-1])


def test_transformer_preprocess_order_and_deprocess():
    t = io.Transformer({"data": (1, 3, 2, 2)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    image = np.random.RandomState(0).rand(2, 2, 3).astype(np.float32)
    out = t.preprocess("data", image)
    expected = (image.transpose(2, 0, 1)[::-1] * 255 - np.array([10, 20, 30])[:, None, None]) * 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_allclose(t.deprocess("data", out), image, rtol=1e-5, atol=1e-6)
    with pytest.raises(caffe.CaffeError, match="'label' is not one of the net inputs"):
        t.preprocess("label", image)
    with pytest.raises(caffe.CaffeError, match="2 mean values for 3 input channels"):
        t.set_mean("data", np.array([1.0, 2.0]))


LINEAR = '''name: "linear"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: 4 dim: 4 }} }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param {{ num_output: 2 }} }}
'''


@pytest.fixture
def linear_model(tmp_path):
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(LINEAR.format())
    net = caffe.Net(str(deploy), caffe.TEST)
    weights = np.random.RandomState(1).randn(2, 48).astype(np.float32)
    net.params["fc"][0].data[...] = weights
    net.params["fc"][1].data[...] = [1, -1]
    net.save(str(tmp_path / "w.caffemodel"))
    return str(deploy), str(tmp_path / "w.caffemodel"), weights


def test_classifier_centre_crop_and_ten_crops(linear_model):
    deploy, model, weights = linear_model
    clf = caffe.Classifier(deploy, model, image_dims=(6, 6), raw_scale=255)
    image = np.random.RandomState(2).rand(6, 6, 3).astype(np.float32)

    def score(crop):  # H x W x 3 in [0, 1]
        return weights @ (crop.transpose(2, 0, 1) * 255).ravel() + [1, -1]

    np.testing.assert_allclose(clf.predict([image], oversample=False)[0],
                               score(image[1:5, 1:5]), rtol=1e-3)
    crops = [image[i:i + 4, j:j + 4] for i in (0, 2) for j in (0, 2)] + [image[1:5, 1:5]]
    crops += [c[:, ::-1] for c in crops]
    np.testing.assert_allclose(clf.predict([image])[0], np.mean([score(c) for c in crops], 0),
                               rtol=1e-3)


def test_detector_scores_windows_of_image_files(linear_model, tmp_path):
    deploy, model, weights = linear_model
    pixels = np.random.RandomState(3).randint(0, 256, (8, 8, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "scene.png")
    det = caffe.Detector(deploy, model, raw_scale=255)
    windows = [np.array([0, 0, 4, 4]), np.array([2, 3, 6, 7])]
    found = det.detect_windows([(str(tmp_path / "scene.png"), windows)])
    assert [d["filename"] for d in found] == [str(tmp_path / "scene.png")] * 2
    for detection, (y0, x0, y1, x1) in zip(found, windows):
        crop = pixels[y0:y1, x0:x1].astype(np.float32)
        expected = weights @ crop.transpose(2, 0, 1).ravel() + [1, -1]
        np.testing.assert_allclose(detection["prediction"], expected, rtol=1e-3)
