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

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ray_distill.agent import prompts
from ray_distill.errors import UserError
from ray_distill.generation.records import RolloutItem
from ray_distill.stages.base import Stage, StageContext

RESULTS = "results.json"


@dataclass(frozen=True)
class EvaluatedModel:
    label: str  # base, distilled, or the configured name
    name: str  # what the engine loads
    student: str  # the student it is (for the report's rows)
    training: Optional[str]  # None (untrained), cot, agent-ftp or agent-no-ftp


def evaluated_models(ctx: StageContext) -> list[EvaluatedModel]:
    from ray_distill.stages.train import student_model_dir, training_label

    c = ctx.config
    models = []
    for entry in c.evaluate.models:
        if entry == "base":
            models.append(EvaluatedModel("base", c.models.student, c.models.student, None))
        elif entry == "distilled":
            models.append(EvaluatedModel("distilled", str(student_model_dir(ctx)), c.models.student,
                                         training_label(c)))
        else:
            models.append(EvaluatedModel(entry, entry, entry, None))
    return models


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def evaluate_dir(ctx: StageContext, model: EvaluatedModel) -> Path:
    """The record store of one model under this config's evaluation settings."""
    from ray_distill.generation.driver import settings_dir
    from ray_distill.stages.rollouts import engine_spec, retrieval_settings, set_digests

    c, e = ctx.config, ctx.config.evaluate
    # More questions (limit) or more CoT samples add keys to the same store; settings that do not apply
    # to the mode stay out, so the same evaluation made under two configs shares one store.
    unused = {"models", "sets", "limit", "self_consistency"}
    if e.mode == "cot":
        unused |= {"sag", "sag_temperature", "sag_top_p", "max_steps"}
    elif e.sag == 1:
        unused |= {"sag_temperature", "sag_top_p"}
    settings = {k: v for k, v in asdict(e).items() if k not in unused}
    label = model.label if model.training is None else f"{model.label}-{model.training}"
    return settings_dir(ctx.run_dir / "evaluate" / _slug(label), {
        "model": model.name, "model_export": _export_digest(model), "student": model.student,
        "training": model.training, "evaluate": settings,
        "prompt_version": prompts.PROMPT_VERSION if e.mode == "agent" else prompts.COT_PROMPT_VERSION,
        "engine": repr(engine_spec(c.student_engine, model.name)), "questions": set_digests(ctx, e.sets),
        "retrieval": retrieval_settings(ctx) if e.mode == "agent" else None})


def _export_digest(model: EvaluatedModel) -> Optional[str]:
    """A distilled model's export record, so a retrained export is evaluated anew."""
    from ray_distill.data.datasets import file_digest
    from ray_distill.training.export import EXPORT_INFO

    info = Path(model.name) / EXPORT_INFO
    return file_digest(info) if model.training is not None and info.is_file() else None


def evaluate_items(ctx: StageContext) -> list[RolloutItem]:
    from ray_distill.stages.rollouts import question_items

    e = ctx.config.evaluate
    samples = e.self_consistency if e.mode == "cot" else 1
    return question_items(ctx, e.sets, e.limit, samples=samples, seed=e.seed)


def _rollout_fields(ctx: StageContext) -> dict[str, Any]:
    from ray_distill.agent import AgentConfig, SAGConfig
    from ray_distill.agent.parsing import STOP_STRINGS
    from ray_distill.engines.protocol import SamplingParams

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
    from ray_distill.training.export import EXPORT_INFO

    if model.training is not None and not (Path(model.name) / EXPORT_INFO).is_file():
        raise UserError(f"evaluate.models lists distilled, but this config's student is not trained: no export at "
                        f"{model.name}; run `ray-distill train CONFIG` first (again, if train.stop_after_steps "
                        "ended it early), or drop distilled from evaluate.models")


def _records(store_dir: Path, items: list[RolloutItem]) -> list[dict]:
    from ray_distill.generation.store import read_records, row_key

    keys = {item.key for item in items}
    try:
        return [row for row in read_records(store_dir).to_pylist() if row_key(row) in keys]
    except FileNotFoundError:  # every question failed every try
        return []


def _results(ctx: StageContext, model: EvaluatedModel, items: list[RolloutItem], rows: list[dict], store_dir: Path,
             run: dict) -> dict:
    from ray_distill.evaluation.methods import method_label
    from ray_distill.evaluation.metrics import model_metrics
    from ray_distill.models import resolve_model
    from ray_distill.models.size import parameter_count

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
    from torch.utils.tensorboard import SummaryWriter

    name = _slug(f"{results['student']}_{results['method']}_{store_dir.name}")
    log_dir = ctx.run_dir / "evaluate" / "tensorboard" / name
    with SummaryWriter(str(log_dir)) as writer:
        writer.add_scalar("accuracy/average", results["average"] or 0.0, 0)
        for name_, metrics in results["sets"].items():
            for key in ("accuracy", "exact_match", "f1", "judge_accuracy", "mean_steps"):
                if metrics.get(key) is not None:
                    writer.add_scalar(f"{key}/{name_}", metrics[key], 0)
    return log_dir


def _run(ctx: StageContext) -> dict[str, Any]:
    from ray_distill.fileio import write_json_atomic
    from ray_distill.generation.records import COT_SCHEMA, TRAJECTORY_SCHEMA
    from ray_distill.generation.store import RecordStore
    from ray_distill.stages.rollouts import judge_fact_answers, rescore, run_rollouts

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
        store = RecordStore(evaluate_dir(ctx, model), schema, c.rollout.flush_every, c.rollout.flush_seconds)
        runs[model] = run_rollouts(ctx, items, store, _rollout_fields(ctx), desc=f"evaluate {model.label}",
                                   engine_section="student_engine", model=model.name)
        ctx.services.close(kind="engine")  # the next model's replicas take its place
    # Scored again under the configured scoring (as the filter does), then judged in one go.
    rows = {model: _records(evaluate_dir(ctx, model), items) for model in models}
    for model_rows in rows.values():
        rescore(model_rows, answer_field, ctx)
    if c.scoring.judge:
        judge_fact_answers(ctx, [(row, answer_field) for model_rows in rows.values() for row in model_rows],
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
    from ray_distill.generation.driver import missing_keys

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


def _items_digest(items: list[RolloutItem]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(sorted(item.key for item in items)).encode()).hexdigest()[:16]


STAGE = Stage(
    name="evaluate",
    help="the base and distilled students answer held-out questions (agent with SAG, or CoT); accuracy per set",
    inputs=("models", "questions", "generate", "cot", "retrieval", "index", "scoring", "filter", "train",
            "student_engine", "evaluate", "benchmarks"),
    run=_run,
    is_complete=_is_complete,
    tensorboard=True,
)
