"""Stream a world to disk: corpus shards, question sets, and a manifest.

Layout of the output folder:
    corpus/part-NNNNN.jsonl   passages, `{"id", "contents"}` per line
    questions/{fact,math}_{train,test}.json   benchmark format
    world.json                manifest, written last: its presence means complete

Every file is written to a temporary name and renamed into place, so a
crash leaves either a finished file or none; a rerun rewrites the world.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional, TextIO

from tqdm import tqdm

from ray_distill.data.world.entities import World
from ray_distill.fileio import write_json_atomic
from ray_distill.data.world.passages import iter_passages
from ray_distill.data.world.questions import generate_questions

GENERATOR_VERSION = 1
MANIFEST = "world.json"


def write_world(
    out_dir: str | Path,
    *,
    seed: int,
    num_passages: int,
    num_fact_questions: int,
    num_math_questions: int,
    test_fraction: float,
    shard_size: int = 1_000_000,
    progress: bool = True,
    console: Optional[TextIO] = None,
) -> dict[str, Any]:
    """Generate the world of `seed` into `out_dir`; returns the manifest. The progress bar goes to `console`
    (default: stderr)."""
    out = Path(out_dir)
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    (out / "questions").mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    world = World(seed, num_passages)

    passages = tqdm(
        iter_passages(world), total=world.layout.num_passages, desc="world passages",
        unit="psg", disable=not progress, mininterval=1.0, file=console,
    )
    shards = _write_shards(passages, out / "corpus", shard_size)

    question_files: dict[str, dict[str, int]] = {}
    for kind, count in (("fact", num_fact_questions), ("math", num_math_questions)):
        questions = generate_questions(world, count, kind, seed)
        n_test = round(count * test_fraction)
        splits = {"train": questions[: count - n_test], "test": questions[count - n_test :]}
        for split, items in splits.items():
            name = f"world_{kind}_{split}"
            for q in items:
                q["dataset_name"], q["split"] = name, split
            write_json_atomic(
                out / "questions" / f"{kind}_{split}.json",
                {"metadata": {"dataset_info": {"name": name, "fold": split, "total_examples": len(items),
                                               "generator": "ray-distill world", "seed": seed}},
                 "examples": items},
            )
            question_files[f"{kind}_{split}"] = {"file": f"questions/{kind}_{split}.json", "count": len(items)}

    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "layout": world.layout.__dict__,
        "num_passages": world.layout.num_passages,
        "corpus": shards,
        "questions": question_files,
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def _write_shards(passages: Iterable[dict[str, str]], folder: Path, shard_size: int) -> list[str]:
    for stale in folder.glob("part-*"):
        stale.unlink()
    shards: list[str] = []
    handle = None
    tmp = None
    for n, passage in enumerate(passages):
        if n % shard_size == 0:
            if handle is not None:
                _close_shard(handle, tmp)
            name = f"part-{len(shards):05d}.jsonl"
            shards.append(f"corpus/{name}")
            tmp = folder / (name + ".tmp")
            handle = open(tmp, "w", encoding="utf-8")
        handle.write(json.dumps(passage, ensure_ascii=False) + "\n")
    if handle is not None:
        _close_shard(handle, tmp)
    return shards


def _close_shard(handle, tmp: Path) -> None:
    handle.close()
    os.replace(tmp, tmp.with_suffix(""))


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    path = Path(out_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
