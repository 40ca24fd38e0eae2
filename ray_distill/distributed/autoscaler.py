"""Work that no node type of an autoscaling cluster can hold fails fast, naming the role that asked.

Ray only reports the autoscaler's verdict ("No available node types can fulfill resource request ...") as a
cluster event, and the actors and tasks wait forever. While a stage runs, `failing_fast_when_infeasible`
reads those events and, when a shape is one the stage's roles ask for, interrupts the stage with an error
naming the role, its resources and its settings.
"""

from __future__ import annotations

import _thread
import ast
import contextlib
import logging
import re
import threading
import time
from typing import Iterable, Iterator

import ray

from ray_distill.distributed.cluster import started_locally
from ray_distill.distributed.resources import Role
from ray_distill.errors import UserError

log = logging.getLogger(__name__)

# v1: "... resource request {...}. Add ..."; v2: "... resource requests {...}*2, {...}*1".
INFEASIBLE = "No available node types can fulfill"
# Reserved beside a role's own CPUs and GPUs by the libraries that start it (a probe with no CPU, a Tune trial's
# MiB of memory), so a shape is traced to a role by the rest.
_BESIDE = ("CPU", "memory", "object_store_memory")


def infeasible_shapes(message: str) -> list[dict[str, float]]:
    """The resource shapes an autoscaler event says no node type can hold (none for any other event)."""
    if INFEASIBLE not in message:
        return []
    shapes = []
    for text in re.findall(r"\{[^{}]*\}", message):
        with contextlib.suppress(ValueError, SyntaxError):
            shape = ast.literal_eval(text)
            if isinstance(shape, dict) and shape:
                shapes.append({str(k): float(v) for k, v in shape.items()})
    return shapes


def _same(a: dict[str, float], b: dict[str, float], ignore: tuple[str, ...] = ()) -> bool:
    keys = {k for k, v in {**a, **b}.items() if v and k not in ignore}
    return bool(keys) and all(abs(a.get(k, 0.0) - b.get(k, 0.0)) < 1e-6 for k in keys)


def roles_asking(shape: dict[str, float], roles: Iterable[Role]) -> list[Role]:
    """The roles whose reservation `shape` is: those with the same bundle, else the same GPUs and custom
    resources (a library may add CPUs or memory around them: a probe task takes none), else the same custom
    resources (the tasks that feed a role, such as its data's reads, carry its custom resources only). With no
    custom resource to tell it apart, a shape with more CPUs than the role's is not the role's: another job
    asking for a bare GPU with more CPUs than any node has must not fail this stage."""
    roles = list(roles)
    found = [r for r in roles if _same(r.bundle, shape)]
    found = found or [r for r in roles if _same(r.bundle, shape, _BESIDE) and (
        _custom(r.bundle) or shape.get("CPU", 0.0) <= r.bundle.get("CPU", 0.0) + 1e-6)]
    return found or [r for r in roles if _same(r.bundle, shape, (*_BESIDE, "GPU"))]


def _custom(resources: dict[str, float]) -> bool:
    return any(v and k not in (*_BESIDE, "GPU") for k, v in resources.items())


def _describe(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def infeasible_error(stage: str, roles: list[Role], shape: dict[str, float], message: str) -> UserError:
    asked = " or ".join(f"a {r.name}: it asks for {_describe(r.bundle)} (`{r.setting}`: its CPU and GPU settings "
                        f"and {r.setting}.resources)" for r in roles)
    return UserError(f"[{stage}] no node type of this cluster can hold {asked}; change those settings or add a node "
                     f"type that has them. The autoscaler cannot place {_describe(shape)}: {message.strip()}")


@contextlib.contextmanager
def failing_fast_when_infeasible(stage: str, roles: Iterable[Role], poll_s: float = 2.0) -> Iterator[None]:
    """On a cluster with an autoscaler, raise a `UserError` naming the role and its resources as soon as the
    autoscaler says that no node type can hold what one of `roles` asks for, instead of waiting forever. A
    shape none of them asks for (another job's, on a shared cluster) is only logged."""
    roles = list(roles)
    if started_locally() or not roles:
        yield
        return
    verdict = _Verdict()
    since = time.time() - 2  # events carry whole seconds
    threading.Thread(target=_watch, args=(stage, roles, since, poll_s, verdict), name="infeasible-watch",
                     daemon=True).start()
    failure = None
    try:
        yield
    except BaseException as e:
        failure = e
    while True:  # the interrupt may land as the block ends, before `finish` can take it
        try:
            error = verdict.finish()
            break
        except KeyboardInterrupt:
            if verdict.error is None:
                raise
    if error is not None and failure is not None:
        raise error from None
    if failure is not None:
        raise failure
    if error is not None:  # the stage finished all the same: the shape was also some other work's
        log.warning("%s", error)


class _Verdict:
    """What the watch found, and the turns its interrupt and the block's end take: no interrupt arrives after
    the block ends."""

    def __init__(self) -> None:
        self.error: UserError | None = None
        self.done = threading.Event()
        self._turn = threading.Lock()

    def interrupt(self, error: UserError) -> None:
        with self._turn:
            if not self.done.is_set():
                self.error = error
                # The stage is blocked in a Ray call (or a library's loop over them), which checks for signals.
                _thread.interrupt_main()

    def finish(self) -> UserError | None:
        """End the watch; the error found, if any, with the KeyboardInterrupt sent for it taken here (it may
        still be pending, and would otherwise surface wherever the caller is next)."""
        while True:
            try:
                with self._turn:
                    self.done.set()
                if self.error is not None:
                    time.sleep(0.01)  # a pending interrupt is taken right after this call
                return self.error
            except KeyboardInterrupt:
                if self.error is None:
                    raise


def _watch(stage: str, roles: list[Role], since: float, poll_s: float, verdict: _Verdict) -> None:
    from ray.util.state import list_cluster_events

    logged: set[str] = set()
    answered, unanswered = False, 0
    while not verdict.done.wait(poll_s):
        if not ray.is_initialized():  # the stage joins the cluster when it first needs it
            continue
        if started_locally():
            return
        try:
            events = list_cluster_events(filters=[("source_type", "=", "AUTOSCALER")], limit=10_000,
                                         timeout=max(1, int(poll_s * 5)), raise_on_missing_output=False)
        except Exception as e:
            unanswered += 1
            if not answered and unanswered >= 3:  # no dashboard to ask (not one slow answer): nothing to watch
                log.debug("not watching for infeasible demands: %s", e)
                return
            log.debug("autoscaler events unavailable, asking again: %s", e)  # e.g. the dashboard's rate limit
            continue
        answered = True
        for event in events:
            message = event["message"]
            if message in logged or _event_time(event["time"]) < since:
                continue
            logged.add(message)
            for shape in infeasible_shapes(message):
                asking = roles_asking(shape, roles)
                if asking:
                    verdict.interrupt(infeasible_error(stage, asking, shape, message))
                    return
            if INFEASIBLE in message:
                log.warning("[%s] the autoscaler cannot place a demand this stage does not make: %s", stage, message)


def _event_time(text: str) -> float:
    try:  # the dashboard's local time, as this process reads it (the driver runs on the head)
        return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return float("inf")  # an unknown format: treat as new rather than miss it
