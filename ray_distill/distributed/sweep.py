"""The sweep on Ray Tune: one trial per (student, method), each a function trainable that trains
and evaluates its cell of the table (`stages/sweep.py: run_trial`) and reports the accuracies.

Trials hold only their driver's resources (`sweep.trial_cpus`): the Ray
Train workers and student replicas a trial starts reserve their own, so
the number of trials run at once is computed from what one trial needs and
what the cluster has (on a Ray this process started, a trial that could
never be placed is an error before Tune starts). Every invocation is a new
Tune experiment: a trial whose student is trained and evaluated already
finishes in seconds from the stage outputs, so rerunning after a failure
only does the missing work, and a changed config never reuses stale trials.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TextIO

import ray
from ray import tune
from tqdm import tqdm

from ray_distill.distributed.cluster import init_ray, require_resources, started_locally

log = logging.getLogger(__name__)
FINISHED = "TERMINATED"  # Tune's word for a trial that returned; the others are ERROR and NOT FINISHED
_TUNE_SIGINT = "TUNE_DISABLE_SIGINT_HANDLER"


def concurrent_trials(per_trial: dict[str, tuple[float, float]], trials: int, configured: Optional[int]) -> int:
    """Trials that can run at once: what the cluster's CPUs and GPUs fit now, at least one. On a Ray this
    process started (fixed resources) a trial that fits nowhere is an error naming what it asks for, and
    `configured` can only lower the number; on a cluster `configured` wins, so an autoscaler can add the
    nodes for more trials than fit now."""
    init_ray()
    require_resources(per_trial)  # only checks on a Ray this process started
    have = ray.cluster_resources()
    fit = trials
    for n, unit in ((0, "CPU"), (1, "GPU")):
        wanted = sum(v[n] for v in per_trial.values())
        if wanted > 0:
            fit = min(fit, math.floor(have.get(unit, 0) / wanted + 1e-9))
    fit = max(1, fit)
    if configured is None:
        return fit
    return min(configured, fit, trials) if started_locally() else min(configured, trials)


def run_tune(trainable: Callable[[dict], dict[str, Any]], keys: list[tuple[str, str]], storage: Path, name: str,
             trial: dict[str, float], max_concurrent: int, progress: bool = True,
             console: Optional[TextIO] = None) -> list[dict[str, Any]]:
    """Run `trainable(params)` for each (student, method) in `keys` as a Tune grid, each trial's driver
    reserving `trial` (`cpu` and custom resources); returns per trial its params, status, metrics, error and
    trial directory. A progress bar of finished trials goes to `console` (default: stderr)."""
    students = list(dict.fromkeys(s for s, _ in keys))
    methods = list(dict.fromkeys(m for _, m in keys))
    if len(students) * len(methods) != len(keys):
        raise ValueError("the sweep's trials must be every student with every method")

    def run(params: dict) -> None:
        tune.report(trainable(params))

    # Tune refuses a trial that reserves nothing; a MiB of memory lets trial_cpus be 0.
    runnable = tune.with_resources(run, {**trial, "memory": 1 << 20})
    with tqdm(total=len(keys), desc="sweep trials", unit=" trial", disable=not progress, file=console) as bar:
        tuner = tune.Tuner(
            runnable,
            param_space={"student": tune.grid_search(students), "method": tune.grid_search(methods)},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(name=name, storage_path=str(storage.resolve()), verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=0), callbacks=[_TrialBar(bar)]),
        )
        with _without_tunes_sigint_handler():
            grid = tuner.fit()
    outcomes = []
    for result in grid:
        params = result.config or {}
        metrics = {k: v for k, v in (result.metrics or {}).items() if _reported(k)}
        outcomes.append({"student": params.get("student"), "method": params.get("method"),
                         "status": "ERROR" if result.error else FINISHED if metrics else "NOT FINISHED",
                         "metrics": metrics, "error": _first_line(result.error) if result.error else None,
                         "dir": result.path})
    return outcomes


@contextlib.contextmanager
def _without_tunes_sigint_handler() -> Iterator[None]:
    """Tune's own SIGINT handler turns a Ctrl-C, or the interrupt of a demand that no node type can hold
    (`autoscaler.py`), into a quiet stop that returns the unfinished trials; without it the interrupt stops the
    stage as it does every other. Resuming Tune's experiment is of no use: each invocation starts a new one."""
    before = os.environ.get(_TUNE_SIGINT)
    os.environ[_TUNE_SIGINT] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_TUNE_SIGINT, None)
        else:
            os.environ[_TUNE_SIGINT] = before


class _TrialBar(tune.Callback):
    """Counts finished trials on the stage's bar (Tune's own status table goes where the process's output goes:
    the run's log file). Tune calls it in this process."""

    def __init__(self, bar: tqdm):
        self.bar: Optional[tqdm] = bar

    def __getstate__(self) -> dict:
        # Tune pickles its run config, callbacks included, to be able to restore the experiment; the bar draws
        # on the console (under the CLI, a file open for writing), which does not pickle and would not restore.
        return {"bar": None}

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if self.bar is not None:
            self.bar.update(1)


def _reported(key: str) -> bool:
    # Tune adds bookkeeping (time, host, pid, ...) to every result; ours are the accuracies and counts.
    return key.startswith(("accuracy", "average", "train_", "parse_errors", "execution_errors"))


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__
