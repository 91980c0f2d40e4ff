"""The `torchcaffe` tool's flags, spelled as Caffe's gflags: `-solver x`,
`-solver=x`, `--solver x` and `--solver=x` are the same; and the device
choice (`-gpu`) every subcommand shares."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from ..errors import CaffeError

log = logging.getLogger(__name__)


class FlagError(CaffeError):
    """A flag the command does not know, lacks a value, or has a bad one."""


@dataclass(frozen=True)
class Flag:
    name: str
    kind: type  # str or int
    default: str | int
    help: str


GPU = Flag("gpu", str, "", "GPU device ids separated by ',', or 'all' (default: CPU)")
MODEL = Flag("model", str, "", "the model definition prototxt")
WEIGHTS = Flag("weights", str, "", "caffemodel(s) to load, separated by ','")
ITERATIONS = Flag("iterations", int, 50, "the number of iterations to run (default 50)")
PHASE = Flag("phase", str, "", "network phase, TRAIN or TEST")
LEVEL = Flag("level", int, 0, "network level (default 0)")
STAGE = Flag("stage", str, "", "network stages, separated by ','")


def parse(command: str, flags: Sequence[Flag], argv: Sequence[str]) -> dict:
    """The values of `flags` (defaults where not given) from `argv`."""
    known = {flag.name: flag for flag in flags}
    values = {flag.name: flag.default for flag in flags}
    args = list(argv)
    while args:
        arg = args.pop(0)
        dashes = 2 if arg.startswith("--") else 1 if arg.startswith("-") else 0
        name, has_value, value = arg[dashes:].partition("=")
        if not dashes or not name:
            raise FlagError(f"{command}: unexpected argument '{arg}' (flags look like "
                            "-name value or -name=value)")
        flag = known.get(name)
        if flag is None:
            raise FlagError(f"{command}: unknown flag '{arg.partition('=')[0]}' (its flags: "
                            f"{', '.join('-' + f for f in known)})")
        if not has_value:
            if not args:
                raise FlagError(f"{command}: flag -{name} needs a value")
            value = args.pop(0)
        if flag.kind is int:
            try:
                value = int(value)
            except ValueError:
                raise FlagError(f"{command}: flag -{name} takes a whole number, got "
                                f"'{value}'") from None
        values[name] = value
    return values


def usage(command: str, flags: Sequence[Flag]) -> str:
    width = max(len(f.name) for f in flags) + 2
    lines = [f"flags of '{command}':"]
    lines += [f"  -{f.name:<{width}}{f.help}" for f in flags]
    return "\n".join(lines)


def comma_list(text: str) -> list[str]:
    return [part for part in (p.strip() for p in text.split(",")) if part]


def gpu_ids(text: str) -> list[int]:
    """`-gpu`: '' (CPU), '0', '0,1' or 'all' (every CUDA device torch sees)."""
    if text == "all":
        import torch
        return list(range(torch.cuda.device_count()))
    try:
        return [int(part) for part in comma_list(text)]
    except ValueError:
        raise FlagError(f"flag -gpu takes device ids separated by ',' or 'all', got "
                        f"'{text}'") from None


def use_device(ids: Sequence[int]) -> None:
    """Compute on the first of `ids` (none: the CPU), as Caffe's test/time."""
    from .. import mode

    ids = list(ids)
    while len(ids) > 1:
        log.info("Not using GPU #%d for single-GPU function", ids.pop())
    if not ids:
        log.info("Use CPU.")
        mode.set_mode_cpu()
        return
    log.info("Use GPU with device ID %d", ids[0])
    mode.set_device(ids[0])
    mode.set_mode_gpu()
    import torch
    log.info("GPU device name: %s", torch.cuda.get_device_name(ids[0]))


def net_state_flags(values: dict) -> dict:
    """Net() keywords from -level and -stage."""
    return {"level": values["level"], "stages": comma_list(values["stage"])}
