"""Stage `evaluate`: models answer held-out questions, scored the way the paper scores them
(docs/METHOD.md stage 6, Table 2).

`evaluate.models` lists what to evaluate: `base` (the untrained student),
`distilled` (this config's train export) or any model name. Each model
answers `evaluate.sets` as a CodeAct agent with the student prompt (SAG
when `evaluate.sag` > 1) or in one chain of thought (`evaluate.mode: cot`,
with optional self-consistency), through the same rollout pipeline as the
teacher, served as `student_engine` says. Answers stream into a record
store per model and settings (`evaluate/<label>/<hash>/`), so an
interrupted evaluation resumes where it stopped; `results.json` there holds
per-set accuracy (EM/F1 and the judge's verdicts for fact questions), the
average, and counts of parse and execution errors and steps. TensorBoard
scalars go to `evaluate/tensorboard/`; the `report` stage tabulates all
evaluations of the run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from torch.utils.tensorboard import SummaryWriter

from ray_distill.agent import AgentConfig, SAGConfig, prompts
from ray_distill.agent.parsing import STOP_STRINGS
from ray_distill.engines.protocol import SamplingParams
from ray_distill.errors import UserError
from ray_distill.evaluation.methods import method_label
from ray_distill.evaluation.metrics import model_metrics
from ray_distill.fileio import write_json_atomic
from ray_distill.generation.driver import missing_keys
from ray_distill.generation.filtering import rescore
from ray_distill.generation.records import COT_SCHEMA, TRAJECTORY_SCHEMA, RolloutItem
from ray_distill.generation.store import RecordStore, read_records, row_key
from ray_distill.models import resolve_model
from ray_distill.models.size import parameter_count
from ray_distill.stages.base import Stage, StageContext
from ray_distill.stages.items import evaluate_items
from ray_distill.stages.paths import (RESULTS, EvaluatedModel, evaluate_dir, evaluate_settings, evaluated_models,
                                      slug)
from ray_distill.stages.services import judge_answers, run_rollouts, scoring
from ray_distill.training.export import EXPORT_INFO


def _rollout_fields(ctx: StageContext) -> dict[str, Any]:
    e = ctx.config.evaluate
    if e.mode == "cot":
        return {"kind": "cot", "sampling": SamplingParams(temperature=e.temperature, max_new_tokens=e.max_new_tokens)}
    sag = SAGConfig(n=e.sag, temperature=e.sag_temperature, top_p=e.sag_top_p) if e.sag > 1 else None
    # The student prompt without worked examples: what the distilled students were trained on.
    agent = AgentConfig(system_prompt=prompts.STUDENT_SYSTEM_PROMPT, few_shot=False, max_steps=e.max_steps, sag=sag,
                        sampling=SamplingParams(temperature=e.temperature, max_new_tokens=e.max_new_tokens,
                                                stop=STOP_STRINGS),
                        forced_answer_tokens=min(e.max_new_tokens, AgentConfig.forced_answer_tokens))
    return {"kind": "agent", "agent": agent}


def _require_model(ctx: StageContext, model: EvaluatedModel) -> None:
    if model.training is not None and not (Path(model.name) / EXPORT_INFO).is_file():
        raise UserError(f"evaluate.models lists distilled, but this config's student is not trained: no export at "
                        f"{model.name}; run `ray-distill train CONFIG` first (again, if train.stop_after_steps "
                        "ended it early), or drop distilled from evaluate.models")


def _records(store_dir: Path, items: list[RolloutItem]) -> list[dict]:
    keys = {item.key for item in items}
    try:
        return [row for row in read_records(store_dir).to_pylist() if row_key(row) in keys]
    except FileNotFoundError:  # every question failed every try
        return []


def _results(ctx: StageContext, model: EvaluatedModel, items: list[RolloutItem], rows: list[dict], store_dir: Path,
             run: dict) -> dict:
    e = ctx.config.evaluate
    try:
        parameters = parameter_count(resolve_model(model.student))
    except UserError:  # a model only an endpoint knows: the report shows its size as "?"
        parameters = None
    return {
        "label": model.label, "model": model.name, "student": model.student, "training": model.training,
        "parameters": parameters, "mode": e.mode,
        "sag": e.sag if e.mode == "agent" else 1, "self_consistency": e.self_consistency if e.mode == "cot" else 1,
        "method": method_label(model.training, e.mode, e.sag, e.self_consistency),
        "scoring": asdict(ctx.config.scoring), "dir": str(store_dir), "run": run, "items": _items_digest(items),
        **model_metrics(rows, e.sets, e.mode),
    }


def _tensorboard(ctx: StageContext, results: dict, store_dir: Path) -> Path:
    """Scalars of one evaluation, as a TensorBoard run named after the student, method and settings."""
    name = slug(f"{results['student']}_{results['method']}_{store_dir.name}")
    log_dir = ctx.run_dir / "evaluate" / "tensorboard" / name
    with SummaryWriter(str(log_dir)) as writer:
        writer.add_scalar("accuracy/average", results["average"] or 0.0, 0)
        for name_, metrics in results["sets"].items():
            for key in ("accuracy", "exact_match", "f1", "judge_accuracy", "mean_steps"):
                if metrics.get(key) is not None:
                    writer.add_scalar(f"{key}/{name_}", metrics[key], 0)
    return log_dir


def _run(ctx: StageContext) -> dict[str, Any]:
    c = ctx.config
    models = evaluated_models(ctx)
    for model in models:
        _require_model(ctx, model)
    items = evaluate_items(ctx)
    schema = TRAJECTORY_SCHEMA if c.evaluate.mode == "agent" else COT_SCHEMA
    answer_field = "final_answer" if c.evaluate.mode == "agent" else "answer"
    ctx.services.close(kind="engine")  # the teacher's replicas would hold what the students need
    runs = {}
    for model in models:
        store = RecordStore(evaluate_dir(ctx, model), schema, c.rollout.flush_every, c.rollout.flush_seconds,
                            settings=evaluate_settings(ctx, model))
        runs[model] = run_rollouts(ctx, items, store, _rollout_fields(ctx), desc=f"evaluate {model.label}",
                                   engine_section="student_engine", model=model.name)
        ctx.services.close(kind="engine")  # the next model's replicas take its place
    # Scored again under the configured scoring (as the filter does), then judged in one go.
    rows = {model: _records(evaluate_dir(ctx, model), items) for model in models}
    for model_rows in rows.values():
        rescore(model_rows, answer_field, scoring(ctx))
    if c.scoring.judge:
        judge_answers(ctx, [(row, answer_field) for model_rows in rows.values() for row in model_rows],
                      ctx.run_dir / "evaluate" / "judge_cache.jsonl")
    summary, unfinished = {}, []
    for model in models:
        store_dir = evaluate_dir(ctx, model)
        if runs[model]["unfinished"]:
            unfinished.append(f"{model.label}: {runs[model]['unfinished']} (see {store_dir / 'failures.jsonl'})")
            continue
        results = _results(ctx, model, items, rows[model], store_dir, runs[model])
        results["tensorboard"] = str(_tensorboard(ctx, results, store_dir))
        write_json_atomic(store_dir / RESULTS, results, indent=2)
        summary[model.label] = {"method": results["method"], "average": results["average"],
                                "accuracy": {name: m["accuracy"] for name, m in results["sets"].items()},
                                "results": str(store_dir / RESULTS)}
    if unfinished:
        raise UserError(f"evaluate: questions failed every try, so no results for them yet: {'; '.join(unfinished)}; "
                        "run the stage again to retry them")
    return summary


def _is_complete(ctx: StageContext) -> bool:
    items = evaluate_items(ctx)
    for model in evaluated_models(ctx):
        if model.training is not None and not Path(model.name).is_dir():
            return False
        store_dir = evaluate_dir(ctx, model)
        if not (store_dir / RESULTS).is_file() or missing_keys(items, store_dir):
            return False
        done = json.loads((store_dir / RESULTS).read_text())
        if done["items"] != _items_digest(items) or done["scoring"] != asdict(ctx.config.scoring):
            return False  # results of other questions (another limit or sets), or scored otherwise
    return True


def _percent(fraction: Optional[float]) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.1f}%"


def _items_digest(items: list[RolloutItem]) -> str:
    return hashlib.sha256(json.dumps(sorted(item.key for item in items)).encode()).hexdigest()[:16]


STAGE = Stage(
    name="evaluate",
    inputs=("models", "questions", "generate", "cot", "retrieval", "index", "scoring", "filter", "train",
            "student_engine", "evaluate", "benchmarks"),
    run=_run,
    is_complete=_is_complete,
    tensorboard=True,
    headline=lambda summary: "; ".join(
        f"{label} ({s['method']}): {_percent(s['average'])} average accuracy" for label, s in summary.items()),
)
