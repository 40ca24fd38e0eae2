"""The machinery of the malformed-input tests (tests/test_fuzz_*.py): seeded mutations of valid input, a
deadline per case, and the oracle every case meets.

A case either succeeds, and its test checks the result is right, or raises a UserError whose message is
one short line naming what the case says it must (the file, the record or the config key). Any other
exception, a message over several lines, or one that names neither counts against the case; so does a
case that runs past its deadline (a hang).
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from ray_distill.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 20.0  # seconds before a case counts as hung
MAX_MESSAGE = 1000  # characters: a message quoting a multi-megabyte value is not a clear line

# Bytes that are never valid UTF-8 wherever they land: a lone continuation byte, a truncated sequence, an
# encoded surrogate, an overlong encoding, a byte no UTF-8 uses.
INVALID_UTF8 = (b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xff", b"\xe2\x82")

# One name a message must hold, or a tuple of names of which it must hold one.
Name = Union[str, tuple[str, ...]]


class Hang(AssertionError):
    pass


@dataclass
class Case:
    name: str
    data: Any = None  # the input: bytes, a string, a request...
    names: Sequence[Name] = ()  # what an error must name
    expect: Any = None  # the result when the case must load (each test's own meaning)
    extra: dict = field(default_factory=dict)


def outcome(fn: Callable, *args, deadline: float = DEADLINE) -> tuple[Any, Optional[BaseException]]:
    """(result, None) or (None, the exception) of fn(*args), run in a thread that must end within
    `deadline` seconds (a hang raises Hang: the thread cannot be stopped, so the test stops)."""
    done: dict[str, Any] = {}

    def target() -> None:
        try:
            done["value"] = fn(*args)
        except BaseException as e:  # everything, RecursionError and SystemExit included, is the case's outcome
            done["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        raise Hang(f"{getattr(fn, '__name__', fn)} ran past {deadline} s")
    return done.get("value"), done.get("error")


def error_problem(error: BaseException, names: Iterable[Name]) -> Optional[str]:
    """Why `error` is not a one-line UserError naming `names`; None when it is."""
    if not isinstance(error, UserError):
        return f"{type(error).__name__} instead of a UserError: {str(error)[:300]!r}"
    message = str(error)
    if "\n" in message or "\r" in message or len(message) > MAX_MESSAGE:
        return f"not one short line ({len(message)} characters): {message[:300]!r}"
    missing = [n for n in names if not any(alt in message for alt in ((n,) if isinstance(n, str) else n))]
    if missing:
        return f"does not name {missing}: {message!r}"
    return None


def run_cases(cases: Sequence[Case], check: Callable[[Case], Optional[str]], minimum: int = 200) -> None:
    """check(case) for every case (a string: what went wrong); one assertion lists every failure."""
    assert len(cases) >= minimum, f"only {len(cases)} cases generated"
    assert len({c.name for c in cases}) == len(cases), "case names must be unique"
    failures = []
    for case in cases:
        problem = check(case)
        if problem:
            failures.append(f"{case.name}: {problem}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures[:25])


def truncated(rng: random.Random, data: bytes) -> tuple[int, bytes]:
    offset = rng.randrange(len(data))
    return offset, data[:offset]


def inserted(rng: random.Random, data: bytes, junk: bytes, start: int = 0) -> tuple[int, bytes]:
    """`junk` put at a random offset from `start` on, where it lands inside text or between tokens alike."""
    offset = rng.randrange(start, len(data) + 1)
    return offset, data[:offset] + junk + data[offset:]


def line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def cli(*args: str | bytes, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess:
    """`ray-distill ARGS` in a fresh process (bytes arguments reach it as they are, invalid UTF-8 included)."""
    return subprocess.run([sys.executable, "-m", "ray_distill.cli", *args], capture_output=True, cwd=cwd,
                          timeout=timeout)


def cli_problem(proc: subprocess.CompletedProcess, names: Iterable[Name]) -> Optional[str]:
    """Why a CLI run on bad input is not exit status 2 with one error line naming `names` and no traceback."""
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 2:
        return f"exit status {proc.returncode}: {stderr[-500:]!r}"
    if "Traceback" in stderr:
        return f"a traceback: {stderr[-500:]!r}"
    errors = [line for line in stderr.splitlines() if line.startswith("ray-distill: error: ")]
    if len(errors) != 1:
        return f"{len(errors)} error lines: {stderr[-500:]!r}"
    missing = [n for n in names if not any(alt in errors[0] for alt in ((n,) if isinstance(n, str) else n))]
    return f"does not name {missing}: {errors[0]!r}" if missing else None
