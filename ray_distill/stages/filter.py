"""Stage `filter`: score the teacher's records again with the configured scoring, and choose
the training data (docs/METHOD.md stage 4).

Writes, per FTP setting, `trajectories.parquet` (every trajectory with
`correct`, `judge_correct`, `keep` and `drop_reason`) and, when the `cot`
stage ran, `cot.parquet` (the CoT baseline's data, same columns), plus
`summary.json` with kept and dropped counts by question set and reason.
The stage reruns whenever the records it read have changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import pyarrow as pa

from ray_distill.errors import UserError
from ray_distill.fileio import write_json_atomic, write_parquet_atomic
from ray_distill.generation.filtering import cot_drop_reason, rescore, trajectory_drop_reason, verdict_summary
from ray_distill.generation.records import COT_SCHEMA, TRAJECTORY_SCHEMA, VERDICT_FIELDS
from ray_distill.generation.store import part_files, read_records, row_key
from ray_distill.stages.base import Stage, StageContext
from ray_distill.stages.items import cot_items, generate_items
from ray_distill.stages.paths import cot_dir, filter_dir, generate_dir
from ray_distill.stages.services import judge_answers, scoring

SOURCE = "source.json"


def _sources(ctx: StageContext) -> dict[str, Any]:
    """The record stores this filter reads, with their part files (parts only ever get added)."""
    stores = {"trajectories": generate_dir(ctx), "cot": cot_dir(ctx)}
    return {name: {"dir": str(d), "parts": [p.name for p in part_files(d)]} for name, d in stores.items()}


def _rows(source: dict, keys: set) -> list[dict]:
    """The records of the configured questions (a store may also hold questions no longer configured)."""
    return [row for row in read_records(source["dir"]).to_pylist() if row_key(row) in keys]


def _judge(tables: list[tuple[list[dict], str]], ctx: StageContext) -> int:
    asks = [(row, field) for rows, field in tables for row in rows]
    return judge_answers(ctx, asks, ctx.run_dir / "filter" / "judge_cache.jsonl")


def _write(rows: list[dict], drop_reason: Callable[[dict, Any], Optional[str]], ctx: StageContext,
           schema: pa.Schema, out: Path) -> dict[str, Any]:
    for row in rows:
        reason = drop_reason(row, ctx.config.filter)
        row.update(keep=reason is None, drop_reason=reason)
    schema = pa.schema([*schema, *(pa.field(n, t) for n, t in VERDICT_FIELDS)])
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=schema), out)
    return {"file": str(out), "records": len(rows), "kept": sum(r["keep"] for r in rows),
            "by_set": verdict_summary(rows)}


def _run(ctx: StageContext) -> dict[str, Any]:
    sources = _sources(ctx)
    if not sources["trajectories"]["parts"]:
        raise UserError(f"no trajectories at {sources['trajectories']['dir']}; run `ray-distill generate CONFIG` first")
    out = filter_dir(ctx)
    out.mkdir(parents=True, exist_ok=True)
    trajectories = _rows(sources["trajectories"], {i.key for i in generate_items(ctx, check_prefixes=False)})
    cot = _rows(sources["cot"], {i.key for i in cot_items(ctx)}) if sources["cot"]["parts"] else []
    tables = [(trajectories, "final_answer"), (cot, "answer")]
    for rows, field in tables:
        rescore(rows, field, scoring(ctx))
    asked = _judge(tables, ctx) if ctx.config.scoring.judge else 0
    summary = {"judge_calls": asked,
               "trajectories": _write(trajectories, trajectory_drop_reason, ctx, TRAJECTORY_SCHEMA,
                                      out / "trajectories.parquet")}
    if sources["cot"]["parts"]:
        summary["cot"] = _write(cot, cot_drop_reason, ctx, COT_SCHEMA, out / "cot.parquet")
    else:
        (out / "cot.parquet").unlink(missing_ok=True)  # from a run whose CoT settings no longer apply
    write_json_atomic(out / "summary.json", summary, indent=2)
    write_json_atomic(out / SOURCE, sources, indent=2)  # last: it marks the outputs complete
    return summary


def _is_complete(ctx: StageContext) -> bool:
    path = filter_dir(ctx) / SOURCE
    return path.is_file() and json.loads(path.read_text()) == _sources(ctx)


def _headline(summary: dict[str, Any]) -> str:
    kept = [f"kept {s['kept']} of {s['records']} {what}" for what, s in
            (("trajectories", summary["trajectories"]), ("CoT answers", summary.get("cot"))) if s]
    return ", ".join(kept) + (f" ({summary['judge_calls']} judge calls)" if summary["judge_calls"] else "")


STAGE = Stage(
    name="filter",
    inputs=("models", "questions", "generate", "cot", "retrieval", "index", "scoring", "filter"),
    run=_run,
    is_complete=_is_complete,
    headline=_headline,
)
