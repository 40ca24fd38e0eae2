"""Writing files so that a crash leaves the old file or the new one, never half of one; reading a user's
JSON and JSONL files so that any flaw is one DataError naming the file and line."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterator, Optional

from ray_distill.errors import DataError, brief, first_line, line_of


def write_parquet_atomic(table, path: Path) -> None:
    """Write a pyarrow table to `path`, durable before it appears under its name."""
    import pyarrow.parquet as pq  # local: ray_distill.config imports this module; the fast commands skip pyarrow

    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def append_jsonl(path: Path, entry: Any) -> None:
    """Append one JSON line, durable before this returns (a crash can tear only the last line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: Path) -> list[Any]:
    """The lines `append_jsonl` wrote; a line torn by a crash is skipped."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def write_json_atomic(path: Path, payload: Any, indent: int = 1, sort_keys: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=indent, ensure_ascii=False, sort_keys=sort_keys) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def text_of(data: bytes, where: Path | str, line: int = 1) -> str:
    """`data` decoded as UTF-8 (a byte-order mark dropped); a byte that is not UTF-8 is a DataError naming
    `where` and the line, counted from `line`, the line `data` starts at."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: line {line + line_of(data, e.start) - 1} is not valid UTF-8") from None


def parse_json(data: bytes, path: Path | str, line: Optional[int] = None) -> Any:
    """The JSON value of `data`, the whole of `path` (a file, or what a message calls it) or, `line` given,
    one line of it."""
    text = text_of(data, path, line or 1)
    where = f"{path}: line {line}" if line else str(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {(line or 1) + e.lineno - 1} is not valid JSON: {e.msg} "
                        f"(column {e.colno})") from None
    except ValueError as e:  # a number Python refuses, e.g. an integer of 5000 digits
        raise DataError(f"{where} is not valid JSON: {first_line(e)}") from None
    except RecursionError:
        raise DataError(f"{where} is not valid JSON: nested too deeply") from None


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSONL file, gzip-compressed if its name ends in .gz.
    A line that is not UTF-8 JSON, or a file that cannot be read to its end, is a DataError."""
    number = 0
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if raw.strip():
                    yield number, parse_json(raw, path, number)
    except (OSError, EOFError, zlib.error) as e:  # unreadable, or a truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot read{f' past line {number}' if number else ''}: {first_line(e)}") from None


def record_id(value: Any, where: str) -> str:
    """A record's id as the key it is stored under: ids may be strings or integers (1 and "1" are the same)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{where}: 'id' must be a string or an integer, got {brief(value)}")
    return str(value)
