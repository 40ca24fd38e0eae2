"""Host-side OS mechanisms a sandbox session runs under, each best effort.

The worker reports which of them took effect (`SandboxSession.isolation`),
so a deployment can check what it actually gets on its kernel.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterable, Optional

_CGROUP_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))  # cgroup v1, then v2


def private_uid(read_roots: Iterable[str]) -> Optional[int]:
    """A fresh uid for a sandbox, or None when that is impossible or useless:
    the host is not root, or the interpreter's files are not readable by
    other users (a private uid could then not import anything lazily)."""
    if os.geteuid() != 0:
        return None
    for root in read_roots:
        if not _world_readable(Path(root)):
            return None
    return 1_000_000 + secrets.randbelow(1_000_000_000)


def _world_readable(path: Path) -> bool:
    try:
        if not path.exists():
            return True
        for parent in [*reversed(path.parents), path]:
            mode = parent.stat().st_mode
            if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
                return False
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def create_pids_cgroup(max_pids: int) -> Optional[Path]:
    """A pids cgroup capped at `max_pids` for one session, or None if the
    cgroup filesystem is not writable here."""
    if os.geteuid() != 0:
        return None
    name = f"session-{os.getpid()}-{secrets.token_hex(4)}"
    for root in _CGROUP_ROOTS:
        v2 = root == Path("/sys/fs/cgroup")
        if v2 and "pids" not in _read(root / "cgroup.controllers"):
            continue
        if not v2 and not (root / "pids.max").exists() and not (root / "cgroup.procs").exists():
            continue
        parent = root / "ray-distill"
        try:
            parent.mkdir(exist_ok=True)
            _prune_orphans(parent)
            if v2:
                for level in (root, parent):
                    if "pids" not in _read(level / "cgroup.subtree_control"):
                        (level / "cgroup.subtree_control").write_text("+pids")
            group = parent / name
            group.mkdir()
            (group / "pids.max").write_text(str(max_pids))
            return group
        except OSError:
            continue
    return None


def _host_gone(pid_field: str) -> bool:
    try:
        os.kill(int(pid_field), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):
        pass
    return False


def _prune_orphans(parent: Path) -> None:
    # Groups of hosts that died without closing their sessions.
    for group in parent.glob("session-*"):
        if _host_gone(group.name.split("-")[1]):
            remove_cgroup(group)


WORK_DIR_PREFIX = "ray-distill-sandbox-"


def make_work_dir() -> str:
    """A private working directory named after the host's pid, after removing
    those of hosts that died without closing their sessions."""
    for stale in Path(tempfile.gettempdir()).glob(WORK_DIR_PREFIX + "*"):
        if _host_gone(stale.name[len(WORK_DIR_PREFIX):].split("-")[0]):
            shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-")


def remove_cgroup(group: Path) -> None:
    for _ in range(50):
        for pid in _read(group / "cgroup.procs").split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)  # the killed processes are still exiting


def kill_uid(uid: int) -> None:
    """Kill every process of a private sandbox uid, even one that left the process group."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for line in _read(Path("/proc") / entry / "status").splitlines():
            if line.startswith("Uid:"):
                if line.split()[1] == str(uid):
                    try:
                        os.kill(int(entry), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                break


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
