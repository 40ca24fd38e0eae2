"""Host-side OS mechanisms a sandbox session runs under, each best effort.

The worker reports which of them took effect (`SandboxSession.isolation`),
so a deployment can check what it actually gets on its kernel.
"""

from __future__ import annotations

import os
import secrets
import signal
import stat
import tempfile
import time
from pathlib import Path
from typing import Optional

_CGROUP_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))  # cgroup v1, then v2


def private_uid() -> Optional[int]:
    """A fresh uid for a sandbox, or None when the host is not root."""
    if os.geteuid() != 0:
        return None
    return 1_000_000 + secrets.randbelow(1_000_000_000)


def world_readable(path: Path) -> bool:
    """Whether a user with no rights of its own can read `path` (every directory above it searchable)."""
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
        if _host_gone(stale.name[len(WORK_DIR_PREFIX):].split("-")[0]) and not stale.is_symlink():
            remove_tree(str(stale))
    return tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-")


def disk_problem(work_dir: str, max_bytes: int, max_files: int) -> Optional[str]:
    """Why `work_dir` breaks the disk limits, or None. Stops counting at the first limit passed,
    so a directory stuffed with files costs no more to check than `max_files` entries; never
    follows links, and a directory it cannot read counts as a breach (it would hide its contents)."""
    used, files, stack = 0, 0, [work_dir]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    files += 1
                    if files > max_files:
                        return f"its working directory holds more than {max_files} files"
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    used += info.st_blocks * 512
                    if used > max_bytes:
                        return f"its working directory grew past {max_bytes >> 20} MiB"
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(entry.path)
        except FileNotFoundError:
            continue  # removed while counting
        except OSError as e:
            return f"its working directory could not be checked ({e.strerror})"
    return None


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str) -> None:
    """`rm -rf path` for a dead session's working directory: never follows a link, holds one
    directory open at a time and uses no recursion (agent code may nest directories thousands
    deep, past both Python's recursion limit and the host's open-file limit)."""
    _unlock(path)
    try:
        fd = os.open(path, _DIRECTORY)
    except OSError:
        return
    top = os.fstat(fd)
    while True:
        child = _empty_except_directories(fd)
        if child is not None:
            _unlock(child, fd)
            try:
                inner = os.open(child, _DIRECTORY, dir_fd=fd)
            except OSError:
                os.close(fd)
                return
            os.close(fd)
            fd = inner
            continue
        here = os.fstat(fd)
        if (here.st_dev, here.st_ino) == (top.st_dev, top.st_ino):
            os.close(fd)
            break
        parent = os.open("..", _DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = parent
        with os.scandir(fd) as entries:
            name = next((e.name for e in entries if e.inode() == here.st_ino), None)
        try:
            if name is None:
                raise FileNotFoundError(here.st_ino)
            os.rmdir(name, dir_fd=fd)
        except OSError:  # gone, or not empty (a file it could not unlink): leave the rest
            os.close(fd)
            return
    try:
        os.rmdir(path)
    except OSError:
        pass


def _unlock(path: str, dir_fd: Optional[int] = None) -> None:
    """Owner rights back on a directory agent code may have locked (mode 000), never through a link.
    Where libc cannot chmod without following links (NotImplementedError), it stays as it is."""
    try:
        os.chmod(path, 0o700, dir_fd=dir_fd, follow_symlinks=False)
    except (OSError, NotImplementedError):
        pass


def _empty_except_directories(fd: int) -> Optional[str]:
    """Unlink every non-directory in directory `fd`; the name of a subdirectory left, if any."""
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            try:
                os.unlink(entry.name, dir_fd=fd)
            except OSError:
                pass  # gone already, or refused: the rmdir above it then fails and stops the removal
    return None


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
