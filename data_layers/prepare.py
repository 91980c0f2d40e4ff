"""Put the datasets where the reference nets look for them, and check them.

The nets' data layers name folders relative to the model folder, so all
datasets live under one data root (the models' `../data`):

    sbdd/dataset/          SBD: img/, cls/, train.txt          (voc-fcn* train)
    pascal/VOC2011/        VOC 2011: JPEGImages/, SegmentationClass/,
                           ImageSets/Segmentation/seg11valid.txt (voc-fcn* val)
    pascal/VOC2010/        VOC 2010 images for PASCAL-Context
    pascal-context/        trainval/<id>.mat, labels.txt, 59_labels.txt
    nyud/                  data/{images,depth,hha}/, segmentation/, *.txt
    sift-flow/             Images/, SemanticLabels/, GeoLabels/, *.txt

Commands (`python -m data_layers.prepare --help`):

- `check`: for each dataset, what is missing where (folders, split files,
  and the files of every listed id)
- `fetch`: download a dataset's public archives (resumable; see
  `weights.download`), unpack them and move the dataset folder into place
- `seg11valid`: write VOC2011's seg11valid split (the 736 VOC2011 val
  images that are not in SBD train, shipped in `data_layers/splits`)
- `sbd-png`: convert SBD's `cls` / `inst` .mat ground truth to VOC palette
  PNGs next to them (for viewing; the data layer reads the .mat files)
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io

from torchcaffe.atomic import write_text
from data_layers.palette import save_label_png
from data_layers.siftflow_layers import SUBFOLDER as SIFT_SUB
from data_layers.voc_layers import sbd_segmentation
from torchcaffe.errors import CaffeError
from torchcaffe.progress import progress

log = logging.getLogger(__name__)

SPLITS_DIR = Path(__file__).resolve().parent / "splits"

VOC2011_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar"
VOC2010_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar"
SBD_URL = "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"
NYUD_URL = "http://dl.caffe.berkeleyvision.org/nyud.tar.gz"
SIFTFLOW_URL = "http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip"
CONTEXT_URL = "https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz"
CONTEXT_59_LABELS_URL = "https://cs.stanford.edu/~roozbeh/pascal-context/59_labels.txt"


@dataclass(frozen=True)
class Archive:
    """A download whose unpacked tree holds a folder (found by `markers`) that goes to `place`."""

    url: str
    place: str  # destination, relative to the data root
    markers: tuple[str, ...] = ()  # entries the folder to move contains; () = a plain file


@dataclass(frozen=True)
class Dataset:
    """Where a dataset lives under the data root and how to check it."""

    name: str
    description: str
    splits: tuple[str, ...]  # split files, relative to the data root
    per_id: tuple[str, ...]  # files each listed id needs, '{}' = the id
    files: tuple[str, ...] = ()  # other required files
    archives: tuple[Archive, ...] = field(default=())


DATASETS = {
    d.name: d
    for d in (
        Dataset("sbdd", "SBD, the training set of the voc-fcn nets",
                ("sbdd/dataset/train.txt",), ("sbdd/dataset/img/{}.jpg", "sbdd/dataset/cls/{}.mat"),
                archives=(Archive(SBD_URL, "sbdd/dataset", ("cls", "img", "train.txt")),)),
        Dataset("voc", "PASCAL VOC 2011, the validation set (seg11valid) of the voc-fcn nets",
                ("pascal/VOC2011/ImageSets/Segmentation/seg11valid.txt",),
                ("pascal/VOC2011/JPEGImages/{}.jpg", "pascal/VOC2011/SegmentationClass/{}.png"),
                archives=(Archive(VOC2011_URL, "pascal/VOC2011", ("JPEGImages", "SegmentationClass")),)),
        Dataset("pascal-context", "PASCAL-Context (59 classes) on VOC 2010 images",
                ("pascal/VOC2010/ImageSets/Main/train.txt", "pascal/VOC2010/ImageSets/Main/val.txt"),
                ("pascal/VOC2010/JPEGImages/{}.jpg", "pascal-context/trainval/{}.mat"),
                ("pascal-context/labels.txt", "pascal-context/59_labels.txt"),
                archives=(Archive(VOC2010_URL, "pascal/VOC2010", ("JPEGImages", "ImageSets")),
                          Archive(CONTEXT_URL, "pascal-context", ("trainval", "labels.txt")),
                          Archive(CONTEXT_59_LABELS_URL, "pascal-context/59_labels.txt"))),
        Dataset("nyud", "NYUDv2 (40 classes) with depth and HHA, in the release's format",
                ("nyud/trainval.txt", "nyud/test.txt"),
                ("nyud/data/images/img_{}.png", "nyud/data/depth/img_{}.png", "nyud/data/hha/img_{}.png",
                 "nyud/segmentation/img_{}.mat"),
                archives=(Archive(NYUD_URL, "nyud", ("data", "segmentation")),)),
        Dataset("siftflow", "SIFT Flow (33 semantic + 3 geometric classes)",
                ("sift-flow/trainval.txt", "sift-flow/test.txt"),
                (f"sift-flow/Images/{SIFT_SUB}/{{}}.jpg", f"sift-flow/SemanticLabels/{SIFT_SUB}/{{}}.mat",
                 f"sift-flow/GeoLabels/{SIFT_SUB}/{{}}.mat"),
                archives=(Archive(SIFTFLOW_URL, "sift-flow", ("Images", "SemanticLabels", "GeoLabels")),)),
    )
}


# -- checking ----------------------------------------------------------------------


def check_layout(dataset: Dataset, data_root: Path, examples: int = 3) -> list[str]:
    """Problems with `dataset` under `data_root`, each naming what is missing where."""
    problems = [f"missing file {data_root / f}" for f in dataset.files if not (data_root / f).is_file()]
    for split in dataset.splits:
        split_path = data_root / split
        if not split_path.is_file():
            problems.append(f"missing split file {split_path}")
            continue
        ids = [line.strip() for line in split_path.read_text().splitlines() if line.strip()]
        for pattern in dataset.per_id:
            missing = [i for i in ids if not (data_root / pattern.format(i)).is_file()]
            if missing:
                shown = ", ".join(str(data_root / pattern.format(i)) for i in missing[:examples])
                problems.append(f"{len(missing)} of {len(ids)} ids in {split_path.name} lack "
                                f"{pattern.format('<id>')}: {shown}{' ...' if len(missing) > examples else ''}")
    return problems


# -- seg11valid and SBD conversion ----------------------------------------------------------


def write_seg11valid(voc_dir: Path) -> Path:
    """Write the shipped seg11valid list into `voc_dir`/ImageSets/Segmentation."""
    target = voc_dir / "ImageSets" / "Segmentation" / "seg11valid.txt"
    write_text(target, (SPLITS_DIR / "seg11valid.txt").read_text())
    return target


def convert_sbd(dataset_dir: Path, kinds: tuple[str, ...] = ("cls", "inst")) -> int:
    """Write `<kind>/<id>.png` (VOC palette) for every SBD `<kind>/<id>.mat`; returns the count."""
    written = 0
    for kind in kinds:
        mats = sorted((dataset_dir / kind).glob("*.mat"))
        if not mats:
            raise CaffeError(f"no .mat files in {dataset_dir / kind}; is {dataset_dir} SBD's dataset folder?")
        for mat in progress(mats, desc=f"SBD {kind} -> png", unit="file"):
            try:
                gt = scipy.io.loadmat(mat)[f"GT{kind}"]
            except (OSError, ValueError, KeyError) as exc:
                raise CaffeError(f"cannot read GT{kind} from {mat}: {exc}") from None
            label = sbd_segmentation(gt, mat, mat.stem, "sbd-png").astype(np.uint8)
            save_label_png(mat.with_suffix(".png"), label)
            written += 1
    return written


# -- fetching -----------------------------------------------------------------------


def unpack(archive: Path, into: Path) -> None:
    """Unpack a tar or zip archive into `into`, refusing members that leave it."""
    into.mkdir(parents=True, exist_ok=True)
    root = into.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if not (root / name).resolve().is_relative_to(root):
                    raise CaffeError(f"{archive}: member {name!r} would unpack outside {into}")
            zf.extractall(into)
    elif tarfile.is_tarfile(archive):
        try:
            with tarfile.open(archive) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(into, filter="data")  # it refuses escaping members
                else:  # Pythons before 3.10.12 / 3.11.4 have no filters: checks by hand
                    _check_tar_members(tf, root)
                    tf.extractall(into)
        except tarfile.TarError as exc:
            raise CaffeError(f"{archive}: {exc}") from None
    else:
        raise CaffeError(f"{archive} is neither a tar nor a zip archive")


def _check_tar_members(tf: tarfile.TarFile, root: Path) -> None:
    """Refuse members that would land outside `root`, and anything but
    files and folders (links, devices): what datasets hold."""
    for member in tf.getmembers():
        if not (member.isfile() or member.isdir()):
            raise tarfile.TarError(f"member {member.name!r} is not a plain file or folder")
        if member.name.startswith("/") or not (root / member.name).resolve().is_relative_to(root):
            raise tarfile.TarError(f"member {member.name!r} would unpack outside {root}")


def find_folder(tree: Path, markers: tuple[str, ...]) -> Path:
    """The shallowest folder under `tree` (itself included) holding all `markers`."""
    for folder in sorted((p for p in [tree, *tree.rglob("*")] if p.is_dir()), key=lambda p: len(p.parts)):
        if all((folder / m).exists() for m in markers):
            return folder
    raise CaffeError(f"no folder under {tree} holds {', '.join(markers)}; the archive's layout is unexpected")


def fetch(dataset: Dataset, data_root: Path) -> list[Path]:
    """Download, unpack and place `dataset` under `data_root`; returns the placed paths."""
    from weights.download import download  # the project's resumable downloader

    downloads = data_root / "downloads"
    placed = []
    for archive in dataset.archives:
        target = data_root / archive.place
        if target.exists():
            log.info("%s is already there; skipping %s", target, archive.url)
            continue
        fetched = download(archive.url, downloads)
        if not archive.markers:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fetched, target)
        else:
            staging = downloads / f"{fetched.name}.unpacked"
            unpack(fetched, staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(find_folder(staging, archive.markers), target)
        log.info("placed %s", target)
        placed.append(target)
    return placed


# -- command line ----------------------------------------------------------------------


def _check(args) -> int:
    names = args.datasets or list(DATASETS)
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise CaffeError(f"unknown dataset(s) {unknown}; choose from {sorted(DATASETS)}")
    bad = 0
    for name in names:
        problems = check_layout(DATASETS[name], Path(args.data))
        print(f"{name}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  - {problem}")
        bad += bool(problems)
    return 1 if bad else 0


def _fetch(args) -> int:
    for name in args.datasets:
        for path in fetch(DATASETS[name], Path(args.data)):
            print(f"{name}: {path}")
    return 0


def _seg11valid(args) -> int:
    print(write_seg11valid(Path(args.data) / "pascal" / "VOC2011"))
    return 0


def _sbd_png(args) -> int:
    print(f"wrote {convert_sbd(Path(args.dataset_dir), tuple(args.kinds))} PNGs")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_layers.prepare",
        description="Lay out and check the FCN datasets under one data root (the models' ../data).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    names = sorted(DATASETS)
    data_help = "data root holding sbdd/, pascal/, nyud/, sift-flow/, pascal-context/ (default: data)"

    check = sub.add_parser("check", help="report what is missing where")
    # argparse rejects an empty list under `choices` with nargs="*": _check validates
    check.add_argument("datasets", nargs="*", metavar="DATASET", help=f"any of {names} (default all)")
    check.add_argument("--data", default="data", help=data_help)
    check.set_defaults(run=_check)

    fetch_cmd = sub.add_parser("fetch", help="download, unpack and place datasets (mind each dataset's terms)")
    fetch_cmd.add_argument("datasets", nargs="+", choices=names, metavar="DATASET", help=f"any of {names}")
    fetch_cmd.add_argument("--data", default="data", help=data_help)
    fetch_cmd.set_defaults(run=_fetch)

    seg = sub.add_parser("seg11valid", help="write pascal/VOC2011/ImageSets/Segmentation/seg11valid.txt")
    seg.add_argument("--data", default="data", help=data_help)
    seg.set_defaults(run=_seg11valid)

    sbd = sub.add_parser("sbd-png", help="convert SBD .mat ground truth to VOC palette PNGs")
    sbd.add_argument("dataset_dir", help="SBD's dataset folder (holding cls/ and inst/)")
    sbd.add_argument("--kinds", nargs="+", default=["cls", "inst"], choices=["cls", "inst"])
    sbd.set_defaults(run=_sbd_png)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.run(args)
    except CaffeError as exc:
        print(f"error: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
