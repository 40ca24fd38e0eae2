from __future__ import annotations

import pytest

from ray_distill.agent.parsing import END_CODE, normalise_step, parse_step

WELL_FORMED = "Thought: I will multiply.\nCode:\n```py\nx = 17 * 23\nprint(x)\n```"


@pytest.mark.parametrize(
    "text, thought, code",
    [
        (WELL_FORMED, "I will multiply.", "x = 17 * 23\nprint(x)"),
        (WELL_FORMED + END_CODE, "I will multiply.", "x = 17 * 23\nprint(x)"),
        ("Thought: t\nCode:\n```python\nprint(1)\n```", "t", "print(1)"),
        ("Thought: t\nCode:\n```\nprint(2)\n```", "t", "print(2)"),  # fenced without a language
        ("Thought: t\nCode:\n```Python3  \nprint(2)\n```", "t", "print(2)"),
        ("Thought: a\n```py\na = 1\n```\nthen\n```py\nprint(a)\n```", "a", "a = 1\n\nprint(a)"),  # multi-block
        ("Thought: go\nCode:\n```py\nx = 1\nprint(x)", "go", "x = 1\nprint(x)"),  # truncated, still compiles
        ("Thought: go\nCode:\n```py\nx = 1\nprint(x)\n``", "go", "x = 1\nprint(x)"),  # cut inside the fence
        ("Thought: bare\nCode:\nprint(3)\n", "bare", "print(3)"),  # no fence, compiles
        ("thought: lower case label\nCode:\n```py\nprint(4)\n```", "lower case label", "print(4)"),
        ("Thought: multi\nline thought\nCode:\n```py\nprint(5)\n```", "multi\nline thought", "print(5)"),
    ],
)
def test_code_is_extracted(text, thought, code):
    step = parse_step(text)
    assert step.ok and step.code == code and step.thought == thought


@pytest.mark.parametrize(
    "text, reason",
    [
        ("Thought: The answer is Paris.", "no code block found"),
        ("Paris", "no code block found"),
        ("The capital of France is Paris and it is big.", "no code block found"),
        ("Thought: go\nCode:\n```py\nfor i in range(", "never closed"),
        ("Thought: empty\nCode:\n```py\n```", "the code block is empty"),
    ],
)
def test_unparseable_steps_say_why(text, reason):
    step = parse_step(text)
    assert not step.ok and reason in step.error


def test_stored_step_ends_with_the_end_marker_once():
    assert normalise_step(WELL_FORMED) == WELL_FORMED + END_CODE
    assert normalise_step(WELL_FORMED + END_CODE + "\n") == WELL_FORMED + END_CODE
