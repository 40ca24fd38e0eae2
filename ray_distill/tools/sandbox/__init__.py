"""Isolated, warm Python sandboxes for agent code (see worker.py for the boundary)."""

from ray_distill.tools.sandbox.policy import PAPER_IMPORTS, SandboxPolicy
from ray_distill.tools.sandbox.pool import SandboxPool
from ray_distill.tools.sandbox.session import (
    ExecResult, Sandbox, SandboxError, SandboxSession, Toolbox, ToolHandler, ToolUnavailable,
)

__all__ = ["PAPER_IMPORTS", "ExecResult", "Sandbox", "SandboxError", "SandboxPolicy", "SandboxPool", "SandboxSession", "ToolHandler", "ToolUnavailable", "Toolbox"]
