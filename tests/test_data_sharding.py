"""Data layers of a TRAIN net on N training processes take rank r's
interleaved share r, r + N, ... of the one-process order (Caffe's
DataLayer::Skip), so the ranks together read each item exactly once; TEST
nets read everything. Checked in one process by setting the rank."""
import json

import numpy as np
import pytest

import torchcaffe as caffe
from dataset_fixtures import write_voc
from image_fixtures import write_images, write_list
from torchcaffe import layers as L
from torchcaffe.errors import CaffeError
from torchcaffe.proto import caffe_pb2
from torchcaffe.tools import convert_imageset

MEAN = (104.0, 116.0, 122.0)


@pytest.fixture
def as_rank():
    """as_rank(r, n): make this process rank r of n until the test ends."""
    from torchcaffe import parallel

    saved = dict(parallel._STATE)

    def set_rank(rank, count, seed=None):
        caffe.set_solver_count(count)
        caffe.set_solver_rank(rank)
        parallel._STATE["order_seed"] = seed

    yield set_rank
    parallel._STATE.update(saved)


def voc_net(tmp_path, voc, phase, **params):
    prototxt = tmp_path / "voc.prototxt"
    settings = {"voc_dir": str(voc), "split": "train", "mean": MEAN, **params}
    prototxt.write_text(
        'layer { name: "data" type: "Python" top: "data" top: "label"\n'
        '  python_param { module: "data_layers.voc_layers" layer: "VOCSegDataLayer"\n'
        f'    param_str: {json.dumps(repr(settings))} }} }}\n')
    return caffe.Net(str(prototxt), phase)


def voc_stream(net, count):
    """Which fixture image each forward read (image k is labelled k)."""
    read = []
    for _ in range(count):
        net.forward()
        read.append(int((set(np.unique(net.blobs["label"].data)) - {255.0}).pop()))
    return read


@pytest.mark.parametrize("randomize", [False, True])
def test_voc_layer_ranks_interleave_the_one_process_order(tmp_path, as_rank, randomize):
    voc = write_voc(tmp_path)  # 5 images, labelled 1..5
    settings = {"randomize": randomize, "seed": 1337}
    one = voc_stream(voc_net(tmp_path, voc, caffe.TRAIN, **settings), 12)
    if not randomize:
        assert one == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]
    shares = []
    for rank in (0, 1, 2):
        as_rank(rank, 3)
        shares.append(voc_stream(voc_net(tmp_path, voc, caffe.TRAIN, **settings), 4))
    assert [shares[i % 3][i // 3] for i in range(12)] == one
    if not randomize:  # one epoch across the 3 ranks: every image once
        assert sorted(shares[0][:2] + shares[1][:2] + shares[2][:1]) == [1, 2, 3, 4, 5]
    as_rank(1, 3)
    assert voc_stream(voc_net(tmp_path, voc, caffe.TEST, **settings), 3) == one[:3]


def test_voc_layer_state_resumes_its_share_and_refuses_another(tmp_path, as_rank):
    voc = write_voc(tmp_path)
    as_rank(1, 2)
    net = voc_net(tmp_path, voc, caffe.TRAIN, seed=7)
    layer = net.layers[0]
    voc_stream(net, 3)
    state = layer.get_state()
    ahead = voc_stream(net, 4)
    layer.set_state(state)
    assert voc_stream(net, 4) == ahead
    as_rank(0, 2)
    other = voc_net(tmp_path, voc, caffe.TRAIN, seed=7).layers[0]
    with pytest.raises(CaffeError, match="state is for share 1 of 2 training processes, this "
                                         "layer reads share 0 of 2"):
        other.set_state(state)


def test_random_order_on_several_ranks_needs_a_seed(tmp_path, as_rank):
    voc = write_voc(tmp_path)
    as_rank(0, 2)
    with pytest.raises(CaffeError, match="random order with 2 training processes needs a 'seed'"):
        voc_net(tmp_path, voc, caffe.TRAIN, seed=None)


def test_hdf5data_rank_takes_rows_as_caffe_skip(tmp_path, as_rank):
    h5py = pytest.importorskip("h5py")
    for name, rows in (("a.h5", range(0, 5)), ("b.h5", range(5, 9))):
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("data", data=np.array(rows, np.float32).reshape(-1, 1))
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.h5'}\n{tmp_path / 'b.h5'}\n")
    n = caffe.NetSpec()
    n.data = L.HDF5Data(hdf5_data_param=dict(source=str(tmp_path / "list.txt"), batch_size=3))
    as_rank(1, 2)
    net = caffe.Net(n.to_proto(), caffe.TRAIN)
    seen = []
    for _ in range(3):
        net.forward()
        seen += net.blobs["data"].data.ravel().tolist()
    # rows 0..8 then wrapping: offsets 1, 3, 5, 7, 9 (= row 0), 11 (= row 2), ...
    assert seen == [1, 3, 5, 7, 0, 2, 4, 6, 8]


def test_db_and_imagedata_ranks_take_interleaved_records(tmp_path, as_rank):
    pytest.importorskip("lmdb")
    entries = write_images(tmp_path / "images", [(6, 7)] * 5, "png")  # labels 10..14
    listing = write_list(tmp_path / "list.txt", entries)
    db = tmp_path / "db"
    assert convert_imageset.main([f"{tmp_path / 'images'}/", str(listing), str(db)]) == 0
    as_rank(0, 2)
    n = caffe.NetSpec()
    n.data, n.label = L.Data(data_param=dict(source=str(db), batch_size=4,
                                             backend=caffe_pb2.DataParameter.LMDB), ntop=2)
    net = caffe.Net(n.to_proto(), caffe.TRAIN)
    net.forward()
    assert net.blobs["label"].data.tolist() == [10, 12, 14, 11]  # offsets 0, 2, 4, 6 (wrapped)
    n = caffe.NetSpec()
    n.data, n.label = L.ImageData(image_data_param=dict(source=str(listing), batch_size=3,
                                                        root_folder=f"{tmp_path / 'images'}/"),
                                  ntop=2)
    as_rank(1, 2)
    net = caffe.Net(n.to_proto(), caffe.TRAIN)
    net.forward()
    assert net.blobs["label"].data.tolist() == [11, 13, 10]


def test_shuffled_imagedata_on_several_ranks_shares_one_permutation(tmp_path, as_rank):
    entries = write_images(tmp_path / "images", [(6, 7)] * 6, "png")
    listing = write_list(tmp_path / "list.txt", entries)
    n = caffe.NetSpec()
    n.data, n.label = L.ImageData(image_data_param=dict(source=str(listing), batch_size=3,
                                                        shuffle=True,
                                                        root_folder=f"{tmp_path / 'images'}/"),
                                  ntop=2)
    as_rank(0, 2)
    with pytest.raises(CaffeError, match="shuffling with 2 training processes needs the "
                                         "solver's random_seed"):
        caffe.Net(n.to_proto(), caffe.TRAIN)
    labels = []
    for rank in (0, 1):
        as_rank(rank, 2, seed=11)
        caffe.set_random_seed(100 + rank)  # crops and mirrors may differ per rank
        net = caffe.Net(n.to_proto(), caffe.TRAIN)
        net.forward()
        labels.append(net.blobs["label"].data.tolist())
    assert sorted(labels[0] + labels[1]) == [10, 11, 12, 13, 14, 15]  # one epoch, once each
