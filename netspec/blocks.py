"""The layer patterns the FCN nets repeat: learned convs, pools, skips."""
from __future__ import annotations

from caffe_backend import caffe

L = caffe.layers
P = caffe.params

# weights learn at the base rate with weight decay, biases at twice the rate
# without; upsampling filters stay fixed at their bilinear initialisation
LEARNED = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
FIXED = [dict(lr_mult=0)]
# a frozen learned layer (FCN-32s-fixed's backbone): weights and bias stay put
FROZEN = [dict(lr_mult=0), dict(lr_mult=0)]


def conv_relu(bottom, nout, ks=3, stride=1, pad=1, param=LEARNED, **conv_kwargs):
    """A learned (or, with `param=FROZEN`, frozen) convolution and its in-place ReLU."""
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout,
                         pad=pad, param=param, **conv_kwargs)
    return conv, L.ReLU(conv, in_place=True)


def max_pool(bottom, ks=2, stride=2):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


def dropout(bottom):
    return L.Dropout(bottom, dropout_ratio=0.5, in_place=True)


def score(bottom, classes):
    """1x1 convolution to per-class scores."""
    return L.Convolution(bottom, num_output=classes, kernel_size=1, pad=0, param=LEARNED)


def upsample(bottom, classes, ks, stride):
    """Fixed (bilinear-initialised) Deconvolution without bias."""
    return L.Deconvolution(
        bottom,
        convolution_param=dict(num_output=classes, kernel_size=ks, stride=stride,
                               bias_term=False),
        param=FIXED)


def fuse(*bottoms):
    return L.Eltwise(*bottoms, operation=P.Eltwise.SUM)
