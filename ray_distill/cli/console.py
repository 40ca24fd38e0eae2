"""The console of a pipeline command (`run`, or a stage by name) and the run's log file.

The console shows ray-distill's own lines: each stage's header, its progress bar, the warnings and
errors that matter, its summary and where its outputs are, then the report or the error that ended
the run. Everything else goes to `<run.dir>/logs/ray-distill.log`, named on the console's first
line: Ray's, Ray Data's, Ray Train's, Tune's, vLLM's and transformers' logs, what Ray's workers print
(Ray forwards it to the driver), the native logs of Ray's core worker. The file also holds every one
of our own lines, the DEBUG ones too, and a header line per invocation. `--verbose` leaves the
libraries' output on the console as well.

How: for the command's duration, file descriptors 1 and 2 point at the log file, so whatever writes
to stdout or stderr lands there: sys.stdout and sys.stderr, every library's logging handler whenever
it was made, Ray's log forwarding, C++ code. The console is a duplicate of the original descriptors
that only ray-distill writes to. So no library needs a knob of its own (VLLM_CONFIGURE_LOGGING,
VLLM_LOGGING_LEVEL, RAY_DEDUP_LOGS, transformers' verbosity, Ray Data's progress bars stay as they
are): each keeps logging as it does, into the file, where a lowered level would only lose lines, and
a library that starts logging in its next version is covered too. Lines that a Ray worker logs go
where the worker's output goes: the file, also our own (only exceptions come back to the driver).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

from ray_distill import __version__
from ray_distill.errors import UserError

LOG_FILE = Path("logs") / "ray-distill.log"  # in the run directory
FILE_ONLY = {"console": False}  # `extra` of a record that belongs in the log file only

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Console:
    out: TextIO  # the report and the run directory
    err: TextIO  # our log lines, progress bars and errors


class RunFailed(Exception):
    """A pipeline command failed other than by a user error; the message outlines why, the log file has
    the traceback."""


@contextmanager
def run_console(run_dir: Path, command: str, *, quiet: bool, verbose: bool) -> Iterator[Console]:
    """The console and the log file of one invocation of `command` on the run in `run_dir`. An
    exception other than a UserError leaves as RunFailed, its traceback in the log file."""
    path = Path(run_dir) / LOG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1, encoding="utf-8", errors="replace") as file:
        file.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} ray-distill {__version__}: {command} "
                   f"(pid {os.getpid()})\n")
        with _terminal(file, verbose) as console, _logging(file, console.err, quiet=quiet, verbose=verbose):
            try:
                log.info("log: %s (Ray's and the libraries' own output%s)", path,
                         "" if verbose else "; --verbose shows it here too")
                yield console
                log.info("finished", extra=FILE_ONLY)
            except UserError as e:  # main prints it as one line, as for every command
                log.error("ray-distill: error: %s", e, extra=FILE_ONLY)
                raise
            except KeyboardInterrupt:
                log.error("interrupted", extra=FILE_ONLY)
                raise
            except Exception as e:
                log.error("failed", exc_info=True, extra=FILE_ONLY)
                raise RunFailed("\n  ".join([*outline(e), f"the full traceback is in {path}"])) from e


def outline(error: BaseException) -> list[str]:
    """The exception lines of `error`'s traceback, its frames left out: the type and message of `error` and
    of the exceptions that led to it, also those raised in a Ray worker (Ray's task errors carry the
    worker's traceback in their message)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", "".join(traceback.format_exception(error)))  # Ray colours the worker
    return [line for line in text.splitlines()
            if line.strip() and not line[0].isspace() and line != "Traceback (most recent call last):"]


@contextmanager
def _terminal(file: TextIO, verbose: bool) -> Iterator[Console]:
    """Unless `verbose`, descriptors 1 and 2 point at `file` meanwhile, and the console is a duplicate of
    the originals."""
    if verbose:
        yield Console(sys.stdout, sys.stderr)
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(file.fileno(), 1)
    os.dup2(file.fileno(), 2)
    out, err = (os.fdopen(fd, "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8",
                          errors="replace") for fd, stream in zip(saved, (sys.stdout, sys.stderr)))
    try:
        yield Console(out, err)
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # what is buffered for the file goes there
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        out.close()
        err.close()


class _ConsoleFormatter(logging.Formatter):
    """`12:03:04 [index] ...`; a warning or an error says so."""

    def __init__(self):
        super().__init__("%(asctime)s %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            return f"{record.asctime} {record.levelname}: {record.message}"
        return super().formatMessage(record)


@contextmanager
def _logging(file: TextIO, console: TextIO, *, quiet: bool, verbose: bool) -> Iterator[None]:
    """Meanwhile our records (DEBUG up) and other libraries' (INFO up) go to the file; ours (INFO up, WARNING
    up when quiet) to the console too, and with `verbose` the others' as well."""
    to_file = logging.StreamHandler(file)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_console = logging.StreamHandler(console)
    to_console.setLevel(logging.WARNING if quiet else logging.INFO)
    to_console.setFormatter(_ConsoleFormatter())
    to_console.addFilter(lambda record: getattr(record, "console", True) and (
        verbose or record.name == "ray_distill" or record.name.startswith("ray_distill.")))
    root, ours = logging.getLogger(), logging.getLogger("ray_distill")
    levels = root.level, ours.level
    root.setLevel(logging.INFO)
    ours.setLevel(logging.DEBUG)
    root.addHandler(to_file)
    root.addHandler(to_console)
    try:
        yield
    finally:
        root.removeHandler(to_file)
        root.removeHandler(to_console)
        root.setLevel(levels[0])
        ours.setLevel(levels[1])
