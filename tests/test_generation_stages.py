"""The cot, generate and filter stages for real, small: a generated world, a sharded index
served by Ray, the tiny model behind engine replicas, rollout workers in a Ray Data pipeline,
real sandboxes. (Kills mid-stage, the driver's included, are `test_chaos.py`'s.)"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import yaml

from conftest import seed_run

from ray_distill.agent import first_thought_prefix
from ray_distill.config import load_config
from ray_distill.fileio import write_parquet_atomic
from ray_distill.generation.records import TRAJECTORY_SCHEMA
from ray_distill.generation.store import read_records

pytestmark = [pytest.mark.slow, pytest.mark.ray]

QUESTIONS_PER_SET = 4


def write_config(tmp_path: Path, **sections) -> Path:
    config = {
        "run": {"name": "gen", "dir": str(tmp_path / "run"), "stages": ["world", "index", "cot", "generate", "filter"]},
        "models": {"teacher": "tiny-random"},
        "world": {"num_passages": 200, "num_fact_questions": 8, "num_math_questions": 8},
        "index": {"passages_per_shard": 100},
        "retrieval": {"router_cpus": 0, "shard_cpus": 0},  # the job's own Ray has only this machine's 2 CPUs
        "questions": {"limit": QUESTIONS_PER_SET},
        "teacher_engine": {"dtype": "float32"},
        "cot": {"max_new_tokens": 24},
        "generate": {"max_steps": 2, "max_new_tokens": 24},
        "rollout": {"episodes_in_flight": 4, "flush_every": 1, "warm_sandboxes": 2},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def expected_keys() -> set:
    return {(f"world-{kind}-train", f"{kind}-{n:06d}", 0) for kind in ("fact", "math") for n in range(QUESTIONS_PER_SET)}


def keys(table) -> list:
    return list(zip(table.column("dataset").to_pylist(), table.column("example_id").to_pylist(),
                    table.column("sample").to_pylist()))


def test_cot_generate_filter_run_through_ray_and_a_rerun_skips_them(tmp_path, small_world):
    from ray_distill.stages.base import StageContext
    from ray_distill.stages.paths import cot_dir
    from ray_distill.stages.paths import filter_dir
    from ray_distill.stages.paths import generate_dir
    from ray_distill.stages.pipeline import run_pipeline

    path = write_config(tmp_path)
    seed_run(small_world, path)
    config = load_config(path)
    manifest = run_pipeline(config, progress=False)
    ctx = StageContext(config, Path(config.run.dir))

    cot = read_records(cot_dir(ctx))
    trajectories = read_records(generate_dir(ctx))
    assert Counter(keys(cot)) == Counter(keys(trajectories)) == Counter(expected_keys())  # each key exactly once
    # FTP: every episode started from the first paragraph of the teacher's CoT answer to the same question
    responses = {(r["dataset"], r["example_id"]): r["response"] for r in cot.to_pylist()}
    for record in trajectories.to_pylist():
        response = responses[(record["dataset"], record["example_id"])]
        assert record["ftp_prefix"] == (first_thought_prefix(response) if response.strip() else None)
        assert record["model"] == "tiny-random" and json.loads(record["sampling"])["max_new_tokens"] == 24
        assert 1 <= record["num_steps"] <= 2 and record["steps"][0]["generation_seconds"] > 0
        if record["ftp_prefix"]:
            assert record["steps"][0]["model_output"].startswith(record["ftp_prefix"].rstrip())

    summary = manifest["stages"]["generate"]["summary"]
    assert summary["records"] == 8 and summary["unfinished"] == 0 and summary["items_per_second"] > 0
    assert set(summary["by_set"]) == {"world-fact-train", "world-math-train"}

    filtered = pd.read_parquet(filter_dir(ctx) / "trajectories.parquet")
    assert len(filtered) == 8 and set(filtered.columns) >= {"keep", "drop_reason", "correct", "judge_correct"}
    assert (filtered["keep"] == filtered["drop_reason"].isna()).all()
    assert (filtered.loc[~filtered["correct"], "keep"] == False).all()  # noqa: E712
    assert len(pd.read_parquet(filter_dir(ctx) / "cot.parquet")) == 8
    report = json.loads((filter_dir(ctx) / "summary.json").read_text())
    assert sum(s["records"] for s in report["trajectories"]["by_set"].values()) == 8

    again = run_pipeline(config, progress=False)
    for stage in ("cot", "generate", "filter"):
        assert again["stages"][stage]["finished_at"] == manifest["stages"][stage]["finished_at"]

    # other agent settings or other questions: a new store, never the old records
    other = StageContext(load_config(write_config(tmp_path, generate={"max_steps": 3})), Path(config.run.dir))
    assert generate_dir(other) != generate_dir(ctx) and not list(generate_dir(other).glob("parts/part-*"))

    # The LLM judge (here the tiny model) decides fact answers. The tiny teacher rarely answers at all,
    # so its fact trajectories get answers: half the gold (exact match), half wrong.
    store = generate_dir(ctx)
    rows = read_records(store).to_pylist()
    facts = [r for r in rows if r["domain"] == "fact"]
    for n, r in enumerate(facts):
        r["final_answer"] = r["gold"] if n % 2 == 0 else f"not {r['gold']}"
    for part in store.glob("parts/part-*.parquet"):
        part.unlink()
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=TRAJECTORY_SCHEMA), store / "parts" / "part-edited.parquet")
    judged = load_config(write_config(tmp_path, scoring={"judge": "tiny-random"}))
    first = run_pipeline(judged, ["filter"], progress=False)["stages"]["filter"]["summary"]
    judged_rows = pd.read_parquet(filter_dir(ctx) / "trajectories.parquet").query("domain == 'fact'")
    assert judged_rows["judge_correct"].notna().all() and (judged_rows["score_method"] == "judge").all()
    assert first["judge_calls"] >= len(facts)  # every distinct fact answer was asked (CoT answers too, if any)
    exact = judged_rows[judged_rows["final_answer"] == judged_rows["gold"]]
    assert len(exact) == 2 and exact["correct"].all()  # the judge never overrules an exact match
    cached = run_pipeline(judged, ["filter"], force=True, progress=False)["stages"]["filter"]["summary"]
    assert cached["judge_calls"] == 0


def test_generate_without_cot_names_the_missing_stage(tmp_path, small_world):
    from ray_distill.errors import UserError
    from ray_distill.stages.pipeline import run_pipeline

    path = write_config(tmp_path)
    seed_run(small_world, path)
    config = load_config(path)
    run_pipeline(config, ["world", "index"], progress=False)  # both done: skipped
    with pytest.raises(UserError, match="run `ray-distill cot CONFIG` first"):
        run_pipeline(config, ["generate"], progress=False)

