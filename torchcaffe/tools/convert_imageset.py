"""Convert a list of images to an LMDB / LevelDB of Datums, as Caffe's
tools/convert_imageset does.

    python -m torchcaffe.tools.convert_imageset [options] ROOT/ LISTFILE DB

LISTFILE has one 'relative/path label' per line (the label after the last
space). Record keys are '%08d_<path>' in list order (after --shuffle), so
the DB's key order is the list order. Images are read as OpenCV reads them
(BGR, or gray with --gray), optionally resized (INTER_LINEAR), and stored
raw, or with --encoded / --encode_type as image files (the original bytes
when no re-encoding is needed). Unreadable images are skipped with a
warning, as Caffe does.
"""
from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
from tqdm import tqdm

from .. import image_io
from ..datum import encoded_datum, image_datum
from ..db import Writer
from ..errors import CaffeError

log = logging.getLogger(__name__)


def _extension(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return "jpg" if ext == "jpeg" else ext


def image_record(path: str, label: int, size: tuple[int, int], color: bool, encoding: str):
    """Caffe's ReadImageToDatum: the Datum for one image file."""
    image = image_io.read(path, color)
    resize = size[0] > 0 and size[1] > 0
    if resize:
        image = image_io.resize_linear(image, *size)
    if not encoding:
        return image_datum(image, label)
    if (image.shape[2] == 3) == color and not resize and _extension(path) == _extension("." + encoding):
        with open(path, "rb") as f:
            return encoded_datum(f.read(), label)
    return encoded_datum(image_io.encode(image, encoding), label)


def convert(root: str, list_file: str, db_path: str, backend: str = "lmdb", size=(0, 0),
            gray: bool = False, shuffle: bool = False, seed: int | None = None,
            encoded: bool = False, encode_type: str = "", check_size: bool = False) -> int:
    """Write the DB; returns the number of records written."""
    entries = image_io.read_image_list(list_file)
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(entries))
        entries = [entries[i] for i in order]
    log.info("A total of %d images.", len(entries))
    size = (max(0, size[0]), max(0, size[1]))
    count = 0
    data_size = None
    with Writer(db_path, backend) as db:
        for index, (name, label) in enumerate(tqdm(entries, desc="convert_imageset", unit="img")):
            encoding = encode_type or (_extension(name) if encoded else "")
            try:
                datum = image_record(root + name, label, size, not gray, encoding)
            except CaffeError as exc:
                log.warning("skipping %s: %s", name, exc)
                continue
            if check_size and not datum.encoded:
                if data_size is None:
                    data_size = len(datum.data)
                elif len(datum.data) != data_size:
                    raise CaffeError(f"{root + name}: {len(datum.data)} bytes of pixels, the "
                                     f"first image had {data_size} (--check_size)")
            db.put(f"{index:08d}_{name}".encode(), datum.SerializeToString())
            count += 1
    log.info("Processed %d files.", count)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchcaffe.tools.convert_imageset",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder the list's paths are relative to (with its trailing /)")
    parser.add_argument("list_file")
    parser.add_argument("db")
    parser.add_argument("--backend", default="lmdb", choices=["lmdb", "leveldb"])
    parser.add_argument("--resize_height", type=int, default=0)
    parser.add_argument("--resize_width", type=int, default=0)
    parser.add_argument("--gray", action="store_true", help="read images as grayscale")
    parser.add_argument("--shuffle", action="store_true", help="shuffle the list first")
    parser.add_argument("--seed", type=int, help="seed for --shuffle (default: random)")
    parser.add_argument("--check_size", action="store_true",
                        help="check that all images have the same size")
    parser.add_argument("--encoded", action="store_true", help="store the encoded image files")
    parser.add_argument("--encode_type", default="", choices=["", "jpg", "png"],
                        help="re-encode as this type (implies --encoded)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        convert(args.root, args.list_file, args.db, args.backend,
                (args.resize_height, args.resize_width), args.gray, args.shuffle, args.seed,
                args.encoded, args.encode_type, args.check_size)
    except CaffeError as exc:
        log.error("convert_imageset: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
