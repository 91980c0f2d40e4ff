"""The one place that decides which Caffe the FCN scripts run on.

`from caffe_backend import caffe` gives torchcaffe by default, or BVLC's
pycaffe when the environment says `FCN_CAFFE=pycaffe` (it must then be
importable as `caffe`, e.g. its `python/` folder on PYTHONPATH). Everything
in netspec/, solvers/, data_layers/, surgery/ and weights/ imports Caffe
through here and nowhere else.

On pycaffe, one schema module serves both runtimes: BVLC's `caffe_pb2` and
torchcaffe's register the same protobuf symbols (package `caffe`), which
protobuf's default pool accepts only once, and the two schemas are equal
field for field. Whichever was loaded first becomes the other's too, so
torchcaffe's file readers (used for checks and the caffemodel reader) and
BVLC's pycaffe coexist in one process.
"""
import importlib
import logging
import os
import sys

from torchcaffe.errors import CaffeError

log = logging.getLogger(__name__)

BACKENDS = {"torchcaffe": "torchcaffe", "pycaffe": "caffe"}
OURS, BVLCS = "torchcaffe.proto.caffe_pb2", "caffe.proto.caffe_pb2"

#: what the scripts do differently on BVLC's pycaffe (said once, at import)
PYCAFFE_LIMITS = (
    "FCN_CAFFE=pycaffe: running on BVLC Caffe; a --resume restores weights, momentum and "
    "iteration (Caffe's solverstate) but not the data order or Caffe's random state (the "
    "datastate sidecar is torchcaffe's), seeded fillers and dropout draw Caffe's own random "
    "stream, and `weights export` checks its files against this Caffe's forward")


def _share_schema() -> None:
    """Make BVLC's pycaffe and torchcaffe use one caffe_pb2 module."""
    ours = sys.modules.get(OURS)
    if ours is not None:
        sys.modules.setdefault(BVLCS, ours)


def _adopt_schema() -> None:
    """After pycaffe's import: one module under both names (and as both
    packages' attribute, which a module found in sys.modules does not get)."""
    import torchcaffe.proto

    schema = sys.modules.setdefault(OURS, sys.modules[BVLCS])
    torchcaffe.proto.caffe_pb2 = schema
    importlib.import_module("caffe.proto").caffe_pb2 = schema


def _import(name: str):
    if name == "torchcaffe":
        return importlib.import_module("torchcaffe")
    _share_schema()
    try:
        pycaffe = importlib.import_module("caffe")
    except ImportError as exc:
        raise CaffeError(
            f"FCN_CAFFE={name}: cannot import BVLC's pycaffe ({exc}); put its python/ folder "
            "on PYTHONPATH (PYTHONPATH=<caffe>/python) or unset FCN_CAFFE") from exc
    if pycaffe.__name__ == "torchcaffe":
        raise CaffeError("FCN_CAFFE=pycaffe, but `import caffe` gives torchcaffe through the "
                         "alias (python -m torchcaffe.alias status); uninstall it to use "
                         "BVLC's pycaffe")
    _adopt_schema()
    log.warning(PYCAFFE_LIMITS)
    return pycaffe


name = os.environ.get("FCN_CAFFE", "torchcaffe")
if name not in BACKENDS:
    raise CaffeError(f"FCN_CAFFE={name!r}: choose one of {sorted(BACKENDS)}")
caffe = _import(name)

# pycaffe keeps crop() in a submodule: `from caffe_backend import coord_map`
coord_map = importlib.import_module(f"{BACKENDS[name]}.coord_map")
