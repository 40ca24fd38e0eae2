"""Stage `sweep`: the paper's Table 2 as a Ray Tune grid (docs/METHOD.md, "Results to reproduce").

Trials are students x methods (`evaluation/grid.py`): the CoT-prompted
base student, the CoT-distillation baseline, and agent distillation with
FTP on/off x SAG on/off. First the teacher's data is made once per FTP
setting the trials need (the `cot`, `generate` and `filter` stages, each
skipped when done); then every trial trains its student (trials that
differ only in SAG share one training run, under a lease that holds
across nodes) and evaluates it, and reports its accuracies to Tune. With
`run.storage`, a trial's driver needs no disk it shares with the sweep's
driver: the trial fetches the teacher data (and a sibling's student) from
the storage and stores what it makes there, while it runs and when it
ends, and the driver fetches every trial's student and evaluation at the
end. (The workers a trial starts read the paths of the trial's node:
without a shared mount they must run on that node.)
Tune's experiment lives in `sweep/<experiment>/` (one TensorBoard run per
trial); `sweep/trials.md` lists every trial and its accuracy. The `report`
stage then tabulates all evaluations of the run.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ray_distill.config import ExperimentConfig
from ray_distill.distributed import resources
from ray_distill.distributed.cluster import require_resources
from ray_distill.distributed.locks import cluster_lock, lock_table
from ray_distill.distributed.sweep import FINISHED, concurrent_trials, run_tune
from ray_distill.errors import UserError
from ray_distill.evaluation.grid import sweep_trials, teacher_settings, trained_students
from ray_distill.fileio import write_json_atomic
from ray_distill.stages import load
from ray_distill.stages.base import Stage, StageContext
from ray_distill.stages.paths import (RESULTS, evaluate_dir, evaluated_models, index_dir, logical_run_dir,
                                     on_this_node, sweep_dir, train_dir, train_source, world_dir)
from ray_distill.stages.services import index_shards
from ray_distill.stages.storage import PeriodicPush, RunStorage
from ray_distill.training.export import EXPORT_INFO
from ray_distill.training.sizing import require_fit

log = logging.getLogger(__name__)
TEACHER_OUTPUTS = ("cot", "generate", "filter")
STORAGE_INDEX = "run.storage index"  # the lease that makes the trials' updates of the storage's index take turns


def _teacher_data(ctx: StageContext) -> None:
    """The cot, generate and filter stages for each FTP setting the trials train on (done ones are skipped)."""
    s = ctx.config.sweep
    for config in teacher_settings(ctx.config):
        teacher = StageContext(config=config, run_dir=ctx.run_dir, progress=ctx.progress, console=ctx.console,
                               services=ctx.services)
        needed = ("cot", "generate", "filter") if (config.generate.ftp or s.cot_distill) else ("generate", "filter")
        for name in needed:
            if not load(name).is_complete(teacher):
                log.info("[sweep] teacher data, generate.ftp=%s: %s", config.generate.ftp, name)
                load(name).run(teacher)
    ctx.services.close()  # the teacher's replicas would hold what the trials need


def run_trial(config: ExperimentConfig, run_dir: Path, locks: str) -> dict[str, Any]:
    """Train (unless done, or another trial is training the same student) and evaluate one trial's config;
    returns the metrics Tune records. With `run.storage`, the trial's node may have none of the run: it
    fetches what it reads from there and stores what it makes, so other trials and the driver find it.
    `locks` names the sweep's lease table (`distributed/locks.py`)."""
    train, evaluate = load("train"), load("evaluate")
    ctx = StageContext(config=config, run_dir=run_dir, progress=False)
    storage = (RunStorage(config.run.storage, run_dir, lock=functools.partial(cluster_lock, locks, STORAGE_INDEX))
               if config.run.storage else None)
    interval = config.run.storage_interval
    try:
        if storage:  # the questions, the index to search, the teacher data (whose digest names the training)
            storage.pull(under=[world_dir(ctx), index_dir(ctx), train_source(ctx)])
        if config.evaluate.models == ["distilled"]:
            directory = train_dir(ctx)
            with cluster_lock(locks, f"train {directory.relative_to(run_dir)}"):
                if storage:  # trained already, by a trial that differs in SAG only; else an earlier try's checkpoints
                    storage.pull(under=[directory / "model"])
                    if not train.is_complete(ctx):
                        storage.pull(under=[directory])
                if not train.is_complete(ctx):
                    # Stored while it trains and when it ends, whichever way: the node may go, with all it made.
                    with PeriodicPush(storage, [directory], interval, last=True):
                        train.run(ctx)
                elif storage:  # only the export: the rest may not be here, and a push forgets what is not
                    storage.push([directory / "model"])  # (an earlier try here may have died before storing it)
        model = evaluated_models(ctx)[0]  # a trained student's evaluation is keyed by its export
        results = evaluate_dir(ctx, model) / RESULTS
        if storage:  # an earlier run's evaluation of this trial
            storage.pull(under=[results.parent])
        with PeriodicPush(storage, [results.parent], interval, last=True):
            if not evaluate.is_complete(ctx):
                evaluate.run(ctx)
        if storage:  # written as the evaluation ends
            storage.push([Path(json.loads(results.read_text())["tensorboard"])])
    finally:
        ctx.services.close()
    results = json.loads(results.read_text())
    metrics: dict[str, Any] = {"average": results["average"]}
    for name, m in results["sets"].items():
        metrics[f"accuracy/{name}"] = m["accuracy"]
        for key in ("parse_errors", "execution_errors"):
            if key in m:
                metrics[key] = metrics.get(key, 0) + m[key]
    if model.training is not None:
        export = json.loads((Path(model.name) / EXPORT_INFO).read_text())
        metrics.update(train_steps=export.get("steps"), train_final_loss=export.get("final_loss"))
    return metrics


def _trainable(configs: dict[tuple[str, str], ExperimentConfig], logical_dir: str, locks: str,
               params: dict) -> dict[str, Any]:
    # Tune starts each trial in its own log folder; the config's relative paths are the job's.
    os.chdir(os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd()))
    config = on_this_node(configs[(params["student"], params["method"])], logical_dir)
    return run_trial(config, Path(config.run.dir), locks)


def per_trial_resources(ctx: StageContext) -> dict[str, tuple[float, float]]:
    """What one trial holds at its peak: training, then serving its student, then judging (never at once)."""
    c = ctx.config
    found = resources.roles(c, shards=index_shards(ctx))
    phases = [resources.pick(found, "train worker"),
              resources.pick(found, "student replica", "rollout worker", *resources.RETRIEVAL),
              resources.pick(found, "teacher replica") if c.scoring.judge else []]
    return {"one trial: sweep.trial_cpus + the largest of training (train workers), serving (student replicas, "
            "rollout workers, retrieval) and judging (teacher replicas)": resources.peak(phases, c.sweep.trial_cpus)}


def trials_table(outcomes: list[dict]) -> str:
    sets = list(dict.fromkeys(k.split("/", 1)[1] for o in outcomes for k in o["metrics"] if k.startswith("accuracy/")))
    lines = ["| student | method | status | " + " | ".join(sets) + " | avg |", "|---" * (len(sets) + 4) + "|"]
    for o in outcomes:
        m = o["metrics"]
        cells = ["" if m.get(f"accuracy/{s}") is None else f"{100 * m[f'accuracy/{s}']:.2f}" for s in sets]
        avg = "" if m.get("average") is None else f"{100 * m['average']:.2f}"
        status = o["status"] if not o["error"] else f"ERROR: {o['error'][:120]}"
        lines.append(f"| {o['student']} | {o['method']} | {status} | " + " | ".join(cells) + f" | {avg} |")
    return "\n".join(lines) + "\n"


def _run(ctx: StageContext) -> dict[str, Any]:
    trials = sweep_trials(ctx.config)
    if len({(t.student, t.method) for t in trials}) != len(trials):
        raise UserError(f"two sweep trials share a name: {[(t.student, t.method) for t in trials]}")
    # Checked here, before hours of teacher data: a trial's own stages run in a Tune worker, which did not
    # start this Ray, so they do not check.
    require_resources({}, {f"{s}.resources": getattr(ctx.config, s).resources
                           for s in ("train", "student_engine", "rollout", "retrieval", "sweep")})
    storage = RunStorage(ctx.config.run.storage, ctx.run_dir) if ctx.config.run.storage else None
    teacher = [ctx.run_dir / name for name in TEACHER_OUTPUTS]
    with PeriodicPush(storage, teacher, ctx.config.run.storage_interval):
        _teacher_data(ctx)
    if storage:  # for trials on nodes that do not share this one's disk
        storage.push([world_dir(ctx), index_dir(ctx), *teacher])
    at_once = concurrent_trials(per_trial_resources(ctx), len(trials), ctx.config.sweep.max_concurrent_trials)
    log.info("[sweep] %d trials (%s), %d at a time", len(trials),
             ", ".join(dict.fromkeys(t.method for t in trials)), at_once)
    configs = {(t.student, t.method): t.config for t in trials}
    out = sweep_dir(ctx)
    name = time.strftime("tune-%Y%m%d-%H%M%S")
    locks = f"ray-distill-{name}"
    with lock_table(locks):
        outcomes = run_tune(functools.partial(_trainable, configs, logical_run_dir(ctx.run_dir), locks), list(configs),
                            out, name, {"cpu": ctx.config.sweep.trial_cpus, **ctx.config.sweep.resources}, at_once,
                            ctx.progress, ctx.console)
    if storage:  # what the trials made, wherever they ran: the students and their logs (not their checkpoints)
        trained = {train_dir(StageContext(config=t.config, run_dir=ctx.run_dir, progress=False))
                   for t in trials if t.config.evaluate.models == ["distilled"]}
        storage.pull(under=[*(d / part for d in sorted(trained) for part in ("model", "logs")),
                            ctx.run_dir / "evaluate"])
    order = {key: i for i, key in enumerate(configs)}
    outcomes.sort(key=lambda o: order.get((o["student"], o["method"]), len(order)))
    (out / "trials.md").write_text(trials_table(outcomes))
    write_json_atomic(out / "trials.json", outcomes, indent=2)
    errored = [o for o in outcomes if o["status"] != FINISHED]
    if errored:
        raise UserError(f"{len(errored)} of {len(outcomes)} sweep trials failed (see {out / 'trials.md'}): "
                        + "; ".join(f"{o['student']} {o['method']}: {o['error'] or o['status'].lower()}"
                                    for o in errored[:3])
                        + "; run the stage again to retry them")
    return {"trials": len(outcomes), "at_once": at_once, "table": str(out / "trials.md"),
            "tune": str(out / name), "tensorboard": f"tensorboard --logdir {out / name}"}


def _check(config: ExperimentConfig) -> None:
    """Every student the sweep trains must fit the train workers' GPUs (`train.gpu_memory_gib`)."""
    require_fit(config.train, trained_students(config), "sweep")


def _is_complete(ctx: StageContext) -> bool:
    return (sweep_dir(ctx) / "trials.json").is_file() and all(
        load("evaluate").is_complete(StageContext(config=t.config, run_dir=ctx.run_dir, progress=False))
        for t in sweep_trials(ctx.config))


STAGE = Stage(
    name="sweep",
    inputs=("models", "questions", "generate", "cot", "retrieval", "index", "scoring", "filter", "train",
            "student_engine", "evaluate", "benchmarks", "sweep"),
    run=_run,
    is_complete=_is_complete,
    # The teacher data made before Tune starts, and Tune's records; every trial stores its own training and
    # evaluation. The pipeline's copies while the stage runs would write the storage's index beside the
    # trials', which take turns under a lease that the driver's copies do not hold: `_run` copies the teacher
    # data while it makes it, before the trials start.
    outputs=lambda ctx: [ctx.run_dir / name for name in (*TEACHER_OUTPUTS, "sweep")],
    copied_while_running=False,
    tensorboard=True,
    check=_check,
    headline=lambda summary: f"{summary['trials']} trials, {summary['at_once']} at a time; the table: {summary['table']}",
)
