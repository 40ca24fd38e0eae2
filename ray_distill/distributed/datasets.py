"""A run's Parquet files as Ray Data datasets, read where the stage's own workers run."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

import ray

_SWITCH = threading.Lock()


def read_parquet(path: Path, resources: Optional[dict[str, float]] = None, **options: Any) -> "ray.data.Dataset":
    """`ray.data.read_parquet` of one file, its read tasks reserving `resources` besides their CPU. Ray Data's
    V2 Parquet reader first starts a pool of 32 footer-reading actors of one CPU each, whatever the file's
    size, and on an autoscaling cluster that demand alone launches nodes, of whatever type has CPUs left
    (GPU nodes included); the V1 reader samples one file with a single task."""
    context = ray.data.DataContext.get_current()
    with _SWITCH:  # the setting is the process's: a read from another thread must not restore it meanwhile
        kept, context.use_datasource_v2 = context.use_datasource_v2, False
        try:
            return ray.data.read_parquet(str(path), resources=resources or None, **options)
        except ray.exceptions.RayTaskError as e:  # the footer, read in a task whose error does not name the file
            raise OSError(f"reading {path} failed") from e
        finally:
            context.use_datasource_v2 = kept
