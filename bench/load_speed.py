"""caffemodel load/save speed on a VGG16-sized model (138M floats, ~528 MB).

Baselines, measured in the same run on the same (warm, page-cached) file:
- reading the file's bytes and nothing else (the floor any loader pays), both
  into one preallocated numpy buffer and as Python's `open().read()`;
- decoding with the protobuf message classes and turning each blob into numpy
  through a list of Python floats (the obvious pycaffe-free implementation);
- writing the same number of bytes to a file (for the writer).
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from bench.timing import best_seconds
from torchcaffe.caffemodel import read_caffemodel, write_caffemodel
from torchcaffe.progress import progress
from torchcaffe.proto import caffe_pb2

log = logging.getLogger(__name__)

REPEATS = 3

# VGG16 learnable layers: name -> weight shape (every one also has a bias)
VGG16_PARAMS = {
    "conv1_1": (64, 3, 3, 3), "conv1_2": (64, 64, 3, 3),
    "conv2_1": (128, 64, 3, 3), "conv2_2": (128, 128, 3, 3),
    "conv3_1": (256, 128, 3, 3), "conv3_2": (256, 256, 3, 3), "conv3_3": (256, 256, 3, 3),
    "conv4_1": (512, 256, 3, 3), "conv4_2": (512, 512, 3, 3), "conv4_3": (512, 512, 3, 3),
    "conv5_1": (512, 512, 3, 3), "conv5_2": (512, 512, 3, 3), "conv5_3": (512, 512, 3, 3),
    "fc6": (4096, 25088), "fc7": (4096, 4096), "fc8": (1000, 4096),
}


def vgg16_net() -> caffe_pb2.NetParameter:
    """VGG16's layer list (learnable layers with a ReLU after each, pools between stages)."""
    net = caffe_pb2.NetParameter(name="VGG_ILSVRC_16_layers")
    bottom = "data"
    for name, shape in VGG16_PARAMS.items():
        conv = name.startswith("conv")
        layer = net.layer.add(name=name, type="Convolution" if conv else "InnerProduct",
                              bottom=[bottom], top=[name])
        if conv:
            layer.convolution_param.num_output = shape[0]
            layer.convolution_param.pad.append(1)
            layer.convolution_param.kernel_size.append(3)
        else:
            layer.inner_product_param.num_output = shape[0]
        bottom = name
        if name != "fc8":
            net.layer.add(name=f"relu{name[len('conv'):] if conv else name[2:]}", type="ReLU",
                          bottom=[name], top=[name])
        if name in ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"):
            pool = f"pool{name[4]}"
            layer = net.layer.add(name=pool, type="Pooling", bottom=[name], top=[pool])
            layer.pooling_param.kernel_size = 2
            layer.pooling_param.stride = 2
            bottom = pool
    return net


def vgg16_blobs(seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {name: [rng.random(shape, dtype=np.float32) - 0.5,
                   rng.random(shape[0], dtype=np.float32) - 0.5]
            for name, shape in VGG16_PARAMS.items()}


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _read_into_array(path: Path) -> np.ndarray:
    """The I/O floor: one read of the whole file into a numpy buffer."""
    with open(path, "rb", buffering=0) as f:
        out = np.empty(os.fstat(f.fileno()).st_size, np.uint8)
        view, done = memoryview(out), 0
        while done < len(out):
            done += f.readinto(view[done:])
    return out


def _naive_decode(path: Path) -> list:
    net = caffe_pb2.NetParameter()
    net.ParseFromString(_read_bytes(path))
    arrays = []
    for layer in progress(net.layer, desc="naive protobuf decode", leave=False):
        for blob in layer.blobs:
            arrays.append(np.array(list(blob.data), np.float32).reshape(tuple(blob.shape.dim)))
    return arrays


def _write_raw(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _load_to_device(path: Path, device: str) -> None:
    import torch

    tensors = [torch.from_numpy(b).to(device) for layer in read_caffemodel(path)
               for b in layer.blobs]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    del tensors


def run(device: str) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="load_speed_") as tmp:
        path = Path(tmp) / "vgg16.caffemodel"
        net, blobs = vgg16_net(), vgg16_blobs()
        floats = sum(a.size for arrays in blobs.values() for a in arrays)
        t_write = best_seconds(lambda: write_caffemodel(path, net, blobs), 2)
        del blobs
        size_mb = path.stat().st_size / 2**20
        label = f"VGG16 caffemodel ({floats / 1e6:.0f}M floats, {size_mb:.0f} MiB)"
        log.info("load_speed: wrote %s in %.2f s", label, t_write)

        data = _read_bytes(path)  # warm the page cache; every timing below is warm
        t_raw_write = best_seconds(lambda: _write_raw(Path(tmp) / "raw.bin", data), 2)
        del data
        t_raw = best_seconds(lambda: _read_bytes(path), REPEATS)
        t_floor = best_seconds(lambda: _read_into_array(path), REPEATS)
        t_read = best_seconds(lambda: read_caffemodel(path), REPEATS)
        rows = [
            {"metric": f"read_caffemodel, {label}", "value": t_read, "unit": "s",
             "baseline": "read the file's bytes into one numpy buffer",
             "baseline_value": t_floor},
            {"metric": f"read_caffemodel, {label}", "value": t_read, "unit": "s",
             "baseline": "read the file's bytes (open().read())", "baseline_value": t_raw},
        ]
        if device != "cpu":
            t_dev = best_seconds(lambda: _load_to_device(path, device), REPEATS)
            rows.append({"metric": f"read_caffemodel + copy params to {device}, {label}",
                         "value": t_dev, "unit": "s",
                         "baseline": "read the file's bytes into one numpy buffer",
                         "baseline_value": t_floor})
            return rows
        log.info("load_speed: naive protobuf decode (slow, timed once)")
        t_naive = best_seconds(lambda: _naive_decode(path), 1)
        rows += [
            {"metric": f"read_caffemodel, {label}", "value": t_read, "unit": "s",
             "baseline": "protobuf ParseFromString + np.array(list(blob.data))",
             "baseline_value": t_naive},
            {"metric": f"write_caffemodel (atomic, fsync), {label}", "value": t_write,
             "unit": "s", "baseline": "write + fsync the same bytes",
             "baseline_value": t_raw_write},
        ]
        return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for row in run("cpu"):
        print(row)
