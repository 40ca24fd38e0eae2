"""Writing files so that a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_parquet_atomic(table, path: Path) -> None:
    """Write a pyarrow table to `path`, durable before it appears under its name."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: Any, indent: int = 1) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
