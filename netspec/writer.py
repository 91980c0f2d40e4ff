"""Write a net's prototxts into <out>/<name>/, each file atomically."""
from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from google.protobuf import text_format

log = logging.getLogger(__name__)

# protobuf prints whole floats as "1.0"; Caffe's tools (and the release) "1"
_WHOLE_FLOAT = re.compile(r"^(\s*\w+: -?\d+)\.0$", re.MULTILINE)


def to_prototxt(message) -> str:
    """Protobuf text format, with numbers written as Caffe writes them."""
    return _WHOLE_FLOAT.sub(r"\1", text_format.MessageToString(message))


def write_text_atomically(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename over `path`,
    so that a reader never sees a half-written prototxt."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_net(net, out_dir: Path) -> list[Path]:
    """Write every prototxt of `net` (a Model or BaseNet) under out_dir/<name>."""
    folder = Path(out_dir) / net.name
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, message in net.prototxts().items():
        path = folder / file_name
        write_text_atomically(path, to_prototxt(message))
        log.info("wrote %s", path)
        written.append(path)
    return written
