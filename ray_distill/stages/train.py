"""Stage `train`: fine-tune the student on the kept teacher data (docs/METHOD.md stage 5).

Reads the filter stage's kept records (`train.data`: agent trajectories or
the CoT baseline), renders them with the student's chat template into
packed, loss-masked sequences (`sft/`), trains on Ray Train with DeepSpeed
(`ray/` holds the checkpoints; `logs/` the step log, TensorBoard, and
`compute.json`: how the workers computed a step, and why), and
exports the student (`model/`). Each distinct student, data and setting
trains in its own directory, and an interrupted run resumes from its last
checkpoint.
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
from tqdm import tqdm

from ray_distill.distributed.cluster import require_resources
from ray_distill.distributed.resources import pick, requirement, roles
from ray_distill.distributed.training import COMPUTE_FILE, TrainJob, fit_student
from ray_distill.errors import UserError
from ray_distill.fileio import write_json_atomic
from ray_distill.generation.store import SETTINGS
from ray_distill.models.cache import torch_extensions_dir
from ray_distill.models.resolve import resolve_model
from ray_distill.stages.base import Stage, StageContext
from ray_distill.stages.paths import student_model_dir, train_dir, train_settings, train_source
from ray_distill.training.data_order import steps_per_epoch
from ray_distill.training.export import EXPORT_INFO, export_student
from ray_distill.training.loop import CHECKPOINT_TAG
from ray_distill.training.sft_data import build_sft
from ray_distill.training.sizing import require_fit


def _require_source(ctx: StageContext) -> Path:
    source = train_source(ctx)
    if not source.is_file():
        raise UserError(f"train needs the filter stage's {source.name} ({source}); run `ray-distill filter CONFIG` "
                        "first" + (" with the cot stage done" if ctx.config.train.data == "cot" else ""))
    return source


def _kept_rows(ctx: StageContext) -> list[dict]:
    source = _require_source(ctx)
    rows = [row for row in pq.read_table(source).to_pylist() if row["keep"]]
    if not rows:
        raise UserError(f"no kept records in {source} to train on: see {source.parent / 'summary.json'} for why "
                        "each was dropped")
    return rows


def _run(ctx: StageContext) -> dict[str, Any]:
    c, t = ctx.config, ctx.config.train
    _require_source(ctx)
    out = train_dir(ctx)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / SETTINGS).is_file():
        write_json_atomic(out / SETTINGS, train_settings(ctx), sort_keys=True)
    model_dir = resolve_model(c.models.student)
    sft_summary = out / "sft" / "summary.json"
    if not sft_summary.is_file():
        write_json_atomic(sft_summary, build_sft(_kept_rows(ctx), t.data, model_dir, t, out / "sft"), indent=2)
    sft = json.loads(sft_summary.read_text())
    if not sft["sequences"]:
        raise UserError(f"no kept record fits train.max_length = {t.max_length} tokens with a trained token in it "
                        f"(train.truncation = {t.truncation}): nothing to train on; see {sft_summary}")

    ctx.services.close()  # the teacher's replicas would hold the CPUs and GPUs the workers need
    require_resources(*requirement(pick(roles(c), "train worker")))
    # Absolute, as Ray Train runs each worker in a folder of its own: the run's paths are (StageContext), a
    # student named by a relative path is made so here.
    job = TrainJob(model_dir=str(model_dir.resolve()), data_dir=str(out / "sft"), storage_dir=str(out / "ray"),
                   log_dir=str(out / "logs"), num_sequences=sft["sequences"],
                   torch_extensions_dir=str(torch_extensions_dir()))
    total_steps = steps_per_epoch(sft["sequences"], t.global_batch_size) * t.epochs
    with _step_bar(ctx, Path(job.log_dir) / "steps.jsonl", total_steps):
        result = fit_student(t, job)
    metrics = result["metrics"]
    summary = {"dir": str(out), "sft": sft, "steps": metrics.get("step"), "total_steps": metrics.get("total_steps"),
               "final_loss": metrics.get("loss"), **json.loads((out / "logs" / COMPUTE_FILE).read_text()),
               "tensorboard": str(out / "logs" / "tensorboard")}
    if metrics.get("step") != metrics.get("total_steps"):
        return {**summary, "stopped": "train.stop_after_steps reached; run again to continue"}
    export_student(Path(result["checkpoint"]), CHECKPOINT_TAG, model_dir, t, student_model_dir(ctx),
                   {"student": c.models.student, "steps": metrics["step"], "final_loss": metrics.get("loss")})
    return {**summary, "model": str(student_model_dir(ctx))}


@contextmanager
def _step_bar(ctx: StageContext, steps_log: Path, total: int) -> Iterator[None]:
    """The stage's progress bar, drawn here on the driver from the step log, where rank 0 writes a line per
    optimizer step (the run directory is on storage every node mounts): a bar drawn in a Ray Train worker
    would reach the driver as the worker's output, which goes to the run's log file."""
    if not ctx.progress:
        yield
        return
    steps, stop = _LineCount(steps_log), threading.Event()
    with tqdm(total=total, desc="train steps", unit=" step", file=ctx.console, dynamic_ncols=True) as bar:
        def show() -> None:
            done = steps()
            if done != bar.n:  # fewer after a restart, which replaces the log from its checkpoint on
                bar.update(done - bar.n)

        def follow() -> None:
            while not stop.wait(1.0):
                show()

        thread = threading.Thread(target=follow, name="train-step-bar", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            show()


class _LineCount:
    """The complete lines of a file that grows by appends, read incrementally; a file replaced (as a
    resumed StepLog replaces its own, keeping the steps up to the checkpoint) is counted anew."""

    def __init__(self, path: Path):
        self.path, self.inode, self.offset, self.lines = path, None, 0, 0

    def __call__(self) -> int:
        try:
            with open(self.path, "rb") as handle:
                inode = os.fstat(handle.fileno()).st_ino
                if inode != self.inode:
                    self.inode, self.offset, self.lines = inode, 0, 0
                handle.seek(self.offset)
                new = handle.read()
        except OSError:  # not written yet, or the shared storage hiccuped: the bar waits, training goes on
            return self.lines
        complete = new[:new.rfind(b"\n") + 1]
        self.offset += len(complete)
        self.lines += complete.count(b"\n")
        return self.lines


def _headline(summary: dict[str, Any]) -> str:
    loss = summary["final_loss"]
    line = (f"{summary['steps']} of {summary['total_steps']} steps on {summary['sft']['sequences']} sequences"
            + (f", final loss {loss:.3f}" if loss is not None else ""))
    return line + ("; stopped at train.stop_after_steps, run again to continue" if "stopped" in summary else "")


def _check(config) -> None:
    """The student must fit the train workers' GPUs (`train.gpu_memory_gib`), by the memory model."""
    require_fit(config.train, [config.models.student], "train")


def _is_complete(ctx: StageContext) -> bool:
    return (student_model_dir(ctx) / EXPORT_INFO).is_file()


STAGE = Stage(
    name="train",
    inputs=("models", "questions", "generate", "cot", "retrieval", "index", "scoring", "filter", "train"),
    run=_run,
    is_complete=_is_complete,
    tensorboard=True,
    check=_check,
    headline=_headline,
)
