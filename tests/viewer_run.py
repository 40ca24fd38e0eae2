"""A run directory for the viewer's tests, written through the real stores and the real SFT builder.

`make_run` writes what the stages would leave behind for a small run: the
teacher's CoT and trajectory stores (with tool calls and SAG candidates),
the filter's tables with verdicts, a training run's packed sequences (built
by `build_sft` on the `tiny-random` student) and logs, base and distilled
evaluation stores with results, the manifest, a report and a sweep.
`make_big_store` grows a trajectory store to 100,000 records by copying a
few hundred real ones under new keys, as a long generate run would leave it.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_distill.agent.records import CandidateRecord, EpisodeRecord, StepRecord
from ray_distill.config.schema import FilterConfig, TrainConfig
from ray_distill.evaluation.metrics import model_metrics
from ray_distill.fileio import write_json_atomic, write_parquet_atomic
from ray_distill.generation.filtering import trajectory_drop_reason, verdict_summary
from ray_distill.generation.records import (COT_SCHEMA, TRAJECTORY_SCHEMA, VERDICT_FIELDS, RolloutItem, episode_row,
                                            item_row, run_fields)
from ray_distill.generation.store import RecordStore

FACT, MATH = "world-fact-train", "world-math-train"
GENERATE = "generate/ftp/0123456789ab"
FILTER = "filter/ftp/trajectories.parquet"
TRAIN = "train/agent-ftp/abcdef012345"
BASE, DISTILLED = "evaluate/base/111111111111", "evaluate/distilled-agent-ftp/222222222222"
COT = "cot/333333333333"
PASSAGES = "Doc 1(Title: Velmora) Velmora is the capital of Estrin.\nDoc 2(Title: Estrin) Estrin borders Kallo."
# What each record's number (mod 5) makes of it, and the drop reason the filter gives it.
KINDS = ("kept", "incorrect", "parse_error", "execution_error", "no_answer")
EXPECTED_REASON = {"kept": None, "incorrect": "incorrect", "parse_error": "parse_error",
                   "execution_error": None, "no_answer": "no_answer"}


def item(n: int) -> RolloutItem:
    if n % 2 == 0:
        return RolloutItem(FACT, f"q{n:05d}", 0, "fact", f"Which city is the capital of country number {n}?", "Velmora")
    return RolloutItem(MATH, f"q{n:05d}", 0, "math", f"Ann has {n} apples and buys 3 more. How many now?", str(n + 3))


def _search_step(index: int, prefix: str = "") -> StepRecord:
    code = 'result = web_search(query="capital of Estrin")\nprint(result)'
    return StepRecord(index, f"{prefix}Thought: search.\nCode:\n```py\n{code}\n```", "I will search for it.", code, None,
                      f"Execution logs:\n{PASSAGES}", stdout=PASSAGES,
                      tool_calls=[{"name": "web_search", "args": [], "kwargs": {"query": "capital of Estrin"},
                                   "value": PASSAGES}],
                      generation_seconds=0.8, execution_seconds=0.3, prompt_tokens=120, completion_tokens=25)


def _sag_answer_step(index: int, answer: str) -> StepRecord:
    """A SAG step: two candidates agree on the answer, one raises, one prints something else."""
    code = f'final_answer("{answer}")'
    candidates = [
        CandidateRecord(f"Thought: answer.\nCode:\n```py\n{code}\n```", code, None, final_answer=answer,
                        has_final_answer=True, executed=True),
        CandidateRecord("Thought: check.\nCode:\n```py\nprint(capital)\n```", "print(capital)", None,
                        error={"type": "NameError", "message": "name 'capital' is not defined"}, executed=True),
        CandidateRecord("Thought: look.\nCode:\n```py\nprint('Kallo')\n```", "print('Kallo')", None, stdout="Kallo\n",
                        executed=True),
        CandidateRecord(f"Thought: sure.\nCode:\n```py\n{code}\n```", code, None, final_answer=answer,
                        has_final_answer=True, executed=True),
    ]
    return StepRecord(index, candidates[0].text, "answer.", code, None, f"Final answer: {answer}",
                      final_answer=answer, has_final_answer=True, generation_seconds=1.1, execution_seconds=0.1,
                      prompt_tokens=200, completion_tokens=18, candidates=candidates, valid_candidates=3, chosen=0)


def episode(task: RolloutItem, kind: str, model: str = "teacher-oracle", ftp: bool = True) -> EpisodeRecord:
    prefix = "I should look up the country first. " if ftp else ""
    answer = task.gold if kind != "incorrect" else "Kallo"
    steps = [_search_step(0, prefix)]
    if kind == "parse_error":
        steps.append(StepRecord(1, "I think the answer is there", "I think the answer is there", None,
                                "no code block found", "Error: no code block found", completion_tokens=7))
    if kind == "execution_error":
        steps.append(StepRecord(1, "Code:\n```py\nprint(capitol)\n```", "", "print(capitol)", None,
                                "NameError: name 'capitol' is not defined",
                                error={"type": "NameError", "message": "name 'capitol' is not defined"},
                                completion_tokens=9))
    if kind != "no_answer":
        steps.append(_sag_answer_step(len(steps), answer))
    messages = [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": task.question}]
    for step in steps:
        messages += [{"role": "assistant", "content": step.model_output},
                     {"role": "user", "content": f"Observation: {step.observation}"}]
    return EpisodeRecord(task.question, task.example_id, task.dataset, model, "agent-v3", {"temperature": 0.0},
                         {"n": 4, "no_valid": "first"}, prefix or None, messages, steps,
                         final_answer=None if kind == "no_answer" else answer,
                         answered_by=None if kind == "no_answer" else "final_answer", seconds=2.5)


def trajectory_row(n: int, kind: str, model: str = "teacher-oracle") -> dict:
    task = item(n)
    correct = kind != "incorrect"
    row = episode_row(task, episode(task, kind, model))
    return {**row, "correct": correct, "exact_match": float(correct), "f1": 1.0 if correct else 0.2,
            "score_method": task.domain, **run_fields(1, 2.5)}


def write_store(directory: Path, rows: list[dict], settings: dict, parts: int = 2) -> None:
    with RecordStore(directory, TRAJECTORY_SCHEMA, flush_every=10 ** 9, settings=settings) as store:
        for number, row in enumerate(rows):
            store.add(row)
            if number == len(rows) // parts:
                store.flush()


def _png(path: Path) -> None:
    """A 2x2 grey PNG: the report's plot without matplotlib."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = b"".join(b"\x00" + b"\x80" * 2 for _ in range(2))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


def _filter(run: Path, rows: list[dict]) -> list[dict]:
    verdicts = []
    for row in rows:
        reason = trajectory_drop_reason(row, FilterConfig())
        verdicts.append({**row, "judge_correct": None, "keep": reason is None, "drop_reason": reason})
    schema = pa.schema([*TRAJECTORY_SCHEMA, *(pa.field(n, t) for n, t in VERDICT_FIELDS)])
    (run / FILTER).parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(pa.Table.from_pylist(verdicts, schema=schema), run / FILTER)
    write_json_atomic(run / FILTER.replace("trajectories.parquet", "summary.json"),
                      {"trajectories": {"records": len(verdicts), "by_set": verdict_summary(verdicts)}}, indent=2)
    return verdicts


def _train(run: Path, kept: list[dict]) -> dict:
    from ray_distill.models import resolve_model
    from ray_distill.training.sft_data import build_sft

    directory = run / TRAIN
    directory.mkdir(parents=True)
    write_json_atomic(directory / "settings.json", {"student": "tiny-random", "train": {"max_length": 512}})
    summary = build_sft(kept, "agent", resolve_model("tiny-random"), TrainConfig(max_length=512), directory / "sft")
    write_json_atomic(directory / "sft" / "summary.json", summary, indent=2)
    (directory / "logs").mkdir()
    (directory / "logs" / "steps.jsonl").write_text("".join(
        json.dumps({"step": s, "epoch": 0, "loss": 3.0 / s, "lr": 1e-4, "grad_norm": 1.0}) + "\n" for s in range(1, 9)))
    write_json_atomic(directory / "logs" / "compute.json", {"attention": "sdpa", "why": "CPU"}, indent=2)
    return summary


def _evaluate(run: Path, store_id: str, model: str, training, kinds: list[str]) -> dict:
    rows = [trajectory_row(n, kind, model) for n, kind in enumerate(kinds)]
    write_store(run / store_id, rows, {"model": model, "student": "tiny-random", "training": training}, parts=1)
    results = {"label": store_id.split("/")[1], "model": model, "student": "tiny-random", "training": training,
               "method": "agent prompt" if training is None else "+FTP", "dir": str(run / store_id),
               **model_metrics(rows, [FACT, MATH], "agent")}
    write_json_atomic(run / store_id / "results.json", results, indent=2)
    return results


def make_run(root: Path, trajectories: int = 40) -> Path:
    run = root / "run"
    rows = [trajectory_row(n, KINDS[n % len(KINDS)]) for n in range(trajectories)]
    write_store(run / GENERATE, rows, {"model": "teacher-oracle", "generate": {"ftp": True}})
    cot = [{**item_row(item(n)), "model": "teacher-oracle", "prompt_version": "cot-v1", "sampling": "{}",
            "system_prompt": "Think step by step.", "response": f"Step by step: the answer is {item(n).gold}.",
            "answer": item(n).gold, "finish_reason": "stop", "prompt_tokens": 30, "completion_tokens": 12,
            "correct": True, "exact_match": 1.0, "f1": 1.0, "score_method": item(n).domain, **run_fields(1, 0.4)}
           for n in range(6)]
    with RecordStore(run / COT, COT_SCHEMA, settings={"model": "teacher-oracle"}) as store:
        for row in cot:
            store.add(row)
    verdicts = _filter(run, rows)
    sft = _train(run, [v for v in verdicts if v["keep"]])
    base = _evaluate(run, BASE, "tiny-random", None, ["parse_error", "no_answer", "incorrect", "parse_error"] * 2)
    distilled = _evaluate(run, DISTILLED, str(run / TRAIN / "model"), "agent-ftp",
                          ["kept", "incorrect", "kept", "execution_error"] * 2)
    (run / "report").mkdir()
    (run / "report" / "report.md").write_text(
        "## Average accuracy (%)\n\n| student | agent prompt | +FTP |\n|---|---|---|\n"
        f"| tiny-random (0.3M) | {100 * base['average']:.2f} | {100 * distilled['average']:.2f} |\n")
    _png(run / "report" / "accuracy.png")
    (run / "sweep").mkdir()
    write_json_atomic(run / "sweep" / "trials.json", [
        {"student": "tiny-random", "method": method, "status": "TERMINATED", "error": None, "dir": "x",
         "metrics": {"average": results["average"], **{f"accuracy/{k}": m["accuracy"] for k, m in results["sets"].items()}}}
        for method, results in (("agent prompt", base), ("+FTP", distilled))], indent=2)
    summaries = {"generate": {"records": len(rows), "failures": 0}, "filter": {"trajectories": {"records": len(rows)}},
                 "train": {"sft": sft, "steps": 8}, "evaluate": {"base": {"average": base["average"]}},
                 "report": {"rows": 2}, "sweep": {"trials": 2}, "cot": {"records": len(cot)}}
    write_json_atomic(run / "manifest.json", {"stages": {
        name: {"fingerprint": f"{name}-fingerprint-0123456789", "finished_at": "2026-12-01T10:00:00",
               "seconds": 4.0, "summary": summary} for name, summary in summaries.items()}}, indent=2)
    (run / "config.yaml").write_text("run:\n  name: viewer-test\n")
    return run


def make_big_store(directory: Path, records: int = 100_000, real: int = 300, per_part: int = 10_000,
                   row_group: int = 500) -> Path:
    """A trajectory store of `records` records: `real` made through the store, copied under new example ids
    into parts of `per_part` rows (row groups of `row_group`, so one record reads as one group)."""
    seed = directory.parent / f"{directory.name}-seed"
    write_store(seed, [trajectory_row(n, KINDS[n % len(KINDS)]) for n in range(real)], {"model": "teacher-oracle"})
    table = pq.read_table(seed / "parts").sort_by("example_id")  # parts list in no fixed order: row n is item n
    (directory / "parts").mkdir(parents=True)
    (directory / "settings.json").write_text((seed / "settings.json").read_text())
    for start in range(0, records, per_part):
        count = min(per_part, records - start)
        part = table.take(pa.array([n % real for n in range(start, start + count)]))
        ids = pc.binary_join_element_wise(pa.array(["big"] * count), pa.array([f"{n:06d}" for n in range(start, start + count)]), "-")
        part = part.set_column(part.schema.get_field_index("example_id"), "example_id", ids)
        pq.write_table(part, directory / "parts" / f"part-big-{start // per_part:04d}.parquet", row_group_size=row_group)
    return directory
