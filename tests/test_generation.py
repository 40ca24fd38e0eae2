"""The generation core without Ray: the exactly-once record store, rollouts with retries,
the driver that stores outcomes, the filter rules and the LLM judge."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_distill.agent import Agent, AgentConfig, retrieval_tools
from ray_distill.config.schema import FilterConfig
from ray_distill.engines import ContextLengthError, SamplingParams
from ray_distill.generation.driver import run_items, summarize
from ray_distill.stages.paths import settings_dir
from ray_distill.generation.filtering import cot_drop_reason, trajectory_drop_reason, verdict_summary
from ray_distill.generation.records import COT_SCHEMA, TRAJECTORY_SCHEMA, RolloutItem
from ray_distill.generation.rollout import CotRollout, EpisodeRollout, Failure
from ray_distill.generation.store import RecordStore, read_records
from ray_distill.scoring.judge import Judge, parse_verdict
from ray_distill.tools.sandbox import SandboxPolicy, SandboxPool, Toolbox

from conftest import ScriptedEngine

SCHEMA = pa.schema([("dataset", pa.string()), ("example_id", pa.string()), ("sample", pa.int32()),
                    ("value", pa.string())])


def row(example_id: str, sample: int = 0, value: str = "v") -> dict:
    return {"dataset": "d", "example_id": example_id, "sample": sample, "value": value}


def item(example_id: str = "q1", domain: str = "fact", gold: str = "Zedville", **kwargs) -> RolloutItem:
    return RolloutItem("world-fact-train", example_id, 0, domain, "Where was Zed born?", gold, **kwargs)


# --- the store -------------------------------------------------------------------------------------

def test_store_writes_whole_parts_and_a_reopened_store_knows_its_keys(tmp_path):
    with RecordStore(tmp_path, SCHEMA, flush_every=2) as store:
        assert store.add(row("a")) and store.add(row("b"))  # the second add flushes a part
        assert len(list((tmp_path / "parts").glob("part-*.parquet"))) == 1
        assert store.add(row("c"))
    reopened = RecordStore(tmp_path, SCHEMA)
    assert len(reopened) == 3 and ("d", "a", 0) in reopened and ("d", "z", 0) not in reopened
    assert not reopened.add(row("a", value="again"))  # a key is stored once
    assert sorted(pd.read_parquet(tmp_path / "parts")["example_id"]) == ["a", "b", "c"]


def test_a_crash_loses_only_the_unflushed_buffer_and_leaves_no_torn_part(tmp_path):
    store = RecordStore(tmp_path, SCHEMA, flush_every=2)
    for name in "abc":
        store.add(row(name))
    (tmp_path / "parts" / ".tmp-part-x.parquet").write_bytes(b"PAR1 half a file")  # killed mid-write
    del store  # killed: "c" was still buffered
    reopened = RecordStore(tmp_path, SCHEMA)
    assert len(reopened) == 2 and ("d", "c", 0) not in reopened
    assert not list((tmp_path / "parts").glob(".tmp-*"))
    assert read_records(tmp_path).num_rows == 2


def test_failures_are_logged_durably_and_a_torn_line_is_skipped(tmp_path):
    store = RecordStore(tmp_path, SCHEMA)
    store.add_failure(("d", "a", 0), 1, "RuntimeError: engine died")
    with open(tmp_path / "failures.jsonl", "a") as handle:
        handle.write('{"dataset": "d", "exam')  # a crash mid-line
    assert [(f["example_id"], f["attempt"], f["error"]) for f in store.failures()] == [("a", 1, "RuntimeError: engine died")]
    assert len(store) == 0  # a failure is not a record


def test_a_store_refuses_a_schema_without_the_key():
    with pytest.raises(ValueError, match="key columns"):
        RecordStore("/tmp/unused", pa.schema([("dataset", pa.string())]))


def test_settings_get_their_own_directory_and_the_store_records_them_when_it_opens(tmp_path):
    a = settings_dir(tmp_path, {"max_steps": 5})
    assert settings_dir(tmp_path, {"max_steps": 5}) == a != settings_dir(tmp_path, {"max_steps": 3})
    assert not a.exists()  # naming a store's directory creates nothing
    RecordStore(a, SCHEMA, settings={"max_steps": 5})
    assert json.loads((a / "settings.json").read_text()) == {"max_steps": 5}


# --- the driver ------------------------------------------------------------------------------------

def test_the_driver_runs_only_missing_items_stores_each_key_once_and_logs_failures(tmp_path):
    items = [RolloutItem("d", f"q{i}", 0, "fact", "?", "a") for i in range(4)]
    store = RecordStore(tmp_path, SCHEMA)
    store.add(row("q0"))
    store.flush()
    seen = []

    def stream(todo):
        seen.extend(i.example_id for i in todo)
        yield Failure(("d", "q1", 0), 1, "RuntimeError: replica died")
        yield row("q1")
        yield row("q1")  # delivered twice by a retried task
        yield row("q2")
        yield from [Failure(("d", "q3", 0), attempt, "SandboxError: no start") for attempt in (1, 2, 3)]

    result = run_items(items, store, stream, progress=False)
    assert seen == ["q1", "q2", "q3"]
    assert result["stored"] == 2 and result["duplicates_dropped"] == 1 and result["failed_attempts"] == 4
    assert result["unfinished"] == 1
    table = read_records(tmp_path)
    assert sorted(table.column("example_id").to_pylist()) == ["q0", "q1", "q2"]  # q3 stays missing, not answered
    assert len(store.failures()) == 4


# --- rollouts --------------------------------------------------------------------------------------

@dataclass
class FlakyEngine:
    """Fails the first `failures` calls like a dead replica, then answers from a script."""

    inner: ScriptedEngine
    failures: int
    model: str = "flaky"

    async def generate(self, request):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("engine replica died")
        return await self.inner.generate(request)

    async def close(self):
        pass


def step(thought: str, code: str) -> str:
    return f"Thought: {thought}\nCode:\n```py\n{code}\n```"


async def _zed_search(name, args, kwargs):
    return "Doc 1 (Title: Zed) score=0.9\nZed was born in Zedville."


async def _episode_outcomes(engine, rollout_item, max_attempts=3, tools=Toolbox(_zed_search)):
    async with SandboxPool(SandboxPolicy(timeout_seconds=5), tools, size=1) as pool:
        rollout = EpisodeRollout(Agent(engine, AgentConfig(max_steps=2)), pool, max_attempts=max_attempts)
        return await rollout(rollout_item)


def test_an_engine_failure_is_retried_and_the_record_is_scored():
    script = ScriptedEngine([[step("Search.", "print(web_search('Zed'))")], [step("Answer.", "final_answer('zedville')")]])
    outcomes = asyncio.run(_episode_outcomes(FlakyEngine(script, failures=1), item()))
    assert isinstance(outcomes[0], Failure) and outcomes[0].attempt == 1 and "replica died" in outcomes[0].error
    record = outcomes[1]
    assert record["attempt"] == 2 and record["final_answer"] == "zedville" and record["correct"] is True
    assert record["num_steps"] == 2 and record["answered_by"] == "final_answer"
    # what the tool was asked and what it returned stay readable in the record
    (call,) = record["steps"][0]["tool_calls"]
    assert call["name"] == "web_search" and json.loads(call["arguments"]) == {"args": ["Zed"], "kwargs": {}}
    assert "Zedville" in call["result"] and call["error"] is None
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    # the record fits the trajectory schema as it is
    assert pa.Table.from_pylist([record], schema=TRAJECTORY_SCHEMA).num_rows == 1


def test_an_item_that_always_fails_yields_only_failures_never_an_answer():
    outcomes = asyncio.run(_episode_outcomes(FlakyEngine(ScriptedEngine([]), failures=10), item(), max_attempts=3))
    assert [type(o) for o in outcomes] == [Failure] * 3 and [o.attempt for o in outcomes] == [1, 2, 3]


class DeadRetriever:
    def search(self, queries, k=3):
        raise ConnectionError("retrieval service unreachable")


def test_a_retrieval_outage_fails_the_attempt_instead_of_becoming_an_observation_to_train_on():
    script = ScriptedEngine([[step("Search.", "print(web_search('Zed'))")]] * 2)
    outcomes = asyncio.run(_episode_outcomes(script, item(), max_attempts=2, tools=retrieval_tools(DeadRetriever())))
    assert [type(o) for o in outcomes] == [Failure, Failure]
    assert outcomes[0].error.startswith("ToolInfrastructureError: web_search: ToolUnavailable: retrieval failed: "
                                        "ConnectionError: retrieval service unreachable")


def test_a_bad_query_is_an_error_of_the_code_not_an_outage():
    script = ScriptedEngine([[step("Search.", "print(web_search(''))")], [step("Answer.", "final_answer('Zedville')")]])
    (record,) = asyncio.run(_episode_outcomes(script, item(), tools=retrieval_tools(DeadRetriever())))
    assert record["execution_errors"] == 1 and record["correct"] is True


class ContextFullEngine:
    model = "full"

    async def generate(self, request):
        raise ContextLengthError("the prompt has 9000 tokens; full reads at most 8192")

    async def close(self):
        pass


def test_an_episode_that_outgrows_the_context_is_a_record_not_a_retry():
    (record,) = asyncio.run(_episode_outcomes(ContextFullEngine(), item()))
    assert record["context_exhausted"].startswith("the prompt has 9000") and record["answered_by"] is None
    assert record["correct"] is False and record["attempt"] == 1


def test_a_wrong_answer_is_a_record_scored_incorrect_with_its_prefix_kept():
    script = ScriptedEngine([[" I should compute.\nCode:\n```py\nfinal_answer(41)\n```"]])
    outcomes = asyncio.run(_episode_outcomes(script, item(domain="math", gold="42", ftp_prefix="Thought: Add them.")))
    (record,) = outcomes
    assert record["correct"] is False and record["final_answer"] == "41"
    assert record["ftp_prefix"] == "Thought: Add them." and record["steps"][0]["model_output"].startswith("Thought: Add them.")


def test_a_cot_rollout_extracts_and_scores_the_answer():
    engine = ScriptedEngine([["First, 6 times 7.\n\nSo it is 42.\n<answer>\\boxed{42}</answer>"]])
    (record,) = asyncio.run(CotRollout(engine, SamplingParams(max_new_tokens=64))(item(domain="math", gold="42", seed=7,
                                                                                      temperature=0.5)))
    assert record["answer"] == "42" and record["correct"] is True
    assert json.loads(record["sampling"])["temperature"] == 0.5 and engine.requests[0].params.seed == 7
    assert pa.Table.from_pylist([record], schema=COT_SCHEMA).num_rows == 1


def test_a_cot_response_without_a_marked_answer_has_none():
    engine = ScriptedEngine([["First, 6 times 7 is 42, and then"]])  # cut off before its answer
    (record,) = asyncio.run(CotRollout(engine, SamplingParams(max_new_tokens=8))(item(domain="math", gold="42")))
    assert record["answer"] is None and record["correct"] is False
    assert cot_drop_reason(record, FilterConfig()) == "no_answer"


# --- filter rules ----------------------------------------------------------------------------------

def trajectory(**overrides) -> dict:
    return {"dataset": "d", "answered_by": "final_answer", "correct": True, "parse_errors": 0, "execution_errors": 0,
            **overrides}


@pytest.mark.parametrize("overrides, rules, reason", [
    ({}, FilterConfig(), None),
    ({"execution_errors": 2}, FilterConfig(), None),  # recovered errors are kept on purpose
    ({"execution_errors": 2}, FilterConfig(drop_execution_errors=True), "execution_error"),
    ({"correct": False}, FilterConfig(), "incorrect"),
    ({"correct": False}, FilterConfig(require_correct=False), None),
    ({"parse_errors": 1}, FilterConfig(), "parse_error"),
    ({"parse_errors": 1}, FilterConfig(drop_parse_errors=False), None),
    ({"answered_by": "forced"}, FilterConfig(), "forced_answer"),
    ({"answered_by": "forced"}, FilterConfig(drop_forced_answers=False), None),
    ({"answered_by": None, "correct": False}, FilterConfig(require_correct=False), "no_answer"),
    ({"correct": False, "parse_errors": 1}, FilterConfig(), "incorrect"),  # the first broken rule names the drop
])
def test_trajectory_filter_rules(overrides, rules, reason):
    assert trajectory_drop_reason(trajectory(**overrides), rules) == reason


def test_cot_filter_rules_and_the_summary_counts_each_record_once():
    rules = FilterConfig()
    assert cot_drop_reason({"answer": "42", "correct": True}, rules) is None
    assert cot_drop_reason({"answer": None, "correct": False}, rules) == "no_answer"
    assert cot_drop_reason({"answer": "41", "correct": False}, rules) == "incorrect"
    rows = [{"dataset": "a", "keep": True, "drop_reason": None}, {"dataset": "a", "keep": False, "drop_reason": "incorrect"},
            {"dataset": "b", "keep": False, "drop_reason": "parse_error"}]
    assert verdict_summary(rows) == {"a": {"records": 2, "kept": 1, "dropped_incorrect": 1},
                                     "b": {"records": 1, "dropped_parse_error": 1}}


def test_summarize_reports_accuracy_per_set(tmp_path):
    rows = [{**trajectory(), "dataset": "a", "num_steps": 2, "context_exhausted": None},
            {**trajectory(correct=False, answered_by="forced"), "dataset": "a", "num_steps": 4, "context_exhausted": None}]
    summary = summarize(pa.Table.from_pylist(rows))
    assert summary["a"]["accuracy"] == 0.5 and summary["a"]["mean_steps"] == 3.0
    assert summary["a"]["answered_by_forced"] == 1


# --- the judge -------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, verdict", [("yes", True), ("Yes.", True), ("**Yes**", True), ("no", False),
                                            ("No, it is not.", False), ("", False), ("maybe", False)])
def test_judge_verdicts(reply, verdict):
    assert parse_verdict(reply) is verdict


def test_the_judge_is_greedy_cached_and_never_asks_twice(tmp_path):
    engine = ScriptedEngine([["yes"], ["no"]])
    judge = Judge(engine, tmp_path / "cache.jsonl")
    # identical triples in flight at the same time share one engine call
    verdicts = asyncio.run(judge.judge_all([("Q1", "Paris", "Paris, France"), ("Q1", "Paris", "Paris, France"),
                                            ("Q2", "Rome", "Milan"), ("Q3", "", "x")], concurrency=4))
    assert verdicts == [True, True, False, False] and judge.asked == 2
    assert all(r.params.temperature == 0 for r in engine.requests)
    again = Judge(ScriptedEngine([]), tmp_path / "cache.jsonl")  # a rerun reads the cache
    assert asyncio.run(again.judge("Q2", "Rome", "Milan")) is False and again.asked == 0
    other = Judge(ScriptedEngine([["yes"]], model="another-judge"), tmp_path / "cache.jsonl")
    assert asyncio.run(other.judge("Q2", "Rome", "Milan")) is True and other.asked == 1  # the cache is per judge


def test_records_are_readable_with_plain_pyarrow(tmp_path):
    store = RecordStore(tmp_path, SCHEMA)
    store.add(row("a"))
    store.flush()
    (part,) = (tmp_path / "parts").glob("part-*.parquet")
    assert pq.read_table(part).to_pylist() == [row("a")]
