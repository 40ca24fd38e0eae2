"""Locks that hold across the nodes of a cluster: a named actor keeps leases, which their holders renew.

A sweep's trials run on any node, so a file lock is no lock between them: two trials that share a student
must not both train it, and pushes to one `run.storage` must update its index in turn. A lease, not a plain
lock, because a holder can die with its node: a lease that is not renewed within `ttl` seconds lapses, and
the next waiter takes it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from typing import Iterator

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_distill.distributed.cluster import init_ray

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class _Leases:
    def __init__(self) -> None:
        self._held: dict[str, tuple[str, float]] = {}  # key -> (holder, lapses at)

    def take(self, key: str, holder: str, ttl: float) -> bool:
        """Take or renew the lease on `key`; False while another holder's lease runs."""
        current = self._held.get(key)
        if current and current[0] != holder and current[1] > time.monotonic():
            return False
        self._held[key] = (holder, time.monotonic() + ttl)
        return True

    def give_back(self, key: str, holder: str) -> None:
        if self._held.get(key, ("",))[0] == holder:
            del self._held[key]


@contextlib.contextmanager
def lock_table(name: str) -> Iterator[None]:
    """A lease table called `name` for the block, for `cluster_lock` in any process of the job."""
    init_ray()
    # On this process's node: an autoscaler may remove an idle worker node, and a table that takes no CPU
    # leaves its node idle.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    table = _Leases.options(name=name, scheduling_strategy=here).remote()
    try:
        ray.get(table.__ray_ready__.remote())
        yield
    finally:
        ray.kill(table)


@contextlib.contextmanager
def cluster_lock(table: str, key: str, ttl: float = 60.0, poll_s: float = 0.5) -> Iterator[None]:
    """Hold `key` in the lease table `table` for the block: waits while another holder has it, and renews the
    lease from a background thread every `ttl / 4` seconds while the block runs."""
    leases, holder = ray.get_actor(table), uuid.uuid4().hex
    while not ray.get(leases.take.remote(key, holder, ttl)):
        time.sleep(poll_s)
    done = threading.Event()

    def renew() -> None:
        while not done.wait(ttl / 4):
            try:
                if not ray.get(leases.take.remote(key, holder, ttl)):
                    log.warning("the lease on %s lapsed (this process stalled for over %.0f s) and another holder "
                                "has it", key, ttl)
            except ray.exceptions.RayError as e:  # the table is gone (its job is ending): nothing left to renew
                log.warning("cannot renew the lease on %s: %s", key, e)
                return

    renewer = threading.Thread(target=renew, name=f"lease-{key}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        done.set()
        renewer.join()
        try:
            ray.get(leases.give_back.remote(key, holder))
        except ray.exceptions.RayError as e:  # the block's own outcome is the one to report
            log.warning("cannot give back the lease on %s: %s", key, e)
