"""download() against a local HTTP server that honours Range and can cut a transfer."""
import hashlib
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from weights.download import DownloadError, download
from weights.registry import REGISTRY, lookup

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
PAYLOAD_SHA1 = hashlib.sha1(PAYLOAD).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """/file.bin serves PAYLOAD (206 for `Range: bytes=N-`); /missing is 404.

    `server.cut_after` (bytes, once) ends the first full-file response early
    while still announcing the whole length; `server.ranges` records the
    Range header of every request; `server.no_range` ignores Range (200)."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        if self.path != "/file.bin":
            self.send_error(404, "Not Found")
            return
        start = 0
        header = self.headers.get("Range")
        if header and not srv.no_range:
            start = int(header.removeprefix("bytes=").rstrip("-"))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:
            cut, srv.cut_after = srv.cut_after, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.ranges, srv.cut_after, srv.no_range = [], None, False
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_shows_progress_and_verifies(server, tmp_path, caplog):
    # off a terminal, progress is plain log lines (see torchcaffe.progress)
    with caplog.at_level(logging.INFO, logger="torchcaffe.progress"):
        path = download(f"{server.url}/file.bin", tmp_path, sha1=PAYLOAD_SHA1)
    assert path == tmp_path / "file.bin"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "file.bin.part").exists()
    lines = [r.getMessage() for r in caplog.records if r.name == "torchcaffe.progress"]
    assert lines and lines[-1].startswith("file.bin: ") and "(100%)" in lines[-1]
    assert server.ranges == [None]


def test_download_resumes_after_the_server_cuts_the_connection(server, tmp_path):
    server.cut_after = 100_000
    path = download(f"{server.url}/file.bin", tmp_path, sha1=PAYLOAD_SHA1, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=100000-"]


def test_partial_file_is_kept_and_a_later_call_resumes(server, tmp_path):
    server.cut_after = 123_456
    with pytest.raises(DownloadError, match="run again to resume"):
        download(f"{server.url}/file.bin", tmp_path, retries=0, progress=False)
    part = tmp_path / "file.bin.part"
    assert part.read_bytes() == PAYLOAD[:123_456]
    assert not (tmp_path / "file.bin").exists()
    path = download(f"{server.url}/file.bin", tmp_path, sha1=PAYLOAD_SHA1, progress=False)
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert server.ranges[-1] == "bytes=123456-"


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    (tmp_path / "file.bin.part").write_bytes(b"stale bytes")
    server.no_range = True
    path = download(f"{server.url}/file.bin", tmp_path, sha1=PAYLOAD_SHA1, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_a_body(server, tmp_path):
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD)
    path = download(f"{server.url}/file.bin", tmp_path, sha1=PAYLOAD_SHA1, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_checksum_failure_leaves_no_file(server, tmp_path):
    with pytest.raises(DownloadError, match="sha1 .* does not match") as err:
        download(f"{server.url}/file.bin", tmp_path, sha1="0" * 40, progress=False)
    assert server.url in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_size_failure_leaves_no_file(server, tmp_path):
    with pytest.raises(DownloadError, match="expected 5"):
        download(f"{server.url}/file.bin", tmp_path, size=5, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_404_names_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=r"404 .*/missing\.bin"):
        download(f"{server.url}/missing.bin", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host_says_so(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.caffemodel"
    with pytest.raises(DownloadError, match="cannot reach .*x.caffemodel.*offline"):
        download(url, tmp_path, progress=False)


def test_existing_verified_file_is_not_fetched_again(server, tmp_path):
    (tmp_path / "file.bin").write_bytes(PAYLOAD)
    download(f"{server.url}/file.bin", tmp_path, sha1=PAYLOAD_SHA1, progress=False)
    assert server.ranges == []


def test_registry_names_resolve_and_unknown_names_are_refused():
    assert lookup("fcn8s-heavy-pascal.caffemodel") is REGISTRY["fcn8s-heavy-pascal"]
    with pytest.raises(Exception, match="no weights named 'fcn9s'"):
        lookup("fcn9s")


def test_registry_covers_the_model_zoo():
    zoo = {"fcn32s-heavy-pascal", "fcn16s-heavy-pascal", "fcn8s-heavy-pascal",
           "fcn8s-atonce-pascal", "fcn-alexnet-pascal", "nyud-fcn32s-color-heavy",
           "nyud-fcn32s-hha-heavy", "nyud-fcn32s-color-hha-heavy", "siftflow-fcn32s-heavy",
           "siftflow-fcn16s-heavy", "siftflow-fcn8s-heavy", "pascalcontext-fcn32s-heavy",
           "pascalcontext-fcn16s-heavy", "pascalcontext-fcn8s-heavy"}
    assert zoo <= set(REGISTRY)
    for name in zoo:
        entry = REGISTRY[name]
        assert entry.url == f"http://dl.caffe.berkeleyvision.org/{name}.caffemodel"
        assert entry.filename == f"{name}.caffemodel"
    for entry in REGISTRY.values():
        assert entry.sha1 is None or (len(entry.sha1) == 40 and int(entry.sha1, 16) >= 0)
