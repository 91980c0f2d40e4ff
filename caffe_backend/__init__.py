"""The one place that decides which Caffe the FCN scripts run on.

`from caffe_backend import caffe` gives torchcaffe by default, or BVLC's
pycaffe when the environment says `FCN_CAFFE=pycaffe` (it must then be
importable as `caffe`). Everything in netspec/, solvers/, data_layers/,
surgery/ and weights/ imports Caffe through here and nowhere else.
"""
import importlib
import os

from torchcaffe.errors import CaffeError

BACKENDS = {"torchcaffe": "torchcaffe", "pycaffe": "caffe"}

name = os.environ.get("FCN_CAFFE", "torchcaffe")
if name not in BACKENDS:
    raise CaffeError(f"FCN_CAFFE={name!r}: choose one of {sorted(BACKENDS)}")
try:
    caffe = importlib.import_module(BACKENDS[name])
except ImportError as exc:  # only pycaffe can be missing
    raise CaffeError(
        f"FCN_CAFFE={name}: cannot import BVLC's pycaffe ({exc}); install it "
        "(its python/ folder on PYTHONPATH) or unset FCN_CAFFE"
    ) from exc

if name == "pycaffe" and caffe.__name__ == "torchcaffe":
    raise CaffeError("FCN_CAFFE=pycaffe, but `import caffe` gives torchcaffe through the alias "
                     "(python -m torchcaffe.alias status); uninstall it to use BVLC's pycaffe")

# pycaffe keeps crop() in a submodule: `from caffe_backend import coord_map`
coord_map = importlib.import_module(f"{BACKENDS[name]}.coord_map")
