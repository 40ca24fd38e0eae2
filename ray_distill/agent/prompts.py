"""The agent's prompts: a long teacher prompt with worked examples, a short
student prompt, and the messages that frame tasks and observations.

All text is ours. PROMPT_VERSION goes into every episode record; change it
whenever a prompt's wording changes.
"""

from __future__ import annotations

from ray_distill.agent.parsing import END_CODE

PROMPT_VERSION = "codeact-v1"

_FORMAT = f"""You solve tasks by writing Python code, one step at a time.
At each step, write:
Thought: what you know so far and what you will do next.
Code:
```py
# python code for this step
```{END_CODE}

The code runs in a Python interpreter that keeps its variables between steps.
Whatever it prints comes back to you as an observation starting with "Observation:".
Use print() to see results. When you know the answer, call final_answer(answer)."""

_TOOLS = """Functions you can call from your code:
- web_search(query: str) -> str: searches an encyclopedia and returns the 3 most relevant passages.
- final_answer(answer): ends the task with your answer."""

_RULES = f"""Rules:
1. Always write 'Thought:', then 'Code:', then one ```py block ending with ```{END_CODE}.
2. Use only the variables you defined; print what you need to read in the next step.
3. Search with short, specific queries; one fact per search works best.
4. For a question about several entities, find each link in turn.
5. Only these modules can be imported: math, re, itertools, collections, datetime, statistics, random, numpy, sympy, fractions, decimal, functools.
6. If a step fails, read the error and try a different approach instead of repeating it.
7. Give the final answer as a short phrase or a number, without explanation."""

def _step(thought: str, code: str) -> str:
    return f"Thought: {thought}\nCode:\n```py\n{code}\n```{END_CODE}"


# Worked episodes shown to the teacher as earlier chat turns (small models copy
# turns far more reliably than examples pasted into the system prompt).
FEW_SHOT_EPISODES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "In which year was the university that Mara Olin attended founded?",
        (
            (_step("I need the university Mara Olin attended, then its founding year. I will search for Mara Olin first.",
                   'print(web_search("Mara Olin university"))'),
             "Doc 1 (Title: Mara Olin) score=0.81\nMara Olin is a chemist who studied at Venhall University before "
             "joining a research institute.\nDoc 2 (Title: Olin Bridge) score=0.52\nThe Olin Bridge crosses the river "
             "near the old market.\nDoc 3 (Title: Mara River) score=0.47\nThe Mara River flows east to the sea."),
            (_step("Mara Olin attended Venhall University. Now I need the year Venhall University was founded.",
                   'print(web_search("Venhall University founded"))'),
             "Doc 1 (Title: Venhall University) score=0.86\nVenhall University was founded in 1821 and has about 9000 "
             "students.\nDoc 2 (Title: Venhall) score=0.61\nVenhall is a town on the northern coast.\nDoc 3 (Title: "
             "Mara Olin) score=0.44\nMara Olin is a chemist who studied at Venhall University before joining a "
             "research institute."),
            (_step("Venhall University was founded in 1821, which answers the question.", "final_answer(1821)"), None),
        ),
    ),
    (
        "A shop sells pens at 3 dollars each and notebooks at 7 dollars each. Ana buys 4 pens and 5 notebooks and "
        "pays with a 50 dollar note. How much change does she get?",
        (
            (_step("The cost is 4*3 + 5*7 and the change is 50 minus the cost. I will compute both.",
                   "cost = 4 * 3 + 5 * 7\nchange = 50 - cost\nprint(cost, change)"),
             "47 3"),
            (_step("The purchase costs 47 dollars, so the change is 3 dollars.", "final_answer(3)"), None),
        ),
    ),
)


def few_shot_messages() -> list[dict]:
    """The worked episodes as chat turns, observations as user turns."""
    messages = []
    for question, steps in FEW_SHOT_EPISODES:
        messages.append({"role": "user", "content": task_message(question)})
        for action, logs in steps:
            messages.append({"role": "assistant", "content": action})
            if logs is not None:
                messages.append({"role": "user", "content": observation_message(logs)})
    return messages


TEACHER_SYSTEM_PROMPT = "\n\n".join([_FORMAT, _TOOLS, _RULES])
STUDENT_SYSTEM_PROMPT = "\n\n".join([_FORMAT, _TOOLS])


def task_message(question: str) -> str:
    return f"Task: {question}"


def observation_message(stdout: str, truncated: bool = False) -> str:
    logs = stdout.rstrip("\n") if stdout.strip() else "(nothing was printed)"
    note = "\n[output truncated]" if truncated else ""
    return f"Observation:\nExecution logs:\n{logs}{note}"


def error_message(error: str, stdout: str = "") -> str:
    logs = f"Execution logs:\n{stdout.rstrip()}\n" if stdout.strip() else ""
    return (
        f"Observation:\n{logs}Error: {error}\n"
        "Now retry: do not repeat the same mistake. If you have already retried several times, try a different approach."
    )


def final_answer_request(question: str) -> str:
    return (
        "You have used all your steps. Based on everything above, give the final answer to the task "
        f"as a short phrase or a number, with nothing else.\nTask: {question}"
    )


COT_PROMPT_VERSION = "cot-v1"
COT_SYSTEM_PROMPT = (
    "Solve the task step by step. Write your reasoning first, in short paragraphs separated by blank lines. "
    "Then give the final answer inside <answer></answer> tags, as a short phrase or a number; "
    "for a math answer, write it in LaTeX as \\boxed{...} inside the tags."
)
