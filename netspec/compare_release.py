"""`python -m netspec.compare_release RELEASE_DIR`: our prototxts against the
reference FCN release's (a checkout of fcn.berkeleyvision.org).

Every prototxt the release ships in the model folders is parsed, with ours,
as a Caffe message (NetParameter, or SolverParameter for solver files) and
the two are compared field by field, presence included. A Python layer's
`param_str` is compared as the Python literal it holds (parsed, never
evaluated), so key order and spacing do not count. The table also says which
files are byte-for-byte equal and, for a difference, the first field that
differs. Exit status 1 when a release file differs from ours or has no
counterpart among ours; files we emit that the release lacks (the deploy
nets it does not ship) are listed but do not fail the check.
"""
from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from torchcaffe.proto import caffe_pb2

from .models import MODELS
from .writer import write_net


MODEL_NAMES = tuple(model.name for model in MODELS)
PARAM_STR = ("caffe.PythonParameter", "param_str")
SHORT_MESSAGE = 60  # characters of a sub-message shown in a difference
_ABSENT = object()  # a param_str key one side lacks


@dataclass(frozen=True)
class Row:
    file: str                 # <model>/<name>.prototxt
    equal: bool | None        # as messages; None: one side has no such file
    byte_equal: bool | None
    difference: str           # the first difference, or why the file has no pair


# ---------------------------------------------------------------- comparing messages


def message_type(file_name: str):
    return caffe_pb2.SolverParameter if file_name.startswith("solver") else caffe_pb2.NetParameter


def first_difference(ours, release, path: str = "") -> str | None:
    """The first field (in declaration order) where two messages of one type
    differ, as 'path: ours X, release Y'; None when they are equal."""
    for field in ours.DESCRIPTOR.fields:
        where = f"{path}.{field.name}" if path else field.name
        if field.is_repeated:
            found = _repeated_difference(field, getattr(ours, field.name),
                                         getattr(release, field.name), where)
        else:
            found = _single_difference(field, ours, release, where)
        if found:
            return found
    return None


def _single_difference(field, ours, release, where: str) -> str | None:
    has_ours, has_release = ours.HasField(field.name), release.HasField(field.name)
    ours_value, release_value = getattr(ours, field.name), getattr(release, field.name)
    if has_ours != has_release:
        return _differs(where, _show(field, ours_value, has_ours),
                        _show(field, release_value, has_release))
    if not has_ours:
        return None
    if field.message_type is not None:
        return first_difference(ours_value, release_value, where)
    if (field.containing_type.full_name, field.name) == PARAM_STR:
        return _param_str_difference(ours_value, release_value, where)
    if ours_value != release_value:
        return _differs(where, _show(field, ours_value), _show(field, release_value))
    return None


def _repeated_difference(field, ours, release, where: str) -> str | None:
    for index, (ours_item, release_item) in enumerate(zip(ours, release)):
        item_where = f"{where}[{index}]"
        if field.message_type is not None:
            if getattr(ours_item, "name", ""):  # name the layer / blob it is
                item_where = f'{where}[{index} "{ours_item.name}"]'
            found = first_difference(ours_item, release_item, item_where)
        elif ours_item != release_item:
            found = _differs(item_where, _show(field, ours_item), _show(field, release_item))
        else:
            found = None
        if found:
            return found
    if len(ours) != len(release):
        return _differs(where, f"{len(ours)} entries", f"{len(release)} entries")
    return None


def _param_str_difference(ours: str, release: str, where: str) -> str | None:
    ours_ok, ours_value = _literal(ours)
    release_ok, release_value = _literal(release)
    if not (ours_ok and release_ok):  # not both literals: the text must match
        return None if ours == release else _differs(
            f"{where} (not a Python literal)", repr(ours), repr(release))
    if ours_value == release_value:
        return None
    if isinstance(ours_value, dict) and isinstance(release_value, dict):
        for key in sorted(ours_value.keys() | release_value.keys(), key=repr):
            if ours_value.get(key, _ABSENT) != release_value.get(key, _ABSENT):
                return _differs(f"{where}[{key!r}]", _show_key(ours_value, key),
                                _show_key(release_value, key))
    return _differs(where, repr(ours_value), repr(release_value))



def _literal(text: str):
    """(True, value) for a Python literal, else (False, text); never evaluates."""
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, text


def _show_key(mapping: dict, key) -> str:
    return repr(mapping[key]) if key in mapping else "<absent>"


def _show(field, value, present: bool = True) -> str:
    if not present:
        return "<unset>"
    if field.message_type is not None:
        text = text_format.MessageToString(value, as_one_line=True)
        return "{" + (text if len(text) <= SHORT_MESSAGE else text[:SHORT_MESSAGE] + "...") + "}"
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _differs(where: str, ours: str, release: str) -> str:
    return f"{where}: ours {ours}, release {release}"


# ---------------------------------------------------------------- comparing files


def parse_file(path: Path):
    """The prototxt at `path` as its message, or the parse error as text."""
    try:
        return text_format.Parse(path.read_text(), message_type(path.name)())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        return f"does not parse ({exc})"


def compare_file(ours_path: Path, release_path: Path, label: str) -> Row:
    byte_equal = ours_path.read_bytes() == release_path.read_bytes()
    ours, release = parse_file(ours_path), parse_file(release_path)
    for side, parsed in (("our file", ours), ("release file", release)):
        if isinstance(parsed, str):
            return Row(label, False, byte_equal, f"{side} {parsed}")
    difference = first_difference(ours, release)
    return Row(label, difference is None, byte_equal, difference or "")


def release_models(release_dir: Path) -> list[str]:
    """The model folders of ours that the release has prototxts in."""
    return [name for name in MODEL_NAMES if any((release_dir / name).glob("*.prototxt"))]


def compare_trees(ours_dir: Path, release_dir: Path, models) -> list[Row]:
    """One row per prototxt in the models' folders of either tree."""
    rows = []
    for model in models:
        ours = {path.name for path in (ours_dir / model).glob("*.prototxt")}
        release = {path.name for path in (release_dir / model).glob("*.prototxt")}
        for file_name in sorted(ours | release):
            label = f"{model}/{file_name}"
            if file_name not in ours:
                rows.append(Row(label, None, None, "release only: we emit no such file"))
            elif file_name not in release:
                rows.append(Row(label, None, None, "ours only: the release ships no such file"))
            else:
                rows.append(compare_file(ours_dir / label, release_dir / label, label))
    return rows


def failed(rows: list[Row]) -> bool:
    """A release file that differs from ours, or that we do not emit."""
    return any(row.equal is False or row.difference.startswith("release only")
               for row in rows)


# ---------------------------------------------------------------- report


HEADER = ("file", "equal as messages", "byte-equal", "first difference (ours vs release)")


def format_table(rows: list[Row]) -> str:
    cells = [HEADER] + [(row.file, _yes_no(row.equal), _yes_no(row.byte_equal),
                         row.difference.replace("|", "\\|")) for row in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(len(HEADER))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |"
             for line in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def _yes_no(flag: bool | None) -> str:
    return "-" if flag is None else "yes" if flag else "no"


def summary(rows: list[Row], absent_models: list[str]) -> str:
    shipped = [row for row in rows if not row.difference.startswith("ours only")]
    lines = [
        f"{sum(bool(row.equal) for row in shipped)} of {len(shipped)} release files equal "
        f"as protobuf messages, {sum(bool(row.byte_equal) for row in shipped)} byte for byte",
        f"release files we do not emit: {_names(shipped, 'release only')}",
        f"files we emit that the release lacks: {_names(rows, 'ours only')}",
    ]
    if absent_models:
        lines.append(f"model folders absent from the release: {', '.join(absent_models)}")
    return "\n".join(lines)


def _names(rows: list[Row], kind: str) -> str:
    names = [row.file for row in rows if row.difference.startswith(kind)]
    return f"{len(names)}" + (f" ({', '.join(names)})" if names else "")


def release_commit(release_dir: Path) -> str:
    try:
        done = subprocess.run(["git", "-C", str(release_dir), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return done.stdout.strip()


# ---------------------------------------------------------------- command line


def emit_ours(out_dir: Path, models) -> None:
    """Write our files for `models` under out_dir, as `python -m netspec` does."""
    nets = {model.name: model for model in MODELS}
    for name in models:
        write_net(nets[name], out_dir)


def run(release_dir: Path, out_dir: Path) -> tuple[list[Row], str]:
    models = release_models(release_dir)
    emit_ours(out_dir, models)
    rows = compare_trees(out_dir, release_dir, models)
    absent = [name for name in MODEL_NAMES if name not in models]
    report = (f"release: {release_dir} at commit {release_commit(release_dir)}\n\n"
              f"{format_table(rows)}\n\n{summary(rows, absent)}")
    return rows, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m netspec.compare_release",
        description="Compare our prototxts with the reference FCN release's, file by file, "
                    "as protobuf messages (param_str as Python literals) and byte for byte.")
    parser.add_argument("release_dir", metavar="RELEASE_DIR", type=Path,
                        help="a checkout of the FCN release (fcn.berkeleyvision.org)")
    parser.add_argument("--out", type=Path,
                        help="write our files here and keep them (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not args.release_dir.is_dir():
        parser.error(f"RELEASE_DIR {args.release_dir} is not a folder")
    if not release_models(args.release_dir):
        parser.error(f"RELEASE_DIR {args.release_dir} is not a checkout of the FCN release: "
                     f"none of the model folders ({', '.join(MODEL_NAMES)}) holds a prototxt")

    if args.out is not None:
        rows, report = run(args.release_dir, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="fcn-nets-") as scratch:
            rows, report = run(args.release_dir, Path(scratch))
    print(report)
    return 1 if failed(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
