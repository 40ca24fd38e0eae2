"""A stored record as a page shows it: highlighted code, tool calls, and each SAG step's vote."""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from typing import Any, Optional

from markupsafe import Markup
from pygments import highlight as _highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

CSS_CLASS = "hl"


@lru_cache(maxsize=1)
def _formatter() -> HtmlFormatter:
    return HtmlFormatter(cssclass=CSS_CLASS)


def highlight(code: Optional[str]) -> Markup:
    """Python code as highlighted HTML (Pygments escapes the code)."""
    return Markup(_highlight(code or "", PythonLexer(), _formatter()))


def pygments_css() -> str:
    return _formatter().get_style_defs(f".{CSS_CLASS}")


def _pretty(text: Optional[str]) -> Optional[str]:
    """A JSON value as indented text; anything else as it is (a web_search result is passages as text)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


def votes(candidates: list[dict]) -> list[dict]:
    """The vote groups of a SAG step, largest first (invalid candidates vote for nothing)."""
    counts = Counter(c["vote"] for c in candidates if c.get("vote") is not None)
    first = {}
    for i, c in enumerate(candidates):
        first.setdefault(c.get("vote"), i)
    return [{"vote": vote, "count": count} for vote, count in sorted(counts.items(), key=lambda kv: (-kv[1], first[kv[0]]))]


def step_view(step: dict) -> dict[str, Any]:
    candidates = step.get("candidates") or []
    chosen = step.get("chosen")
    return {
        **step,
        "code_html": highlight(step["code"]) if step.get("code") else None,
        "tool_calls": [{**call, "arguments": _pretty(call.get("arguments")), "result": _pretty(call.get("result"))}
                       for call in step.get("tool_calls") or []],
        "candidates": [{**c, "number": i, "chosen": i == chosen,
                        "code_html": highlight(c["code"]) if c.get("code") else None}
                       for i, c in enumerate(candidates)],
        "votes": votes(candidates),
        "chosen_vote": candidates[chosen].get("vote") if candidates and chosen is not None
        and 0 <= chosen < len(candidates) else None,
    }


def record_view(record: dict) -> dict[str, Any]:
    """A trajectory with its steps ready to render; a CoT record (no steps) as it is."""
    if "steps" not in record:
        return {**record, "is_cot": True}
    return {**record, "is_cot": False, "steps": [step_view(s) for s in record.get("steps") or []]}
