"""`ray-distill chat`: ask the agent a question and watch it work, step by step.

`--model` picks who answers: the distilled student (the default once the run has one: the config's
own export, else the run's only one), the base student, the teacher, or any model name or path. A student answers as it was trained
and evaluated (the student's system prompt, no worked examples); the teacher with its own prompt and
examples.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from ray_distill.agent import Agent, AgentConfig, SAGConfig, StepRecord, prompts, retrieval_tools
from ray_distill.agent.parsing import STOP_STRINGS
from ray_distill.config import ExperimentConfig
from ray_distill.engines import SamplingParams
from ray_distill.engines.spec import EngineSpec
from ray_distill.errors import UserError
from ray_distill.stages.base import StageContext
from ray_distill.stages.paths import student_model_dir, trained_students
from ray_distill.stages.services import open_retriever
from ray_distill.tools.sandbox import SandboxPolicy, SandboxPool
from ray_distill.training.export import EXPORT_INFO

MODEL_CHOICES = ("distilled", "base", "teacher")


@dataclass(frozen=True)
class ChatModel:
    spec: EngineSpec
    teacher: bool  # answers with the teacher's prompt and worked examples
    description: str


def _describe(export: Path) -> str:
    info = json.loads((export / EXPORT_INFO).read_text())
    return f"{export.parent.parent.name} student of {info.get('student')}, {info.get('steps')} steps ({export})"


def _distilled(config: ExperimentConfig, required: bool, interactive: bool) -> Optional[Path]:
    """The config's own distilled student; else the run's one; with several (a sweep), the one the user picks."""
    run_dir = Path(config.run.dir)
    own = student_model_dir(StageContext(config, run_dir))
    if (own / EXPORT_INFO).is_file():
        return own
    found = trained_students(run_dir)
    if len(found) == 1:
        return found[0]
    if not found:
        if required:
            raise UserError(f"no distilled student in {run_dir}: train one with `ray-distill run CONFIG`, or pick "
                            f"--model base, teacher or a model name or path")
        return None
    listing = "\n".join(f"  {n}. {_describe(export)}" for n, export in enumerate(found, 1))
    if not interactive:
        raise UserError(f"{run_dir} holds {len(found)} distilled students; pick one with --model PATH:\n{listing}")
    print(f"{run_dir} holds {len(found)} distilled students:\n{listing}")
    while True:
        answer = _ask(f"which one? [1-{len(found)}]> ")
        if not answer:
            raise UserError("no student picked")
        if answer.isdigit() and 1 <= int(answer) <= len(found):
            return found[int(answer) - 1]


def chat_model(config: ExperimentConfig, choice: Optional[str], backend: Optional[str],
               interactive: bool = False) -> ChatModel:
    """The engine `--model` names (None: the run's distilled student, else the base student)."""
    if choice == "teacher":
        engine = config.teacher_engine
        if backend and engine.backend != "oracle":  # the oracle is not a model another backend could load
            engine = replace(engine, backend=backend)
        return ChatModel(engine.spec(config.models.teacher), True, f"the teacher, {config.models.teacher}")
    student_engine = replace(config.student_engine, backend=backend or "hf")
    if choice in (None, "distilled"):
        export = _distilled(config, required=choice == "distilled", interactive=interactive)
        if export is not None:
            return ChatModel(student_engine.spec(str(export)), False, f"the distilled {_describe(export)}")
    if choice in (None, "base"):
        return ChatModel(student_engine.spec(config.models.student), False,
                         f"the base student, {config.models.student}"
                         + (" (the run has no distilled student yet)" if choice is None else ""))
    return ChatModel(student_engine.spec(choice), False, choice)


def _show(step: StepRecord) -> None:
    print(f"\n--- step {step.index + 1} ({step.generation_seconds:.1f} s to generate)")
    if step.candidates:
        print(f"[SAG] {step.valid_candidates}/{len(step.candidates)} valid candidates, kept #{step.chosen + 1}")
    print(step.model_output)
    print(step.observation)


def chat(config: ExperimentConfig, question: Optional[str], backend: Optional[str], sag: int, max_steps: int,
         max_new_tokens: int, model: Optional[str] = None) -> int:
    retriever = open_retriever(config)
    chosen = chat_model(config, model, backend, interactive=question is None and sys.stdin.isatty())
    print(f"model: {chosen.description}", flush=True)
    engine = chosen.spec.build()
    agent_config = AgentConfig(
        system_prompt=prompts.TEACHER_SYSTEM_PROMPT if chosen.teacher else prompts.STUDENT_SYSTEM_PROMPT,
        few_shot=chosen.teacher,
        max_steps=max_steps,
        sampling=SamplingParams(max_new_tokens=max_new_tokens, stop=STOP_STRINGS),
        sag=SAGConfig(n=sag) if sag > 1 else None,
    )
    agent = Agent(engine, agent_config)

    async def session_loop() -> None:
        async with SandboxPool(SandboxPolicy(), retrieval_tools(retriever), size=1) as pool:
            while True:
                q = question if question is not None else _ask()
                if not q:
                    return
                async with pool.session() as sandbox:
                    record = await agent.run(q, sandbox, on_step=_show)
                print(f"\n=== answer: {record.final_answer!r} ({record.answered_by or 'none'}, "
                      f"{len(record.steps)} steps, {record.seconds:.1f} s)"
                      + (f"\n=== error: {record.error}" if record.error else ""))
                if question is not None:
                    return

    asyncio.run(session_loop())
    return 0


def _ask(prompt: str = "\nquestion> ") -> str:
    try:
        return input(prompt).strip()
    except EOFError:
        return ""
