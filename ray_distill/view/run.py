"""What a run directory holds: its stages, record stores, training runs, evaluations, report and sweep.

Everything is found by looking at the directory (never through a config), so
the viewer shows runs made under any config, and runs fetched from storage.
A store is named by its path relative to the run directory; pages only
accept names that discovery found, so a URL cannot reach outside the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ray_distill.errors import UserError
from ray_distill.generation.store import PARTS, SETTINGS, part_files
from ray_distill.registry import STAGES
from ray_distill.stages.paths import RESULTS
from ray_distill.stages.pipeline import MANIFEST

# Top-level entries of which at least one makes a directory a run directory.
_RUN_MARKERS = (MANIFEST, "config.yaml", *STAGES)


def read_json(path: Path) -> Optional[Any]:
    """The JSON at `path`, or None when it is missing or half-written (a run still going)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def check_run_dir(path: Path) -> Path:
    if not path.is_dir():
        raise UserError(f"no such run directory: {path}")
    if not any((path / marker).exists() for marker in _RUN_MARKERS):
        raise UserError(f"{path} is not a run directory (no {MANIFEST} and no stage outputs)")
    return path


@dataclass(frozen=True)
class Store:
    """A table of records: a record store's parts, or one of the filter's Parquet files."""

    id: str  # path relative to the run directory
    kind: str  # cot, generate, filter or evaluate
    path: Path

    @property
    def directory(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    def files(self) -> list[Path]:
        if self.path.is_dir():
            return part_files(self.path)
        return [self.path] if self.path.is_file() else []

    def settings(self) -> dict:
        return read_json(self.path / SETTINGS) or {} if self.path.is_dir() else {}

    def results(self) -> Optional[dict]:
        return read_json(self.path / RESULTS) if self.kind == "evaluate" else None

    @property
    def teacher(self) -> bool:
        return self.kind != "evaluate"

    def title(self) -> str:
        if self.kind == "evaluate":
            settings = self.settings()
            return f"{self.id.split('/')[1]}: {settings.get('model', '?')}"
        return self.id


def _record_stores(run_dir: Path, pattern: str, kind: str) -> list[Store]:
    return [Store(d.relative_to(run_dir).as_posix(), kind, d)
            for d in sorted(run_dir.glob(pattern)) if (d / PARTS).is_dir()]


def stores(run_dir: Path) -> list[Store]:
    found = _record_stores(run_dir, "cot/*", "cot") + _record_stores(run_dir, "generate/*/*", "generate")
    found += [Store(f.relative_to(run_dir).as_posix(), "filter", f)
              for name in ("trajectories.parquet", "cot.parquet") for f in sorted(run_dir.glob(f"filter/*/{name}"))]
    return found + _record_stores(run_dir, "evaluate/*/*", "evaluate")


def find_store(run_dir: Path, store_id: str) -> Optional[Store]:
    return next((s for s in stores(run_dir) if s.id == store_id), None)


def stage_states(run_dir: Path) -> list[dict]:
    """Every stage in pipeline order, with its manifest entry when it finished."""
    done = (read_json(run_dir / MANIFEST) or {}).get("stages", {})
    return [{"name": name, "help": text, "done": name in done, **done.get(name, {})} for name, text in STAGES.items()]


@dataclass(frozen=True)
class TrainRun:
    id: str  # train/<label>/<hash>
    path: Path

    @property
    def label(self) -> str:
        return self.id.split("/")[1]

    def settings(self) -> dict:
        return read_json(self.path / SETTINGS) or {}

    def source_store(self, run_dir: Path) -> Optional[Store]:
        """The filter table this run trained on (its label says which data and FTP setting)."""
        ftp = "no-ftp" if self.label.endswith("no-ftp") else "ftp"
        names = [f"filter/{ftp}/trajectories.parquet"] if self.label.startswith("agent") else \
            ["filter/ftp/cot.parquet", "filter/no-ftp/cot.parquet"]
        return next((s for n in names if (s := find_store(run_dir, n))), None)


def training_runs(run_dir: Path) -> list[TrainRun]:
    return [TrainRun(d.relative_to(run_dir).as_posix(), d) for d in sorted(run_dir.glob("train/*/*"))
            if d.is_dir() and ((d / SETTINGS).is_file() or (d / "sft").is_dir())]


def find_training_run(run_dir: Path, run_id: str) -> Optional[TrainRun]:
    return next((t for t in training_runs(run_dir) if t.id == run_id), None)


def recently_changed(run_dir: Path, within_seconds: float, now: float) -> bool:
    """Whether a store got a part or a training run logged a step lately: a stage is likely running."""
    watched = [s.path / PARTS for s in stores(run_dir) if s.path.is_dir()]
    watched += [t.path / "logs" / "steps.jsonl" for t in training_runs(run_dir)]
    watched.append(run_dir / MANIFEST)
    for path in watched:
        try:
            if now - path.stat().st_mtime < within_seconds:
                return True
        except OSError:
            continue
    return False


def sweep_trials(run_dir: Path) -> Optional[list[dict]]:
    """The sweep's trials, each with the evaluation store of its (student, method) when one is found."""
    trials = read_json(run_dir / "sweep" / "trials.json")
    if trials is None:
        return None
    evaluations = {}
    for store in stores(run_dir):
        results = store.results()
        if results:
            evaluations[(results.get("student"), results.get("method"))] = store.id
    return [{**t, "evaluation": evaluations.get((t.get("student"), t.get("method")))} for t in trials]
