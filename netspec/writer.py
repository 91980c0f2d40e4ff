"""Write a net's prototxts into <out>/<name>/, each file atomically, and
give the model folders one data root.

The release's nets name their data relative to the model folder, most as
`../data/...` and voc-fcn16s and the PASCAL-Context nets as `../../data/...`.
From `<out>/<name>/` the first is `<out>/data`, the second `<out>/../data`.
`link_data_root` makes `<out>/data` a relative link to `../data`, so both
spellings reach `<out>/../data`: with the default `--out models` at the
repository root, that is the repository's `data/`.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from google.protobuf import text_format

from torchcaffe.atomic import write_text

log = logging.getLogger(__name__)

# protobuf prints whole floats as "1.0"; Caffe's tools (and the release) "1"
_WHOLE_FLOAT = re.compile(r"^(\s*\w+: -?\d+)\.0$", re.MULTILINE)

# <out>/data -> ../data, so that ../data/... and ../../data/... meet
DATA_LINK = "data"
DATA_LINK_TARGET = os.path.join(os.pardir, "data")  # relative: survives moving the tree


def to_prototxt(message) -> str:
    """Protobuf text format, with numbers written as Caffe writes them."""
    return _WHOLE_FLOAT.sub(r"\1", text_format.MessageToString(message))


def write_net(net, out_dir: Path, width: float = 1.0) -> list[Path]:
    """Write every prototxt of `net` (a Model or BaseNet) under out_dir/<name>,
    its backbone narrowed by `width` (1: the reference net)."""
    folder = Path(out_dir) / net.name
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, message in net.prototxts(width).items():
        path = folder / file_name
        write_text(path, to_prototxt(message))
        log.info("wrote %s", path)
        written.append(path)
    if hasattr(net, "solver"):  # a trainable model (base nets have none)
        from solvers.solve import stub_text

        path = folder / "solve.py"
        write_text(path, stub_text(net.name))
        written.append(path)
    return written


def link_data_root(out_dir) -> Path:
    """Make `<out>/data` a link to `../data` unless something is there already,
    log the data root(s) the nets will read, and return the one `../data/...`
    reaches."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    link, root = out_dir / DATA_LINK, Path(os.path.normpath(out_dir / DATA_LINK_TARGET))
    try:
        os.symlink(DATA_LINK_TARGET, link, target_is_directory=True)
        log.info("linked %s -> %s: every model reads its data under %s",
                 link, DATA_LINK_TARGET, root)
        return root
    except FileExistsError:  # a folder, our link from an earlier run, or another link
        pass
    if link.is_symlink() and os.readlink(link) == DATA_LINK_TARGET:
        log.info("%s -> %s exists: every model reads its data under %s",
                 link, DATA_LINK_TARGET, root)
        return root
    kind = f"a link to {os.readlink(link)}" if link.is_symlink() else "not a link"
    if os.path.realpath(link) == os.path.realpath(root):
        log.info("%s is %s, left as it is; it is the same data root as %s", link, kind, root)
    else:
        log.warning("%s is %s, left as it is: nets reading ../data use %s, nets reading "
                    "../../data (voc-fcn16s, PASCAL-Context) use %s", link, kind,
                    os.path.realpath(link), os.path.realpath(root))
    return link
