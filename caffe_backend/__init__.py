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
        missing = getattr(exc, "name", None) or "caffe"
        if missing.split(".")[0] != "caffe":  # pycaffe is there, a module it imports is not
            raise CaffeError(
                f"FCN_CAFFE={name}: BVLC's pycaffe needs the module '{missing}' ({exc}); "
                "install what it imports: pip install -e \".[pycaffe]\"") from exc
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


def weights_misfit(net, weights) -> str | None:
    """Why the caffemodel `weights` cannot be copied into `net` by layer
    name (Caffe's rule), or None."""
    from torchcaffe.caffemodel import read_caffemodel

    for layer in read_caffemodel(str(weights)):
        if layer.name not in net.params or not layer.blobs:
            continue
        targets = [tuple(blob.data.shape) for blob in net.params[layer.name]]
        if len(targets) != len(layer.blobs):
            return (f"layer '{layer.name}' has {len(layer.blobs)} blobs in the file, "
                    f"{len(targets)} in the net")
        for index, (blob, target) in enumerate(zip(layer.blobs, targets)):
            legacy = index < len(layer.legacy_shape) and layer.legacy_shape[index]
            padded = (1,) * (4 - len(target)) + target if legacy and len(target) <= 4 else target
            if blob.shape != padded:
                return (f"layer '{layer.name}' blob {index} is {list(blob.shape)} in the "
                        f"file, {list(target)} in the net")
    return None


def net_with_weights(prototxt, weights, phase):
    """`caffe.Net(prototxt, phase, weights=weights)`; on pycaffe the weights are
    checked first, since BVLC Caffe ends the process on a misfit."""
    if name != "pycaffe":
        return caffe.Net(os.fspath(prototxt), phase, weights=os.fspath(weights))
    net = caffe.Net(os.fspath(prototxt), phase)
    misfit = weights_misfit(net, weights)
    if misfit is not None:
        raise CaffeError(f"{os.fspath(weights)} does not fit {os.fspath(prototxt)}: {misfit}")
    net.copy_from(os.fspath(weights))
    return net


name = os.environ.get("FCN_CAFFE", "torchcaffe")
if name not in BACKENDS:
    raise CaffeError(f"FCN_CAFFE={name!r}: choose one of {sorted(BACKENDS)}")
caffe = _import(name)

# pycaffe keeps crop() in a submodule: `from caffe_backend import coord_map`
coord_map = importlib.import_module(f"{BACKENDS[name]}.coord_map")
