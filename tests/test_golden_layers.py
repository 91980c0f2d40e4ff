"""Every layer case computed by BVLC Caffe, reproduced through the public
`torchcaffe.Net` (format: tests/golden/README.md).

Tolerance: max |got - expected| <= 1e-5 * max |expected| for each array
(relative to the array's largest magnitude, so sums with cancellation are
judged on the array's scale).
"""
import gc
import json
import shutil

import numpy as np
import pytest

import torchcaffe
from golden_sets import assert_close, case_params

RTOL = 1e-5
PHASES = {"TRAIN": torchcaffe.TRAIN, "TEST": torchcaffe.TEST}


def arrays(golden, prefix: str) -> dict:
    return {key[len(prefix):]: golden[key] for key in golden.files if key.startswith(prefix)}


def set_params(net, golden) -> None:
    for key, value in arrays(golden, "param/").items():
        layer, index = key.rsplit("/", 1)
        net.params[layer][int(index)].data[...] = value


def check_forwards(net, golden, meta, count: int) -> None:
    """Data layers: forward `count` times; after forward k compare every top
    (`out/k/<blob>`), or only its shape for random fillers (`outshape/k/<blob>`)."""
    for k in range(1, count + 1):
        net.forward()
        for blob, expected in arrays(golden, f"out/{k}/").items():
            assert_close(net.blobs[blob].data, expected, f"forward {k} out/{blob}", RTOL)
        for blob, shape in arrays(golden, f"outshape/{k}/").items():
            assert net.blobs[blob].data.shape == tuple(shape), f"forward {k} {blob}"


def check_written_file(golden, meta, workdir) -> None:
    """HDF5Output: the file holds what Caffe wrote once the net is gone."""
    h5py = pytest.importorskip("h5py", reason="h5py (the test extra) reads HDF5Output's file")
    with h5py.File(workdir / meta["written_file"], "r") as written:
        for name, expected in arrays(golden, "written/").items():
            assert_close(written[name][()], expected, f"written/{name}", RTOL)


@pytest.fixture(scope="module")
def case_folders(tmp_path_factory):
    """Private copies of each case folder's side files (LMDB, HDF5 lists,
    binaryprotos), since readers write lock files and sources are relative."""
    copies = {}

    def copy_of(folder):
        if folder not in copies:
            target = tmp_path_factory.mktemp("golden-layers")
            for item in folder.iterdir():
                if item.suffix in (".npz", ".prototxt"):
                    continue
                if item.is_dir():
                    shutil.copytree(item, target / item.name)
                else:
                    shutil.copy(item, target / item.name)
            copies[folder] = target
        return copies[folder]

    return copy_of


@pytest.mark.parametrize("folder, case", case_params("layers"))
def test_layer_case_matches_caffe(folder, case, case_folders, tmp_path, monkeypatch):
    golden = np.load(folder / f"{case}.npz")
    meta = json.loads(str(golden["meta"]))
    assert meta["kind"] == "layer"
    workdir = tmp_path if meta.get("run_in") == "tmpdir" else case_folders(folder)
    monkeypatch.chdir(workdir)
    torchcaffe.set_mode_cpu()
    net = torchcaffe.Net(str(folder / f"{case}.prototxt"), PHASES[meta["phase"]])

    set_params(net, golden)
    for blob, value in arrays(golden, "in/").items():
        net.blobs[blob].data[...] = value
    if meta.get("memory_input"):
        net.set_input_arrays(*(golden[key] for key in meta["memory_input"]))
    if meta.get("forwards"):
        check_forwards(net, golden, meta, meta["forwards"])
        return

    net.forward()
    for blob, expected in arrays(golden, "out/").items():
        assert_close(net.blobs[blob].data, expected, f"out/{blob}", RTOL)
    for key, expected in arrays(golden, "param_after/").items():
        layer, index = key.rsplit("/", 1)
        assert_close(net.params[layer][int(index)].data, expected, f"param_after/{key}", RTOL)
    if meta.get("written_file"):
        del net  # the last reference: the writer closes its file
        gc.collect()
        check_written_file(golden, meta, workdir)
        return
    if not meta.get("backward", True):
        return

    # backward: top diffs on non-loss outputs (0-d ones too); loss outputs
    # start from their loss_weight
    for blob, topdiff in arrays(golden, "topdiff/").items():
        assert blob not in meta["losses"]
        net.blobs[blob].diff[...] = topdiff
    net.backward()
    checked = 0
    for blob in meta["inputs"]:
        if f"diff/{blob}" in golden.files and blob not in meta.get("labels", []):
            assert_close(net.blobs[blob].diff, golden[f"diff/{blob}"], f"diff/{blob}", RTOL)
            checked += 1
    for key, expected in arrays(golden, "pdiff/").items():
        layer, index = key.rsplit("/", 1)
        assert_close(net.params[layer][int(index)].diff, expected, f"pdiff/{key}", RTOL)
        checked += 1
    assert checked, "the case compares no gradient"
