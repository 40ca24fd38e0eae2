"""The world oracle: a teacher that knows how each generated-world question is solved.

The paper's teacher is a 32B model on GPUs; on a 2-core machine the quickstart
needs a teacher that solves questions, and the embedded 135M model does not
(it answers 0 of the quickstart's world questions). The world generator
knows each question's solution path: the passages a fact question hops
through and a Python program for a math question. This engine writes the
CodeAct actions a good teacher would write along that path (search each hop
by its title, then `final_answer`; run the program, then `final_answer`) and
a chain of thought for the `cot` stage. Everything else stays real: the
actions run in the sandboxes, `web_search` hits the index, and the answers
are scored and filtered like any model's. Questions outside the world get an
error, not an answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from ray_distill.agent.parsing import END_CODE
from ray_distill.agent.prompts import final_answer_request
from ray_distill.engines.protocol import Completion, GenerationRequest, Sample

_TASK = "Task: "


def _action(thought: str, code: str) -> str:
    return f"Thought: {thought}\nCode:\n```py\n{code}\n```"


class WorldOracleEngine:
    """Engine protocol over the questions of one generated world (`world_dir/questions/*.json`)."""

    def __init__(self, model: str = "world-oracle", world_dir: Optional[str] = None):
        if not world_dir or not (Path(world_dir) / "questions").is_dir():
            raise ValueError(f"the world oracle needs world_dir, a generated world with questions/; got {world_dir!r}")
        self.model = model
        self.questions = {}
        for path in sorted((Path(world_dir) / "questions").glob("*.json")):
            for example in json.loads(path.read_text())["examples"]:
                self.questions[example["question"]] = example

    def plan(self, example: dict) -> list[str]:
        """The agent's actions for `example`, without the stop string."""
        answer = repr(example["answer"])
        if "hops" in example:
            hops = example["hops"]
            steps = [_action(("" if i == 0 else f"{hops[i - 1]['fact']} ") + f"Next I look up {hop['title']}.",
                             f"print(web_search({hop['title']!r}))") for i, hop in enumerate(hops)]
            return steps + [_action(f"{hops[-1]['fact']} So the answer is {example['answer']}.",
                                    f"final_answer({answer})")]
        return [_action("I will compute it step by step in Python.", example["solution"]),
                _action(f"The program printed the result, {example['answer']}.", f"final_answer({answer})")]

    def chain_of_thought(self, example: dict) -> str:
        if "hops" in example:
            first = f"To answer this, I need to look up {example['hops'][0]['title']} first."
            body = [hop["fact"] for hop in example["hops"]]
            answer = example["answer"]
        else:
            first = "I will work it out step by step."
            body = [f"In Python: {example['solution']!r}."]
            answer = f"\\boxed{{{example['answer']}}}"
        return "\n\n".join([first, *body, f"<answer>{answer}</answer>"])

    def _respond(self, messages: Sequence[dict], continuing: bool) -> str:
        tasks = [i for i, m in enumerate(messages) if m["role"] == "user" and m["content"].startswith(_TASK)
                 and m["content"][len(_TASK):] in self.questions]
        if not tasks:  # a plain question: the `cot` stage
            question = next((m["content"] for m in messages if m["role"] == "user"), "")
            if question not in self.questions:
                raise ValueError(f"the world oracle knows only its world's questions, not {question[:80]!r}")
            return self.chain_of_thought(self.questions[question])
        example = self.questions[messages[tasks[-1]]["content"][len(_TASK):]]
        if messages[-1]["role"] == "user" and messages[-1]["content"] == final_answer_request(example["question"]):
            return str(example["answer"])
        plan = self.plan(example)
        done = sum(m["role"] == "assistant" for m in messages[tasks[-1] + 1:]) - int(continuing)
        action = plan[min(done, len(plan) - 1)]
        if continuing:  # the FTP prefix is the thought already written (the agent strips its blank line)
            return action[action.index("\nCode:"):]
        return action

    async def generate(self, request: GenerationRequest) -> Completion:
        text = self._respond(request.messages, request.continue_final_message)
        sample = Sample(text, "stop" if END_CODE in request.params.stop else "eos", len(text.split()))
        return Completion([sample] * request.params.n, prompt_tokens=sum(len(m["content"].split())
                                                                         for m in request.messages))

    async def close(self) -> None:
        pass
