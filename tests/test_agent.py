"""The episode state machine, driven by a scripted engine (exact control of
what the model says) against real sandboxes; the real-model runs are in
test_agent_integration.py."""

from __future__ import annotations

import asyncio
from ray_distill.agent import Agent, AgentConfig, SAGConfig, first_thought_prefix
from ray_distill.generation.records import RolloutItem, episode_row
from ray_distill.agent.episode import chat_view
from ray_distill.agent.prompts import STUDENT_SYSTEM_PROMPT, few_shot_messages
from ray_distill.tools.sandbox import SandboxPolicy, SandboxSession, Toolbox

from conftest import ScriptedEngine


def step(thought: str, code: str) -> str:
    return f"Thought: {thought}\nCode:\n```py\n{code}\n```"


async def search(name, args, kwargs):
    return f"Doc 1 (Title: Zed) score=0.90\nZed was born in {kwargs.get('query', args[0])}ville."


def episode(script, config=AgentConfig(), **kwargs):
    engine = ScriptedEngine(script)

    async def go():
        session = await SandboxSession.start(SandboxPolicy(timeout_seconds=5), Toolbox(search))
        try:
            return await Agent(engine, config).run("Where was Zed born?", session, **kwargs)
        finally:
            await session.close()

    return asyncio.run(go()), engine


def test_a_search_then_answer_episode_is_recorded_turn_by_turn():
    record, engine = episode([
        [step("Search first.", "r = web_search('Zed')\nprint(r)")],
        [step("Answer.", "final_answer('Zedville')")],
    ], question_id="q1", dataset="world")
    assert record.final_answer == "Zedville" and record.answered_by == "final_answer" and record.error is None
    assert [m["role"] for m in record.messages] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert record.messages[1]["content"] == "Task: Where was Zed born?"
    assert record.messages[2]["content"].endswith("```<end_code>")
    assert record.messages[3]["content"].startswith("Observation:\nExecution logs:\nDoc 1 (Title: Zed)")
    first = record.steps[0]
    assert first.tool_calls == [{"name": "web_search", "args": ["Zed"], "kwargs": {},
                                 "value": "Doc 1 (Title: Zed) score=0.90\nZed was born in Zedville."}]
    assert first.thought == "Search first." and first.generation_seconds >= 0 and first.execution_seconds > 0
    # the engine saw the few-shot turns between system prompt and task, observations as user turns
    seen = engine.requests[1].messages
    assert seen[1:1 + len(few_shot_messages())] == few_shot_messages()
    assert seen[-1]["role"] == "user" and seen[-1]["content"].startswith("Observation:")
    assert engine.requests[0].params.stop == ("<end_code>", "Observation:", "Calling tools:")
    assert record.to_dict()["steps"][0]["tool_calls"][0]["name"] == "web_search"


def test_parse_and_execution_errors_become_observations_and_the_episode_goes_on():
    record, _ = episode([
        ["The answer is Zedville."],
        [step("Compute.", "x = 1\ny = x / 0")],
        [step("Retry.", "print(x)\nfinal_answer('Zedville')")],
    ])
    parse_error, exec_error, final = record.steps
    assert parse_error.code is None and "no code block found" in parse_error.observation
    assert "Thought: your reasoning\nCode:\n```py" in parse_error.observation
    assert exec_error.error["type"] == "ZeroDivisionError"
    assert "Error: ZeroDivisionError: division by zero at line 2: y = x / 0" in exec_error.observation
    assert "Now retry" in exec_error.observation
    assert final.stdout == "1\n" and record.final_answer == "Zedville"  # state from the failed step survived


def test_first_thought_prefix_is_continued_and_kept_in_the_first_turn():
    prefix = first_thought_prefix("Zed is a person, so I should look him up.\n\nThen I read the answer.")
    assert prefix == "Thought: Zed is a person, so I should look him up.\n\n"
    record, engine = episode([
        ["\nCode:\n```py\nprint(web_search('Zed'))\n```"],
        [step("Done.", "final_answer('Zedville')")],
    ], ftp_prefix=prefix)
    first, second = engine.requests
    assert first.continue_final_message and not second.continue_final_message
    assert first.messages[-1] == {"role": "assistant", "content": prefix.rstrip()}
    assert record.messages[2]["content"].startswith("Thought: Zed is a person, so I should look him up.\nCode:")
    assert record.steps[0].code == "print(web_search('Zed'))" and record.ftp_prefix == prefix


def test_after_max_steps_one_more_call_asks_for_the_answer():
    config = AgentConfig(max_steps=2)
    record, engine = episode([[step("a", "print(1)")], [step("b", "print(2)")], ["  Zedville \n"]], config)
    assert record.answered_by == "forced" and record.final_answer == "Zedville"
    assert engine.requests[-1].messages[-1]["content"].startswith("You have used all your steps.")
    assert len(record.steps) == 2


def test_sag_votes_keeps_the_chosen_state_and_records_every_candidate():
    sag = AgentConfig(sag=SAGConfig(n=4))
    record, engine = episode([
        [step("a", "x = 'one'\nprint(17 * 23)"), "no code here", step("b", "x = 'two'\nprint(391)"),
         step("c", "x = 'three'\nraise ValueError('no')")],
        [step("d", "final_answer(x)"), step("e", "final_answer('Lyon')"), step("f", "final_answer(x)"),
         step("g", "final_answer(x + '!')")],
    ], sag, seed=3)
    first, second = record.steps
    assert first.valid_candidates == 2 and first.chosen == 0
    assert [c.parse_error is None for c in first.candidates] == [True, False, True, True]
    assert first.candidates[3].error["type"] == "ValueError"
    assert second.chosen == 0 and record.final_answer == "one"  # the state of candidate 0 was kept
    assert [c.final_answer for c in second.candidates] == ["one", "Lyon", "one", "one!"]
    # the stored record keeps every candidate with the group it voted for
    row = episode_row(RolloutItem("d", "1", 0, "fact", "q", "one"), record)
    assert [c["vote"] for c in row["steps"][0]["candidates"]] == ["output: 391", None, "output: 391", None]
    assert row["steps"][0]["candidates"][1]["parse_error"] and row["steps"][0]["candidates"][3]["error_type"] == "ValueError"
    assert [c["vote"] for c in row["steps"][1]["candidates"]] == ["answer: one", "answer: lyon", "answer: one", "answer: one!"]
    params = engine.requests[0].params
    assert (params.n, params.temperature, params.top_p) == (4, 0.4, 0.8)
    assert engine.requests[0].params.seed != engine.requests[1].params.seed


def test_sag_with_no_valid_candidate_shows_the_error_and_goes_on_from_the_chosen_one():
    sag = AgentConfig(sag=SAGConfig(n=2), max_steps=3)
    record, _ = episode([
        [step("a", "x = 5")] * 2,
        [step("b", "x = 6\nboom()"), "prose"],
        [step("c", "final_answer(x)")] * 2,
    ], sag)
    step1 = record.steps[1]
    assert step1.valid_candidates == 0 and step1.chosen == 0
    assert "NameError: name 'boom' is not defined" in step1.observation
    assert record.final_answer == "6"  # like a failed plain step, its partial state is kept


def test_a_dead_sandbox_is_an_infrastructure_error_not_an_answer():
    async def go():
        engine = ScriptedEngine([[step("a", "print(1)")]])
        session = await SandboxSession.start(SandboxPolicy(timeout_seconds=5))
        await session.close()
        return await Agent(engine, AgentConfig()).run("q", session)

    record = asyncio.run(go())
    assert record.error.startswith("sandbox:") and record.final_answer is None


def test_student_prompt_is_short_and_has_no_examples():
    config = AgentConfig(system_prompt=STUDENT_SYSTEM_PROMPT, few_shot=False)
    assert len(STUDENT_SYSTEM_PROMPT) < 1000
    view = chat_view([{"role": "system", "content": "s"}, {"role": "user", "content": "t"},
                      {"role": "tool", "content": "o"}], config.few_shot)
    assert view == [{"role": "system", "content": "s"}, {"role": "user", "content": "t"}, {"role": "user", "content": "o"}]
