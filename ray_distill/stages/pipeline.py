"""Run configured stages in order inside a run directory, skipping finished ones.

The run directory holds `config.yaml` (the resolved config of the latest
invocation) and `manifest.json` (per stage: input fingerprint, finish time,
summary). A stage whose fingerprint matches and whose outputs are intact is
skipped, so rerunning a pipeline after a crash or with an unchanged config
only does the missing work. With `run.storage` set, the run starts by
fetching what the run directory lacks from the storage, and each stage's
outputs (also those of a stage that failed: the work it finished) and then
the manifest are copied there; a running stage's outputs also every
`run.storage_interval` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence, TextIO

from ray_distill.config import ExperimentConfig, to_yaml
from ray_distill.distributed.autoscaler import failing_fast_when_infeasible
from ray_distill.distributed.resources import roles
from ray_distill.errors import UserError
from ray_distill.fileio import write_json_atomic
from ray_distill.registry import STAGES
from ray_distill.stages import load
from ray_distill.stages.base import StageContext
from ray_distill.stages.storage import PeriodicPush, RunStorage

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def read_run_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {"stages": {}}


def run_pipeline(
    config: ExperimentConfig,
    stages: Optional[Sequence[str]] = None,
    *,
    force: bool = False,
    progress: bool = True,
    console: Optional[TextIO] = None,
) -> dict[str, Any]:
    """Run `stages` (default: config.run.stages); returns the run manifest. Progress bars go to `console`
    (default: stderr)."""
    names = list(config.run.stages if stages is None else stages)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise UserError(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    for name in names:
        if load(name).check:
            load(name).check(config)
    run_dir = Path(config.run.dir)
    if os.environ.get("RAY_ADDRESS") and not run_dir.is_absolute():
        log.warning("run.dir %s is relative, so on a cluster it is %s: under `ray job submit` that is inside the "
                    "job's temporary working directory, which other nodes do not see and Ray deletes; give an "
                    "absolute path on storage every node mounts", run_dir, run_dir.resolve())
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = RunStorage(config.run.storage, run_dir) if config.run.storage else None
    if storage:
        fetched = storage.pull()
        log.info("run storage %s: %d file(s) fetched into %s", storage.uri, fetched, run_dir)
    (run_dir / "config.yaml").write_text(to_yaml(config))
    ctx = StageContext(config=config, run_dir=run_dir, progress=progress, console=console)
    manifest = read_run_manifest(run_dir)

    try:
        for name in names:
            stage = load(name)
            fingerprint = stage.fingerprint(config)
            done = manifest["stages"].get(name)
            if not force and done and done["fingerprint"] == fingerprint and stage.is_complete(ctx):
                log.info("[%s] up to date, skipped (finished %s)", name, done["finished_at"])
                if storage:  # e.g. run.storage was set after the stage ran, or its last copy failed
                    storage.push(stage.output_dirs(ctx))
                continue
            log.info("[%s] %s", name, STAGES[name])
            start = time.time()
            try:
                interval = config.run.storage_interval if stage.copied_while_running else 0
                with PeriodicPush(storage, stage.output_dirs(ctx), interval), \
                        failing_fast_when_infeasible(name, [r for r in roles(config) if name in r.stages]):
                    summary = stage.run(ctx)
            except BaseException as e:
                if not isinstance(e, KeyboardInterrupt):
                    log.error("[%s] failed after %.1f s", name, time.time() - start)
                if storage:  # what the failed stage finished is not lost with the cluster
                    ctx.services.close()  # not holding GPUs through the copy
                    storage.push_after_failure(stage.output_dirs(ctx))
                raise
            manifest["stages"][name] = {
                "fingerprint": fingerprint,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "seconds": round(time.time() - start, 2),
                "summary": summary,
            }
            write_json_atomic(run_dir / MANIFEST, manifest, indent=2)
            if storage:  # the outputs, then the manifest that says they are complete
                storage.push(stage.output_dirs(ctx))
                storage.push([run_dir / MANIFEST, run_dir / "config.yaml"])
            # The summary in full is in the manifest; the console gets its headline.
            log.info("[%s] done in %.1f s%s", name, time.time() - start,
                     f": {stage.headline(summary)}" if stage.headline else "")
            _log_locations(ctx, stage, storage)
    finally:
        ctx.services.close()
    return manifest


def _log_locations(ctx: StageContext, stage, storage: Optional[RunStorage]) -> None:
    """Where to look: the stage's outputs, their durable copy, and TensorBoard."""
    outputs = stage.output_dirs(ctx)
    log.info("[%s] outputs: %s", stage.name, ", ".join(str(p) for p in outputs))
    if storage:
        log.info("[%s] stored at %s", stage.name, storage.uri)
    if stage.tensorboard:
        log.info("[%s] TensorBoard: tensorboard --logdir %s", stage.name, outputs[0] if len(outputs) == 1 else ctx.run_dir)
