"""Isolated, warm Python sandboxes for agent code (the OS boundary: confine.py; the process tree: worker.py)."""

from ray_distill.tools.sandbox.policy import PAPER_IMPORTS, SandboxPolicy
from ray_distill.tools.sandbox.pool import SandboxPool
from ray_distill.tools.sandbox.session import (
    ExecResult, IsolationRefused, Sandbox, SandboxError, SandboxSession, Toolbox, ToolHandler, ToolUnavailable,
)

__all__ = ["PAPER_IMPORTS", "ExecResult", "IsolationRefused", "Sandbox", "SandboxError", "SandboxPolicy", "SandboxPool", "SandboxSession", "ToolHandler", "ToolUnavailable", "Toolbox"]
