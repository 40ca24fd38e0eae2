"""`ray-distill resources`: what each stage's Ray actors and tasks reserve, role by role (from the
resource model, `distributed/resources.py`), and one train worker's GPU memory (the memory model)."""

from __future__ import annotations

from ray_distill.config import ExperimentConfig
from ray_distill.distributed.resources import roles
from ray_distill.evaluation.grid import trained_students
from ray_distill.training.sizing import memory_table


def table(config: ExperimentConfig) -> str:
    """The roles of the stages in `run.stages`, as a Markdown table."""
    lines = ["| role | sized by | stages | at once | each reserves (one node) |", "|---|---|---|---|---|"]
    for role in (r for r in roles(config) if set(r.stages) & set(config.run.stages)):
        each = ", ".join(f"{k} {v:g}" for k, v in role.bundle.items()) or "nothing"
        lines.append(f"| {role.name} | `{role.setting}` | {', '.join(role.stages)} | {role.describe_count()} | {each} |")
    note = ("\n\nIn `sweep`, each trial running at once has its own train workers, student replicas, judge and "
            "retrieval service (`sweep.max_concurrent_trials`).") if "sweep" in config.run.stages else ""
    return "\n".join(lines) + note + "\n" + _train_memory(config)


def _train_memory(config: ExperimentConfig) -> str:
    """The memory model's view of one train worker's GPU, for each student the stages train."""
    if "sweep" in config.run.stages:
        students, where = trained_students(config), "sweep"
    elif "train" in config.run.stages:
        students, where = [config.models.student], "train"
    else:
        return ""
    if not students or not config.train.gpus_per_worker:
        return ""
    return ("\nOne train worker's GPU memory at its peak (the memory model, `training/memory.py`; GiB):\n\n"
            + memory_table(config.train, students, where))
