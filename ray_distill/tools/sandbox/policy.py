"""What a sandbox allows: limits, imports and isolation, as plain config."""

from __future__ import annotations

from dataclasses import dataclass

# The paper's safe list, plus the pure-Python helpers a math agent reaches for.
PAPER_IMPORTS: tuple[str, ...] = (
    "math", "cmath", "re", "itertools", "collections", "datetime", "time", "statistics", "random",
    "numpy", "sympy", "fractions", "decimal", "functools", "operator", "string", "heapq", "bisect",
    "json", "unicodedata", "copy", "typing", "dataclasses", "enum", "calendar", "textwrap", "queue",
)


@dataclass(frozen=True)
class SandboxPolicy:
    """Limits of one sandbox session (an episode's interpreter).

    Memory, CPU time and file limits apply to every process of the session,
    the process limit to all of them together, the disk limits to the
    session's working directory (the only place it may write; it may not
    remove or rename files there, which would hide their blocks from the disk
    watchdog). A code block's tool calls past `tool_calls_per_step` fail in the code.

    `weak_isolation` decides what happens where the kernel cannot give the
    whole OS boundary (`confine.py`: filesystem, syscalls, network, signals,
    processes): "refuse" fails the session's start naming what is missing,
    "warn" runs it and logs a warning. `user_namespaces=False` skips the user
    namespace as a pod without them would, and `python_layers=False` drops
    the import allow-list and audit hook; both exist to test the boundary.
    """

    timeout_seconds: float = 30.0
    memory_bytes: int = 2 << 30
    cpu_seconds: int = 120
    processes: int = 24
    file_size_bytes: int = 16 << 20
    open_files: int = 64
    output_limit: int = 20_000
    disk_bytes: int = 256 << 20
    disk_files: int = 4096
    tool_calls_per_step: int = 64
    weak_isolation: str = "refuse"
    user_namespaces: bool = True
    python_layers: bool = True
    allowed_imports: tuple[str, ...] = PAPER_IMPORTS
    # Imported before the first step. Every module preloaded makes each step's fork
    # slower (sympy: ~2.5 ms), while a lazy import costs once per episode.
    preload: tuple[str, ...] = ("numpy",)
    startup_timeout_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.weak_isolation not in ("refuse", "warn"):
            raise ValueError(f"sandbox policy: weak_isolation must be 'refuse' or 'warn', got {self.weak_isolation!r}")
        for name in ("timeout_seconds", "memory_bytes", "cpu_seconds", "processes", "file_size_bytes",
                     "open_files", "output_limit", "startup_timeout_seconds", "disk_bytes", "disk_files", "tool_calls_per_step"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sandbox policy: {name} must be > 0, got {getattr(self, name)}")
