"""The evaluate, report and sweep stages for real: a tiny model served by Ray, real sandboxes and index,
the paper's benchmark files, and Ray Tune running a 2x2 grid."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import SHARED_BENCHMARKS, seed_run
from test_generation_stages import write_config

from ray_distill.cli import main
from ray_distill.config import load_config
from ray_distill.data.benchmarks import BENCHMARKS, find_benchmark, load_benchmark
from ray_distill.errors import UserError
from ray_distill.generation.store import read_records
from ray_distill.stages import load
from ray_distill.stages.base import StageContext
from ray_distill.stages.pipeline import run_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.ray]

TINY_STUDENT = {"models": {"teacher": "tiny-random", "student": "tiny-random"},
                "student_engine": {"dtype": "float32"}}


def evaluation(config, mode_label: str) -> dict:
    from ray_distill.stages.report import evaluation_results

    [found] = [r for r in evaluation_results(Path(config.run.dir)) if r["method"] == mode_label]
    return found


def shared_sets() -> list[str]:
    names = []
    for name in BENCHMARKS:
        try:
            find_benchmark(name, SHARED_BENCHMARKS)
            names.append(name)
        except UserError:
            pass
    return names


def test_evaluate_reads_every_shared_benchmark_file_by_name_in_both_modes(tmp_path, small_world, capfd):
    sets = shared_sets()
    files = {find_benchmark(name, SHARED_BENCHMARKS) for name in sets}
    assert files == {p for p in SHARED_BENCHMARKS.iterdir() if p.is_file()}  # every file is some benchmark's
    path = write_config(tmp_path, run={"stages": ["world", "index", "evaluate", "report"]}, **TINY_STUDENT,
                        benchmarks={"data_dir": str(SHARED_BENCHMARKS)},
                        evaluate={"models": ["base"], "sets": sets, "limit": 1, "max_steps": 1,
                                  "max_new_tokens": 16})
    seed_run(small_world, path)
    agent = load_config(path)
    run_pipeline(agent, progress=False)
    cot_overrides = ["evaluate.mode=cot", "run.stages=[evaluate,report]"]
    cot = load_config(path, cot_overrides)
    assert main(["-q", "run", str(path), *cot_overrides]) == 0
    printed = capfd.readouterr().out  # `run` ends with the report's tables, on the console: file descriptor 1
    assert "| student | CoT prompt | agent prompt |" in printed and "accuracy.png" in printed

    for config, method in ((agent, "agent prompt"), (cot, "CoT prompt")):
        found = evaluation(config, method)
        assert list(found["sets"]) == sets
        # TensorBoard shows each evaluation under the run directory, with the results' scalars
        events = EventAccumulator(found["tensorboard"])
        events.Reload()
        assert Path(found["tensorboard"]).is_relative_to(Path(config.run.dir).absolute() / "evaluate" / "tensorboard")
        assert events.Scalars("accuracy/average")[0].value == pytest.approx(found["average"] or 0.0)
        assert {f"accuracy/{name}" for name in sets} <= set(events.Tags()["scalars"])
        for name in sets:
            metrics = found["sets"][name]
            assert metrics["questions"] == 1
            assert ("exact_match" in metrics) == (BENCHMARKS[name].domain == "fact")
        rows = read_records(found["dir"]).to_pylist()
        for name in sets:
            first = load_benchmark(name, SHARED_BENCHMARKS).examples[0]
            [row] = [r for r in rows if r["dataset"] == name]
            assert (row["example_id"], row["question"], row["gold"]) == (first.id, first.question, first.answer)
    report = (Path(agent.run.dir) / "report" / "report.md").read_text().splitlines()
    assert report[2] == "| student | CoT prompt | agent prompt |"
    assert (Path(agent.run.dir) / "report" / "accuracy.png").is_file()


def test_evaluate_resumes_adds_questions_and_runs_sag_self_consistency_and_the_judge(tmp_path, small_world):
    path = write_config(tmp_path, run={"stages": ["world", "index", "evaluate"]}, **TINY_STUDENT,
                        evaluate={"models": ["base"], "limit": 1, "max_steps": 1, "max_new_tokens": 16, "sag": 2})
    seed_run(small_world, path)
    config = load_config(path)
    run_pipeline(config, progress=False)
    ctx = StageContext(config, Path(config.run.dir))
    assert load("evaluate").is_complete(ctx)
    found = evaluation(config, "agent prompt +SAG(N=2)")
    rows = read_records(found["dir"]).to_pylist()
    assert len(rows) == 2 and all(len(step["candidates"]) == 2 for row in rows for step in row["steps"])
    for step in (step for row in rows for step in row["steps"]):  # every candidate is kept, with its vote
        assert step["valid_candidates"] == sum(c["vote"] is not None for c in step["candidates"])

    more = load_config(path, ["evaluate.limit=2"])
    assert not load("evaluate").is_complete(StageContext(more, Path(more.run.dir)))
    summary = run_pipeline(more, ["evaluate"], progress=False)["stages"]["evaluate"]["summary"]
    found = evaluation(more, "agent prompt +SAG(N=2)")
    assert found["run"]["ran"] == 2  # only the new question of each set
    assert {name: m["questions"] for name, m in found["sets"].items()} == {"world-fact-test": 2, "world-math-test": 2}
    assert summary["base"]["results"] == str(Path(found["dir"]) / "results.json")

    cot = load_config(path, ["evaluate.mode=cot", "evaluate.self_consistency=2", "evaluate.temperature=0.8",
                             "scoring.judge=tiny-random", "teacher_engine.dtype=float32"])
    run_pipeline(cot, ["evaluate"], progress=False)
    found = evaluation(cot, "CoT prompt +SC(N=2)")
    fact = found["sets"]["world-fact-test"]
    # Every fact answer has the judge's verdict (the tiny model marks no answer, so none needed a call).
    assert fact["samples_per_question"] == 2 and "judge_accuracy" in fact


def test_evaluating_an_untrained_distilled_student_names_the_missing_stage(tmp_path, local_ray):
    path = write_config(tmp_path, run={"stages": ["world", "evaluate"]}, **TINY_STUDENT,
                        evaluate={"models": ["distilled"], "limit": 1})
    with pytest.raises(UserError, match="not trained: no export at .*run `ray-distill train CONFIG` first"):
        run_pipeline(load_config(path), progress=False)


def test_concurrent_trials_follow_the_local_rays_resources_and_unplaceable_trials_fail_early(local_ray):
    from ray_distill.distributed.sweep import concurrent_trials

    assert concurrent_trials({"one trial": (1.0, 0.0)}, trials=6, configured=None) == 4  # the fixture's 4 CPUs
    assert concurrent_trials({"one trial": (1.5, 0.0)}, trials=6, configured=None) == 2
    assert concurrent_trials({"one trial": (1.0, 0.0)}, trials=3, configured=None) == 3
    assert concurrent_trials({"one trial": (1.0, 0.0)}, trials=6, configured=1) == 1
    with pytest.raises(UserError, match="needs 8 CPUs .*one trial = 8.* has 4"):
        concurrent_trials({"one trial": (8.0, 0.0)}, trials=2, configured=None)
    with pytest.raises(UserError, match="needs 1 GPUs"):
        concurrent_trials({"one trial": (1.0, 1.0)}, trials=2, configured=None)


def test_an_interrupt_stops_the_sweep_instead_of_passing_its_unfinished_trials_off_as_done(local_ray, tmp_path):
    """Ctrl-C, or the interrupt of a demand no node type can hold (`autoscaler.py`), raises out of Tune; Tune's
    own handler would stop quietly and return the unfinished trials as the sweep's outcome."""
    import _thread
    import threading
    import time

    from ray_distill.distributed.sweep import run_tune

    started, returned = tmp_path / "started", threading.Event()

    def trainable(params: dict) -> dict:
        started.touch()
        time.sleep(20)
        return {"average": 1.0}

    def interrupt_once_started() -> None:
        while not returned.is_set():
            if started.exists():
                _thread.interrupt_main()
                return
            time.sleep(0.1)

    threading.Thread(target=interrupt_once_started, daemon=True).start()
    try:
        outcome = run_tune(trainable, [("tiny", "m")], tmp_path / "tune", "t", {"cpu": 0}, 1, progress=False)
    except KeyboardInterrupt:
        outcome = "interrupted"
    finally:
        returned.set()
    assert outcome == "interrupted"
