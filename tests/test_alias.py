"""The opt-in `import caffe` route: install / status / uninstall, the same
module objects for every submodule, and never hiding a real pycaffe
silently (each in a fresh interpreter, with a private site folder)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchcaffe import alias

REPO = Path(__file__).resolve().parents[1]


def python(code_or_args, *path, cwd=None):
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, path), str(REPO)]))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          cwd=cwd)


@pytest.fixture
def fake_pycaffe(tmp_path):
    root = tmp_path / "bvlc-python"
    (root / "caffe").mkdir(parents=True)
    (root / "caffe" / "__init__.py").write_text("WHO = 'bvlc'\n")
    return root


def test_install_gives_the_same_module_objects(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    assert "installed the alias" in alias.install(site)
    check = python("""
import sys, caffe, torchcaffe
import caffe.io, caffe.draw, caffe.coord_map, caffe.net_spec, caffe.classifier
from caffe.proto import caffe_pb2
from caffe import layers as L, params as P
from caffe.coord_map import crop
assert caffe is torchcaffe
assert caffe.io is torchcaffe.io and caffe.draw is torchcaffe.draw
assert caffe.coord_map is torchcaffe.coord_map and caffe.net_spec is torchcaffe.net_spec
assert caffe.classifier is torchcaffe.classifier
assert sys.modules['caffe.proto.caffe_pb2'] is torchcaffe.proto.caffe_pb2 is caffe_pb2
assert L is torchcaffe.net_spec.layers and P is torchcaffe.net_spec.params
assert crop is torchcaffe.coord_map.crop
assert hasattr(caffe, 'io') and not hasattr(caffe, 'no_such_thing')
print('same objects')
""", site)
    assert check.returncode == 0, check.stderr
    assert "same objects" in check.stdout and "hidden" not in check.stderr
    status = python(["-m", "torchcaffe.alias", "status"], site)
    assert "import caffe gives torchcaffe" in status.stdout and str(site) in status.stdout
    assert "already installed" in alias.install(site)
    assert "removed the alias" in alias.uninstall(site)
    assert not (site / "caffe").exists()
    gone = python(["-m", "torchcaffe.alias", "status"], site)
    assert "import caffe fails" in gone.stdout


def test_a_real_pycaffe_is_never_hidden_silently(tmp_path, fake_pycaffe):
    site = tmp_path / "site"
    site.mkdir()
    refused = python(["-m", "torchcaffe.alias", "install", "--target", str(site)], fake_pycaffe)
    assert refused.returncode != 0 and "real pycaffe" in refused.stderr
    assert not (site / "caffe").exists()
    forced = python(["-m", "torchcaffe.alias", "install", "--target", str(site), "--force"],
                    fake_pycaffe)
    assert forced.returncode == 0 and "WARNING" in forced.stdout
    # the alias first on the path: torchcaffe, with a warning naming the hidden one
    first = python("import caffe, torchcaffe; print(caffe is torchcaffe)", site, fake_pycaffe)
    assert first.stdout.strip() == "True"
    assert "is hidden by it" in first.stderr and str(fake_pycaffe) in first.stderr
    status = python(["-m", "torchcaffe.alias", "status"], site, fake_pycaffe)
    assert "hides the pycaffe at" in status.stdout
    # the real one first: it wins, and status says so
    second = python("import caffe; print(caffe.WHO)", fake_pycaffe, site)
    assert second.stdout.strip() == "bvlc"
    status = python(["-m", "torchcaffe.alias", "status"], fake_pycaffe, site)
    assert "a real pycaffe at" in status.stdout


def test_uninstall_leaves_a_foreign_caffe_alone(tmp_path, fake_pycaffe):
    with pytest.raises(SystemExit, match="not the torchcaffe alias"):
        alias.uninstall(fake_pycaffe)
    with pytest.raises(SystemExit, match="not the torchcaffe alias"):
        alias.install(fake_pycaffe)
    assert (fake_pycaffe / "caffe" / "__init__.py").read_text() == "WHO = 'bvlc'\n"


def test_the_backend_switch_does_not_take_the_alias_for_pycaffe(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    alias.install(site)
    monkeypatch.setenv("FCN_CAFFE", "pycaffe")
    result = python("import caffe_backend", site)
    assert result.returncode != 0 and "gives torchcaffe through the alias" in result.stderr
