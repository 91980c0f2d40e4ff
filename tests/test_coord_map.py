"""crop() offsets on small nets, derived by hand from the layers' geometry."""
import pytest

from torchcaffe.coord_map import crop
from torchcaffe.errors import CaffeError
from torchcaffe.net_spec import NetSpec, layers as L, params as P


def image(n, name="data"):
    n[name] = L.Input(shape=dict(dim=[1, 3, 64, 64]))
    return n[name]


def crop_param(top):
    n = NetSpec()
    n.c = top
    layer = n.to_proto().layer[-1]
    assert layer.type == "Crop"
    return layer.crop_param.axis, list(layer.crop_param.offset)


def test_valid_conv_is_cropped_into_by_its_half_kernel():
    # a 3x3 conv without padding: output i is centred on input i + 1
    n = NetSpec()
    data = image(n)
    n.conv = L.Convolution(data, num_output=1, kernel_size=3)
    assert crop_param(crop(data, n.conv)) == (2, [1])


def test_same_padding_and_pointwise_layers_are_identity():
    n = NetSpec()
    data = image(n)
    n.conv = L.Convolution(data, num_output=1, kernel_size=3, pad=1)
    n.relu = L.ReLU(n.conv, in_place=True)
    n.drop = L.Dropout(n.relu, dropout_ratio=0.5)
    n.scale = L.Scale(n.drop)
    assert crop_param(crop(n.scale, data)) == (2, [0])


def test_pad_100_pool_and_deconv_give_offset_100():
    # conv k3 p100: shift 99; pool k2 s2: scale 1/2, shift -1/4; deconv k4
    # s2: scale 2, shift 3/2. Composed: scale 1, shift 2*(-1/4) + 3/2 + 99 = 100
    n = NetSpec()
    data = image(n)
    n.conv = L.Convolution(data, num_output=1, kernel_size=3, pad=100)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, convolution_param=dict(num_output=1, kernel_size=4, stride=2))
    assert crop_param(crop(n.up, data)) == (2, [100])


def test_per_axis_kernels_give_per_axis_offsets():
    n = NetSpec()
    data = image(n)
    n.conv = L.Convolution(data, num_output=1, kernel_size=[3, 5])
    assert crop_param(crop(data, n.conv)) == (2, [1, 2])


def test_crop_follows_its_first_bottom_and_channel_concat_is_identity():
    # a Crop by 2 of a valid 5x5 conv output: total shift 2 + 2 = 4
    n = NetSpec()
    color = image(n, "color")
    depth = image(n, "depth")
    n.data = L.Concat(color, depth)
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=5)
    n.small = L.Convolution(n.conv, num_output=1, kernel_size=5)
    n.cropped = L.Crop(n.conv, n.small, crop_param=dict(axis=2, offset=2))
    assert crop_param(crop(color, n.cropped)) == (2, [4])


def test_scale_mismatch_is_an_error_naming_the_layers():
    n = NetSpec()
    data = image(n)
    n.pool = L.Pooling(data, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    with pytest.raises(CaffeError, match=r"'pool' \(Pooling\).*'data' \(Input\).*different scales"):
        crop(n.pool, data)


def test_non_integer_offset_is_an_error():
    # a 2x2 conv centres its output between two input pixels: offset 1/2
    n = NetSpec()
    data = image(n)
    n.conv = L.Convolution(data, num_output=1, kernel_size=2)
    with pytest.raises(CaffeError, match=r"'conv'.*not an integer"):
        crop(data, n.conv)


def test_negative_offset_is_an_error():
    n = NetSpec()
    data = image(n)
    n.conv = L.Convolution(data, num_output=1, kernel_size=3)
    with pytest.raises(CaffeError, match="negative"):
        crop(n.conv, data)


def test_unconnected_tops_and_unmapped_layers_are_named():
    n = NetSpec()
    a, b = image(n, "a"), image(n, "b")
    n.fc = L.InnerProduct(b, num_output=2)
    with pytest.raises(CaffeError, match=r"'a' \(Input\).*'fc' \(InnerProduct\).*stopped at 'fc'"):
        crop(a, n.fc)


def test_legacy_h_w_fields_are_refused():
    n = NetSpec()
    data = image(n)
    n.conv = L.Convolution(data, num_output=1, kernel_h=3, kernel_w=3)
    with pytest.raises(CaffeError, match="kernel_h"):
        crop(data, n.conv)


def test_maps_answer_as_pycaffe_numpy_scales_and_shifts():
    import numpy as np

    from torchcaffe import coord_map as cm

    n = NetSpec()
    data = image(n)
    n.conv = L.Convolution(data, num_output=1, kernel_size=3, stride=2, pad=[0, 1])
    # out = in * a + b: a = 1/2; b = (pad - 1) / 2 per axis
    axis, a, b = cm.coord_map(n.conv.fn)
    assert axis == 1 and isinstance(a, np.ndarray)
    np.testing.assert_array_equal(a, [0.5, 0.5])
    np.testing.assert_array_equal(b, [-0.5, 0.0])
    assert cm.coord_map(L.ReLU(n.conv).fn) == (None, 1, 0)
    back = cm.compose(cm.coord_map(n.conv.fn), cm.inverse(cm.coord_map(n.conv.fn)))
    np.testing.assert_array_equal(back[1], [1, 1])
    np.testing.assert_array_equal(back[2], [0, 0])
    axis, stride, extent, pad = cm.conv_params(n.conv.fn)
    np.testing.assert_array_equal(extent, [3, 3])  # per axis, like the pad
    np.testing.assert_array_equal(pad, [0, 1])
    n.crop = L.Crop(n.conv, data, axis=2, offset=[4])
    assert cm.crop_params(n.crop.fn)[0] == 2
    np.testing.assert_array_equal(cm.crop_params(n.crop.fn)[1], [4])


def test_unconnected_is_a_runtime_error_and_bad_crops_assertion_errors():
    from torchcaffe import coord_map as cm

    n = NetSpec()
    data = image(n)
    n.fc = L.InnerProduct(data, num_output=2)
    with pytest.raises(RuntimeError, match="share no ancestor"):
        cm.coord_map_from_to(n.fc, data)
    n.pool = L.Pooling(data, pool=P.Pooling.MAX, kernel_size=3, stride=3)
    with pytest.raises(AssertionError, match="different scales"):
        crop(n.pool, data)
