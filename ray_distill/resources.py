"""What each stage of a config asks of a cluster: its Ray actors and tasks by role, how many run at
once, and what one of them reserves on a node. `ray-distill resources CONFIG` prints it; the tests
check the node types of cluster/ against it for the configs in experiments/.

A tensor-parallel replica is one bundle: its GPUs must share a node (a STRICT_PACK placement group).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ray_distill.config import ExperimentConfig
from ray_distill.config.schema import EngineConfig


@dataclass(frozen=True)
class Role:
    name: str
    setting: str  # the config section that sizes it
    stages: tuple[str, ...]
    count: Union[int, str]  # at once; a text where it follows the index's shard count
    bundle: dict[str, float] = field(default_factory=dict)  # what one reserves, on one node

    def fits(self, node: dict[str, float]) -> bool:
        return all(amount <= node.get(name, 0) + 1e-9 for name, amount in self.bundle.items() if amount > 0)


def _bundle(cpus: float, gpus: float, custom: dict[str, float]) -> dict[str, float]:
    return {name: amount for name, amount in {"CPU": cpus, "GPU": gpus, **custom}.items() if amount}


def _replica(name: str, setting: str, stages: tuple[str, ...], e: EngineConfig) -> Role:
    per_gpu = max(1, e.gpus_per_replica)  # a tensor-parallel replica reserves its CPUs once per GPU
    return Role(name, setting, stages, e.replicas,
                _bundle(e.cpus_per_replica * per_gpu, e.gpus_per_replica,
                        {k: v * per_gpu for k, v in e.resources.items()}))


def roles(config: ExperimentConfig) -> list[Role]:
    """Every role the config's stages start (whichever stages `run.stages` lists). An index encoder
    whose GPUs are left to the cluster (`index.encoder_gpus: null`) is shown as a CPU encoder."""
    c = config
    teacher_stages = ("cot", "generate", "filter", "evaluate", "sweep") if c.scoring.judge else ("cot", "generate", "sweep")
    student_stages = ("evaluate", "sweep")
    r, q, t, i = c.rollout, c.retrieval, c.train, c.index
    found = [
        Role("index encoder", "index", ("index",), i.encoders,
             _bundle(0 if i.encoder_gpus else i.encoder_cpus, i.encoder_gpus or 0, i.resources)),
        Role("index build task", "index", ("index",), "one per shard", _bundle(1, 0, i.resources)),
        _replica("teacher replica (and the judge)" if c.scoring.judge else "teacher replica", "teacher_engine",
                 teacher_stages, c.teacher_engine),
        Role("rollout worker (with its sandboxes)", "rollout", ("cot", "generate", "evaluate", "sweep"), r.workers,
             _bundle(r.worker_cpus, 0, r.resources)),
        Role("train worker", "train", ("train", "sweep"), t.workers,
             _bundle(t.cpus_per_worker, t.gpus_per_worker, t.resources)),
        _replica("student replica", "student_engine", student_stages, c.student_engine),
    ]
    if not q.url:
        found += [Role("retrieval router", "retrieval", ("generate", "evaluate", "sweep"), q.replicas,
                       _bundle(q.router_cpus, 0, q.resources)),
                  Role("retrieval shard", "retrieval", ("generate", "evaluate", "sweep"), f"one per shard x {q.replicas}",
                       _bundle(q.shard_cpus, q.shard_gpus, q.resources))]
    return found


def table(config: ExperimentConfig) -> str:
    """The roles of the stages in `run.stages`, as a Markdown table."""
    lines = ["| role | sized by | stages | at once | each reserves (one node) |", "|---|---|---|---|---|"]
    for role in (r for r in roles(config) if set(r.stages) & set(config.run.stages)):
        each = ", ".join(f"{k} {v:g}" for k, v in role.bundle.items()) or "nothing"
        lines.append(f"| {role.name} | `{role.setting}` | {', '.join(role.stages)} | {role.count} | {each} |")
    note = ("\n\nIn `sweep`, each trial running at once has its own train workers, student replicas, judge and "
            "retrieval service (`sweep.max_concurrent_trials`).") if "sweep" in config.run.stages else ""
    return "\n".join(lines) + note + "\n" + _train_memory(config)


def _train_memory(config: ExperimentConfig) -> str:
    """The memory model's view of one train worker's GPU, for each student the stages train."""
    from ray_distill.evaluation.grid import trained_students
    from ray_distill.training.sizing import memory_table

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
