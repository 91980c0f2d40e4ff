"""pycaffe's `caffe.Classifier`: a TEST-phase Net that classifies images,
optionally averaging over ten crops (corners, centre and their mirrors)."""
from __future__ import annotations

import numpy as np

from . import io
from .net import TEST, Net


def configured_transformer(net: Net, mean=None, input_scale=None, raw_scale=None,
                           channel_swap=None) -> io.Transformer:
    """A Transformer for the net's first input: H x W x K -> K x H x W plus the
    given preprocessing (shared by Classifier and Detector)."""
    in_ = net.inputs[0]
    transformer = io.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


class Classifier(Net):
    """`Classifier(model_file, pretrained_file, image_dims=None, mean=None,
    input_scale=None, raw_scale=None, channel_swap=None)`; images are resized
    to `image_dims` (default: the input's size) and then cropped to the input."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = configured_transformer(self, mean, input_scale, raw_scale,
                                                  channel_swap)
        in_ = self.inputs[0]
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        self.image_dims = np.array(image_dims if image_dims else self.crop_dims)

    def predict(self, inputs, oversample: bool = True) -> np.ndarray:
        """Class scores (N x classes) of H x W x K images in [0, 1]: the mean
        over ten crops with `oversample`, else of the centre crop."""
        image_h, image_w = (int(d) for d in self.image_dims)
        resized = np.zeros((len(inputs), image_h, image_w, inputs[0].shape[2]), np.float32)
        for i, image in enumerate(inputs):
            resized[i] = io.resize_image(image, (image_h, image_w))
        if oversample:
            crops = io.oversample(resized, self.crop_dims)
        else:
            half = self.crop_dims / 2.0
            top, left = (self.image_dims / 2.0 - half).astype(int)
            crop_h, crop_w = (int(d) for d in self.crop_dims)
            crops = resized[:, top:top + crop_h, left:left + crop_w, :]
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(crops),) + tuple(self.blobs[in_].data.shape[1:]), np.float32)
        for i, crop in enumerate(crops):
            caffe_in[i] = self.transformer.preprocess(in_, crop)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(axis=1)
        return predictions
