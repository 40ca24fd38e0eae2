"""Stage `report`: every evaluation of the run in one place.

Collects the `results.json` of every evaluation in the run directory
(each student and method evaluated so far, sweep trials included; the
newest where one was evaluated again under other settings)
and writes `report/report.md` (average accuracy per student and method,
laid out like the paper's Table 2, then per benchmark with error counts,
then EM/F1 and the judge for fact sets), `report/accuracy.png` (average
accuracy against student size, a line per method) and
`report/results.json` (all of it, machine-readable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray_distill.errors import UserError
from ray_distill.evaluation.report import markdown, plot, results_payload
from ray_distill.fileio import write_json_atomic
from ray_distill.stages.base import Stage, StageContext
from ray_distill.stages.paths import report_dir, results_files


def evaluation_results(run_dir: Path) -> list[dict]:
    """The newest finished evaluation of each (student, method, question sets) under `run_dir`: an
    evaluation made again under other settings (temperature, steps, scoring) replaces the older one."""
    newest: dict[tuple, dict] = {}
    for path in results_files(run_dir):
        result = json.loads(path.read_text())
        newest[(result["student"], result["method"], tuple(result["sets"]))] = result
    return list(newest.values())


def write_report(results: list[dict], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(results))
    png = plot(results, out / "accuracy.png")
    write_json_atomic(out / "results.json", results_payload(results), indent=2)
    return {"markdown": str(out / "report.md"), "plot": str(png) if png else None,
            "results": str(out / "results.json"), "evaluations": len(results)}


def _sources(ctx: StageContext) -> list[str]:
    return sorted(str(p.relative_to(ctx.run_dir)) + f"@{p.stat().st_mtime_ns}" for p in results_files(ctx.run_dir))


def _run(ctx: StageContext) -> dict[str, Any]:
    results = evaluation_results(ctx.run_dir)
    if not results:
        raise UserError(f"no evaluation results under {ctx.run_dir / 'evaluate'}; run `ray-distill evaluate CONFIG` "
                        "first")
    summary = write_report(results, report_dir(ctx))
    write_json_atomic(report_dir(ctx) / "sources.json", _sources(ctx))
    return summary


def _is_complete(ctx: StageContext) -> bool:
    sources = report_dir(ctx) / "sources.json"
    return sources.is_file() and json.loads(sources.read_text()) == _sources(ctx)


STAGE = Stage(
    name="report",
    inputs=(),
    run=_run,
    is_complete=_is_complete,
    headline=lambda summary: f"the tables of {summary['evaluations']} evaluation(s)",
)
