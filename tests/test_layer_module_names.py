"""The data-layer modules are importable by the plain names the nets give.

BVLC Caffe imports a Python layer's `python_param.module` by plain name
from sys.path (torchcaffe does too, before its entry points), so every
module a reference net names must be installed as a top-level module. The
install is checked for real: the project is installed (without
dependencies) into a temporary folder, and a fresh interpreter, started
outside the checkout with only that folder added, imports the names and
builds a net that says `module: "voc_layers"`.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dataset_fixtures import write_voc

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def python_layers_of_the_nets() -> set[tuple[str, str]]:
    """(module, class) of every Python layer in every net netspec emits."""
    from netspec.models import NETS

    named = set()
    for net in NETS.values():
        for message in net.prototxts(width=1 / 16).values():
            for layer in getattr(message, "layer", ()):
                if layer.type == "Python":
                    named.add((layer.python_param.module, layer.python_param.layer))
    return named


def test_every_module_the_nets_name_is_a_top_level_module_of_the_install():
    named = {module for module, _ in python_layers_of_the_nets()}
    assert named == {"voc_layers", "nyud_layers", "siftflow_layers", "pascalcontext_layers"}
    assert set(pyproject()["tool"]["setuptools"]["py-modules"]) == named


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project installed (no dependencies) into a folder of its own; the
    sources are copied first so the build leaves nothing in the checkout."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    config = pyproject()
    copied = set(config["tool"]["setuptools"]["py-modules"])
    source.mkdir()
    for name in ("pyproject.toml", "README.md", *(f"{m}.py" for m in copied)):
        shutil.copy2(ROOT / name, source / name)
    for package in config["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = package.rstrip("*")
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    target = work / "site"
    # building needs the setuptools pyproject.toml asks for: this environment's when it
    # has one, else pip fetches it as `make`'s install does
    own = ["--no-build-isolation"] if _has_setuptools(config["build-system"]["requires"]) else []
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *own,
                           "--target", str(target), str(source)],
                          capture_output=True, text=True, cwd=work)
    if done.returncode != 0:
        pytest.fail(f"pip install of the project failed:\n{done.stderr[-3000:]}")
    return target


def _has_setuptools(requires: list[str]) -> bool:
    """Whether the installed setuptools meets the build-system requirement."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    wanted = next(Requirement(r) for r in requires if Requirement(r).name == "setuptools")
    try:
        return wanted.specifier.contains(version("setuptools"))
    except PackageNotFoundError:
        return False


def run_outside(target: Path, cwd: Path, code: str) -> str:
    """Run `code` in a fresh interpreter in `cwd` with `target` on its path."""
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "FCN_CAFFE": "torchcaffe"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_installed_modules_give_the_layers_by_plain_name(installed, tmp_path):
    layers = sorted(python_layers_of_the_nets())
    found = json.loads(run_outside(installed, tmp_path, f"""
import importlib, json
from caffe_backend import caffe
found = []
for module, name in {layers!r}:
    spec = importlib.util.find_spec(module)
    cls = getattr(importlib.import_module(module), name)
    home = importlib.import_module("data_layers." + module)
    found.append([module, name, spec.origin, cls is getattr(home, name),
                  issubclass(cls, caffe.Layer)])
print(json.dumps(found))
"""))
    assert [(module, name) for module, name, *_ in found] == layers
    for module, name, origin, same_class, is_layer in found:
        assert Path(origin) == installed / f"{module}.py", (module, origin)
        assert same_class and is_layer, (module, name)


def test_a_net_naming_voc_layers_builds_outside_the_checkout(installed, tmp_path):
    voc = write_voc(tmp_path)
    params = repr({"voc_dir": str(voc), "split": "seg11valid",
                   "mean": (104.00699, 116.66877, 122.67892)})
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text('layer { name: "data" type: "Python" top: "data" top: "label"\n'
                        '  python_param { module: "voc_layers" layer: "VOCSegDataLayer"\n'
                        f'    param_str: {json.dumps(params)} }} }}\n')
    out = run_outside(installed, tmp_path, """
from caffe_backend import caffe
net = caffe.Net("net.prototxt", caffe.TEST)
net.forward()
print(type(net.layers[0]).__module__, *net.blobs["data"].data.shape,
      *sorted(set(net.blobs["label"].data.flat)))
""")
    # image 1 of the fixture is labelled 1 except its void first row
    assert out.split() == ["data_layers.voc_layers", "1", "3", "4", "5", "1.0", "255.0"]
