"""The `torchcaffe` command: Caffe's `caffe` tool on torchcaffe.

    torchcaffe <command> -flag value ...     (also: python -m torchcaffe)

Commands: `train`, `test`, `time`, `device_query`, each in its own module
with its flags (spelled as Caffe's: `-solver x`, `-solver=x`, `--solver x`).
The console script is not called `caffe`, so it never shadows a real Caffe.
Output is glog lines on stderr (see torchcaffe.glog); a bad flag or file
ends the run with one error line and exit status 1.
"""
from __future__ import annotations

import sys
from importlib import import_module
from typing import Sequence

from ..errors import CaffeError
from .flags import FlagError, parse, usage

PROG = "torchcaffe"
COMMANDS = {
    "train": "train or finetune a model",
    "test": "score a model",
    "device_query": "show GPU diagnostic information",
    "time": "benchmark model execution time",
}
HELP = ("-h", "-help", "--help", "help")


def overview() -> str:
    lines = [f"{PROG}: Caffe's command line brew on torchcaffe",
             f"usage: {PROG} <command> <args>", "", "commands:"]
    lines += [f"  {name:<16}{text}" for name, text in COMMANDS.items()]
    lines += ["", f"`{PROG} <command> -help` lists a command's flags."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in HELP:
        print(overview())
        return 0 if args else 1
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"{PROG}: error: unknown command '{command}' (commands: "
              f"{', '.join(COMMANDS)})", file=sys.stderr)
        return 1
    module = import_module(f"{__name__}.{command}")
    if any(arg in HELP for arg in rest):
        print(usage(command, module.FLAGS))
        return 0
    from .. import glog
    try:
        with glog.console():
            return module.run(parse(command, module.FLAGS, rest))
    except (CaffeError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


__all__ = ["FlagError", "main"]
