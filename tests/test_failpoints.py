"""Kill points, which the chaos tests rely on: they fire on the armed pass only, once per run, and a group kill
leaves no process of the group running, not even one that would outlive its parent."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ray_distill import failpoints

# A parent and a child that ignores its parent's death, in a session (and process group) of their own.
FAMILY = "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nelse:\n    print(os.getpid(), flush=True)\n    time.sleep(60)\n"


@pytest.fixture
def arm(monkeypatch, tmp_path):
    def arm(spec: str) -> Path:
        monkeypatch.setenv(failpoints.ARM, spec)
        monkeypatch.setenv(failpoints.MARKERS, str(tmp_path))
        monkeypatch.setattr(failpoints, "_armed", None)
        monkeypatch.setattr(failpoints, "_passes", Counter())
        return tmp_path

    return arm


@pytest.fixture
def family():
    """A process group of two: (the group's id, every pid in it)."""
    parent = subprocess.Popen([sys.executable, "-c", FAMILY], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    parent.stdout.readline()
    members = [pid for pid in _proc_pids() if _group_of(pid) == parent.pid]
    assert len(members) == 2, members
    yield parent, members
    with contextlib.suppress(ProcessLookupError):
        os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()


def _proc_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _stat(pid: int) -> list[str] | None:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _group_of(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[2]) if fields else None


def _running(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _gone(pids: list[int], within: float = 5) -> bool:
    deadline = time.monotonic() + within
    while any(map(_running, pids)):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_group_kill_point_ends_every_process_of_the_group(arm, family):
    parent, members = family
    markers = arm("sandbox.step@2")
    failpoints.kill_point("sandbox.step", group=parent.pid)
    assert all(map(_running, members)) and not (markers / "sandbox.step").exists()  # not the armed pass
    failpoints.kill_point("sandbox.step", group=parent.pid)
    assert _gone(members), [pid for pid in members if _running(pid)]
    assert (markers / "sandbox.step").read_text() == f"{parent.pid}\n"


def test_a_point_fires_once_per_run_even_in_a_process_that_replaced_the_killed_one(arm, family):
    parent, members = family
    markers = arm("sandbox.step@1")
    (markers / "sandbox.step").write_text("12345\n")  # fired already, by the process this one replaces
    failpoints.kill_point("sandbox.step", group=parent.pid)
    assert all(map(_running, members))


def test_an_unarmed_point_does_nothing_and_a_malformed_arming_is_refused(arm):
    arm("engine.generate@1")
    failpoints.kill_point("sandbox.step")  # not armed: this process lives on
    arm("engine.generate@0")
    with pytest.raises(ValueError, match="is not NAME@N"):
        failpoints.kill_point("engine.generate")
