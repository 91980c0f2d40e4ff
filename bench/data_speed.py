"""Data-layer throughput on 500x375 JPEGs (PASCAL VOC's typical size).

64 generated JPEGs are read, decoded and mean-subtracted by
- ImageData (list file, batch 16),
- Data over an LMDB of the same JPEGs stored encoded (batch 16),
each in a torchcaffe net, forward after forward (prefetch on, as in
training). The baseline is the project's Python VOC layer
(`data_layers.voc_layers.VOCSegDataLayer`, image and label PNG, one pair
per forward) on the same images, measured in the same run.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

N_IMAGES = 64
HEIGHT, WIDTH = 375, 500
BATCH = 16
MEAN = (104.00699, 116.66877, 122.67892)
PASSES = 2  # epochs timed per reader (after one warm-up batch)


def _write_dataset(root: Path) -> list[str]:
    """VOC layout: JPEGImages/<id>.jpg, SegmentationClass/<id>.png, split file."""
    rng = np.random.default_rng(0)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = [f"2008_{i:06d}" for i in range(N_IMAGES)]
    for image_id in ids:
        coarse = rng.integers(0, 256, (HEIGHT // 16, WIDTH // 16, 3)).astype(np.uint8)
        Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.BILINEAR).save(
            root / "JPEGImages" / f"{image_id}.jpg", quality=90)
        label = rng.integers(0, 21, (HEIGHT // 25, WIDTH // 25)).astype(np.uint8)
        Image.fromarray(label).resize((WIDTH, HEIGHT), Image.NEAREST).save(
            root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation" / "bench.txt").write_text("\n".join(ids) + "\n")
    (root / "list.txt").write_text("".join(f"{i}.jpg 0\n" for i in ids))
    return ids


def _images_per_second(net, images_per_forward: int) -> float:
    net.forward()  # warm-up: first batch, prefetch thread running
    forwards = PASSES * N_IMAGES // images_per_forward
    start = time.perf_counter()
    for _ in range(forwards):
        net.forward()
    return forwards * images_per_forward / (time.perf_counter() - start)


def run(device: str) -> list[dict]:
    import torchcaffe
    from torchcaffe import layers as L
    from torchcaffe.proto import caffe_pb2
    from torchcaffe.tools.convert_imageset import convert

    if device == "cuda":
        torchcaffe.set_mode_gpu()
    else:
        torchcaffe.set_mode_cpu()
    with tempfile.TemporaryDirectory(prefix="data_speed_") as tmp:
        root = Path(tmp)
        _write_dataset(root)
        convert(f"{root / 'JPEGImages'}/", str(root / "list.txt"), str(root / "lmdb"), encoded=True)
        transform = dict(mean_value=list(MEAN))

        def net_of(top_pair):
            n = torchcaffe.NetSpec()
            n.data, n.label = top_pair
            return torchcaffe.Net(n.to_proto(), torchcaffe.TRAIN)

        image_data = net_of(L.ImageData(
            image_data_param=dict(source=str(root / "list.txt"), root_folder=f"{root / 'JPEGImages'}/",
                                  batch_size=BATCH), transform_param=transform, ntop=2))
        lmdb_data = net_of(L.Data(
            data_param=dict(source=str(root / "lmdb"), batch_size=BATCH,
                            backend=caffe_pb2.DataParameter.LMDB), transform_param=transform, ntop=2))
        voc = net_of(L.Python(python_param=dict(
            module="voc_layers", layer="VOCSegDataLayer",
            param_str=repr({"voc_dir": str(root), "split": "bench", "mean": MEAN, "randomize": False})),
            ntop=2))
        rates = {}
        for name, net, per_forward in (("ImageData", image_data, BATCH), ("Data (LMDB, encoded)", lmdb_data, BATCH),
                                       ("VOC Python layer", voc, 1)):
            rates[name] = _images_per_second(net, per_forward)
            log.info("data_speed: %s %.1f images/s", name, rates[name])
        torchcaffe.set_mode_cpu()
    label = f"{WIDTH}x{HEIGHT} JPEG, decode + mean"
    baseline = "Python VOCSegDataLayer (image + label PNG) on the same JPEGs"
    return [{"metric": f"{name}, {label}", "value": rates[name], "unit": "images/s",
             "baseline": baseline, "baseline_value": rates["VOC Python layer"]}
            for name in ("ImageData", "Data (LMDB, encoded)")]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for row in run("cpu"):
        print(row)
