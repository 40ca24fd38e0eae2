"""Parse a CodeAct step: `Thought: ...` then `Code:` and a fenced python block.

The model writes

    Thought: <reasoning>
    Code:
    ```py
    <python>
    ```<end_code>

and generation stops at `<end_code>` (a stop string, so it is not in the
text). Fallbacks, in order, for what small models actually write:
  * several fenced blocks: joined, in order, into one program;
  * a fence without a language tag, or tagged `python`/`py3`: accepted;
  * an opening fence that is never closed (output truncated or the stop
    string hit early): everything after it, if it compiles;
  * no fence at all: the whole text after `Code:` (or the whole text), if it
    compiles as Python and is not plain prose.
Otherwise the step is a parse error, which becomes an observation asking the
model to retry in the right format.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Optional

END_CODE = "<end_code>"
STOP_STRINGS = (END_CODE, "Observation:", "Calling tools:")

_FENCE = re.compile(r"```[ \t]*(?:py|python|py3|python3)?[ \t]*\n(.*?)\n?[ \t]*```", re.DOTALL | re.IGNORECASE)
_OPEN_FENCE = re.compile(r"```[ \t]*(?:py|python|py3|python3)?[ \t]*\n(.*)$", re.DOTALL | re.IGNORECASE)
_CODE_LABEL = re.compile(r"^\s*Code:\s*$", re.MULTILINE)
_THOUGHT = re.compile(r"^\s*Thought:\s*", re.IGNORECASE)

PARSE_ERROR_HINT = (
    "Your output could not be parsed: no Python code block was found. Answer in this format:\n"
    "Thought: your reasoning\nCode:\n```py\n# your python code\n```" + END_CODE
)


@dataclass(frozen=True)
class ParsedStep:
    thought: str
    code: Optional[str]
    error: Optional[str] = None  # why no code could be extracted

    @property
    def ok(self) -> bool:
        return self.code is not None


def _compiles(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _looks_like_code(text: str) -> bool:
    """A bare text counts as code only if it compiles and is not just prose
    (a lone name or sentence also parses as an expression)."""
    if not text.strip() or not _compiles(text):
        return False
    tree = ast.parse(text)
    return any(not isinstance(node, ast.Expr) or isinstance(node.value, ast.Call) for node in tree.body)


def parse_step(text: str) -> ParsedStep:
    text = text.replace(END_CODE, "")
    label = _CODE_LABEL.search(text)
    cut = min((i for i in (label.start() if label else -1, text.find("```")) if i >= 0), default=len(text))
    thought = _THOUGHT.sub("", text[:cut]).strip()

    fenced = _FENCE.findall(text)
    blocks = [b.strip("\n") for b in fenced if b.strip()]
    if blocks:
        return ParsedStep(thought, "\n\n".join(blocks))
    if fenced:
        return ParsedStep(thought, None, "the code block is empty")

    opened = _OPEN_FENCE.search(text)
    if opened:
        code = opened.group(1).rstrip("`\n ")
        if code.strip() and _compiles(code):
            return ParsedStep(thought, code)
        return ParsedStep(thought, None, "the code block was never closed and what follows it does not compile")

    after_label = text[label.end():] if label else text
    if _looks_like_code(after_label.strip("\n")):
        return ParsedStep(thought if label else "", after_label.strip("\n"))
    return ParsedStep(thought, None, "no code block found")


def normalise_step(text: str) -> str:
    """The assistant turn as stored: generation stops before `<end_code>`,
    so it is put back, and the student learns to write it."""
    text = text.rstrip()
    return text if text.endswith(END_CODE) else text + END_CODE
