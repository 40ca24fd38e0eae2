"""Question sets by name: the generated world's splits and the paper's benchmarks.

`world-fact-train`, `world-math-train`, `world-fact-test` and
`world-math-test` are the world stage's question files; any name in
`data.benchmarks.BENCHMARKS` (e.g. `hotpotqa-train`, `math500`) is looked up
in the benchmarks folder. Each set has a domain, which decides how its
answers are scored.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Optional

from ray_distill.data.benchmarks import BENCHMARKS, Example, find_benchmark, load_file
from ray_distill.errors import ConfigError

WORLD_SETS = {f"world-{domain}-{split}": domain for domain in ("fact", "math") for split in ("train", "test")}


def known_sets() -> list[str]:
    return [*WORLD_SETS, *BENCHMARKS]


def domain_of(name: str) -> str:
    """"fact" or "math"."""
    if name in WORLD_SETS:
        return WORLD_SETS[name]
    if name in BENCHMARKS:
        return BENCHMARKS[name].domain
    raise ConfigError(f"unknown question set {name!r}; known: {', '.join(known_sets())}")


def set_file(name: str, world_dir: Path, benchmarks_dir: Path, benchmark_files: Optional[dict] = None) -> Path:
    """The file holding question set `name`."""
    domain_of(name)  # unknown names fail here, with the list of known ones
    if name in WORLD_SETS:
        _, domain, split = name.split("-")
        path = world_dir / "questions" / f"{domain}_{split}.json"
        if not path.is_file():
            raise ConfigError(f"question set {name!r} needs the world stage's {path}; run `ray-distill world CONFIG`")
        return path
    return find_benchmark(name, benchmarks_dir, benchmark_files)


def load_examples(name: str, world_dir: Path, benchmarks_dir: Path, benchmark_files: Optional[dict] = None,
                  limit: Optional[int] = None) -> list[Example]:
    """The first `limit` examples of set `name` (all if None), in file order."""
    examples = load_file(set_file(name, world_dir, benchmarks_dir, benchmark_files), dataset=name).examples
    return examples if limit is None else examples[:limit]


def file_digest(path: Path) -> str:
    """A short content hash: records made from another version of a file must not count as done.
    Remembered per (path, inode, size, modification time): stage directories are keyed by it, and a
    training set's Parquet would otherwise be hashed on every lookup of its directory."""
    stat = os.stat(path)
    return _digest(os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _digest(path: str, inode: int, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
