"""Shared by the tests that run other projects' code through the `import
caffe` alias: where the checkouts are, and a private alias install."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchcaffe import alias

REPO = Path(__file__).resolve().parents[1]


def checkout(variable: str, what: str, marker: str) -> Path:
    """The checkout named by environment variable `variable`, or a skip
    that says how to run the test."""
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"set {variable}=/path/to/{what} to run this check against its code")
    path = Path(value).expanduser().resolve()
    if not (path / marker).exists():
        pytest.fail(f"{variable}={value}: no {marker} there (not a {what} checkout?)")
    return path


def run_with_alias(args: list[str], cwd: Path, site: Path, extra_path: list[Path] = (),
                   timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run `python args...` with the alias installed into `site` (a private
    folder standing in for site-packages) ahead of everything else."""
    if not (site / "caffe").exists():
        alias.install(site)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in [site, *extra_path, REPO])
    env.pop("FCN_CAFFE", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
