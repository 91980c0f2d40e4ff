"""Dataset preparation: layout checks, seg11valid, SBD -> PNG, fetching from a local server."""
from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from data_layers import prepare
from data_layers.palette import voc_palette
from torchcaffe.errors import CaffeError


def test_shipped_seg11valid_is_736_distinct_voc2011_ids(tmp_path):
    target = prepare.write_seg11valid(tmp_path / "pascal" / "VOC2011")
    ids = target.read_text().splitlines()
    assert len(ids) == 736 == len(set(ids))
    assert ids[0] == "2007_000033" and ids[-1] == "2011_003271"
    assert all(len(i) == 11 and i[4] == "_" and 2007 <= int(i[:4]) <= 2011 for i in ids)
    assert ids == sorted(ids)


def write_sbd(dataset: Path, ids=("2008_000001", "2008_000002")) -> None:
    (dataset / "img").mkdir(parents=True)
    for kind in ("cls", "inst"):
        (dataset / kind).mkdir()
    for k, image_id in enumerate(ids, 1):
        Image.new("RGB", (5, 4), (k, k, k)).save(dataset / "img" / f"{image_id}.jpg")
        seg = np.array([[0, k, 15, 20]] * 3, dtype=np.uint8)
        scipy.io.savemat(dataset / "cls" / f"{image_id}.mat", {"GTcls": {"Segmentation": seg}})
        scipy.io.savemat(dataset / "inst" / f"{image_id}.mat", {"GTinst": {"Segmentation": seg * 0 + 2}})
    (dataset / "train.txt").write_text("\n".join(ids) + "\n")


def test_check_layout_names_what_is_missing_where(tmp_path):
    sbdd = prepare.DATASETS["sbdd"]
    assert prepare.check_layout(sbdd, tmp_path) == [f"missing split file {tmp_path / 'sbdd/dataset/train.txt'}"]
    write_sbd(tmp_path / "sbdd" / "dataset")
    assert prepare.check_layout(sbdd, tmp_path) == []
    (tmp_path / "sbdd/dataset/cls/2008_000002.mat").unlink()
    (problem,) = prepare.check_layout(sbdd, tmp_path)
    assert problem.startswith("1 of 2 ids in train.txt lack sbdd/dataset/cls/<id>.mat")
    assert str(tmp_path / "sbdd/dataset/cls/2008_000002.mat") in problem


def test_check_reports_context_label_files(tmp_path):
    problems = prepare.check_layout(prepare.DATASETS["pascal-context"], tmp_path)
    assert f"missing file {tmp_path / 'pascal-context/59_labels.txt'}" in problems
    assert f"missing split file {tmp_path / 'pascal/VOC2010/ImageSets/Main/val.txt'}" in problems


def test_sbd_mat_to_palette_png(tmp_path):
    dataset = tmp_path / "dataset"
    write_sbd(dataset)
    assert prepare.convert_sbd(dataset) == 4
    png = Image.open(dataset / "cls" / "2008_000002.png")
    assert png.mode == "P"
    assert np.array(png).tolist() == [[0, 2, 15, 20]] * 3
    assert png.getpalette()[15 * 3:16 * 3] == [192, 128, 128]  # VOC's person colour
    assert np.array(Image.open(dataset / "inst" / "2008_000001.png")).max() == 2
    with pytest.raises(CaffeError, match="no .mat files"):
        prepare.convert_sbd(tmp_path / "elsewhere")


def test_voc_palette_known_colours():
    palette = voc_palette()
    assert palette[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert palette[15].tolist() == [192, 128, 128] and palette[255].tolist() == [224, 224, 192]


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_downloads_unpacks_and_places(tmp_path, server):
    www, base = server
    write_sbd(tmp_path / "src" / "benchmark_RELEASE" / "dataset")
    with tarfile.open(www / "benchmark.tgz", "w:gz") as tf:
        tf.add(tmp_path / "src" / "benchmark_RELEASE", arcname="benchmark_RELEASE")
    (www / "59_labels.txt").write_text("1: aeroplane\n")
    dataset = prepare.Dataset(
        "sbdd", "test", ("sbdd/dataset/train.txt",), ("sbdd/dataset/cls/{}.mat",),
        archives=(prepare.Archive(f"{base}/benchmark.tgz", "sbdd/dataset", ("cls", "img", "train.txt")),
                  prepare.Archive(f"{base}/59_labels.txt", "pascal-context/59_labels.txt")),
    )
    data = tmp_path / "data"
    placed = prepare.fetch(dataset, data)
    assert placed == [data / "sbdd/dataset", data / "pascal-context/59_labels.txt"]
    assert (data / "sbdd/dataset/train.txt").read_text() == "2008_000001\n2008_000002\n"
    assert (data / "pascal-context/59_labels.txt").read_text() == "1: aeroplane\n"
    assert prepare.check_layout(dataset, data) == []
    assert not list((data / "downloads").glob("*.part"))
    assert prepare.fetch(dataset, data) == []  # in place already: nothing to do


# Pythons before 3.10.12 / 3.11.4 (Debian 12's 3.11.2) have no extraction filters
@pytest.fixture(params=["tar filters", "no tar filters"])
def tar_filters(request, monkeypatch):
    if request.param == "no tar filters" and hasattr(tarfile, "data_filter"):
        monkeypatch.delattr(tarfile, "data_filter")
    return request.param


def test_unpack_refuses_members_outside_the_target(tmp_path, tar_filters):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(CaffeError, match=r"evil\.tar: .*escaped\.txt.*outside"):
        prepare.unpack(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_unpack_without_filters_refuses_links_and_unpacks_files(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("set/a.txt")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"ok"))
    prepare.unpack(archive, tmp_path / "out")
    assert (tmp_path / "out" / "set" / "a.txt").read_bytes() == b"ok"
    with tarfile.open(archive, "a") as tf:
        link = tarfile.TarInfo("set/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(CaffeError, match="set/passwd.*not a plain file"):
        prepare.unpack(archive, tmp_path / "out2")
    assert not (tmp_path / "out2" / "set" / "passwd").exists()


def test_find_folder_explains_an_unexpected_archive(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    with pytest.raises(CaffeError, match="no folder under .* holds cls, img"):
        prepare.find_folder(tmp_path, ("cls", "img"))


def test_cli_check_and_help(tmp_path, capsys):
    write_sbd(tmp_path / "sbdd" / "dataset")
    assert prepare.main(["check", "sbdd", "--data", str(tmp_path)]) == 0
    assert prepare.main(["check", "voc", "--data", str(tmp_path)]) == 1
    assert prepare.main(["check", "--data", str(tmp_path)]) == 1  # all datasets
    assert prepare.main(["check", "imagenet", "--data", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "unknown dataset(s) ['imagenet']" in out and "siftflow: " in out
    assert "sbdd: ok" in out and "voc: 1 problem(s)" in out and "seg11valid.txt" in out
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--help"])
    assert exit_info.value.code == 0
