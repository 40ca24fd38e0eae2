"""The console of a pipeline command (`ray_distill/cli/console.py`): our own lines only, a stage at most 15
of them besides its progress bar; Ray's and the libraries' output in the run's log file, named on the first
line, or also on the console with --verbose; an error raised inside a Ray worker on the console with its
cause. Each command runs as a user runs it: `ray-distill` in a process of its own, with a Ray of its own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.ray]

# One shard of a small world: the index stage starts Ray and runs a Ray Data pipeline and a Ray task.
TINY = ["world.num_passages=120", "world.num_fact_questions=8", "world.num_math_questions=8",
        "index.passages_per_shard=120"]
# tqdm's rate field, e.g. `[00:01<00:02, 3.95 passages/s]` or `[00:00, ? passages/s]`
BAR = re.compile(r"\[(\d+:)?\d\d:\d\d(<[^,\]]*)?, [^\]]*/s\]")
OURS = re.compile(r"^\d\d:\d\d:\d\d ")  # our log lines; the only other line is the run directory
HEADER = re.compile(r"^\d\d:\d\d:\d\d \[(\w+)\] ")


def cli(*args: str) -> str:
    """`ray-distill ARGS`; returns its console, stdout and stderr as the terminal shows them: a progress bar
    redraws its line after a carriage return (which text mode would turn into a newline)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "ray_distill.cli", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    return f"exit {done.returncode}\n{done.stdout.decode()}"


def terminal_lines(console: str) -> list[str]:
    """The console's lines after the exit status (a bar's redraws, split by carriage returns, are one)."""
    return console.rstrip("\n").split("\n")[1:]


def by_stage(console: str) -> dict[str, list[str]]:
    """The console's lines per stage (from its header on), progress-bar lines left out."""
    stages: dict[str, list[str]] = {}
    current = None
    for line in terminal_lines(console):
        if BAR.search(line):
            continue
        match = HEADER.match(line)
        if match and match[1] not in stages:
            current = match[1]
            stages[current] = []
        if current:
            stages[current].append(line)
    return stages


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory) -> tuple[str, Path]:
    """A quiet `ray-distill run` of the world and index stages: its console and run directory."""
    run_dir = tmp_path_factory.mktemp("console") / "run"
    console = cli("run", "experiments/quickstart.yaml", f"run.dir={run_dir}", "run.stages=[world,index]", *TINY)
    return console, run_dir


def test_a_run_shows_only_our_lines_and_keeps_rays_in_its_log_file(quickstart_run):
    console, run_dir = quickstart_run
    assert console.startswith("exit 0\n"), console[-3000:]
    log_file = run_dir / "logs" / "ray-distill.log"
    lines = terminal_lines(console)
    assert f"log: {log_file}" in lines[0]
    stages = by_stage(console)
    assert list(stages) == ["world", "index"]
    for name, stage in stages.items():
        assert 3 <= len(stage) <= 15, stage
        assert f"[{name}] done in " in "\n".join(stage)
    assert any(BAR.search(line) and "embed" in line for line in lines)  # the index stage's bar
    assert re.search(r"\[index\] done in [\d.]+ s: 120 passages in 1 shard\(s\), Flat over minilm-l6; embedded 1, "
                     r"indexed 1\n", console)  # the summary's headline, not the summary
    strangers = [line for line in lines if not BAR.search(line) and not OURS.match(line)]
    assert strangers == [f"run directory: {run_dir}"], strangers  # no line of Ray's, Ray Data's or a worker's

    log = log_file.read_text()
    assert log.startswith("===== ") and " ray-distill " in log.splitlines()[0]
    assert "Started a local Ray instance" in log  # Ray's
    assert "Execution plan of Dataset" in log  # Ray Data's
    assert "INFO ray_distill.stages.pipeline: [index] done in" in log  # and ours


def test_verbose_shows_rays_own_lines_on_the_console_too(quickstart_run):
    _, run_dir = quickstart_run
    (run_dir / "index" / "shard-00000" / "manifest.json").unlink()  # the stage builds the index again: a Ray task
    console = cli("index", "experiments/quickstart.yaml", f"run.dir={run_dir}", *TINY, "--verbose")
    assert console.startswith("exit 0\n"), console[-3000:]
    assert "Started a local Ray instance" in console
    assert re.search(r"\[index\] done in .*embedded 0, indexed 1\n", console)
    assert (run_dir / "logs" / "ray-distill.log").read_text().count("\n===== ") == 1  # a header per invocation


def test_an_error_raised_in_a_ray_worker_reaches_the_console_with_its_cause(quickstart_run, tmp_path):
    """A shard's passages, damaged on disk after the split: the Ray Data task that reads them fails."""
    _, run_dir = quickstart_run
    shard = run_dir / "index" / "shard-00000"
    kept = tmp_path / "kept"
    shutil.copytree(shard, kept)
    try:
        for name in ("embeddings.npy", "embeddings.json", "manifest.json"):  # to be embedded and indexed again
            (shard / name).unlink()
        passages = shard / "passages.parquet"
        data = bytearray(passages.read_bytes())
        data[4:1004] = bytes(range(250)) * 4  # the first data pages; the footer (schema, row count) stays intact
        passages.write_bytes(bytes(data))
        console = cli("index", "experiments/quickstart.yaml", f"run.dir={run_dir}", *TINY)
    finally:
        shutil.rmtree(shard)
        shutil.copytree(kept, shard)
    log_file = run_dir / "logs" / "ray-distill.log"
    assert console.startswith("exit 1\n"), console[-3000:]
    assert "ERROR: [index] failed after" in console
    # The error, to its last line; Ray's retries of the failed read may still print after it, from Ray's log
    # stream, once the console is the process's own again.
    end = f"the full traceback is in {log_file}\n"
    error = console[console.index("ray-distill: error: "):console.index(end) + len(end)]
    assert "RayTaskError(OSError): ray::" in error  # where it was raised: the Ray task that read the file
    assert "OSError: Couldn't deserialize thrift" in error and str(shard / "passages.parquet") in error  # why
    assert "Traceback" not in console[:console.index(end)]
    log = log_file.read_text()
    assert "Traceback (most recent call last)" in log and "Couldn't deserialize thrift" in log
