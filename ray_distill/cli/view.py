"""`ray-distill view`: serve the viewer over a run directory, or over the run directory of a config
(first fetched from `run.storage` when the config has one, as a pipeline run would)."""

from __future__ import annotations

from pathlib import Path

from ray_distill.errors import UserError


def run_directory(target: str) -> Path:
    """The run directory `target` names: itself, or a config's `run.dir` (pulled from its storage)."""
    path = Path(target).expanduser()
    if path.is_dir():
        return path
    if not path.is_file():
        raise UserError(f"no such run directory or config: {target}")
    from ray_distill.config import load_config

    config = load_config(str(path), [])
    run_dir = Path(config.run.dir)
    if config.run.storage:
        from ray_distill.stages.storage import RunStorage

        fetched = RunStorage(config.run.storage, run_dir).pull()
        print(f"run storage {config.run.storage}: {fetched} file(s) fetched into {run_dir}", flush=True)
    return run_dir


def view(target: str, host: str, port: int) -> int:
    from ray_distill.view.app import serve

    serve(run_directory(target), host, port)
    return 0
