"""The driver side of a generation stage: which items are missing, storing outcomes as they
arrive with a live progress bar, and the stage summary.

`run_items` works with any iterator of outcomes, so the same code stores
what the Ray Data pipeline streams back and what a test feeds it directly.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TextIO

import pyarrow as pa
from tqdm import tqdm

from ray_distill.failpoints import kill_point
from ray_distill.generation.records import RolloutItem
from ray_distill.generation.rollout import Failure, Outcome
from ray_distill.generation.store import RecordStore, read_stored_keys

log = logging.getLogger(__name__)


def run_items(items: Sequence[RolloutItem], store: RecordStore,
              stream: Callable[[Sequence[RolloutItem]], Iterator[Outcome]], *, progress: bool = True,
              desc: str = "episodes", console: Optional[TextIO] = None) -> dict[str, Any]:
    """Run the items whose keys the store lacks and store their outcomes; returns run counts. The
    progress bar goes to `console` (default: stderr)."""
    todo = [item for item in items if item.key not in store]
    counts: Counter = Counter()
    tokens = correct = 0
    last_failure: dict[tuple, str] = {}
    # Starts the engine and retrieval services; the clock starts once they are up (the rollout
    # workers' own start-up, sandboxes included, is timed).
    outcomes = stream(todo) if todo else iter(())
    start = time.perf_counter()
    with store, tqdm(total=len(todo), desc=desc, unit=" ep", disable=not progress or not todo,
                     mininterval=1.0, dynamic_ncols=True, file=console) as bar:
        for outcome in outcomes:
            if isinstance(outcome, Failure):
                store.add_failure(outcome.key, outcome.attempt, outcome.error)
                counts["failed_attempts"] += 1
                last_failure[outcome.key] = outcome.error
                continue
            if not store.add(outcome):
                counts["duplicates_dropped"] += 1
                continue
            counts["stored"] += 1
            kill_point("driver.record")
            tokens += outcome.get("completion_tokens") or 0
            correct += bool(outcome.get("correct"))
            bar.update(1)
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{counts['stored'] / elapsed:.2f} ep/s, {tokens / elapsed:.0f} tok/s, "
                                f"acc {correct / counts['stored']:.2f}, failed tries {counts['failed_attempts']}",
                                refresh=False)
    seconds = time.perf_counter() - start
    unfinished = [item.key for item in todo if item.key not in store]
    if unfinished:
        reasons = Counter(error_kind(last_failure.get(k, "no outcome")) for k in unfinished)
        log.warning("%d of %d items failed every attempt and stay missing (a rerun retries them): %s; see %s",
                    len(unfinished), len(todo), dict(reasons), store.directory / "failures.jsonl")
    return {"ran": len(todo), "stored": counts["stored"], "unfinished": len(unfinished),
            "failed_attempts": counts["failed_attempts"], "duplicates_dropped": counts["duplicates_dropped"],
            "seconds": round(seconds, 2),
            "items_per_second": round(counts["stored"] / seconds, 3) if todo and seconds > 0 else None,
            "tokens_per_second": round(tokens / seconds, 1) if todo and seconds > 0 else None}


def error_kind(error: str) -> str:
    """"ToolUnavailable: retrieval failed: ..." -> "ToolUnavailable"."""
    return error.split(":", 1)[0].strip() or "error"


SUMMARY_COLUMNS = ("dataset", "correct", "answered_by", "parse_errors", "execution_errors", "num_steps",
                   "context_exhausted")


def summarize(table: pa.Table) -> dict[str, Any]:
    """Counts and accuracy per question set, plus the error kinds seen in trajectories."""
    rows = table.select([c for c in SUMMARY_COLUMNS if c in table.column_names]).to_pylist()
    by_set: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        c = by_set[row["dataset"]]
        c["records"] += 1
        c["correct"] += bool(row["correct"])
        if "answered_by" in row:
            c[f"answered_by_{row['answered_by'] or 'none'}"] += 1
            c["with_parse_errors"] += bool(row["parse_errors"])
            c["with_execution_errors"] += bool(row["execution_errors"])
            c["context_exhausted"] += row["context_exhausted"] is not None
            c["steps"] += row["num_steps"]
    summary = {}
    for name, c in sorted(by_set.items()):
        entry = dict(c)
        entry["accuracy"] = round(c["correct"] / c["records"], 4)
        if "steps" in entry:
            entry["mean_steps"] = round(entry.pop("steps") / c["records"], 2)
        summary[name] = entry
    return summary


def missing_keys(items: Iterable[RolloutItem], store_dir: Path) -> int:
    """How many items a store directory lacks (without opening it for writing)."""
    done = read_stored_keys(store_dir)
    return sum(item.key not in done for item in items)
