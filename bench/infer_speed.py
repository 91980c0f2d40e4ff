"""infer.py's throughput: 100 JPEGs of 500x375 (written here into a temporary
folder) through voc-fcn8s at 1/4 of VGG16's channel width (random weights;
the full-width net takes seconds per image on two cores, which would make
this section alone several minutes).

The value is `infer_files` as infer.py runs it: decoding ahead and writing
behind in background threads, same-size images four to a forward. The
baseline is the same work one image at a time in one thread: decode,
forward, write.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from solvers.solve import _prototxts
from netspec.writer import to_prototxt
from torchcaffe.atomic import write_text

log = logging.getLogger(__name__)

COUNT = 100
HEIGHT, WIDTH = 375, 500
NET_WIDTH = 1 / 4
BATCH = 4


def _write_jpegs(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(COUNT):
        # smooth colour fields, as photos are, so JPEG decoding costs what it does on photos
        coarse = rng.integers(0, 256, (HEIGHT // 25 + 1, WIDTH // 25 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.BILINEAR)
        path = folder / f"image_{i:03d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def _net(folder: Path):
    import torchcaffe as caffe

    deploy = folder / "deploy.prototxt"
    write_text(deploy, to_prototxt(_prototxts("voc-fcn8s", NET_WIDTH)["deploy.prototxt"]))
    net = caffe.Net(str(deploy), caffe.TEST)
    rng = np.random.default_rng(1)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.data.shape) * 0.01
    return net


def _one_at_a_time(net, paths, out: Path) -> None:
    from weights.infer import label_image, load_rgb, overlay, save_png, segment

    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        rgb = load_rgb(path)
        labels = segment(net, rgb)
        save_png(label_image(labels), out / f"{path.stem}.png")
        save_png(overlay(rgb, labels), out / f"{path.stem}_overlay.png")


def run(device: str) -> list[dict]:
    import torchcaffe as caffe
    from weights.infer import infer_files

    (caffe.set_mode_gpu if device == "cuda" else caffe.set_mode_cpu)()
    per_image_log = logging.getLogger("weights.infer")
    level = per_image_log.level
    per_image_log.setLevel(logging.WARNING)  # not a line per image
    try:
        with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
            folder = Path(tmp)
            paths = _write_jpegs(folder)
            net = _net(folder)
            infer_files(net, paths[:BATCH], folder / "warm", batch=BATCH)  # kernels chosen here
            start = time.perf_counter()
            infer_files(net, paths, folder / "overlapped", batch=BATCH)
            overlapped = time.perf_counter() - start
            start = time.perf_counter()
            _one_at_a_time(net, paths, folder / "sequential")
            sequential = time.perf_counter() - start
    finally:
        per_image_log.setLevel(level)
        caffe.set_mode_cpu()
    return [{"metric": f"infer.py, {COUNT} JPEGs {WIDTH}x{HEIGHT}, voc-fcn8s x{NET_WIDTH:g} width",
             "value": COUNT / overlapped, "unit": "images/s",
             "baseline": "one at a time, no overlap", "baseline_value": COUNT / sequential}]
