"""Filtered, paginated reads of a record store without loading it.

A page needs only a few light columns per record (its key, question, scores,
verdict, the error types of its steps); those are read per Parquet file with
column projection and cached under the file's (path, size, mtime), so a store
that grows by a part reads only the new part, and a rewritten file is read
again. A single record is read from the one row group that holds it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

LIGHT_COLUMNS = ("dataset", "example_id", "sample", "question", "correct", "f1", "answered_by", "final_answer",
                 "answer", "num_steps", "judge_correct", "keep", "drop_reason")
ERROR_TYPES = "error_types"  # "|NameError|ValueError|": every step's error type, searchable as a substring
PART, ROW = "_part", "_row"
NONE = "(none)"  # how a filter names a missing answered_by or drop reason
PER_PAGE = 50


def _error_types(steps: pa.ChunkedArray) -> pa.Array:
    steps = steps.combine_chunks()
    errors = pc.struct_field(pc.list_flatten(steps), "error_type")
    owners = pc.list_parent_indices(steps)
    found: list[set] = [set() for _ in range(len(steps))]
    valid = pc.is_valid(errors)
    for owner, error in zip(pc.filter(owners, valid).to_pylist(), pc.filter(errors, valid).to_pylist()):
        found[owner].add(error)
    return pa.array(["|" + "|".join(sorted(f)) + "|" if f else "" for f in found], pa.string())


def read_light(path: Path) -> pa.Table:
    """The light columns of one Parquet file, plus `error_types` for trajectories."""
    handle = pq.ParquetFile(path)
    names = handle.schema_arrow.names
    columns = [c for c in LIGHT_COLUMNS if c in names]
    if "steps" in names:
        columns.append("steps.list.element.error_type")
    table = handle.read(columns=columns)
    if "steps" in names:
        table = table.append_column(ERROR_TYPES, _error_types(table.column("steps"))).drop_columns(["steps"])
    return table


class LightIndex:
    """The light columns of every file read so far, by (path, size, mtime); thread-safe, bounded."""

    def __init__(self, max_files: int = 65536, max_tables: int = 16):
        self._files: OrderedDict[tuple, pa.Table] = OrderedDict()
        self._tables: OrderedDict[tuple, pa.Table] = OrderedDict()
        self._max_files, self._max_tables = max_files, max_tables
        self._lock = threading.Lock()

    @staticmethod
    def _cached(cache: OrderedDict, key: tuple, limit: int, make) -> pa.Table:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = cache[key] = make()
        while len(cache) > limit:
            cache.popitem(last=False)
        return value

    def table(self, files: Sequence[Path]) -> tuple[pa.Table, list[Path]]:
        """The light columns of `files`, with each row's file (a number into the returned files, those still
        there) and its row in that file."""
        keys = []
        for path in files:
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # replaced between listing and reading: shown on the next request
                continue
            keys.append((str(path), stat.st_size, stat.st_mtime_ns))
        with self._lock:
            table = self._cached(self._tables, tuple(keys), self._max_tables, lambda: self._concat(keys))
        return table, [Path(key[0]) for key in keys]

    def _concat(self, keys: list[tuple]) -> pa.Table:
        tables = []
        for number, key in enumerate(keys):
            light = self._cached(self._files, key, self._max_files, lambda: read_light(Path(key[0])))
            tables.append(light.append_column(PART, pa.repeat(pa.scalar(number, pa.int32()), light.num_rows))
                          .append_column(ROW, pa.array(range(light.num_rows), pa.int32())))
        if not tables:
            return pa.table({PART: pa.array([], pa.int32()), ROW: pa.array([], pa.int32())})
        return pa.concat_tables(tables, promote_options="default")


@dataclass(frozen=True)
class Filters:
    """What a list page asks for, from its query string; empty means any."""

    dataset: str = ""
    correct: str = ""  # yes / no
    kept: str = ""  # yes / no
    drop_reason: str = ""
    answered_by: str = ""
    error_type: str = ""
    text: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> "Filters":
        return cls(**{f.name: query.get(f.name, "").strip() for f in fields(cls)})

    def as_query(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def _equal_or_none(column: pa.ChunkedArray, value: str) -> pa.ChunkedArray:
    return pc.is_null(column) if value == NONE else pc.equal(column, value)


def _mask(table: pa.Table, filters: Filters) -> Optional[pa.ChunkedArray]:
    names = set(table.column_names)
    if not table.num_rows:  # a store with no part yet has no columns to filter on
        return None
    conditions = []
    if filters.dataset:
        conditions.append(pc.equal(table["dataset"], filters.dataset))
    for name, column in (("correct", "correct"), ("kept", "keep")):
        value = getattr(filters, name)
        if value and column in names:
            conditions.append(pc.equal(table[column], value == "yes"))
        elif value:
            conditions.append(pa.repeat(pa.scalar(False), table.num_rows))
    for name in ("drop_reason", "answered_by"):
        value = getattr(filters, name)
        if value:
            conditions.append(_equal_or_none(table[name], value) if name in names
                              else pa.repeat(pa.scalar(value == NONE), table.num_rows))
    if filters.error_type:
        conditions.append(pc.match_substring(table[ERROR_TYPES], f"|{filters.error_type}|") if ERROR_TYPES in names
                          else pa.repeat(pa.scalar(False), table.num_rows))
    if filters.text:
        conditions.append(pc.match_substring(table["question"], filters.text, ignore_case=True))
    if not conditions:
        return None
    mask = conditions[0]
    for condition in conditions[1:]:
        mask = pc.and_(mask, condition)
    return pc.fill_null(mask, False)


def options(table: pa.Table) -> dict[str, list[str]]:
    """The values each filter can take in this table."""
    def values(name: str) -> list[str]:
        if name not in table.column_names:
            return []
        found = pc.unique(table[name]).to_pylist()
        return sorted(NONE if v is None else v for v in found)

    errors = sorted({e for text in pc.unique(table[ERROR_TYPES]).to_pylist() for e in text.split("|") if e}) \
        if ERROR_TYPES in table.column_names else []
    return {"dataset": values("dataset"), "drop_reason": values("drop_reason"),
            "answered_by": values("answered_by"), "error_type": errors}


@dataclass
class Page:
    rows: list[dict]
    total: int  # records that match
    records: int  # records in the store
    page: int
    pages: int
    options: dict[str, list[str]]


def page(index: LightIndex, files: Sequence[Path], filters: Filters, number: int, per_page: int = PER_PAGE) -> Page:
    table, _ = index.table(files)
    mask = _mask(table, filters)
    matched = table if mask is None else table.filter(mask)
    pages = max(1, -(-matched.num_rows // per_page))
    number = min(max(1, number), pages)
    rows = matched.slice((number - 1) * per_page, per_page).to_pylist()
    return Page(rows, matched.num_rows, table.num_rows, number, pages, options(table))


def read_row(path: Path, row: int) -> dict[str, Any]:
    """One row of a Parquet file, reading only the row group that holds it."""
    handle = pq.ParquetFile(path)
    start = 0
    for group in range(handle.metadata.num_row_groups):
        rows = handle.metadata.row_group(group).num_rows
        if row < start + rows:
            return handle.read_row_group(group).slice(row - start, 1).to_pylist()[0]
        start += rows
    raise IndexError(f"{path} has no row {row}")


def find_records(index: LightIndex, files: Sequence[Path], dataset: str, example_id: str,
                 sample: Optional[int] = None) -> list[dict[str, Any]]:
    """The full records of one question (one sample of it, when `sample` is given), in sample order."""
    table, files = index.table(files)
    if not table.num_rows:
        return []
    mask = pc.and_(pc.equal(table["dataset"], dataset), pc.equal(table["example_id"], example_id))
    if sample is not None:
        mask = pc.and_(mask, pc.equal(table["sample"], sample))
    hits = table.filter(mask).select([PART, ROW]).to_pylist()
    records = [read_row(files[h[PART]], h[ROW]) for h in hits]
    return sorted(records, key=lambda r: r.get("sample", 0))
