"""`FCN_CAFFE=pycaffe`: the scripts on BVLC's pycaffe.

Without a BVLC Caffe, a stand-in package checks what the switch itself
does: BVLC's generated `caffe_pb2` and torchcaffe's register the same
protobuf symbols under different file names, which protobuf's default pool
refuses, so `caffe_backend` must make one module serve both, whichever
was imported first.

With a BVLC Caffe (`FCN_PYCAFFE_PYTHONPATH=<caffe>/python`, or a real
pycaffe importable as `caffe`), every entry point runs on it in a
subprocess, on a tiny synthetic set and narrow nets (see `entry_points`).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMITS_LINE = "FCN_CAFFE=pycaffe: running on BVLC Caffe"


def python(code: str, path: list[Path], env: dict | None = None, cwd: Path = ROOT,
           timeout: int = 600) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*path, ROOT])),
            "GLOG_minloglevel": "2", **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, env=full, timeout=timeout)


@pytest.fixture
def stand_in(tmp_path) -> Path:
    """A package `caffe` shaped as BVLC's where the switch touches it: its
    caffe_pb2 is torchcaffe's schema registered under BVLC's file name
    (caffe/proto/caffe.proto), so the two collide as the real ones do."""
    package = tmp_path / "caffe"
    (package / "proto").mkdir(parents=True)
    source = (ROOT / "torchcaffe" / "proto" / "caffe_pb2.py").read_text()
    ours = r"AddSerializedFile(b'\n\x0b\x63\x61\x66\x66\x65.proto"
    bvlcs = r"AddSerializedFile(b'\n\x17\x63\x61\x66\x66\x65/proto/caffe.proto"
    assert ours in source
    (package / "proto" / "caffe_pb2.py").write_text(source.replace(ours, bvlcs, 1))
    (package / "proto" / "__init__.py").write_text("")
    (package / "coord_map.py").write_text("")
    (package / "__init__.py").write_text("from .proto.caffe_pb2 import TRAIN, TEST\n"
                                         "from . import proto\n")
    return tmp_path


def test_the_stand_in_collides_as_bvlcs_schema_does(stand_in):
    done = python("import torchcaffe.proto.caffe_pb2, caffe", [stand_in])
    assert done.returncode != 0 and "duplicate symbol" in done.stderr


@pytest.mark.parametrize("first", ["", "import torchcaffe.proto.caffe_pb2\n"],
                         ids=["pycaffe first", "torchcaffe's schema first"])
def test_one_schema_module_serves_both_runtimes(stand_in, tmp_path, first):
    done = python(first + """
from caffe_backend import caffe
from torchcaffe.proto import caffe_pb2
from torchcaffe.prototxt import read_net_prototxt
assert caffe.__name__ == "caffe" and caffe.proto.caffe_pb2 is caffe_pb2
net = read_net_prototxt("net.prototxt")
print(type(net) is caffe_pb2.NetParameter, net.layer[-1].convolution_param.num_output)
""", [stand_in], {"FCN_CAFFE": "pycaffe"}, cwd=_net_file(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "3"]
    assert done.stderr.count(LIMITS_LINE) == 1


def _net_file(folder: Path) -> Path:
    (folder / "net.prototxt").write_text(
        'input: "data" input_shape { dim: 1 dim: 1 dim: 4 dim: 4 }\n'
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
        '  convolution_param { num_output: 3 kernel_size: 1 } }\n')
    return folder


def test_without_a_pycaffe_the_switch_says_how_to_get_one(tmp_path):
    if python("import caffe", [tmp_path], cwd=tmp_path).returncode == 0:
        pytest.skip("a pycaffe is importable as `caffe` here")
    done = python("import caffe_backend", [tmp_path], {"FCN_CAFFE": "pycaffe"}, cwd=tmp_path)
    assert done.returncode != 0
    assert "cannot import BVLC's pycaffe" in done.stderr and "PYTHONPATH" in done.stderr
