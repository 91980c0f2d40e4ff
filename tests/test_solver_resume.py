"""Snapshots: an exact resume (data order and dropout included) and no
half-written snapshot when writing fails midway."""
import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

import torchcaffe.caffemodel
import torchcaffe.solverstate
from data_layers import synthetic
from torchcaffe.errors import CaffeError
from torchcaffe.solver import SGDSolver
from tiny_seg_net import DROPOUT, tiny_seg_net


SOLVER = """
train_net: "{net}"
base_lr: 1e-5
lr_policy: "fixed"
momentum: 0.9
weight_decay: 0.0005
display: 0
max_iter: 100
snapshot: {snapshot}
snapshot_prefix: "{prefix}"
random_seed: 5
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthetic.generate(root, seed=3, train=7, val=2, height=24, width=32)
    return root


def make_solver(tmp_path, dataset, snapshot=3):
    net = tmp_path / "net.prototxt"
    net.write_text(tiny_seg_net(dataset / "sbdd" / "dataset", extra=DROPOUT))
    (tmp_path / "snap").mkdir(exist_ok=True)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(SOLVER.format(net=net, snapshot=snapshot,
                                         prefix=tmp_path / "snap" / "train"))
    return SGDSolver(str(solver_file))


def params(solver):
    return {f"{name}/{i}": blob.data.copy() for name, blobs in solver.net.params.items()
            for i, blob in enumerate(blobs)}


def run_losses(solver, steps):
    losses = []
    for _ in range(steps):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    return losses


def test_resume_is_bit_exact_including_data_order(tmp_path, dataset):
    straight = make_solver(tmp_path, dataset)
    run_losses(straight, 3)  # writes the iter-3 snapshot
    later_losses = run_losses(straight, 4)
    later_params = params(straight)

    resumed = make_solver(tmp_path, dataset, snapshot=0)
    resumed.restore(tmp_path / "snap" / "train_iter_3.solverstate")
    assert resumed.iter == 3
    assert run_losses(resumed, 4) == later_losses
    for key, value in params(resumed).items():
        np.testing.assert_array_equal(value, later_params[key], err_msg=key)

    # the sidecar is what carries the order: without it the run differs
    (tmp_path / "snap" / "train_iter_3.datastate.json").unlink()
    restarted = make_solver(tmp_path, dataset, snapshot=0)
    restarted.restore(tmp_path / "snap" / "train_iter_3.solverstate")
    assert run_losses(restarted, 4) != later_losses


def test_datastate_sidecar_documents_the_layer_state(tmp_path, dataset):
    solver = make_solver(tmp_path, dataset)
    solver.step(3)
    document = json.loads((tmp_path / "snap" / "train_iter_3.datastate.json").read_text())
    assert document["iter"] == 3
    state = document["nets"]["train_net"]["data"]
    assert state["split"] == "train" and state["count"] == 7
    assert "cpu" in document["torch_rng"]


@contextlib.contextmanager
def failing_after(real, limit):
    """atomic_output whose writes fail once `limit` bytes went to the file."""
    def opener(path):
        @contextlib.contextmanager
        def cm():
            with real(path) as out:
                class Truncating:
                    written = 0

                    def write(self, data):
                        room = limit - self.written
                        if room < len(data):
                            out.write(bytes(data)[:max(room, 0)])
                            out.flush()
                            raise OSError("disk full (simulated)")
                        self.written += len(data)
                        return out.write(data)
                yield Truncating()
        return cm()
    yield opener


@pytest.mark.parametrize("module", [torchcaffe.caffemodel, torchcaffe.solverstate])
def test_failed_snapshot_leaves_previous_intact_and_no_partial_files(
        tmp_path, dataset, monkeypatch, module):
    solver = make_solver(tmp_path, dataset, snapshot=2)
    solver.step(2)
    folder = tmp_path / "snap"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(before) == {"train_iter_2.caffemodel", "train_iter_2.solverstate",
                           "train_iter_2.datastate.json"}
    with failing_after(module.atomic_output, 100) as opener:
        monkeypatch.setattr(module, "atomic_output", opener)
        # the error names the snapshot file being written, not a temporary one
        with pytest.raises(CaffeError, match=r"cannot write .*snap/train_iter_4\.\w+: .*simulated"):
            solver.step(2)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before  # nothing of iter 4, not even temporary files


def test_snapshot_folder_must_exist(tmp_path, dataset):
    net = tmp_path / "net.prototxt"
    net.write_text(tiny_seg_net(dataset / "sbdd" / "dataset", extra=DROPOUT))
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(SOLVER.format(net=net, snapshot=2,
                                         prefix=tmp_path / "missing" / "train"))
    with pytest.raises(CaffeError, match="missing"):
        SGDSolver(str(solver_file))


def test_restore_refuses_a_state_of_another_solver_type(tmp_path, dataset):
    solver = make_solver(tmp_path, dataset)
    solver.step(3)
    from torchcaffe.solver import AdamSolver
    net = tmp_path / "net.prototxt"
    solver_file = tmp_path / "adam.prototxt"
    solver_file.write_text(f'train_net: "{net}" base_lr: 0.001 lr_policy: "fixed" type: "Adam" '
                           f'snapshot_prefix: "{tmp_path}/adam"')
    adam = AdamSolver(str(solver_file))
    with pytest.raises(CaffeError, match="history blobs"):
        adam.restore(Path(tmp_path / "snap" / "train_iter_3.solverstate"))


def test_resume_continues_a_built_in_reader_exactly(tmp_path, dataset):
    """The sidecar holds HDF5Data's read position (shuffled, across files)
    beside the Python layer's: the resumed run reads the rows the
    uninterrupted one read."""
    h5py = pytest.importorskip("h5py")
    for name, rows in (("a.h5", range(0, 5)), ("b.h5", range(5, 8))):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("extra", data=np.array(rows, np.float32).reshape(-1, 1))
    (tmp_path / "rows.txt").write_text(f"{tmp_path / 'a.h5'}\n{tmp_path / 'b.h5'}\n")
    net = tmp_path / "net.prototxt"
    net.write_text(tiny_seg_net(dataset / "sbdd" / "dataset", extra=DROPOUT) + f"""
layer {{ name: "rows" type: "HDF5Data" top: "extra"
        hdf5_data_param {{ source: "{tmp_path / 'rows.txt'}" batch_size: 3 shuffle: true }} }}
layer {{ name: "sink" type: "Silence" bottom: "extra" }}
""")
    (tmp_path / "snap").mkdir()
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(SOLVER.format(net=net, snapshot=2, prefix=tmp_path / "snap" / "train"))

    def rows_read(solver, steps):
        seen = []
        for _ in range(steps):
            solver.step(1)
            seen += solver.net.blobs["extra"].data.ravel().tolist()
        return seen

    straight = SGDSolver(str(solver_file))
    rows_read(straight, 2)
    expected = rows_read(straight, 5)  # past the end of the 8 rows: a reshuffle
    sidecar = json.loads((tmp_path / "snap" / "train_iter_2.datastate.json").read_text())
    assert sidecar["nets"]["train_net"]["rows"]["offset"] == 6
    resumed = SGDSolver(str(solver_file))
    resumed.restore(tmp_path / "snap" / "train_iter_2.solverstate")
    assert rows_read(resumed, 5) == expected
