"""The FCN release's own scripts, converted to Python 3 by 2to3 and switched
from GPU to CPU (nothing else changed), run through the `import caffe` alias
on a tiny synthetic dataset:

    FCN_RELEASE=/path/to/fcn.berkeleyvision.org pytest tests/test_fcn_release_scripts.py

voc-fcn32s/net.py emits its nets (equal to the release's own prototxts),
voc-fcn32s/solve.py trains (surgery.interp, score.seg_tests) for a few
iterations (tests/fcn_release_harness.py caps the length), infer.py
segments an image, and surgery.transplant casts an inner product into a
convolution. Without FCN_RELEASE the test is skipped.
"""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

from external_checkouts import REPO, checkout, run_with_alias
from torchcaffe.proto import caffe_pb2

GPU_LINES = "caffe.set_device(int(sys.argv[1]))\ncaffe.set_mode_gpu()\n"
HARNESS = Path(__file__).resolve().parent / "fcn_release_harness.py"
SCRIPTS = ["score.py", "surgery.py", "infer.py", "vis.py", "voc_layers.py",
           "voc-fcn32s/net.py", "voc-fcn32s/solve.py"]


def to_python3(root: Path) -> None:
    """2to3 on the scripts, then GPU -> CPU in solve.py: the only changes."""
    try:
        import lib2to3  # noqa: F401  (gone from Python 3.13 on)
    except ImportError:
        pytest.skip("the 2to3 conversion needs lib2to3 (Python <= 3.12)")
    subprocess.run([sys.executable, "-W", "ignore", "-m", "lib2to3", "-w", "-n",
                    "--no-diffs", *[str(root / s) for s in SCRIPTS]],
                   check=True, capture_output=True)
    solve = root / "voc-fcn32s" / "solve.py"
    text = solve.read_text()
    assert GPU_LINES in text
    solve.write_text(text.replace(GPU_LINES, "caffe.set_mode_cpu()\n"))


def small_caffemodel(path: Path, layer: str, shapes, seed: int) -> None:
    """A caffemodel holding one layer's blobs (the rest of a net keeps its fillers)."""
    rng = np.random.RandomState(seed)
    param = caffe_pb2.NetParameter()
    target = param.layer.add(name=layer)
    for shape in shapes:
        blob = target.blobs.add()
        blob.shape.dim.extend(shape)
        blob.data.extend((rng.randn(*shape) * 0.01).astype(np.float32).ravel())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(param.SerializeToString())


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    source = checkout("FCN_RELEASE", "fcn.berkeleyvision.org", "voc-fcn32s/solve.py")
    root = tmp_path_factory.mktemp("fcn") / "release"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns(".git", "*.caffemodel"))
    to_python3(root)
    data = root / "data"
    subprocess.run([sys.executable, "-m", "data_layers.synthetic", "--out", str(data),
                    "--train", "2", "--val", "2"], cwd=REPO, check=True, capture_output=True)
    val = (data / "pascal/VOC2011/ImageSets/Segmentation/seg11valid.txt").read_text()
    (data / "segvalid11.txt").write_text(val)
    return root


def run(release: Path, args, cwd: Path):
    result = run_with_alias(args, cwd=cwd, site=release.parent / "site", extra_path=[release])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def parse_net(path: Path) -> tuple[caffe_pb2.NetParameter, list[dict]]:
    """The net, and its Python layers' param_str as dicts (Python 2 wrote
    those dicts in hash order, Python 3 in insertion order), cleared in the net."""
    net = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    params = []
    for layer in net.layer:
        if layer.type == "Python":
            params.append(ast.literal_eval(layer.python_param.param_str))
            layer.python_param.ClearField("param_str")
    return net, params


def test_net_py_emits_the_release_prototxts(release):
    folder = release / "voc-fcn32s"
    shipped = {name: parse_net(folder / name) for name in ("train.prototxt", "val.prototxt")}
    for name in shipped:
        (folder / name).unlink()
    run(release, ["net.py"], folder)
    for name, message in shipped.items():
        assert parse_net(folder / name) == message, name


def test_solve_py_trains_and_scores(release):
    folder = release / "voc-fcn32s"
    small_caffemodel(release / "ilsvrc-nets" / "vgg16-fcn.caffemodel", "conv1_1",
                     [(64, 3, 3, 3), (64,)], seed=0)
    (folder / "snapshot").mkdir(exist_ok=True)  # Caffe, too, wants it to exist
    result = run(release, [str(HARNESS), "--budget", "2", "solve.py"], folder)
    out = result.stdout
    assert "harness: stopped after the 2-iteration budget" in out
    for metric in ("loss", "overall accuracy", "mean accuracy", "mean IU", "fwavacc"):
        assert f"Iteration 2 {metric}" in out, out[-2000:]


def test_infer_py_segments_an_image(release):
    image = release / "data" / "pascal" / "VOC2011" / "JPEGImages"
    shutil.copy(next(image.glob("*.jpg")), release / "demo" / "image.jpg")
    small_caffemodel(release / "voc-fcn8s" / "fcn8s-heavy-pascal.caffemodel", "score_fr",
                     [(21, 4096, 1, 1), (21,)], seed=1)
    run(release, ["infer.py"], release)
    with Image.open(release / "demo" / "image.jpg") as im, \
            Image.open(release / "demo" / "output.png") as out:
        assert out.size == im.size


def test_surgery_transplant_casts_fc_to_conv(release, tmp_path):
    fc = 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 4 } }'
    conv = ('layer { name: "fc" type: "Convolution" bottom: "data" top: "fc" '
            'convolution_param { num_output: 4 kernel_size: 2 } }')
    data = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 2 dim: 2 } } }\n'
    for name, body in (("fc", fc), ("conv", conv)):
        (tmp_path / f"{name}.prototxt").write_text(data + body)
    script = f"""
import caffe, surgery, numpy as np
fc = caffe.Net('{tmp_path / "fc.prototxt"}', caffe.TEST)
conv = caffe.Net('{tmp_path / "conv.prototxt"}', caffe.TEST)
fc.params['fc'][0].data[...] = np.arange(48).reshape(4, 12)
fc.params['fc'][1].data[...] = np.arange(4)
surgery.transplant(conv, fc)
assert (conv.params['fc'][0].data.reshape(4, 12) == fc.params['fc'][0].data).all()
x = np.random.RandomState(0).randn(1, 3, 2, 2)
a = fc.forward(data=x)['fc'].ravel().copy()
b = conv.forward(data=x)['fc'].ravel()
assert np.allclose(a, b, atol=1e-4), (a, b)
print('transplant ok')
"""
    result = run(release, ["-c", script], tmp_path)
    assert "coercing fc 0 from (4, 12) to (4, 3, 2, 2)" in result.stdout
    assert "transplant ok" in result.stdout
