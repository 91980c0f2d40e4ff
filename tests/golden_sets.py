"""Where the golden cases computed by BVLC Caffe live, and how tests reach them.

Two sets:
- the compact copy committed under `tests/golden/` (every layer case, the
  legacy V1 model, one FCN net per stride, every solver type with Caffe's
  snapshot), so every clone can check the parity figures the README quotes;
- the full set beside the repository (`../shared/golden`, or the folder named
  by `$FCN_GOLDEN`), run as well wherever it exists.

A set that is absent becomes an explicit skip with its path as the reason,
and the run's closing lines say which sets ran (see conftest.py), so a
missing set is never silent.
"""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
COMPACT = REPO / "tests" / "golden"
FULL = Path(os.environ.get("FCN_GOLDEN") or REPO.parent / "shared" / "golden")
SETS = (("compact", COMPACT), ("full", FULL))


def case_params(subdir: str, names=None) -> list:
    """pytest params (folder, case name) over both sets for one kind of case.

    `names`: restrict to these case names (each set keeps those it has);
    default: every `*.npz` in the folder."""
    params = []
    for label, root in SETS:
        folder = root / subdir
        cases = sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []
        if names is not None:
            cases = [c for c in cases if c in names]
        if not cases:
            reason = f"{label} golden set absent: no {subdir} cases at {folder}"
            params.append(pytest.param(None, None, id=f"{label}-absent",
                                       marks=pytest.mark.skip(reason=reason)))
            continue
        params.extend(pytest.param(folder, case, id=f"{label}-{case}") for case in cases)
    return params


def file_params(*relpaths: str) -> list:
    """pytest params (path) for golden files, from each set that has them
    (the compact copy may hold one as `<file>.gz`: unpack with `unpacked`).
    A set holding none of them gives one explicit skip."""
    params = []
    for label, root in SETS:
        found = []
        for relpath in relpaths:
            path = root / relpath
            if not path.exists() and path.with_name(path.name + ".gz").exists():
                path = path.with_name(path.name + ".gz")
            if path.exists():
                found.append(pytest.param(path, id=f"{label}-{relpath}"))
        params.extend(found or [pytest.param(None, id=f"{label}-absent", marks=pytest.mark.skip(
            reason=f"{label} golden set absent: none of {', '.join(relpaths)} under {root}"))])
    return params


def unpacked(path: Path, tmp_path: Path) -> Path:
    """`path` itself, or a temporary unpacked copy when it is a `.gz`."""
    if path.suffix != ".gz":
        return path
    target = tmp_path / path.stem
    target.write_bytes(gzip.decompress(path.read_bytes()))
    return target


def materialize(folder: Path, target: Path) -> Path:
    """A private, writable copy of a golden folder with its `.gz` files
    (the compact copy's caffemodels and solverstates) unpacked."""
    target.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():
        if item.is_dir():
            shutil.copytree(item, target / item.name)
        elif item.suffix == ".gz":
            (target / item.stem).write_bytes(gzip.decompress(item.read_bytes()))
        else:
            shutil.copy(item, target / item.name)
    return target


def assert_close(actual, expected, what: str, rtol: float) -> None:
    """Within `rtol` of the largest magnitude of the expected array."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, Caffe {expected.shape}"
    if not expected.size:
        return
    scale = max(float(np.abs(expected).max()), 1e-30)
    err = float(np.abs(actual - expected).max())
    assert err <= rtol * scale, f"{what}: max error {err:.3g} on scale {scale:.3g}"


def bilinear_upsampling(shape) -> np.ndarray:
    """The fixed bilinear kernel of the FCN upsampling layers, from its formula
    (each channel maps to itself; weight [C, C, k, k]). The compact copy stores
    the nets without these large fixed blobs and the tests set them from here;
    with the full set present, a test checks Caffe's stored kernels equal it."""
    channels, _, size, _ = shape
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - np.abs(np.arange(size) - center) / factor
    weight = np.zeros(shape, np.float32)
    weight[range(channels), range(channels)] = np.outer(ramp, ramp)
    return weight
