"""Which of the paper's methods (Table 2's columns) an evaluation is, from how the model was trained and run."""

from __future__ import annotations

from typing import Optional

# Table 2's columns in the paper's order; the prompted agent (no training) is ours, for the quickstart.
METHOD_ORDER = ("CoT prompt", "CoT prompt +SC", "agent prompt", "agent prompt +SAG", "CoT distill",
                "CoT distill +SC", "agent distill", "+FTP", "+SAG", "+FTP+SAG")


PAPER_SAG = 8  # candidates per step in the paper; other values are named in the label


def method_label(training: Optional[str], mode: str, sag: int = 1, self_consistency: int = 1) -> str:
    """`training`: None (the base model), "cot", "agent-no-ftp" or "agent-ftp"."""
    sc = f" +SC(N={self_consistency})" if mode == "cot" and self_consistency > 1 else ""
    with_sag = mode == "agent" and sag > 1
    sag_label = ("+SAG" if sag == PAPER_SAG else f"+SAG(N={sag})") if with_sag else ""
    if training is None:
        return f"CoT prompt{sc}" if mode == "cot" else "agent prompt" + (f" {sag_label}" if with_sag else "")
    if training == "cot" and mode == "cot":
        return f"CoT distill{sc}"
    if training.startswith("agent") and mode == "agent":
        ftp = training == "agent-ftp"
        if not with_sag:
            return "+FTP" if ftp else "agent distill"
        return ("+FTP" if ftp else "") + sag_label
    return f"{training} data, {mode} mode" + (f" {sag_label}" if with_sag else "") + sc


def method_rank(label: str) -> tuple[int, str]:
    """Table 2's order; a SAG or self-consistency N other than the paper's sorts beside its method."""
    base = label.split("(N=")[0]
    return (METHOD_ORDER.index(base), label) if base in METHOD_ORDER else (len(METHOD_ORDER), label)
