"""Benchmark files in the paper's format, and the registry of the paper's benchmarks.

A file is JSON (`{"metadata": {...}, "examples": [...]}` or a bare list),
JSONL (one record a line) or Parquet. A record needs `id`, `question` and
`answer`; everything else is kept as metadata. Records are keyed by
(dataset, id) - never by question text, which repeats in MuSiQue. A null
answer is skipped and counted; anything else malformed is an error that
names the file and the record (its line, in a JSONL file).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from ray_distill.errors import DataError, brief, first_line
from ray_distill.fileio import json_lines, parse_json, record_id

log = logging.getLogger(__name__)

FORMATS = (".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class Example:
    dataset: str
    id: str
    question: str
    answer: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.dataset, self.id)


@dataclass
class Benchmark:
    """The examples of one file, plus what was skipped on the way."""

    dataset: str
    path: Path
    examples: list[Example]
    skipped_null_answers: int = 0


def load_file(path: str | Path, dataset: Optional[str] = None) -> Benchmark:
    """Load one benchmark file; `dataset` defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"benchmark file not found: {path}")
    dataset = dataset or path.stem
    examples: list[Example] = []
    seen: dict[str, str] = {}
    skipped = 0
    for place, record in _records(path):
        where = f"{path}: {place}"
        if not isinstance(record, Mapping):
            raise DataError(f"{where}: expected an object, got {type(record).__name__}")
        rid, example = _example(dataset, record, where)
        if rid in seen:  # also when either has a null answer: which of the two is meant is unknown
            raise DataError(f"{where}: duplicate id {brief(rid)} (first at {seen[rid]})")
        seen[rid] = place
        if example is None:
            skipped += 1
            continue
        examples.append(example)
    if skipped:
        log.warning("%s: skipped %d record(s) with a null answer", path, skipped)
    return Benchmark(dataset, path, examples, skipped)


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where in the file, record): `line N` of a JSONL file (what an editor shows), else `record N`."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq  # local: `ray-distill benchmarks` and ray_distill.config skip pyarrow

        try:
            records = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DataError(f"{path}: not a readable Parquet file: {first_line(e)}") from None
    elif suffix == ".jsonl":
        yield from ((f"line {n}", record) for n, record in json_lines(path))
        return
    elif suffix == ".json":
        records = parse_json(path.read_bytes(), path)
        if isinstance(records, Mapping):
            if not isinstance(records.get("examples"), list):
                raise DataError(f"{path}: expected a list under 'examples'")
            records = records["examples"]
        if not isinstance(records, list):
            raise DataError(f"{path}: expected {{'metadata', 'examples': [...]}} or a list of records")
    else:
        raise DataError(f"{path}: unsupported format {suffix!r}; use one of {', '.join(FORMATS)}")
    yield from ((f"record {n}", record) for n, record in enumerate(records))


def _example(dataset: str, record: Mapping[str, Any], where: str) -> tuple[str, Optional[Example]]:
    """The record's id, and its example (None for a null answer)."""
    for key in ("id", "question", "answer"):
        if key not in record:
            raise DataError(f"{where}: missing field {key!r}")
    rid = record_id(record["id"], where)
    question = record["question"]
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: 'question' must be a non-empty string")
    answer = record["answer"]
    metadata = {k: v for k, v in record.items() if k not in ("id", "question", "answer")}
    if answer is None:
        return rid, None
    if isinstance(answer, list) and answer and all(isinstance(a, str) for a in answer):
        metadata["aliases"] = list(answer)
        answer = answer[0]
    elif (isinstance(answer, bool) or not isinstance(answer, (str, int, float))
          or isinstance(answer, float) and not math.isfinite(answer)):
        raise DataError(f"{where}: 'answer' must be a string, a finite number or a list of strings, "
                        f"got {brief(answer)}")
    # repr keeps a float's exact digits (GSM-Hard's 561161.7000000001).
    answer = answer if isinstance(answer, str) else repr(answer)
    return rid, Example(dataset, rid, question, answer, metadata)


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    domain: str  # "fact" or "math"
    role: str  # "train", "in-domain test" or "out-of-domain test"
    size: int
    patterns: tuple[str, ...]


# The paper's training sets and its 8 evaluation benchmarks; `patterns` are
# file-name globs (without extension) searched in the data directory.
BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("hotpotqa-train", "fact", "train", 1000, ("hotpotqa_1000*", "hotpotqa_train*")),
        BenchmarkSpec("math-hard-train", "math", "train", 1000, ("math_1000*", "math_hard_1000*", "math_hard_train*")),
        BenchmarkSpec("math-medium-train", "math", "train", 1000, ("math_medium_1000*", "math_medium_train*")),
        BenchmarkSpec("hotpotqa", "fact", "in-domain test", 500, ("hotpotqa_500*", "hotpotqa_test*")),
        BenchmarkSpec("math500", "math", "in-domain test", 500, ("math_500*", "math500*")),
        BenchmarkSpec("bamboogle", "fact", "out-of-domain test", 125, ("bamboogle*",)),
        BenchmarkSpec("musique", "fact", "out-of-domain test", 500, ("musique*",)),
        BenchmarkSpec("2wikimultihopqa", "fact", "out-of-domain test", 500, ("2wikimultihopqa*", "2wiki*")),
        BenchmarkSpec("gsm-hard", "math", "out-of-domain test", 500, ("gsm_hard*", "gsm-hard*", "gsmhard*")),
        BenchmarkSpec("aime", "math", "out-of-domain test", 90, ("aime*",)),
        BenchmarkSpec("olymmath", "math", "out-of-domain test", 200, ("olymmath*", "olymath*")),  # the reference spells it olymath
    )
}
EVALUATION_BENCHMARKS = tuple(n for n, s in BENCHMARKS.items() if s.role != "train")


def default_data_dir(configured: Optional[str] = None) -> Path:
    return Path(configured or os.environ.get("RAY_DISTILL_BENCHMARKS") or "data/benchmarks")


def find_benchmark(name: str, data_dir: str | Path, files: Mapping[str, str] | None = None) -> Path:
    """The file of benchmark `name` in `data_dir` (an explicit `files[name]` wins)."""
    if name not in BENCHMARKS:
        raise DataError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    data_dir = Path(data_dir)
    if files and name in files:
        path = data_dir / files[name]
        if not path.is_file():
            raise DataError(f"benchmark {name!r}: configured file {path} does not exist")
        return path
    spec = BENCHMARKS[name]
    found = sorted(
        p for pattern in spec.patterns for ext in FORMATS for p in data_dir.glob(pattern + ext) if p.is_file()
    )
    if not found:
        wanted = ", ".join(p + "{" + ",".join(FORMATS) + "}" for p in spec.patterns)
        raise DataError(
            f"benchmark {name!r} not found in {data_dir} (looked for {wanted}); "
            f"set benchmarks.data_dir or benchmarks.files.{name}"
        )
    # Several dated versions: the last in name order is the newest.
    return found[-1]


def load_benchmark(name: str, data_dir: str | Path, files: Mapping[str, str] | None = None) -> Benchmark:
    return load_file(find_benchmark(name, data_dir, files), dataset=name)
