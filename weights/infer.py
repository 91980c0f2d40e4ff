"""Segment an image with a deploy net, the way the FCN release's infer.py does.

The image is read as RGB, flipped to BGR, the per-channel mean subtracted,
laid out C x H x W and set as the whole `data` blob (reshaped to the image's
H x W, so no resizing or padding); the prediction is the argmax over the
score blob's channels.  Outputs: the label map as a PNG in the PASCAL VOC
palette and a blended overlay of the image and that map.

Over many images (files or folders) the CPU stays busy: a background
thread decodes and preprocesses the next images while the net computes, a
second one encodes and writes the PNGs, and consecutive images of the same
size go through the net together (`--batch`), each item's result being the
one it gets alone. The closing line gives images/s.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from torchcaffe.errors import CaffeError
from torchcaffe.atomic import atomic_path

log = logging.getLogger(__name__)

# BGR mean of the ILSVRC training images, as the release's infer.py subtracts it
VOC_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (n x 3 uint8): the bits of a label index are
    dealt round-robin to R, G, B, most significant colour bit first."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for label in range(n):
        code, colour = label, [0, 0, 0]
        for bit in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((code >> channel) & 1) << bit
            code >>= 3
        palette[label] = colour
    return palette


def preprocess(image: np.ndarray, mean_bgr=VOC_MEAN_BGR) -> np.ndarray:
    """H x W x 3 RGB (uint8) -> 3 x H x W float32 BGR minus the mean."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise CaffeError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    bgr = np.asarray(image, dtype=np.float32)[:, :, ::-1]
    return (bgr - np.asarray(mean_bgr, dtype=np.float32)).transpose(2, 0, 1).copy()


def segment_batch(net, data: np.ndarray, *, input_blob: str = "data",
                  score_blob: str = "score") -> np.ndarray:
    """Labels (N x H x W, int64) for preprocessed images (N x 3 x H x W) by
    the argmax of `score_blob`, in one forward."""
    for blob, role in ((input_blob, "input"), (score_blob, "score")):
        if blob not in net.blobs:
            raise CaffeError(f"the net has no blob '{blob}' to use as {role} "
                             f"(blobs: {', '.join(net.blobs)})")
    net.blobs[input_blob].reshape(*data.shape)
    net.blobs[input_blob].data[...] = data
    net.forward()
    score = net.blobs[score_blob].data
    if score.shape[2:] != data.shape[2:]:
        raise CaffeError(f"score blob '{score_blob}' is {score.shape[2]}x{score.shape[3]} but "
                         f"the image is {data.shape[2]}x{data.shape[3]}; is this a deploy net "
                         "with a final crop to the input?")
    return score.argmax(axis=1)


def segment(net, image: np.ndarray, *, mean_bgr=VOC_MEAN_BGR, **blobs) -> np.ndarray:
    """Labels (H x W, int64) for an RGB image by the argmax of the score blob."""
    return segment_batch(net, preprocess(image, mean_bgr)[None], **blobs)[0]


def label_image(labels: np.ndarray) -> Image.Image:
    """A palette ("P") PNG image whose pixel values are the labels."""
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise CaffeError(f"labels must lie in 0..255 for a palette PNG, got "
                         f"{labels.min()}..{labels.max()}")
    out = Image.fromarray(labels.astype(np.uint8))  # mode "L"; putpalette makes it "P"
    out.putpalette(voc_palette().ravel().tolist())
    return out


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image blended with the coloured labels (alpha = weight of the labels)."""
    colours = voc_palette()[labels.astype(np.uint8)]
    mixed = (1 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise CaffeError(f"cannot read image {os.fspath(path)}: {exc}") from None


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


def image_paths(given) -> list[Path]:
    """Files as given; a folder gives its image files (by suffix), sorted."""
    paths = []
    for item in map(Path, given):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            paths.append(item)
    return paths


def _same_size_runs(paths, batch: int, mean_bgr):
    """(paths, RGB images, N x 3 x H x W data) for runs of up to `batch`
    consecutive images of one size, in order."""
    run: list = []
    for path in paths:
        rgb = load_rgb(path)
        if run and (len(run) == batch or run[0][1].shape != rgb.shape):
            yield _stack(run)
            run = []
        run.append((path, rgb, preprocess(rgb, mean_bgr)))
    if run:
        yield _stack(run)


def _stack(run):
    paths, images, data = zip(*run)
    return list(paths), list(images), np.stack(data)


def _write_outputs(out: Path, path, rgb: np.ndarray, labels: np.ndarray) -> tuple[Path, Path]:
    stem = Path(path).stem
    label_path, overlay_path = out / f"{stem}.png", out / f"{stem}_overlay.png"
    save_png(label_image(labels), label_path)
    save_png(overlay(rgb, labels), overlay_path)
    present = ", ".join(str(c) for c in np.unique(labels))
    log.info("%s: labels present %s -> %s", path, present, label_path)
    return label_path, overlay_path


def infer_files(net, images, out_dir, *, batch: int = 4, mean_bgr=VOC_MEAN_BGR,
                **blobs) -> list[tuple[Path, Path]]:
    """Segment each image file; write `<stem>.png` (labels) and
    `<stem>_overlay.png`. Decoding runs ahead in one background thread and
    writing behind in another; runs of same-size images share a forward."""
    from torchcaffe.prefetch import Prefetcher

    if batch < 1:
        raise CaffeError(f"--batch must be at least 1, got {batch}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = _same_size_runs(images, batch, mean_bgr)
    loader = Prefetcher(lambda: next(runs, None), depth=2, name="infer images")
    start, count = time.perf_counter(), 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer writer") as writer:
        pending = []
        try:
            while (item := loader.next()) is not None:
                paths, rgbs, data = item
                labels = segment_batch(net, data, **blobs)
                pending += [writer.submit(_write_outputs, out, path, rgb, label)
                            for path, rgb, label in zip(paths, rgbs, labels)]
                count += len(paths)
        finally:
            loader.close()
        written = [future.result() for future in pending]
    seconds = time.perf_counter() - start
    log.info("segmented %d images in %.1f s: %.2f images/s (same-size batches of up to %d)",
             count, seconds, count / seconds if seconds else float("inf"), batch)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+",
                        help="image files (any format Pillow reads) or folders of them")
    parser.add_argument("--deploy", required=True, help="deploy.prototxt of the model")
    parser.add_argument("--weights", required=True, help="the .caffemodel to run")
    parser.add_argument("--out", default="out", help="output folder (default: %(default)s)")
    parser.add_argument("--mean", type=float, nargs=3, default=VOC_MEAN_BGR,
                        metavar=("B", "G", "R"), help="BGR mean to subtract "
                        "(default: the ILSVRC mean the FCN models use)")
    parser.add_argument("--input-blob", default="data", help="input blob (default: data)")
    parser.add_argument("--score-blob", default="score",
                        help="score blob to take the argmax of (default: score; "
                        "SIFT Flow nets: score_sem or score_geo)")
    parser.add_argument("--gpu", type=int, default=None, metavar="ID",
                        help="run on this GPU (default: CPU)")
    parser.add_argument("--batch", type=int, default=4, metavar="N",
                        help="images of the same size per forward (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for the net (default: every available core)")


def check_deploy(path: str, input_blob: str) -> None:
    """Refuse a prototxt that is not a deploy net: one that reads a dataset
    (a data layer) or computes a loss, or has no input blob `input_blob`."""
    from torchcaffe.prototxt import read_net_prototxt

    net = read_net_prototxt(path)
    readers = [f"{layer.name} ({layer.type})" for layer in net.layer
               if layer.type != "Input" and not layer.bottom]
    losses = [f"{layer.name} ({layer.type})" for layer in net.layer if layer.type.endswith("Loss")]
    if readers or losses:
        found = "; ".join(filter(None, [
            readers and f"data layers {', '.join(readers)}",
            losses and f"loss layers {', '.join(losses)}"]))
        raise CaffeError(f"--deploy {path}: not a deploy net ({found}); use the model's "
                         "deploy.prototxt (an Input layer instead of the data layer, no loss)")
    inputs = list(net.input) + [top for layer in net.layer if layer.type == "Input"
                                for top in layer.top]
    if input_blob not in inputs:
        raise CaffeError(f"--deploy {path}: no input blob '{input_blob}' (inputs: "
                         f"{', '.join(inputs) or 'none'}); pick one with --input-blob")


def check_files(args: argparse.Namespace) -> list[Path]:
    """The image files to segment, once every input is known to exist."""
    for flag, path in [("--deploy", args.deploy), ("--weights", args.weights)] + [
            ("image", image) for image in args.images if not Path(image).is_dir()]:
        if not Path(path).is_file():
            raise CaffeError(f"{flag} {path}: no such file")
    check_deploy(args.deploy, args.input_blob)
    images = image_paths(args.images)
    if not images:
        raise CaffeError(f"no image files in {', '.join(args.images)}")
    return images


def run(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    from caffe_backend import caffe, net_with_weights

    images = check_files(args)  # before anything is loaded or written
    from torchcaffe.threads import use_threads

    use_threads(args.threads)

    if args.gpu is not None:
        caffe.set_device(args.gpu)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    net = net_with_weights(args.deploy, args.weights, caffe.TEST)
    written = infer_files(net, images, args.out, batch=args.batch, mean_bgr=tuple(args.mean),
                          input_blob=args.input_blob, score_blob=args.score_blob)
    for label_path, overlay_path in written:
        print(f"{label_path}\n{overlay_path}")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="infer.py", description="Segment images with an FCN deploy net: writes the "
        "label map (VOC palette PNG) and an overlay per image.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run(args)
    except CaffeError as exc:
        parser.exit(1, f"error: {exc}\n")
    return 0
