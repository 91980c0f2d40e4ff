"""Caffe's console output: glog's line format for torchcaffe's log records.

BVLC Caffe logs through glog, and pycaffe prints those lines to stderr by
default, e.g.

    I1130 05:13:04.123456 12345 solver.py:287] Iteration 20, lr = 1e-10

(severity I/W/E/F, month and day, local time to the microsecond, thread id,
source file and line). This module gives torchcaffe the same:

- `GlogFormatter` formats any log record that way;
- importing torchcaffe installs a stderr handler on the `torchcaffe` logger
  that prints in that format while the program has not configured logging
  itself (no handler on the root logger); a program that has gets the
  records through its own handlers instead, never twice;
- `console()` makes a stderr handler in that format the root logger's
  console meanwhile, for programs (the `torchcaffe` tool, the FCN scripts)
  whose every line should look like Caffe's;
- `GLOG_minloglevel` (0 info, 1 warnings, 2 errors, 3 fatal only) sets the
  lowest severity printed, read at import, as glog reads it at start-up;
  `GLOG_logtostderr` is accepted: torchcaffe never writes glog's log files,
  so every line goes to stderr either way;
- `init_log([level[, stderr]])` and `log(message)` are pycaffe's
  `caffe.init_log` and `caffe.log`.

glog prints a C++ `float` with `<<`, i.e. six significant digits (`%g`):
`caffe_float` does the same for values in log lines.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Iterator

LOGGER_NAME = "torchcaffe"
MIN_LEVEL_ENV = "GLOG_minloglevel"

# glog's severities, by its numbering (the value of GLOG_minloglevel)
_GLOG_LEVELS = (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


def _severity_letter(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "F"
    if levelno >= logging.ERROR:
        return "E"
    if levelno >= logging.WARNING:
        return "W"
    return "I"


class GlogFormatter(logging.Formatter):
    """`I1130 05:13:04.123456 12345 file.py:42] message`, as glog's prefix."""

    def format(self, record: logging.LogRecord) -> str:
        moment = time.localtime(record.created)
        micros = int((record.created - int(record.created)) * 1e6)
        prefix = (f"{_severity_letter(record.levelno)}"
                  f"{moment.tm_mon:02d}{moment.tm_mday:02d} "
                  f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d}.{micros:06d} "
                  f"{threading.get_native_id():>5} {record.filename}:{record.lineno}] ")
        text = prefix + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def min_level_from_env() -> int:
    """The logging level GLOG_minloglevel asks for (unset or unreadable: info)."""
    value = os.environ.get(MIN_LEVEL_ENV, "").strip()
    if not value:
        return logging.INFO
    try:
        number = int(value)
    except ValueError:
        logging.getLogger(__name__).warning(
            "%s=%r is not a number (0 info, 1 warnings, 2 errors, 3 fatal); showing info",
            MIN_LEVEL_ENV, value)
        return logging.INFO
    return _GLOG_LEVELS[min(max(number, 0), len(_GLOG_LEVELS) - 1)]


class _DefaultConsole(logging.StreamHandler):
    """pycaffe's default: torchcaffe's lines on stderr (whatever `sys.stderr`
    is at each record), unless the program routes log records itself (then
    its root handlers print them)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(GlogFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            self.stream = sys.stderr
            super().emit(record)


def console_handler(level: int | None = None) -> logging.Handler:
    """A stderr handler printing glog lines from `level` (default: as
    GLOG_minloglevel says); add it to the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(GlogFormatter())
    handler.setLevel(min_level_from_env() if level is None else level)
    return handler


@contextlib.contextmanager
def console(level: int | None = None) -> Iterator[logging.Handler]:
    """Meanwhile, glog lines on stderr are the program's console: the root
    logger's stderr/stdout handlers give way to `console_handler(level)`,
    and the root logger lets records from that level through."""
    root = logging.getLogger()
    replaced = [h for h in root.handlers if type(h) is logging.StreamHandler
                and getattr(h, "stream", None) in (sys.stderr, sys.stdout)]
    previous_level = root.level
    handler = console_handler(level)
    for old in replaced:
        root.removeHandler(old)
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > handler.level:
        root.setLevel(handler.level)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for old in replaced:
            root.addHandler(old)
        root.setLevel(previous_level)


def _default_console() -> _DefaultConsole:
    logger = logging.getLogger(LOGGER_NAME)
    for handler in logger.handlers:
        if isinstance(handler, _DefaultConsole):
            return handler
    handler = _DefaultConsole()
    logger.addHandler(handler)
    return handler


def install() -> None:
    """Set the torchcaffe logger's level from GLOG_minloglevel and add the
    default stderr console (once). Runs when torchcaffe is imported."""
    logging.getLogger(LOGGER_NAME).setLevel(min_level_from_env())
    _default_console()


def init_log(level: int | None = None, stderr: bool | None = None) -> None:
    """pycaffe's `caffe.init_log()`, `init_log(level)`, `init_log(level,
    stderr)`: `level` is glog's minimum severity (0 info, 1 warnings,
    2 errors, 3 fatal), as GLOG_minloglevel. `stderr` is accepted for
    pycaffe's signature; torchcaffe writes no log files, so its lines go to
    stderr either way."""
    del stderr  # every line goes to stderr; see the docstring
    logger = logging.getLogger(LOGGER_NAME)
    if level is None:
        logger.setLevel(min_level_from_env())
    else:
        if int(level) != level or not 0 <= level < len(_GLOG_LEVELS):
            raise ValueError(f"init_log: level must be 0 (info), 1 (warnings), 2 (errors) "
                             f"or 3 (fatal), got {level!r}")
        logger.setLevel(_GLOG_LEVELS[int(level)])
    _default_console()


def log(message: str) -> None:
    """pycaffe's `caffe.log(message)`: one info line (glog's LOG(INFO))."""
    logging.getLogger(LOGGER_NAME).info("%s", message, stacklevel=2)


def caffe_float(value: float) -> str:
    """A float as glog prints a C++ float: `<<`, six significant digits."""
    return f"{float(value):g}"


def loss_note(weight: float, value: float) -> str:
    """Caffe's ` (* w = w*v loss)` after an output of loss weight `w`, or ''."""
    if not weight:
        return ""
    return f" (* {caffe_float(weight)} = {caffe_float(weight * value)} loss)"
