"""What each role of a config reserves on a Ray cluster: the one resource model.

`roles(config)` lists every Ray actor and task kind the stages start, how
many run at once, and what one reserves on a node. Everything that sizes or
checks a reservation derives from it: the stages' capacity checks on a Ray
this process started (`requirement`), the sweep's per-trial peak,
`ray-distill resources`, and the tests that check the node types of
`cluster/` against the configs in `experiments/`. The engine router places
replicas with `replica_bundles`, so the tensor-parallel rule is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

RETRIEVAL = ("retrieval router", "retrieval shard")


def replica_bundles(gpus: int, cpus: float, custom: dict[str, float]) -> list[dict[str, float]]:
    """The placement of one engine replica. A tensor-parallel replica (above one GPU) is a placement group
    of one bundle per GPU, each with the replica's CPUs and custom resources (STRICT_PACK keeps them on
    one node); any other replica is one bundle."""
    if gpus > 1:
        return [{"GPU": 1, "CPU": cpus, **custom} for _ in range(gpus)]
    return [{"CPU": cpus, "GPU": gpus, **custom}]


@dataclass(frozen=True)
class Role:
    name: str
    setting: str  # the config section that sizes it
    stages: tuple[str, ...]
    count: int  # at once (per index shard where `per_shard`)
    bundle: dict[str, float]  # what one reserves, on one node
    per_shard: bool = False

    def fits(self, node: dict[str, float]) -> bool:
        return all(amount <= node.get(name, 0) + 1e-9 for name, amount in self.bundle.items() if amount > 0)

    def total(self) -> tuple[float, float]:
        """The CPUs and GPUs all of them reserve."""
        return self.count * self.bundle.get("CPU", 0.0), self.count * self.bundle.get("GPU", 0.0)

    def custom(self) -> dict[str, float]:
        return {k: v for k, v in self.bundle.items() if k not in ("CPU", "GPU")}

    def describe_count(self) -> str:
        return f"{self.count} per shard" if self.per_shard else str(self.count)


def _bundle(cpus: float, gpus: float, custom: dict[str, float]) -> dict[str, float]:
    return {name: amount for name, amount in {"CPU": cpus, "GPU": gpus, **custom}.items() if amount}


def _replica(name: str, setting: str, stages: tuple[str, ...], e) -> Role:
    one_node: dict[str, float] = {}
    for bundle in replica_bundles(e.gpus_per_replica, e.cpus_per_replica, e.resources):
        for key, amount in bundle.items():
            one_node[key] = one_node.get(key, 0.0) + amount
    return Role(name, setting, stages, e.replicas, _bundle(one_node.pop("CPU"), one_node.pop("GPU"), one_node))


def roles(config, shards: Optional[int] = None) -> list[Role]:
    """Every role the config's stages start (whichever stages `run.stages` lists). With the index's
    `shards` known, the retrieval shards' count is the total; else it is per shard. An index encoder
    whose GPUs are left to the cluster (`index.encoder_gpus: null`) is shown as a CPU encoder."""
    c = config
    teacher_stages = ("cot", "generate", "filter", "evaluate", "sweep") if c.scoring.judge else ("cot", "generate", "sweep")
    r, q, t, i = c.rollout, c.retrieval, c.train, c.index
    found = [
        Role("index encoder", "index", ("index",), i.encoders,
             _bundle(0 if i.encoder_gpus else i.encoder_cpus, i.encoder_gpus or 0, i.resources)),
        Role("index build task", "index", ("index",), 1, _bundle(1, 0, i.resources), per_shard=True),
        _replica("teacher replica (and the judge)" if c.scoring.judge else "teacher replica", "teacher_engine",
                 teacher_stages, c.teacher_engine),
        Role("rollout worker (with its sandboxes)", "rollout", ("cot", "generate", "evaluate", "sweep"), r.workers,
             _bundle(r.worker_cpus, 0, r.resources)),
        Role("train worker", "train", ("train", "sweep"), t.workers,
             _bundle(t.cpus_per_worker, t.gpus_per_worker, t.resources)),
        _replica("student replica", "student_engine", ("evaluate", "sweep"), c.student_engine),
        Role("sweep trial (its driver)", "sweep", ("sweep",), c.sweep.max_concurrent_trials or 1,
             _bundle(c.sweep.trial_cpus, 0, c.sweep.resources)),
    ]
    if not q.url:
        found += [Role("retrieval router", "retrieval", ("generate", "evaluate", "sweep"), q.replicas,
                       _bundle(q.router_cpus, 0, q.resources)),
                  Role("retrieval shard", "retrieval", ("generate", "evaluate", "sweep"),
                       q.replicas if shards is None else q.replicas * shards,
                       _bundle(q.shard_cpus, q.shard_gpus, q.resources), per_shard=shards is None)]
    return found


def pick(found: Iterable[Role], *names: str) -> list[Role]:
    """The roles whose names start with one of `names`, in that order."""
    found = list(found)
    return [role for name in names for role in found if role.name.startswith(name)]


def requirement(found: Iterable[Role]) -> tuple[dict[str, tuple[float, float]], dict[str, dict[str, float]]]:
    """What `found` reserve all at once, as `cluster.require_resources` takes it: (CPUs, GPUs) by role, and
    the custom resources by the setting that asks for them."""
    plan: dict[str, tuple[float, float]] = {}
    custom: dict[str, dict[str, float]] = {}
    for role in found:
        plan[f"{role.count} x {role.name} (`{role.setting}`)"] = role.total()
        custom.setdefault(f"{role.setting}.resources", {}).update(role.custom())
    return plan, custom


def peak(phases: Iterable[Iterable[Role]], extra_cpus: float = 0.0) -> tuple[float, float]:
    """The (CPUs, GPUs) of the largest of phases that never overlap, plus `extra_cpus`."""
    totals = [tuple(sum(role.total()[n] for role in phase) for n in (0, 1)) for phase in phases]
    return max((t[0] for t in totals), default=0.0) + extra_cpus, max((t[1] for t in totals), default=0.0)
