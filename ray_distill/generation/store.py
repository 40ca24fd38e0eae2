"""An exactly-once store of generated records: Parquet parts plus a log of failed attempts.

A record is keyed by (dataset, example_id, sample). Finished records are
buffered and written as Parquet part files, each written to a temporary
name and renamed into place, so a crash leaves whole parts or none: every
key in `parts/` appears once, and a rerun does only the keys it lacks.
Duplicates that a retried upstream task delivers twice are dropped on
arrival. An attempt that failed for infrastructure reasons (engine,
sandbox or retrieval errors) is not a record: it is appended to
`failures.jsonl` and its key stays missing, to be retried.

The parts are plain Parquet: `pandas.read_parquet(dir / "parts")`,
`pyarrow.dataset.dataset(...)` and `datasets.load_dataset("parquet", ...)`
all read them.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from ray_distill.fileio import append_jsonl, read_jsonl, write_json_atomic, write_parquet_atomic

Key = tuple[str, str, int]
KEY_COLUMNS = ("dataset", "example_id", "sample")
PARTS = "parts"
FAILURES = "failures.jsonl"
SETTINGS = "settings.json"


def row_key(row: dict) -> Key:
    return (row["dataset"], row["example_id"], int(row["sample"]))


class RecordStore:
    def __init__(self, directory: str | Path, schema: pa.Schema, flush_every: int = 64, flush_seconds: float = 30.0,
                 settings: Optional[dict] = None):
        """Opens (creating) the store at `directory`; `settings`, what its records were made under, are
        written beside them for the reader (`settings.json`) the first time."""
        missing = [c for c in KEY_COLUMNS if c not in schema.names]
        if missing:
            raise ValueError(f"a record schema needs the key columns {KEY_COLUMNS}; missing {missing}")
        self.directory = Path(directory)
        self.schema = schema
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        (self.directory / PARTS).mkdir(parents=True, exist_ok=True)
        if settings is not None and not (self.directory / SETTINGS).is_file():
            write_json_atomic(self.directory / SETTINGS, settings, indent=1, sort_keys=True)
        for stale in (self.directory / PARTS).glob(".tmp-*"):  # a crash mid-write
            stale.unlink()
        self._done: set[Key] = read_stored_keys(self.directory)
        self._buffer: list[dict] = []
        self._last_flush = time.monotonic()

    def __contains__(self, key: Key) -> bool:
        """Whether a record with this key is stored (or buffered)."""
        return key in self._done

    def __len__(self) -> int:
        return len(self._done)

    def add(self, row: dict) -> bool:
        """Buffer a finished record; False (and nothing stored) if its key is already there."""
        key = row_key(row)
        if key in self._done:
            return False
        self._done.add(key)
        self._buffer.append(row)
        if len(self._buffer) >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()
        return True

    def add_failure(self, key: Key, attempt: int, error: str) -> None:
        """Log a failed attempt; it is durable before this returns."""
        append_jsonl(self.directory / FAILURES, {"dataset": key[0], "example_id": key[1], "sample": key[2],
                                                 "attempt": attempt, "error": error,
                                                 "time": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def failures(self) -> list[dict]:
        """Every failed attempt on record (a line torn by a crash is skipped)."""
        return read_jsonl(self.directory / FAILURES)

    def flush(self) -> Optional[Path]:
        """Write the buffered records as one part; returns its path (None if nothing was buffered)."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            return None
        path = self.directory / PARTS / f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet_atomic(pa.Table.from_pylist(self._buffer, schema=self.schema), path)
        self._buffer = []
        return path

    def read(self, columns: Optional[list[str]] = None) -> pa.Table:
        """Every stored record (buffered ones are not included until flushed)."""
        if not part_files(self.directory):
            empty = self.schema.empty_table()
            return empty.select(columns) if columns else empty
        return read_records(self.directory, columns)

    def __enter__(self) -> "RecordStore":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


def part_files(directory: str | Path) -> list[Path]:
    return sorted((Path(directory) / PARTS).glob("part-*.parquet"))


def read_stored_keys(directory: str | Path) -> set[Key]:
    keys: set[Key] = set()
    for path in part_files(directory):
        table = pq.read_table(path, columns=list(KEY_COLUMNS))
        keys.update(zip(*(table.column(c).to_pylist() for c in KEY_COLUMNS)))
    return keys


def read_records(directory: str | Path, columns: Optional[list[str]] = None) -> pa.Table:
    """The records of a store directory, without opening it for writing (FileNotFoundError if it has none)."""
    files = part_files(directory)
    if not files:
        raise FileNotFoundError(f"no records in {Path(directory) / PARTS}")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
