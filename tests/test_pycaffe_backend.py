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

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from solvers.run_dir import read_metrics
from torchcaffe.caffemodel import write_caffemodel
from torchcaffe.prototxt import read_net_prototxt

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


def test_a_module_pycaffe_needs_is_named_with_the_extra_that_brings_it(stand_in, tmp_path):
    init = stand_in / "caffe" / "__init__.py"
    init.write_text("import skimage_for_this_test\n" + init.read_text())
    done = python("import caffe_backend", [stand_in], {"FCN_CAFFE": "pycaffe"}, cwd=tmp_path)
    assert done.returncode != 0
    assert "needs the module 'skimage_for_this_test'" in done.stderr
    assert 'pip install -e ".[pycaffe]"' in done.stderr


def test_without_a_pycaffe_the_switch_says_how_to_get_one(tmp_path):
    if python("import caffe", [tmp_path], cwd=tmp_path).returncode == 0:
        pytest.skip("a pycaffe is importable as `caffe` here")
    done = python("import caffe_backend", [tmp_path], {"FCN_CAFFE": "pycaffe"}, cwd=tmp_path)
    assert done.returncode != 0
    assert "cannot import BVLC's pycaffe" in done.stderr and "PYTHONPATH" in done.stderr


def test_weights_misfit_follows_caffes_shape_rule(tmp_path):
    from caffe_backend import caffe, weights_misfit

    deploy = tmp_path / "net.prototxt"
    deploy.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { '
                      'dim: 1 dim: 3 dim: 4 dim: 4 } } }\nlayer { name: "ip" type: '
                      '"InnerProduct" bottom: "data" top: "ip" inner_product_param { '
                      'num_output: 2 } }\n')
    net = caffe.Net(str(deploy), caffe.TEST)
    param = read_net_prototxt(deploy)
    path = tmp_path / "w.caffemodel"
    write_caffemodel(path, param, {"ip": [np.zeros((2, 48), np.float32),
                                          np.zeros(2, np.float32)]})
    assert weights_misfit(net, path) is None
    write_caffemodel(path, param, {"ip": [np.zeros((2, 47), np.float32),
                                          np.zeros(2, np.float32)]})
    assert weights_misfit(net, path) == ("layer 'ip' blob 0 is [2, 47] in the file, [2, 48] "
                                         "in the net")
    write_caffemodel(path, param, {"ip": [np.zeros((2, 48), np.float32)]})
    assert weights_misfit(net, path) == "layer 'ip' has 1 blobs in the file, 2 in the net"
    # a legacy 4-d blob fits a target that equals it once padded with 1s on the left
    from torchcaffe.proto import caffe_pb2

    legacy = caffe_pb2.NetParameter()
    layer = legacy.layer.add(name="ip", type="InnerProduct")
    for dims in ((1, 1, 2, 48), (1, 1, 1, 2)):
        blob = layer.blobs.add()
        blob.num, blob.channels, blob.height, blob.width = dims
        blob.data.extend([0.0] * int(np.prod(dims)))
    path.write_bytes(legacy.SerializeToString())
    assert weights_misfit(net, path) is None
    layer.blobs[0].height, layer.blobs[0].channels = 1, 2
    path.write_bytes(legacy.SerializeToString())
    assert weights_misfit(net, path) == ("layer 'ip' blob 0 is [1, 2, 1, 48] in the file, "
                                         "[2, 48] in the net")

# ---------------------------------------------------------------- on a real BVLC pycaffe

WIDTH = "0.0625"
PYTHONPATH_ENV = "FCN_PYCAFFE_PYTHONPATH"


@pytest.fixture(scope="module")
def bvlc(tmp_path_factory) -> dict:
    """The environment that runs the scripts on BVLC's pycaffe, or a skip."""
    given = os.environ.get(PYTHONPATH_ENV)
    path = [Path(given)] if given else []
    probe = python("import caffe; print(caffe.__name__, caffe.__file__)", path,
                   cwd=tmp_path_factory.mktemp("probe"))
    if probe.returncode != 0 or probe.stdout.split()[0] != "caffe":
        pytest.skip(f"no BVLC pycaffe: set {PYTHONPATH_ENV}=<caffe>/python to run the "
                    "scripts on BVLC Caffe")
    return {"PYTHONPATH": os.pathsep.join(map(str, [*path, ROOT])), "FCN_CAFFE": "pycaffe",
            "GLOG_minloglevel": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def work(tmp_path_factory, bvlc) -> Path:
    """Synthetic data, narrow nets and a seeded base net, made on BVLC Caffe."""
    work = tmp_path_factory.mktemp("pycaffe")
    run(bvlc, work, "-m", "data_layers.synthetic", "--out", "data", "--train", "4", "--val",
        "2", "--height", "48", "--width", "56")
    run(bvlc, work, "-m", "netspec", "--out", "models", "--width", WIDTH, "vgg16", "vgg16fcn")
    run(bvlc, work, "-c", "from pathlib import Path; from solvers.demo_base import "
        f"seeded_classifier; seeded_classifier(Path('classifier'), {WIDTH}, 0)")
    return work


def run(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env}, timeout=900)
    assert done.returncode == 0, f"{args}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.stderr.count(LIMITS_LINE) <= 1
    return done


def test_prepare_base_on_bvlc(bvlc, work):
    done = run(bvlc, work, "-m", "weights", "prepare-base", "vgg16", "--weights",
               "classifier/vgg16/msra.caffemodel", "--dir", "base", "--nets-dir", "models")
    assert (work / "base" / "vgg16-fcn.caffemodel").is_file()
    assert done.stderr.count(LIMITS_LINE) == 1


def test_staged_solve_all_stages_then_resume_then_the_stub(bvlc, work):
    common = ["--data", "data", "--width", WIDTH, "--test-interval", "2"]
    run(bvlc, work, str(ROOT / "solve.py"), "voc-fcn8s", "--iters", "4", "--weights",
        "base/vgg16-fcn.caffemodel", "--out", "runs/voc", *common)
    scores = json.loads((work / "runs/voc/scores.json").read_text())
    assert list(scores["stages"]) == ["voc-fcn32s", "voc-fcn16s", "voc-fcn8s"]
    for name, lr in zip(scores["stages"], (1e-10, 1e-12, 1e-14)):
        stage = scores["stages"][name]
        assert stage["iters"] == 4 and stage["lr"] == pytest.approx(lr, rel=1e-6)
        assert len(stage["tests"]) == 2 and Path(stage["final"]).is_file()
        assert (work / "runs/voc" / name / "snapshot/train_iter_4.solverstate").is_file()

    snapshot = work / "runs/voc/voc-fcn32s/snapshot/train_iter_4.solverstate"
    run(bvlc, work, str(ROOT / "solve.py"), "voc-fcn8s", "--stages", "32s", "--iters", "6",
        "--resume", str(snapshot), "--weights", "base/vgg16-fcn.caffemodel",
        "--out", "runs/resumed", *common)
    trained = [m["iter"] for m in read_metrics(work / "runs/resumed/metrics.jsonl")
               if m["kind"] == "train"]
    assert trained == [6]  # from Caffe's iteration 4 to 6

    stage = work / "runs/voc/voc-fcn16s"
    done = run(bvlc, stage, "solve.py", "--iters", "2")
    assert "voc-fcn16s: 2 iterations" in done.stdout
    assert "initialised from" in (stage / "train.log").read_text()


def test_scoring_surgery_infer_and_export_on_bvlc(bvlc, work):
    if not (work / "runs/voc/voc-fcn8s/final.caffemodel").is_file():
        pytest.skip("needs the staged run of the test before")
    model = work / "runs/voc/voc-fcn8s"
    done = run(bvlc, model, "-c", """
from caffe_backend import caffe
from solvers.score import seg_tests
solver = caffe.get_solver("solver.prototxt")
solver.net.copy_from("final.caffemodel")
ids = open("../../../data/pascal/VOC2011/ImageSets/Segmentation/seg11valid.txt").read().split()
scores = seg_tests(solver, False, ids, layer="score")
print(scores.pixels, round(scores.overall_acc, 6))
""")
    pixels = done.stdout.split()[0]
    assert int(pixels) > 0
    run(bvlc, work, "-m", "surgery.shift_stitch", "voc-fcn32s", "--factor", "2", "--width",
        WIDTH, "--size", "64")
    image = sorted((work / "data/pascal/VOC2011/JPEGImages").glob("*.jpg"))[0]
    run(bvlc, work, str(ROOT / "infer.py"), "--deploy", str(model / "deploy.prototxt"), "--weights",
        str(model / "final.caffemodel"), str(image), "--out", "inferred")
    assert (work / "inferred" / f"{image.stem}.png").is_file()
    done = run(bvlc, work, "-m", "weights", "export", "--deploy", str(model / "deploy.prototxt"),
               "--weights", str(model / "final.caffemodel"), "fcn8s.npz", "fcn8s.onnx",
               "--input-shape", "1", "3", "64", "64")
    assert (work / "fcn8s.npz").is_file() and (work / "fcn8s.onnx").is_file()


def test_the_demo_on_bvlc(bvlc, work):
    done = run(bvlc, work, "-m", "solvers.demo", "--quick", "--out", "demo")
    results = json.loads((work / "demo/results.json").read_text())
    assert [row["model"] for row in results["stages"]] == ["voc-fcn32s", "voc-fcn16s",
                                                           "voc-fcn8s"]
    assert (work / "demo/overlays.png").is_file() and "FCN-8s" in done.stdout


def test_compare_caffe_runs_both_backends(bvlc, work):
    given = os.environ.get(PYTHONPATH_ENV)
    env = {k: v for k, v in bvlc.items() if k != "FCN_CAFFE"}
    done = run(env, work, "-m", "solvers.compare_caffe", "--iters", "2,2,2",
               "--out", "compare",
               *(["--caffe-pythonpath", given] if given else []))
    assert "BVLC Caffe against torchcaffe: largest difference in mean IU" in done.stdout
    result = json.loads((work / "compare/comparison.json").read_text())
    assert [s["stage"] for s in result["stages"]] == ["FCN-32s", "FCN-16s", "FCN-8s"]
    assert (work / "compare/curves.png").is_file()


def test_weights_that_do_not_fit_are_an_error_not_an_abort(bvlc, work):
    model = work / "runs/voc/voc-fcn8s"
    if not (model / "deploy.prototxt").is_file():
        pytest.skip("needs the staged run of the test before")
    image = sorted((work / "data/pascal/VOC2011/JPEGImages").glob("*.jpg"))[0]
    done = subprocess.run([sys.executable, "infer.py", "--deploy", str(model / "deploy.prototxt"),
                           "--weights", str(work / "classifier/vgg16/msra.caffemodel"),
                           str(image), "--out", str(work / "misfit")], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **bvlc}, timeout=600)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "does not fit" in done.stderr and "layer 'fc6'" in done.stderr
