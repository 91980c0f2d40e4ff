"""torchcaffe: BVLC Caffe's semantics and pycaffe's API on PyTorch.

`import torchcaffe as caffe` and use it as pycaffe: `caffe.Net`,
`caffe.SGDSolver`, `caffe.Layer`, `caffe.TRAIN` / `caffe.TEST`,
`caffe.set_mode_gpu()`, `caffe.NetSpec`, `caffe.layers` / `caffe.params`,
`caffe.layer_type_list()`.
Names are imported on first use, so emitting prototxts never loads torch.
Log lines print to stderr in Caffe's glog format (see `torchcaffe.glog`).
"""
from importlib import import_module

from . import glog as _glog

TRAIN = 0
TEST = 1

# public name -> module that defines it
_EXPORTS = {
    "Layer": "torchcaffe.python_layer",
    "CaffeError": "torchcaffe.errors",
    "LayerError": "torchcaffe.errors",
    "Net": "torchcaffe.net",
    "Blob": "torchcaffe.blob",
    "set_mode_cpu": "torchcaffe.mode",
    "set_mode_gpu": "torchcaffe.mode",
    "set_device": "torchcaffe.mode",
    "set_random_seed": "torchcaffe.mode",
    "SGDSolver": "torchcaffe.solver",
    "NesterovSolver": "torchcaffe.solver",
    "AdaGradSolver": "torchcaffe.solver",
    "RMSPropSolver": "torchcaffe.solver",
    "AdaDeltaSolver": "torchcaffe.solver",
    "AdamSolver": "torchcaffe.solver",
    "get_solver": "torchcaffe.solver",
    "NetSpec": "torchcaffe.net_spec",
    "layers": "torchcaffe.net_spec",
    "params": "torchcaffe.net_spec",
    "to_proto": "torchcaffe.net_spec",
    "layer_type_list": "torchcaffe.layer_types.base",
    "init_log": "torchcaffe.glog",
    "log": "torchcaffe.glog",
}
_SUBMODULES = {"proto", "coord_map", "net_spec", "io", "caffemodel"}


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = import_module(f"torchcaffe.{name}")
    else:
        raise AttributeError(f"module 'torchcaffe' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)


_glog.install()
