"""Run configured stages in order inside a run directory, skipping finished ones.

The run directory holds `config.yaml` (the resolved config of the latest
invocation) and `manifest.json` (per stage: input fingerprint, finish time,
summary). A stage whose fingerprint matches and whose outputs are intact is
skipped, so rerunning a pipeline after a crash or with an unchanged config
only does the missing work.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ray_distill.config import ExperimentConfig, to_yaml
from ray_distill.errors import UserError
from ray_distill.fileio import write_json_atomic
from ray_distill.stages import STAGES
from ray_distill.stages.base import StageContext

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
) -> dict[str, Any]:
    """Run `stages` (default: config.run.stages); returns the run manifest."""
    names = list(config.run.stages if stages is None else stages)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise UserError(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    run_dir = Path(config.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(config))
    ctx = StageContext(config=config, run_dir=run_dir, progress=progress)
    manifest = read_run_manifest(run_dir)

    try:
        for name in names:
            stage = STAGES[name]
            fingerprint = stage.fingerprint(config)
            done = manifest["stages"].get(name)
            if not force and done and done["fingerprint"] == fingerprint and stage.is_complete(ctx):
                log.info("[%s] up to date, skipped (finished %s)", name, done["finished_at"])
                continue
            log.info("[%s] %s", name, stage.help)
            start = time.time()
            summary = stage.run(ctx)
            manifest["stages"][name] = {
                "fingerprint": fingerprint,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "seconds": round(time.time() - start, 2),
                "summary": summary,
            }
            write_json_atomic(run_dir / MANIFEST, manifest, indent=2)
            log.info("[%s] done in %.1f s: %s", name, time.time() - start, json.dumps(summary))
    finally:
        ctx.services.close()
    return manifest
