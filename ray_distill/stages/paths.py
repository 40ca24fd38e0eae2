"""Where every stage's outputs live: one pure getter per stage directory.

A getter computes a path from the config (and, for directories keyed by
settings, the content of the files the settings name); it never creates a
folder or writes a file. A store writes its `settings.json` when it opens
(`RecordStore(settings=...)`), a training run when it starts.

Stores of generated records are keyed by settings: records made under other
settings (another teacher, prompt, question file, index) land in another
directory and never count as done.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ray_distill.agent import prompts
from ray_distill.config import ExperimentConfig, relocate
from ray_distill.data.benchmarks import default_data_dir
from ray_distill.data.datasets import file_digest, set_file
from ray_distill.errors import ConfigError
from ray_distill.generation.records import TRAJECTORY_LAYOUT
from ray_distill.stages.base import StageContext
from ray_distill.training.export import EXPORT_INFO

SPLIT = "split.json"  # the index's shard count, written when its corpus is split
RESULTS = "results.json"  # one evaluation's scores, written last

# Train settings that change how a run proceeds, not what it learns: a run resumes across them.
_RUNTIME_ONLY = ("cpus_per_worker", "resources", "checkpoint_every", "keep_checkpoints", "stop_after_steps",
                 "gradient_checkpointing", "attention", "loss_kernel", "gpu_memory_gib")


def portable(ctx: StageContext, settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with the run directory (absolute, or as run.dir spells it, which config interpolations
    copy) written as ${run.dir}: a run moved, or fetched from run.storage into another place, keeps its
    stores."""
    spellings = sorted({s for s in (str(ctx.run_dir), str(ctx.config.run.dir).rstrip("/")) if s.strip("/.")},
                       key=len, reverse=True)
    if not spellings:  # run.dir is / or .: nothing in the settings can be told apart from it
        return settings
    where = "|".join(re.escape(json.dumps(s)[1:-1]) for s in spellings)
    return json.loads(re.sub(f"(?<=[\"'])(?:{where})(?=[/\"'])", "${run.dir}", json.dumps(settings)))


# A test's stand-in for nodes with disks of their own on one machine (tests/test_multinode_sweep.py): set per
# node, it holds that node's copy of every run directory, /runs/x at <root>/runs/x. Without it a run directory
# is where its path says, on whichever node reads it.
NODE_ROOT = "RAY_DISTILL_NODE_ROOT"


def logical_run_dir(run_dir: Path) -> str:
    """The run directory as every node names it: absolute, without this node's root."""
    path, root = Path(os.path.abspath(run_dir)), os.environ.get(NODE_ROOT)
    return "/" + path.relative_to(root).as_posix() if root and path.is_relative_to(root) else str(path)


def on_this_node(config: ExperimentConfig, logical: Optional[str] = None) -> ExperimentConfig:
    """`config` with its run directory (`logical`, default run.dir) where this node keeps it: under the node's
    root, or with none at `logical` itself."""
    root = os.environ.get(NODE_ROOT)
    if logical is None and not root:
        return config
    logical = logical or logical_run_dir(Path(config.run.dir))
    here = str(Path(root) / logical.lstrip("/")) if root else logical
    return relocate(config, config.run.dir, here)


def settings_dir(base: Path, settings: dict[str, Any]) -> Path:
    """The directory for one set of settings under `base` (a hash of them)."""
    return base / hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


# --- world and index -------------------------------------------------------------------------------

def world_dir(ctx: StageContext) -> Path:
    return Path(os.path.abspath(ctx.config.world.out_dir)) if ctx.config.world.out_dir else ctx.run_dir / "world"


def index_dir(ctx: StageContext) -> Path:
    return Path(os.path.abspath(ctx.config.index.out_dir)) if ctx.config.index.out_dir else ctx.run_dir / "index"


def shard_dirs(directory: Path) -> list[Path]:
    """The shards of a finished split of the index at `directory`, in order."""
    split = directory / SPLIT
    if not split.is_file():
        raise ConfigError(f"no index at {directory}; run `ray-distill index CONFIG` first")
    return [directory / f"shard-{n:05d}" for n in range(json.loads(split.read_text())["shards"])]


# --- what keys a store besides its stage's own settings --------------------------------------------

def set_digests(ctx: StageContext, sets: Sequence[str]) -> dict[str, str]:
    """Question set -> content hash of its file: records made from another version must not count as done."""
    c = ctx.config
    return {name: file_digest(set_file(name, world_dir(ctx), default_data_dir(c.benchmarks.data_dir),
                                       c.benchmarks.files)) for name in sets}


def source_settings(ctx: StageContext) -> dict[str, Any]:
    """What shapes a teacher store's records besides the stage's own settings: the question files (by
    content) and how the teacher is served (backend, dtype, options; not its replicas). Adding a question
    set or editing its file therefore starts a new store."""
    c = ctx.config
    return {"questions": set_digests(ctx, c.questions.train),
            "engine": repr(c.teacher_engine.spec(c.models.teacher))}


def retrieval_settings(ctx: StageContext) -> dict[str, Any]:
    """What decides the passages web_search returns."""
    c = ctx.config
    if c.retrieval.url:
        return {"url": c.retrieval.url, "topk": c.retrieval.topk}
    return {"index": str(index_dir(ctx)), "kind": c.index.kind, "embedder": c.models.embedder, "topk": c.retrieval.topk}


# --- the teacher's data ----------------------------------------------------------------------------

def cot_settings(ctx: StageContext) -> dict[str, Any]:
    return portable(ctx, {"model": ctx.config.models.teacher, "prompt_version": prompts.COT_PROMPT_VERSION,
                          "cot": asdict(ctx.config.cot), **source_settings(ctx)})


def cot_dir(ctx: StageContext) -> Path:
    """The store of this config's CoT responses (one per teacher and CoT settings)."""
    return settings_dir(ctx.run_dir / "cot", cot_settings(ctx))


def generate_settings(ctx: StageContext) -> dict[str, Any]:
    g = ctx.config.generate
    stage = {k: v for k, v in asdict(g).items() if k != "samples"}  # more samples add keys to the same store
    return portable(ctx, {"model": ctx.config.models.teacher, "prompt_version": prompts.PROMPT_VERSION,
                          "layout": TRAJECTORY_LAYOUT, "generate": stage,
                          "ftp_source": cot_dir(ctx).name if g.ftp else None, "retrieval": retrieval_settings(ctx),
                          **source_settings(ctx)})


def generate_dir(ctx: StageContext) -> Path:
    """The store of this config's trajectories: one per teacher, agent settings, FTP source and retrieval."""
    tag = "ftp" if ctx.config.generate.ftp else "no-ftp"
    return settings_dir(ctx.run_dir / "generate" / tag, generate_settings(ctx))


def filter_dir(ctx: StageContext) -> Path:
    return ctx.run_dir / "filter" / ("ftp" if ctx.config.generate.ftp else "no-ftp")


# --- the student -----------------------------------------------------------------------------------

def train_source(ctx: StageContext) -> Path:
    """The filter's table the student trains on (`train.data`)."""
    return filter_dir(ctx) / ("trajectories.parquet" if ctx.config.train.data == "agent" else "cot.parquet")


def training_label(config) -> str:
    """What the student is trained on: cot, agent-ftp or agent-no-ftp."""
    t = config.train
    return t.data if t.data == "cot" else "agent-ftp" if config.generate.ftp else "agent-no-ftp"


def train_settings(ctx: StageContext) -> dict[str, Any]:
    c = ctx.config
    source = train_source(ctx)
    return {"student": c.models.student,
            "train": {k: v for k, v in asdict(c.train).items() if k not in _RUNTIME_ONLY},
            "data": file_digest(source) if source.is_file() else None,
            "student_prompt": hashlib.sha256(prompts.STUDENT_SYSTEM_PROMPT.encode()).hexdigest()[:12]}


def train_dir(ctx: StageContext) -> Path:
    """One training run: per student, training data (by content) and the settings that change what it learns."""
    return settings_dir(ctx.run_dir / "train" / training_label(ctx.config), train_settings(ctx))


def student_model_dir(ctx: StageContext) -> Path:
    """Where the trained student of this config is exported (an HF directory)."""
    return train_dir(ctx) / "model"


def trained_students(run_dir: Path) -> list[Path]:
    """Every exported student under `run_dir` (one per training run: a sweep trains several), oldest first."""
    exports = (run_dir / "train").glob(f"*/*/model/{EXPORT_INFO}")
    return [info.parent for info in sorted(exports, key=lambda p: p.stat().st_mtime_ns)]


# --- evaluation, sweep and report ------------------------------------------------------------------

@dataclass(frozen=True)
class EvaluatedModel:
    label: str  # base, distilled, or the configured name
    name: str  # what the engine loads
    student: str  # the student it is (for the report's rows)
    training: Optional[str]  # None (untrained), cot, agent-ftp or agent-no-ftp


def evaluated_models(ctx: StageContext) -> list[EvaluatedModel]:
    """`evaluate.models`, resolved: base is the untrained student, distilled this config's train export."""
    c = ctx.config
    models = []
    for entry in c.evaluate.models:
        if entry == "base":
            models.append(EvaluatedModel("base", c.models.student, c.models.student, None))
        elif entry == "distilled":
            models.append(EvaluatedModel("distilled", str(student_model_dir(ctx)), c.models.student,
                                         training_label(c)))
        else:
            models.append(EvaluatedModel(entry, entry, entry, None))
    return models


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def evaluate_settings(ctx: StageContext, model: EvaluatedModel) -> dict[str, Any]:
    c, e = ctx.config, ctx.config.evaluate
    # More questions (limit) or more CoT samples add keys to the same store; settings that do not apply
    # to the mode stay out, so the same evaluation made under two configs shares one store.
    unused = {"models", "sets", "limit", "self_consistency"}
    if e.mode == "cot":
        unused |= {"sag", "sag_temperature", "sag_top_p", "max_steps"}
    elif e.sag == 1:
        unused |= {"sag_temperature", "sag_top_p"}
    export = Path(model.name) / EXPORT_INFO
    return portable(ctx, {
        "model": model.name, "student": model.student, "training": model.training,
        # A retrained export is evaluated anew.
        "model_export": file_digest(export) if model.training is not None and export.is_file() else None,
        "evaluate": {k: v for k, v in asdict(e).items() if k not in unused},
        "prompt_version": prompts.PROMPT_VERSION if e.mode == "agent" else prompts.COT_PROMPT_VERSION,
        "layout": TRAJECTORY_LAYOUT if e.mode == "agent" else None,
        "engine": repr(c.student_engine.spec(model.name)), "questions": set_digests(ctx, e.sets),
        "retrieval": retrieval_settings(ctx) if e.mode == "agent" else None})


def evaluate_dir(ctx: StageContext, model: EvaluatedModel) -> Path:
    """The record store of one model under this config's evaluation settings."""
    label = model.label if model.training is None else f"{model.label}-{model.training}"
    return settings_dir(ctx.run_dir / "evaluate" / slug(label), evaluate_settings(ctx, model))


def results_files(run_dir: Path) -> list[Path]:
    """Every finished evaluation's results under `run_dir`, oldest first."""
    return sorted((run_dir / "evaluate").glob(f"*/*/{RESULTS}"), key=lambda p: p.stat().st_mtime_ns)


def sweep_dir(ctx: StageContext) -> Path:
    return ctx.run_dir / "sweep"


def report_dir(ctx: StageContext) -> Path:
    return ctx.run_dir / "report"
