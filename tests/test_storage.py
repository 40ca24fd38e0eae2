"""`run.storage`: a run directory mirrored to a path, an S3 bucket (a real S3 server on loopback) or an
fsspec filesystem, and a pipeline that resumes from the storage alone."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from ray_distill.config import load_config
from ray_distill.errors import UserError
from ray_distill.stages.pipeline import read_run_manifest, run_pipeline
from ray_distill.stages.storage import INDEX, RunStorage

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def make_run(root: Path, payload: int = 3 << 20) -> None:
    """A run directory: a file with an old time, a nested `payload`-byte one (the default takes several upload
    parts) and a manifest."""
    (root / "world" / "deep").mkdir(parents=True)
    (root / "world" / "corpus.jsonl").write_text('{"id": "1", "contents": "a"}\n')
    (root / "world" / "deep" / "part-0.parquet").write_bytes(os.urandom(payload))
    (root / "manifest.json").write_text("{}\n")
    os.utime(root / "world" / "corpus.jsonl", ns=(1_600_000_000_123_456_789,) * 2)


def _s3_uri(endpoint: str, prefix: str) -> str:
    return f"s3://runs/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1&allow_bucket_creation=true"


@pytest.mark.parametrize("kind", ["path", "s3", "fsspec"])
def test_push_then_pull_restores_the_run_with_its_file_times(tmp_path, kind, request):
    uri = {"path": lambda: str(tmp_path / "stored"),
           "s3": lambda: _s3_uri(request.getfixturevalue("s3_endpoint"), tmp_path.name),
           "fsspec": lambda: f"memory://{tmp_path.name}/run"}[kind]()
    made = tmp_path / "made"
    make_run(made)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "index.faiss").write_text("outside the run")
    (made / "world" / ".tmp-part-1.parquet").write_text("half written")
    storage = RunStorage(uri, made)
    assert storage.push([made / "world", made / "manifest.json", tmp_path / "elsewhere"]) == 3
    assert sorted(storage.stored()) == ["manifest.json", "world/corpus.jsonl", "world/deep/part-0.parquet"]
    (made / "world" / ".tmp-part-1.parquet").unlink()
    assert storage.push([made]) == 0  # nothing changed
    (made / "manifest.json").write_text('{"stages": {}}\n')
    assert storage.push([made]) == 1

    fresh = tmp_path / "fresh"
    assert RunStorage(uri, fresh).pull() == 3
    assert _tree(fresh) == _tree(made)  # bytes and modification times
    assert RunStorage(uri, fresh).pull() == 0
    (fresh / "world" / "corpus.jsonl").write_text("an older version\n")  # the storage's copy is newer
    os.utime(fresh / "world" / "corpus.jsonl", ns=(1_500_000_000_000_000_000,) * 2)
    assert RunStorage(uri, fresh).pull() == 1
    assert _tree(fresh) == _tree(made)
    assert not list(fresh.rglob(".pull-*")) and not (fresh / INDEX).exists()

    # Work done after the last push (a stage killed before it could copy) is never replaced by older copies.
    (fresh / "manifest.json").write_text('{"stages": {"world": {}}, "newer": true}\n')
    assert RunStorage(uri, fresh).pull() == 0
    assert "newer" in (fresh / "manifest.json").read_text()
    # A file gone from the run (a pruned checkpoint) is forgotten and deleted by the next push of its directory.
    (made / "world" / "deep" / "part-0.parquet").unlink()
    assert storage.push([made / "world"]) == 0
    assert "world/deep/part-0.parquet" not in storage.stored()
    assert not storage.fs.get_file_info(storage._remote("world/deep/part-0.parquet")).is_file
    assert RunStorage(uri, tmp_path / "third").pull() == 2
    assert not (tmp_path / "third" / "world" / "deep").exists()
    (made / "manifest.json").unlink()  # also when the whole run directory is pushed
    assert storage.push([made]) == 0 and sorted(storage.stored()) == ["world/corpus.jsonl"]


def test_a_failed_stage_still_stores_what_it_finished(tmp_path, monkeypatch):
    from ray_distill.stages import world
    from ray_distill.stages.base import Stage

    def run(ctx):
        (ctx.run_dir / "world").mkdir(parents=True)
        (ctx.run_dir / "world" / "part-00000.jsonl").write_text("finished before the crash\n")
        raise RuntimeError("node lost")

    monkeypatch.setattr(world, "STAGE", Stage("world", ("world",), run, lambda ctx: False))  # fails halfway
    config = load_config(REPO / "experiments" / "quickstart.yaml",
                         [f"run.dir={tmp_path / 'run'}", f"run.storage={tmp_path / 'stored'}", "run.stages=[world]"])
    with pytest.raises(RuntimeError, match="node lost"):
        run_pipeline(config, progress=False)
    assert (tmp_path / "stored" / "world" / "part-00000.jsonl").read_text() == "finished before the crash\n"
    assert "manifest.json" not in RunStorage(str(tmp_path / "stored"), tmp_path / "run").stored()


def test_a_running_stage_is_copied_every_interval(tmp_path, monkeypatch):
    from ray_distill.stages import world
    from ray_distill.stages.base import Stage

    seen = {}

    def run(ctx):  # a long stage: its checkpoint must reach the storage before the stage ends
        (ctx.run_dir / "world").mkdir(parents=True)
        (ctx.run_dir / "world" / "checkpoint.bin").write_text("step 100")
        stored = RunStorage(str(tmp_path / "stored"), ctx.run_dir)
        deadline = time.monotonic() + 30
        while "world/checkpoint.bin" not in stored.stored() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["while running"] = (tmp_path / "stored" / "world" / "checkpoint.bin").read_text()
        return {}

    monkeypatch.setattr(world, "STAGE", Stage("world", ("world",), run, lambda ctx: False))  # trains for hours
    config = load_config(REPO / "experiments" / "quickstart.yaml",
                         [f"run.dir={tmp_path / 'run'}", f"run.storage={tmp_path / 'stored'}", "run.stages=[world]",
                          "run.storage_interval=0.2"])
    run_pipeline(config, progress=False)
    assert seen == {"while running": "step 100"}


def test_work_stored_at_its_end_is_stored_also_when_it_fails_and_its_own_error_is_raised(tmp_path, monkeypatch):
    """A sweep trial's training on a node that may go with it: stored when it ends, whichever way."""
    from ray_distill.stages.storage import PeriodicPush

    run = tmp_path / "run"
    storage = RunStorage(str(tmp_path / "stored"), run)
    (run / "train").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="worker died"):
        with PeriodicPush(storage, [run / "train"], 0, last=True):
            (run / "train" / "checkpoint-2.bin").write_text("step 2")
            raise RuntimeError("worker died")
    assert sorted(storage.stored()) == ["train/checkpoint-2.bin"]

    def unreachable(self, paths):
        raise OSError("storage unreachable")

    monkeypatch.setattr(RunStorage, "push", unreachable)
    with pytest.raises(RuntimeError, match="worker died again"):  # not the copy's error
        with PeriodicPush(storage, [run / "train"], 0, last=True):
            raise RuntimeError("worker died again")
    with pytest.raises(OSError, match="storage unreachable"):  # after work that succeeded, the copy's error
        with PeriodicPush(storage, [run / "train"], 0, last=True):
            pass


def test_a_fetch_cut_short_leaves_no_partial_file(tmp_path, monkeypatch):
    made = tmp_path / "made"
    make_run(made)
    RunStorage(str(tmp_path / "stored"), made).push([made])

    def cut(source, target, length=0):
        target.write(b"half")
        raise OSError("connection reset")

    monkeypatch.setattr(shutil, "copyfileobj", cut)
    fresh = tmp_path / "fresh"
    with pytest.raises(UserError, match="cannot fetch .*connection reset"):
        RunStorage(str(tmp_path / "stored"), fresh).pull()
    assert [p for p in fresh.rglob("*") if p.is_file()] == []


def test_unknown_scheme_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nosuchfs://"):
        RunStorage("nosuchfs://bucket/run", tmp_path)


@pytest.mark.slow
def test_pipeline_stores_each_stage_and_resumes_from_the_storage_alone(tmp_path, s3_endpoint, caplog):
    s3_uri = _s3_uri(s3_endpoint, "pipeline")
    overrides = [f"run.dir={tmp_path / 'run'}", f"run.storage={s3_uri}", "world.num_passages=300",
                 "world.num_fact_questions=20", "world.num_math_questions=20", "run.stages=[world]"]
    config = load_config(REPO / "experiments" / "quickstart.yaml", overrides)
    with caplog.at_level("INFO", logger="ray_distill"):  # the CLI tests may have left it at WARNING
        run_pipeline(config, progress=False)
    assert f"[world] stored at {s3_uri}" in caplog.text
    assert f"[world] outputs: {tmp_path / 'run' / 'world'}" in caplog.text
    made = _tree(tmp_path / "run")

    shutil.rmtree(tmp_path / "run")  # the cluster is gone; a new one starts from the storage
    caplog.clear()
    with caplog.at_level("INFO", logger="ray_distill"):  # the CLI tests may have left it at WARNING
        manifest = run_pipeline(config, progress=False)
    assert "[world] up to date, skipped" in caplog.text
    assert manifest["stages"]["world"]["summary"] == read_run_manifest(tmp_path / "run")["stages"]["world"]["summary"]
    restored = _tree(tmp_path / "run")
    assert {k: v for k, v in restored.items() if k != "config.yaml"} == \
           {k: v for k, v in made.items() if k != "config.yaml"}


def test_run_directories_on_several_nodes_share_one_storage(tmp_path):
    """A sweep's trials on nodes without a shared mount: each pulls only what it reads, pushes its own outputs,
    and no push loses another's index entries or deletes another's files, even when their index updates race."""
    import threading

    uri = str(tmp_path / "stored")
    driver = tmp_path / "driver"
    make_run(driver, payload=1000)
    (driver / "filter").mkdir()
    (driver / "filter" / "trajectories.parquet").write_text("kept")
    RunStorage(uri, driver).push([driver / "world", driver / "filter"])

    node = tmp_path / "node-a"
    assert RunStorage(uri, node).pull(under=[node / "filter", tmp_path / "elsewhere"]) == 1
    assert _tree(node) == {"filter/trajectories.parquet": _tree(driver)["filter/trajectories.parquet"]}

    # Two nodes push their outputs at once; the lock makes the index updates take turns, each from a fresh read.
    lock, inside, order = threading.Lock(), threading.Event(), []

    class Turn:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            lock.acquire()
            order.append(self.name)
            if self.name == "a":  # a holds the index while b has uploaded and waits for its turn
                inside.set()
                time.sleep(0.3)

        def __exit__(self, *exc):
            lock.release()

    pushes = []
    for name in ("a", "b"):
        root = tmp_path / f"node-{name}"
        (root / "evaluate" / name).mkdir(parents=True)
        (root / "evaluate" / name / "results.json").write_text(name)
        pushes.append(threading.Thread(target=RunStorage(uri, root, lock=lambda name=name: Turn(name)).push,
                                       args=([root / "evaluate" / name],)))
    pushes[0].start()
    inside.wait()
    pushes[1].start()
    for push in pushes:
        push.join()
    assert order == ["a", "b"]
    stored = RunStorage(uri, driver).stored()
    assert {"evaluate/a/results.json", "evaluate/b/results.json", "filter/trajectories.parquet"} <= set(stored)

    # A push deletes only under what it pushes: node a lacks b's evaluation and the world, which stay.
    (node / "evaluate" / "a" / "results.json").unlink()
    RunStorage(uri, node).push([node / "evaluate" / "a"])
    assert "evaluate/a/results.json" not in RunStorage(uri, driver).stored()
    assert RunStorage(uri, driver).pull(under=[driver / "evaluate"]) == 1
    assert (driver / "evaluate" / "b" / "results.json").read_text() == "b"
    assert "world/corpus.jsonl" in RunStorage(uri, driver).stored()
