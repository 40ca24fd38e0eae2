"""The sandbox's OS boundary: namespaces, Landlock and seccomp, applied by the worker to itself.

Everything here is the kernel's to enforce, so it holds when agent code has
switched off the worker's Python layers (the import allow-list and the audit
hook) or calls libc through ctypes. Stdlib and ctypes only: the worker loads
this file by path, before any agent code runs.

The ladder, best first; `SandboxSession.isolation` reports which rung held:

- host is root: a private uid (no capabilities, other users' files and
  processes out of reach), new network, pid and IPC namespaces;
- host is not root, user namespaces allowed: a user namespace owning new
  network, pid and IPC namespaces (the sandbox cannot signal or see any
  process outside its pid namespace);
- neither (a Kubernetes pod's default seccomp profile refuses `unshare`):
  the host's uid, with Landlock's signal and abstract-socket scopes in place
  of the namespaces.

On every rung: Landlock limits the filesystem to the interpreter and its
libraries (read-only) and the session's working directory (read-write), and
denies TCP bind/connect; a seccomp filter refuses exec, sockets, ptrace and
other processes' memory, mounts, namespaces, new sessions or process groups,
io_uring, BPF, keyrings and module loading. Missing kernel support is
reported, never fatal here: the host's policy decides whether a session that
lacks a part may run.
"""

import ctypes
import os
import platform
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
_NAMESPACE_FLAGS = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET

PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1


def _errno_text():
    return os.strerror(ctypes.get_errno())


# --- namespaces ----------------------------------------------------------------


def enter_namespaces(use_user_namespace):
    """New network, pid and IPC namespaces: directly as root, else inside a new user namespace.
    Returns (report, pid_namespace): what held, and whether the next fork is the namespace's init."""
    flags = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        if not use_user_namespace:
            return {"network": "none: user namespaces disabled", "pid_namespace": "none"}, False
        flags |= CLONE_NEWUSER
    if _libc.unshare(flags) != 0:
        reason = _errno_text()
        return {"network": f"none: unshare failed ({reason})", "pid_namespace": f"none: {reason}"}, False
    if flags & CLONE_NEWUSER:
        # The same uid inside as outside: files the sandbox creates stay the host user's to delete.
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    return {"network": "namespace", "pid_namespace": "new", "user_namespace": bool(flags & CLONE_NEWUSER)}, True


PR_SET_KEEPCAPS = 8
CAP_DAC_READ_SEARCH = 2


def _drop_bounding_set(keep):
    for cap in range(64):
        if cap not in keep and _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows (or no right to drop: then none are held)


def drop_capabilities(keep=()):
    """No capabilities but `keep`, not even those a user namespace grants inside it, and none to regain."""
    _drop_bounding_set(keep)
    return _set_capabilities(keep)


def _set_capabilities(keep):
    mask = sum(1 << cap for cap in keep)
    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = struct.pack("=6I", mask, mask, 0, 0, 0, 0)  # effective, permitted, inheritable (low and high words)
    if _ARCH is None:
        return False
    return _libc.syscall(_SYSCALLS[_ARCH]["capset"], ctypes.create_string_buffer(header, 8),
                         ctypes.create_string_buffer(data, 24)) == 0


def become(uid, gid, keep_read_search):
    """Root to a private uid. With `keep_read_search`, the uid keeps CAP_DAC_READ_SEARCH alone, so it
    can still import from an interpreter under a directory only root may enter; Landlock, not file
    modes, then decides what it reads."""
    keep = (CAP_DAC_READ_SEARCH,) if keep_read_search else ()
    _drop_bounding_set(keep)
    if keep:
        _libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if keep:
        if not _set_capabilities(keep):  # KEEPCAPS left root's permitted set: never run with it
            raise OSError(ctypes.get_errno(), f"capset failed: {_errno_text()}")
        _libc.prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0)


def child_subreaper():
    """Orphaned descendants are re-parented to this process (the reaper), not to the host's init."""
    return _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def die_with_parent(signum=9):
    """Send this process `signum` (SIGKILL) when its parent dies: a crashed host takes its sessions
    along. Only for the waiter and the reaper, whose parents live as long as the session; a state
    holder's parent exits at every adoption."""
    return _libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0


def no_new_privs():
    return _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0


# --- Landlock ------------------------------------------------------------------

_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_REMOVE_FILE, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 5, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1


def landlock_abi():
    version = _libc.syscall(_LANDLOCK_CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    return int(version) if version > 0 else 0


def _fs_rights(abi):
    rights = (1 << 13) - 1  # EXECUTE .. MAKE_SYM (ABI 1)
    if abi >= 2:
        rights |= 1 << 13  # REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def restrict_filesystem(read_paths, write_dirs, device_files):
    """Landlock: read (and map) `read_paths`, everything but removing files in `write_dirs`, read and write the
    `device_files` (/dev/null); nothing else on any filesystem, no TCP, and, from ABI 6, no signal
    or abstract unix socket reaching a process outside this sandbox. Returns the report."""
    abi = landlock_abi()
    if abi == 0:
        return {"filesystem": f"none: Landlock unavailable ({_errno_text()})", "signals_scope": False}
    fs = _fs_rights(abi)
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("=QQQ", fs, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    ruleset = _libc.syscall(_LANDLOCK_CREATE_RULESET, ctypes.create_string_buffer(attr, len(attr)), len(attr), 0)
    if ruleset < 0:
        return {"filesystem": f"none: Landlock ruleset refused ({_errno_text()})", "signals_scope": False}
    file_read = _FS_READ_FILE | _FS_EXECUTE
    try:
        for path in read_paths:
            _allow(ruleset, path, (file_read | _FS_READ_DIR) if os.path.isdir(path) else file_read)
        for path in write_dirs:
            # Everything but removing files: a file unlinked while open keeps its blocks where the
            # host's disk watchdog, which walks the directory, cannot see them.
            _allow(ruleset, path, fs & ~_FS_REMOVE_FILE)
        for path in device_files:
            _allow(ruleset, path, _FS_READ_FILE | _FS_WRITE_FILE | (fs & (_FS_TRUNCATE | _FS_IOCTL_DEV)))
        if _libc.syscall(_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), 0) != 0:
            return {"filesystem": f"none: Landlock restrict_self refused ({_errno_text()})", "signals_scope": False}
    finally:
        os.close(ruleset)
    report = {"filesystem": f"landlock abi {abi}", "signals_scope": abi >= 6}
    report["tcp"] = "landlock" if net else "none"
    return report


def _allow(ruleset, path, access):
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # absent here: nothing to allow
    try:
        attr = struct.pack("=Qi", access, fd)  # landlock_path_beneath_attr is packed: 12 bytes
        if _libc.syscall(_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), 1, ctypes.create_string_buffer(attr, len(attr)), 0) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}: {_errno_text()}")
    finally:
        os.close(fd)


# --- seccomp -------------------------------------------------------------------

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_ARCH = platform.machine() if platform.machine() in _AUDIT_ARCH else None
_X32_SYSCALL_BIT = 0x40000000

# Refused with EPERM. Exec, sockets (the tool channel is a pipe), other processes' memory, leaving
# the process group (so a kill of the group reaches every process), mounts and namespaces, and
# kernel interfaces agent code has no use for.
_DENIED = (
    "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    "setsid", "setpgid", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "mount_setattr",
    "name_to_handle_at", "open_by_handle_at", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct",
    # By path, these reach files Landlock does not let it open (the host user's, on the rungs that
    # share its uid): no locking a checkpoint with mode 000.
    "chmod", "fchmodat", "fchmodat2", "setxattr", "lsetxattr", "removexattr", "lremovexattr",
    # Files without a name would hold memory or disk that no watchdog sees.
    "memfd_create", "memfd_secret",
    # Other processes' I/O priority and memory placement.
    "ioprio_set", "migrate_pages", "move_pages",
)
# Allowed only on the caller itself: pid 0 in each listed argument (setpriority also needs
# which = PRIO_PROCESS, 0, since with PRIO_USER a `who` of 0 is every process of the uid). Where
# the uid is shared, the host's processes keep their limits, priorities and CPUs.
_SELF_ONLY = {"prlimit64": (0,), "sched_setaffinity": (0,), "sched_setparam": (0,), "sched_setscheduler": (0,),
              "sched_setattr": (0,), "setpriority": (0, 1)}
# Which argument of an open call holds its flags; O_TMPFILE makes a file without a name.
_OPEN_FLAGS = {"open": 1, "openat": 2}
_O_TMPFILE = 0o20000000
_SYSCALLS = {
    "x86_64": {
        "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50, "socketpair": 53, "clone": 56,
        "execve": 59, "ptrace": 101, "setpgid": 109, "setsid": 112, "capset": 126, "pivot_root": 155,
        "chroot": 161, "acct": 163, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
        "init_module": 175, "delete_module": 176, "kexec_load": 246, "add_key": 248, "request_key": 249,
        "keyctl": 250, "unshare": 272, "accept4": 288, "perf_event_open": 298, "name_to_handle_at": 303,
        "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
        "finit_module": 313, "seccomp": 317, "kexec_file_load": 320, "bpf": 321, "execveat": 322,
        "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "clone3": 435,
        "pidfd_getfd": 438, "mount_setattr": 442,
        "chmod": 90, "fchmodat": 268, "fchmodat2": 452, "setxattr": 188, "lsetxattr": 189, "removexattr": 197,
        "lremovexattr": 198, "prlimit64": 302, "memfd_create": 319, "memfd_secret": 447, "ioprio_set": 251,
        "migrate_pages": 256, "move_pages": 279, "sched_setaffinity": 203, "sched_setparam": 142,
        "sched_setscheduler": 144, "sched_setattr": 314, "setpriority": 141, "open": 2, "openat": 257, "openat2": 437,
    },
    "aarch64": {  # asm-generic numbering
        "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "acct": 89, "capset": 91, "unshare": 97,
        "kexec_load": 104, "init_module": 105, "delete_module": 106, "ptrace": 117, "reboot": 142,
        "setpgid": 154, "setsid": 157, "socket": 198, "socketpair": 199, "bind": 200, "listen": 201,
        "accept": 202, "connect": 203, "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220,
        "execve": 221, "swapon": 224, "swapoff": 225, "perf_event_open": 241, "accept4": 242,
        "name_to_handle_at": 264, "open_by_handle_at": 265, "setns": 268, "process_vm_readv": 270,
        "process_vm_writev": 271, "kcmp": 272, "finit_module": 273, "seccomp": 277, "bpf": 280,
        "execveat": 281, "userfaultfd": 282, "kexec_file_load": 294, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442,
        "fchmodat": 53, "fchmodat2": 452, "setxattr": 5, "lsetxattr": 6, "removexattr": 14, "lremovexattr": 15,
        "prlimit64": 261, "memfd_create": 279, "memfd_secret": 447, "ioprio_set": 30, "migrate_pages": 238,
        "move_pages": 239, "sched_setaffinity": 122, "sched_setparam": 118, "sched_setscheduler": 119,
        "sched_setattr": 274, "setpriority": 140, "openat": 56, "openat2": 437,
    },
}
_EPERM, _ENOSYS = 1, 38
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_NR, _ARCH_OFFSET, _ARG0_LOW = 0, 4, 16  # seccomp_data; argument n's low word is at 16 + 8n (little-endian)


def _seccomp_program(arch):
    numbers = _SYSCALLS[arch]

    def op(code, k, jt=0, jf=0):
        return struct.pack("=HBBI", code, jt, jf, k)

    deny = op(_RET, _RET_ERRNO | _EPERM)
    program = [op(_LD_ABS, _ARCH_OFFSET), op(_JEQ, _AUDIT_ARCH[arch], 1, 0), op(_RET, _RET_KILL_PROCESS),
               op(_LD_ABS, _NR)]
    if arch == "x86_64":
        program += [op(_JGE, _X32_SYSCALL_BIT, 0, 1), deny]
    for name in _DENIED:
        if name in numbers:  # aarch64 has no chmod: fchmodat covers it
            program += [op(_JEQ, numbers[name], 0, 1), deny]
    for name, args in _SELF_ONLY.items():
        program.append(op(_JEQ, numbers[name], 0, 3 * len(args)))
        for arg in args:
            program += [op(_LD_ABS, _ARG0_LOW + 8 * arg), op(_JEQ, 0, 1, 0), deny]
        program.append(op(_LD_ABS, _NR))
    for name, arg in _OPEN_FLAGS.items():
        if name in numbers:  # aarch64 has only openat
            program += [op(_JEQ, numbers[name], 0, 3), op(_LD_ABS, _ARG0_LOW + 8 * arg), op(_JSET, _O_TMPFILE, 0, 1),
                        deny, op(_LD_ABS, _NR)]
    # clone3 and openat2 pass their flags in memory, which a filter cannot read: ENOSYS makes libc
    # fall back to clone and openat.
    for name in ("clone3", "openat2"):
        program += [op(_JEQ, numbers[name], 0, 1), op(_RET, _RET_ERRNO | _ENOSYS)]
    # clone itself may fork and start threads, but not make namespaces.
    program += [op(_JEQ, numbers["clone"], 0, 3), op(_LD_ABS, _ARG0_LOW), op(_JSET, _NAMESPACE_FLAGS, 0, 1), deny]
    program.append(op(_RET, _RET_ALLOW))
    return b"".join(program)


def filter_syscalls():
    """Install the seccomp filter on every thread of this process (and so on all it forks)."""
    if _ARCH is None:
        return f"none: no syscall table for {platform.machine()}"
    program = _seccomp_program(_ARCH)
    filters = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("=HxxxxxxQ", len(program) // 8, ctypes.addressof(filters))
    fprog_buf = ctypes.create_string_buffer(fprog, len(fprog))
    # SECCOMP_SET_MODE_FILTER with SECCOMP_FILTER_FLAG_TSYNC
    if _libc.syscall(_SYSCALLS[_ARCH]["seccomp"], 1, 1, fprog_buf) != 0:
        return f"none: seccomp refused ({_errno_text()})"
    return "seccomp"


# --- what may be read ------------------------------------------------------------


def mapped_library_dirs():
    """Directories of the shared libraries this process has mapped: where lazily imported
    extension modules find their dependencies."""
    dirs = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(None, 5)[-1].strip()
                if path.startswith("/") and ".so" in os.path.basename(path):
                    dirs.add(os.path.dirname(path))
    except OSError:
        pass
    return sorted(dirs)


def thread_count():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 1


def processes_of_uid(uid):
    """How many tasks (threads) this uid runs now: what RLIMIT_NPROC counts."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as status:
                    fields = dict(line.split(":", 1) for line in status if ":" in line)
                if fields.get("Uid", "").split()[:1] == [str(uid)]:
                    count += int(fields.get("Threads", "1"))
            except OSError:
                pass
    return count
