"""Errors that reach the user as one clear line instead of a traceback, and the helpers that word them."""

import reprlib


class UserError(Exception):
    """Bad input from the user (config, paths, names): the CLI prints the
    message and exits non-zero without a traceback."""


class ConfigError(UserError):
    """An invalid config file, override or value; the message names the key."""


class DataError(UserError):
    """A malformed data file; the message names the file and the record."""


class ModelNotFoundError(UserError):
    """A model or embedder name that cannot be resolved to local files."""


def brief(value: object) -> str:
    """A bad value as a message shows it: a short repr, so a multi-megabyte field stays one readable line."""
    shortened = reprlib.Repr()
    shortened.maxstring = shortened.maxother = 60
    shortened.maxlevel = 3
    return shortened.repr(value)


def first_line(text: object, limit: int = 300) -> str:
    """The first line of another library's error text, cut to `limit` characters (its later lines repeat
    what the message already names, or are a backtrace)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else type(text).__name__ if isinstance(text, BaseException) else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def line_of(data: bytes | str, offset: int) -> int:
    """The line (from 1) of a file's bytes or text that holds `offset`, for a message to point at."""
    return data.count(b"\n" if isinstance(data, bytes) else "\n", 0, offset) + 1


def is_text(value: str) -> bool:
    """Whether a string can be written anywhere as UTF-8: no NUL (no path or argument holds one) and no
    lone surrogate (what invalid UTF-8 bytes in argv, or a JSON escape such as \\ud800, decode to)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value
