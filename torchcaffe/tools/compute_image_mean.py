"""Compute the mean image of an LMDB / LevelDB of Datums and write it as a
binaryproto, as Caffe's tools/compute_image_mean does.

    python -m torchcaffe.tools.compute_image_mean [--backend lmdb] DB [MEAN.binaryproto]

Encoded Datums are decoded with their own channels. The sum is kept in
float32, added image by image, then divided by the count, as Caffe does;
the per-channel means are logged.
"""
from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
from tqdm import tqdm

from ..datum import datum_pixels, parse_datum, write_mean_file
from ..db import Reader
from ..errors import CaffeError

log = logging.getLogger(__name__)


def compute_mean(db_path: str, backend: str = "lmdb") -> np.ndarray:
    """The C x H x W float32 mean of every record of the DB."""
    reader = Reader(db_path, backend)
    total = None
    count = 0
    for key, value in tqdm(reader.walk(), total=len(reader), desc="compute_image_mean", unit="img"):
        where = f"{reader.backend} {reader.path}, record key {key!r}"
        pixels = datum_pixels(parse_datum(value, where), where, None).astype(np.float32)
        if total is None:
            total = np.zeros(pixels.shape, np.float32)
        elif pixels.shape != total.shape:
            raise CaffeError(f"{where}: image of shape {list(pixels.shape)}, the first record's "
                             f"is {list(total.shape)} (all images need the same size)")
        total += pixels
        count += 1
    mean = total / np.float32(count)
    for c, value in enumerate(mean.reshape(mean.shape[0], -1).mean(axis=1, dtype=np.float64)):
        log.info("mean_value channel [%d]: %g", c, value)
    return mean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchcaffe.tools.compute_image_mean",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db")
    parser.add_argument("output", nargs="?", help="binaryproto to write (default: only log the means)")
    parser.add_argument("--backend", default="lmdb", choices=["lmdb", "leveldb"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        mean = compute_mean(args.db, args.backend)
        if args.output:
            write_mean_file(args.output, mean)
            log.info("Write to %s", args.output)
    except CaffeError as exc:
        log.error("compute_image_mean: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
