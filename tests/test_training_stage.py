"""The train stage for real, small: kept trajectories -> packed SFT data -> Ray Train workers with
DeepSpeed ZeRO on CPU -> checkpoints -> exported student that runs in the agent loop."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from ray_distill.agent import prompts
from ray_distill.config import load_config
from ray_distill.fileio import write_parquet_atomic
from ray_distill.stages.base import StageContext

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.deepspeed]

ANSWER = "Ostrava"
ACTION = f"Thought: I know this one.\nCode:\n```py\nfinal_answer('{ANSWER}')\n```<end_code>"


def trajectories(count: int, varied: bool = False) -> pa.Table:
    """What the filter stage writes, reduced to what training reads: kept one-step trajectories
    (`varied`: actions of different lengths)."""
    rows = []
    for n in range(count):
        action = ACTION.replace("this one", "this one " + "indeed " * (5 * (n % 4))) if varied else ACTION
        messages = [{"role": "system", "content": prompts.TEACHER_SYSTEM_PROMPT},
                    {"role": "user", "content": prompts.task_message(f"Which city is town number {n} near?")},
                    {"role": "assistant", "content": action},
                    {"role": "tool", "content": f"Observation:\nExecution logs:\nFinal answer: {ANSWER}"}]
        rows.append({"dataset": "world-fact-train", "example_id": f"fact-{n:06d}", "sample": 0, "messages": messages,
                     "keep": True})
    return pa.Table.from_pylist(rows)


def train_config(tmp_path: Path, name: str, varied: bool = False, **train):
    overrides = [f"run.name={name}", f"run.dir={tmp_path / name}", "run.stages=[train]", "models.student=tiny-random",
                 "train.max_length=400", "train.epochs=2", "train.global_batch_size=4", "train.lr=2e-3",
                 "train.lora_r=8", "train.lora_alpha=16", "train.checkpoint_every=2", "train.cpus_per_worker=0.5",
                 *[f"train.{key}={value}" for key, value in train.items()]]
    config = load_config(None, overrides)
    ctx = StageContext(config, Path(config.run.dir))
    from ray_distill.stages.paths import filter_dir

    filter_dir(ctx).mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(trajectories(12, varied), filter_dir(ctx) / "trajectories.parquet")
    return config, ctx


def steps(ctx) -> list[dict]:
    from ray_distill.stages.paths import train_dir

    return [json.loads(line) for line in (train_dir(ctx) / "logs" / "steps.jsonl").read_text().splitlines()]


def run_train(config) -> dict:
    from ray_distill.stages.pipeline import run_pipeline

    return run_pipeline(config, progress=False)["stages"]["train"]["summary"]


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory, local_ray):
    """Two workers, ZeRO-2, LoRA, run without interruption. Together they reserve every CPU of the local
    Ray (4): Ray Data's reads must not starve behind them (a known deadlock on small machines). The
    run.dir is relative, as the quickstart's is: Ray Train runs its workers in folders of their own."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("train"))
    try:
        config, ctx = train_config(Path("runs"), "zero2", workers=2, zero_stage=2, cpus_per_worker=2)
        assert not Path(config.run.dir).is_absolute()
        return run_train(config), steps(ctx), ctx
    finally:
        os.chdir(cwd)


def test_two_zero2_workers_train_the_student_and_the_loss_falls(zero2_run):
    summary, log, ctx = zero2_run
    sft = summary["sft"]
    assert sft["examples"] == 12 and sft["sequences"] == 12  # one 330-token example per 400-token sequence
    assert summary["steps"] == summary["total_steps"] == len(log) == 6  # 12 sequences / 4 per step x 2 epochs
    assert [entry["step"] for entry in log] == list(range(1, 7))
    # Trained: the action and its end-of-turn token, in each of a step's 4 examples.
    from transformers import AutoTokenizer

    from ray_distill.models import resolve_model

    action_tokens = len(AutoTokenizer.from_pretrained(resolve_model("tiny-random"))(ACTION)["input_ids"])
    assert all(len(entry["keys"]) == 4 and entry["trained_tokens"] == 4 * (action_tokens + 1) for entry in log)
    # Every example once per epoch, in a different order each epoch.
    epochs = [[key for entry in log if entry["epoch"] == e for key in entry["keys"]] for e in (0, 1)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(f"world-fact-train/fact-{n:06d}/0" for n in range(12))
    assert epochs[0] != epochs[1]
    assert log[-1]["loss"] < log[0]["loss"] - 0.05
    # How the workers computed, as `auto` chose on CPU.
    assert summary["compute"] == "attention segments, loss chunked, gradient checkpointing off"
    assert summary["notes"] == ["gradient checkpointing auto: off (no GPU memory to size against)"]
    assert (summary["backend"], summary["gpu_ids"]) == ("gloo", [])
    assert (Path(summary["model"]) / "config.json").is_file()


def test_the_step_log_and_tensorboard_events_are_in_the_run_directory(zero2_run):
    """Where the README tells the user to point TensorBoard: `runs/<name>/train`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ray_distill.stages.paths import train_dir

    summary, log, ctx = zero2_run
    logs = train_dir(ctx) / "logs"
    assert logs.is_relative_to(ctx.run_dir / "train") and Path(summary["tensorboard"]) == logs / "tensorboard"
    events = EventAccumulator(str(logs / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_second"} <= set(events.Tags()["scalars"])
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [entry["step"] for entry in log]
    assert [e.value for e in losses] == pytest.approx([entry["loss"] for entry in log], rel=1e-5)


def test_zero3_resumes_mid_epoch_and_at_the_epoch_boundary_with_the_same_batches(zero2_run, tmp_path):
    from ray_distill.stages.train import STAGE

    _, uninterrupted, _ = zero2_run
    path = tmp_path / "zero3"
    for more, done in ((1, 1), (2, 3)):  # step 1 is inside epoch 0; step 3 ends it
        config, ctx = train_config(path, "zero3", workers=2, zero_stage=3, stop_after_steps=more, export="adapter")
        summary = run_train(config)
        assert summary["steps"] == done and "stopped" in summary and not STAGE.is_complete(ctx)
    config, ctx = train_config(path, "zero3", workers=2, zero_stage=3, export="adapter")
    summary = run_train(config)
    assert summary["steps"] == 6 and STAGE.is_complete(ctx)
    resumed = steps(ctx)
    assert [entry["step"] for entry in resumed] == list(range(1, 7))
    assert [entry["keys"] for entry in resumed] == [entry["keys"] for entry in uninterrupted]
    # The schedule, optimizer and dropout continue too: the same learning rates, and losses equal up to
    # ZeRO-3's different summation order.
    assert [e["lr"] for e in resumed] == pytest.approx([e["lr"] for e in uninterrupted], rel=1e-9)
    assert [e["loss"] for e in resumed] == pytest.approx([e["loss"] for e in uninterrupted], rel=1e-3)
    # The LoRA adapter export (base weights by reference) is a model name like any other.
    from ray_distill.models import resolve_model

    adapter = Path(summary["model"])
    assert (adapter / "adapter_config.json").is_file() and resolve_model(str(adapter)) == adapter
    record = answer_with(adapter, "Which city is town number 5 near?")
    assert record.steps and record.steps[0].completion_tokens > 0


def answer_with(model_dir: Path, question: str):
    from ray_distill.agent import Agent, AgentConfig
    from ray_distill.agent.parsing import STOP_STRINGS
    from ray_distill.engines import SamplingParams
    from ray_distill.engines.spec import EngineSpec
    from ray_distill.tools.sandbox import SandboxPolicy, SandboxPool

    engine = EngineSpec("hf", str(model_dir), {"dtype": "float32"}).build()
    config = AgentConfig(max_steps=1, sampling=SamplingParams(max_new_tokens=48, stop=STOP_STRINGS),
                         system_prompt=prompts.STUDENT_SYSTEM_PROMPT, few_shot=False)

    async def episode():
        async with SandboxPool(SandboxPolicy(), None, size=1) as pool, pool.session() as sandbox:
            return await Agent(engine, config).run(question, sandbox)

    try:
        return asyncio.run(episode())
    finally:
        asyncio.run(engine.close())


@pytest.fixture(scope="module")
def imitating_student(tmp_path_factory, local_ray) -> Path:
    """Full fine-tuning on one worker until the teacher's action is learnt."""
    config, ctx = train_config(tmp_path_factory.mktemp("train"), "full", lora="false", epochs=20, lr=3e-3,
                               warmup_ratio=0.0, checkpoint_every=100)
    summary = run_train(config)
    assert summary["steps"] == 60
    return Path(summary["model"])


def test_the_exported_student_imitates_the_teacher_in_the_agent_loop(imitating_student):
    """Served by the hf engine, it writes the teacher's action for a new question and the sandbox
    runs its final_answer."""
    record = answer_with(imitating_student, "Which city is town number 99 near?")
    assert record.steps[0].model_output == ACTION
    assert record.answered_by == "final_answer" and record.final_answer == ANSWER


@pytest.mark.vllm
def test_the_exported_student_loads_in_vllm(imitating_student):
    from ray_distill.distributed.engines import EngineRouter
    from ray_distill.engines import GenerationRequest, SamplingParams
    from ray_distill.engines.spec import EngineSpec

    router = EngineRouter.launch(EngineSpec("vllm", str(imitating_student), {"max_model_len": 2048,
                                                                                   "dtype": "float32"}))
    try:
        messages = [{"role": "system", "content": prompts.STUDENT_SYSTEM_PROMPT},
                    {"role": "user", "content": prompts.task_message("Which city is town number 7 near?")}]
        completion = asyncio.run(router.generate(GenerationRequest(messages, SamplingParams(max_new_tokens=48))))
        assert completion.texts[0].startswith(ACTION.removesuffix("<end_code>"))
    finally:
        asyncio.run(router.close())


def test_run_trains_a_student_on_the_world_oracle_trajectories(tmp_path, small_world):
    """The quickstart's path, small: world, index (built once for the session), cot, generate (the oracle
    teacher), filter, train."""
    from conftest import seed_run
    from test_generation_stages import write_config

    from ray_distill.stages.paths import filter_dir
    from ray_distill.stages.pipeline import run_pipeline

    path = write_config(
        tmp_path, run={"stages": ["world", "index", "cot", "generate", "filter", "train"]},
        models={"teacher": "world-oracle", "student": "tiny-random"},
        teacher_engine={"backend": "oracle", "cpus_per_replica": 0, "options": {"world_dir": str(tmp_path / "run/world")}},
        generate={"max_steps": 4}, train={"max_length": 2048, "epochs": 1, "global_batch_size": 4, "lora_r": 8,
                                          "lora_alpha": 16, "cpus_per_worker": 1})
    seed_run(small_world, path)
    config = load_config(path)
    stages = run_pipeline(config, progress=False)["stages"]
    kept = stages["filter"]["summary"]["trajectories"]["kept"]
    assert kept == 8  # the oracle solves every question, FTP prefix included
    ctx = StageContext(config, Path(config.run.dir))
    import pyarrow.parquet as pq

    trajectories = pq.read_table(filter_dir(ctx) / "trajectories.parquet").to_pylist()
    assert all(row["answered_by"] == "final_answer" for row in trajectories if row["keep"])
    train = stages["train"]["summary"]
    assert train["sft"]["examples"] == kept and train["steps"] == train["total_steps"] >= 1
    assert (Path(train["model"]) / "config.json").is_file()


def test_the_loss_does_not_depend_on_how_the_global_batch_is_split(local_ray, tmp_path):
    """One worker with micro-batches of 2, or two workers with micro-batches of 1, over examples with
    different numbers of targets: every target token weighs the same, so the steps (loss and gradient
    norm) agree. A mean per micro-batch would weigh them differently. No dropout: both see one function."""
    logs = []
    for workers, micro in ((1, 2), (2, 1)):
        config, ctx = train_config(tmp_path, f"w{workers}", varied=True, workers=workers, micro_batch_size=micro,
                                   lora_dropout=0.0, stop_after_steps=2)
        run_train(config)
        logs.append(steps(ctx))
    one, two = logs
    assert [e["keys"] for e in one] == [e["keys"] for e in two]
    assert [e["loss"] for e in one] == pytest.approx([e["loss"] for e in two], rel=1e-4)
    assert [e["grad_norm"] for e in one] == pytest.approx([e["grad_norm"] for e in two], rel=1e-3)
