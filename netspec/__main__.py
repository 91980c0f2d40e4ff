"""`python -m netspec --out models voc-fcn8s` (or `all`): write prototxts.

Each net goes to `<out>/<name>/`. The nets' data paths are relative to that
folder (`../data/...`, or `../../data/...` for voc-fcn16s and PASCAL-Context,
as in the release), so `<out>/data` is made a relative link to `../data`
when absent: both then reach `<out>/../data`, which for the default
`--out models` is the repository's `data/`. An existing `<out>/data` (a
folder or another link) is left alone, and the data roots in use are logged.
"""
from __future__ import annotations

import argparse
import logging
import sys

from torchcaffe.progress import progress


def main(argv: list[str] | None = None) -> int:
    from .models import NETS
    from .writer import link_data_root, write_net

    parser = argparse.ArgumentParser(
        prog="fcn-nets",
        description="Write the reference FCN prototxts (train / test / deploy / "
                    "solver) and the base nets' deploy prototxts.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="models or base nets to write, or 'all'")
    parser.add_argument("--out", default="models", help="output folder (default: models)")
    parser.add_argument("--width", type=float, default=1.0,
                        help="scale every backbone channel count (default 1: the "
                             "reference nets; e.g. 0.0625 for a fast CPU demo)")
    parser.add_argument("--list", action="store_true", help="list the net names and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.list:
        print("\n".join(NETS))
        return 0
    if not args.names:
        parser.error("name a net (see --list) or 'all'")
    names = list(NETS) if "all" in args.names else args.names
    unknown = [name for name in names if name not in NETS]
    if unknown:
        parser.error(f"unknown net(s) {', '.join(unknown)}; choose from: all, "
                     + ", ".join(NETS))
    if not 0 < args.width <= 1:
        parser.error(f"--width {args.width}: give a factor in (0, 1]")
    for name in progress(names, desc="nets", unit="net", disable=len(names) < 2):
        write_net(NETS[name], args.out, args.width)
    link_data_root(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
