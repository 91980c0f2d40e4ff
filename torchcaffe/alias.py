"""The opt-in `import caffe` route: unchanged pycaffe scripts run on torchcaffe.

    python -m torchcaffe.alias install     # `import caffe` gives torchcaffe in this environment
    python -m torchcaffe.alias status      # which Caffe `import caffe` gives, and from where
    python -m torchcaffe.alias uninstall   # remove the route

`install` writes a two-line `caffe` package (the shim) into the active
environment's site-packages. Importing it makes `caffe` and every
`caffe.<sub>` the very torchcaffe module objects (`caffe.io is
torchcaffe.io`, `sys.modules['caffe.proto.caffe_pb2'] is
torchcaffe.proto.caffe_pb2`), so `caffe.layers`, `caffe.params`,
`caffe.coord_map`, `caffe.net_spec`, `caffe.draw` ... all resolve to ours.
`install` refuses when a real pycaffe is importable (`--force` installs
anyway), and the shim warns at import whenever a real pycaffe elsewhere on
sys.path is being hidden. `activate()` does the same for one process
without installing anything.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "torchcaffe-alias-shim"
SHIM_TEXT = f'''"""`import caffe` gives torchcaffe ({MARKER}; remove: python -m torchcaffe.alias uninstall)."""
from torchcaffe.alias import activate_from_shim
activate_from_shim(__file__)
'''


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `caffe.<sub>` as the already imported `torchcaffe.<sub>`."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("caffe."):
            return None
        real = "torchcaffe" + fullname[len("caffe"):]
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        # the module object itself: `caffe.io is torchcaffe.io`
        return importlib.import_module("torchcaffe" + spec.name[len("caffe"):])

    def exec_module(self, module):
        """Already executed as torchcaffe's."""


# what pycaffe's `import caffe` loads itself (torch-free here, so still light)
_EAGER = ("proto.caffe_pb2", "io", "net_spec", "coord_map", "draw")


def activate():
    """Make `import caffe` (and `caffe.<sub>`) give torchcaffe in this process."""
    import torchcaffe

    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
    for sub in _EAGER:
        importlib.import_module(f"torchcaffe.{sub}")
    # `from caffe.proto import caffe_pb2` reads attributes, not sys.modules, so
    # name every loaded submodule as pycaffe's import would have
    for name, module in list(sys.modules.items()):
        if name.startswith("torchcaffe."):
            sys.modules.setdefault("caffe" + name[len("torchcaffe"):], module)
    sys.modules["caffe"] = torchcaffe
    return torchcaffe


def _is_shim(origin: str | None) -> bool:
    if not origin or not origin.endswith("__init__.py"):
        return False
    try:
        return MARKER in Path(origin).read_text(encoding="utf-8", errors="replace")[:500]
    except OSError:
        return False


def _other_caffe(excluded_dir: str) -> str | None:
    """Where a `caffe` package other than the shim lies on sys.path, if any."""
    excluded = os.path.realpath(excluded_dir)
    paths = [p for p in sys.path if os.path.realpath(p or ".") != excluded]
    spec = importlib.machinery.PathFinder.find_spec("caffe", paths)
    if spec is None or _is_shim(spec.origin):
        return None
    return spec.origin or str(list(spec.submodule_search_locations or []))


def activate_from_shim(shim_file: str) -> None:
    """What the installed shim runs: warn when it hides a real pycaffe, then activate."""
    site_dir = os.path.dirname(os.path.dirname(os.path.abspath(shim_file)))
    hidden = _other_caffe(site_dir)
    if hidden:
        message = (f"import caffe gives torchcaffe (the alias installed at {shim_file}); "
                   f"the pycaffe at {hidden} is hidden by it. Run `python -m "
                   "torchcaffe.alias uninstall` to use that one.")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        log.warning(message)
    activate()


def describe() -> tuple[str, str]:
    """(kind, sentence): which Caffe `import caffe` gives, found without importing it."""
    loaded = sys.modules.get("caffe")
    if loaded is not None:
        import torchcaffe

        if loaded is torchcaffe:
            return "torchcaffe", (f"import caffe gives torchcaffe ({Path(torchcaffe.__file__).parent}),"
                                  " activated in this process")
        return "pycaffe", f"import caffe gives a real pycaffe at {getattr(loaded, '__file__', '?')}"
    spec = importlib.util.find_spec("caffe")
    if spec is None:
        return "none", ("import caffe fails: no caffe is installed. `python -m torchcaffe.alias "
                        "install` makes it give torchcaffe.")
    if _is_shim(spec.origin):
        torchcaffe_spec = importlib.util.find_spec("torchcaffe")
        where = Path(torchcaffe_spec.origin).parent if torchcaffe_spec else "?"
        sentence = (f"import caffe gives torchcaffe ({where}) through the alias at "
                    f"{Path(spec.origin).parent}")
        hidden = _other_caffe(str(Path(spec.origin).parent.parent))
        if hidden:
            sentence += f"; it hides the pycaffe at {hidden}"
        return "torchcaffe", sentence
    return "pycaffe", f"import caffe gives a real pycaffe at {spec.origin}"


def default_target() -> Path:
    """The active environment's site-packages."""
    return Path(sysconfig.get_paths()["purelib"])


def install(target: Path, force: bool = False) -> str:
    shim = target / "caffe" / "__init__.py"
    if shim.exists() and _is_shim(str(shim)):
        return f"the alias is already installed at {shim.parent}"
    if (target / "caffe").exists():
        raise SystemExit(f"error: {target / 'caffe'} exists and is not the torchcaffe alias "
                         "(a real pycaffe?); not touching it")
    kind, sentence = describe()
    if kind == "pycaffe" and not force:
        raise SystemExit(f"error: {sentence}. Installing the alias would compete with it; "
                         "rerun with --force to install anyway (the shim then warns at "
                         "every import that it hides that pycaffe, if it comes first).")
    shim.parent.mkdir(parents=True)
    shim.write_text(SHIM_TEXT, encoding="utf-8")
    note = f" WARNING: {sentence}." if kind == "pycaffe" else ""
    return f"installed the alias at {shim.parent}: import caffe gives torchcaffe.{note}"


def uninstall(target: Path) -> str:
    shim = target / "caffe" / "__init__.py"
    if not shim.exists():
        return f"no alias at {shim.parent}"
    if not _is_shim(str(shim)):
        raise SystemExit(f"error: {shim.parent} is not the torchcaffe alias; not removing it")
    extra = {p.name for p in shim.parent.iterdir()} - {"__init__.py", "__pycache__"}
    if extra:
        raise SystemExit(f"error: {shim.parent} holds more than the alias ({sorted(extra)}); "
                         "not removing it")
    shutil.rmtree(shim.parent)
    return f"removed the alias at {shim.parent}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchcaffe.alias",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["install", "uninstall", "status"])
    parser.add_argument("--target", type=Path, default=None,
                        help="site-packages folder to write to (default: the active "
                             "environment's)")
    parser.add_argument("--force", action="store_true",
                        help="install even though a real pycaffe is importable")
    args = parser.parse_args(argv)
    target = args.target or default_target()
    if args.command == "install":
        print(install(target, args.force))
    elif args.command == "uninstall":
        print(uninstall(target))
    else:
        print(describe()[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
