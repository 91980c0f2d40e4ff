"""A one-conv segmentation net over the SBDD data layer, for solver tests
(resume, several processes): small enough to train in milliseconds."""

_NET = """
name: "tiny-seg"
layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "data_layers.voc_layers" layer: "SBDDSegDataLayer"
    param_str: "{{'sbdd_dir': '{sbdd}', 'seed': 1337, 'split': 'train', 'mean': (104.0, 116.0, 122.0)}}" }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 1
    weight_filler {{ type: "gaussian" std: {std} }} bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
{extra}
layer {{ name: "score" type: "Convolution" bottom: "conv1" top: "score"
  convolution_param {{ num_output: 21 kernel_size: 1 weight_filler {{ type: "gaussian" std: {std} }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param {{ ignore_label: 255 normalize: {normalize} }} }}
"""

DROPOUT = ('layer { name: "drop1" type: "Dropout" bottom: "conv1" top: "conv1" '
           'dropout_param { dropout_ratio: 0.5 } }')


def tiny_seg_net(sbdd, std: float = 0.01, extra: str = "", normalize: bool = False) -> str:
    """The net's prototxt text reading the SBDD layout at `sbdd`; `extra`
    is spliced in after relu1."""
    return _NET.format(sbdd=sbdd, std=std, extra=extra, normalize=str(normalize).lower())
