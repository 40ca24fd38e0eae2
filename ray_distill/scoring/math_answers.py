"""Math answers: extraction from a response, a canonical string, and equivalence with a gold answer.

`math_equal` tries, cheapest first: the normalised strings; numbers; tuples,
intervals, sets, lists and matrices element by element; and last symbolic
equality in a worker process (see `symbolic`). Numbers on both sides settle
the question without sympy.

Numeric rules:
- `rel_tol` applies when both sides are written as decimals or fractions
  (`561161.7000000001` == `561161.7`, `0.33333` == `\\frac{1}{3}`). An answer
  written as an integer is exact - `561162` != `561161.7`, `1000001` != `1000000` -
  up to float noise (1e-9 relative), so `2.0` == `2`.
- Percent: only when either side carries a percent sign (`%`, `\\%`, "percent")
  is the prediction also compared with gold/100 and gold*100, so `50\\%` equals
  `50` and `0.5`, but `50` != `0.5`. Always trying both scalings would accept
  answers off by a factor of 100.
Brackets are kept: `(a, b)` and intervals are ordered and their brackets must
match; `\\{a, b\\}` sets and bare lists `a, b` (several solutions) are unordered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

from ray_distill.scoring.symbolic import symbolic_equal

_FLOAT_NOISE = Fraction(1, 10**9)
_ABS_TOL = Fraction(1, 10**9)
# Larger exponents are not answers; 10**n with a huge n would stall the caller.
_MAX_EXPONENT = 400

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)

_TEXT_WRAPPER = re.compile(r"\\(?:text|textnormal|textrm|textbf|textit|mbox|mathrm|mathbf|operatorname)\{([^{}]*)\}")
_SCRIPT = r"(?:\s*\^\s*\{?\d\}?)?"  # the 2 of cm^2
# Text-mode words after a number are a unit or a noun ("5\text{ cm}", "14\text{ right triangles}").
_TRAILING_TEXT = re.compile(r"(?<=[\d})])\s*\\(?:text|textnormal|textrm|mbox)\{[^{}]*\}" + _SCRIPT + r"\s*\.?\s*$")
_UNITS = (
    "mm", "cm", "km", "meters?", "metres?", "centimeters?", "centimetres?", "millimeters?", "kilometers?",
    "in", "inch", "inches", "ft", "foot", "feet", "yd", "yards?", "miles?", "mph",
    "kg", "grams?", "kilograms?", "lbs?", "pounds?", "ounces?", "oz",
    "sec", "seconds?", "min", "minutes?", "hours?", "hrs?", "days?", "weeks?", "months?", "years?",
    "dollars?", "cents?", "usd", "degrees?", "units?", "liters?", "litres?", "ml",
)
_UNIT_WORD = re.compile(
    r"(?<=[\d})])\s*(?:(?:square|sq|cubic)\s*)?(?:" + "|".join(_UNITS) + r")\b" + _SCRIPT + r"\s*\.?\s*$", re.IGNORECASE
)
# One-letter units need a space: `2m` is as likely a product with a variable m.
_UNIT_LETTER = re.compile(r"(?<=\d)\s+(?:m|g)" + _SCRIPT + r"\s*$")
_VARIABLE_PREFIX = re.compile(r"(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?\s*(?:=|\\in(?![A-Za-z]))\s*(.+)", re.DOTALL)
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")

_DECIMAL = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_NUMBER = re.compile(rf"({_DECIMAL})(?:[eE]([+-]?\d+))?")
_TIMES_TEN = re.compile(rf"({_DECIMAL})(?:\\times|\\cdot|\*)10\^\{{?([+-]?\d+)\}}?")
_LATEX_FRACTION = re.compile(rf"([+-]?)\\frac\{{({_DECIMAL})\}}\{{({_DECIMAL})\}}")
_SLASH_FRACTION = re.compile(rf"({_DECIMAL})/({_DECIMAL})")
_MIXED_NUMBER = re.compile(r"([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")  # MATH writes 2\frac{1}{2} for 2.5
_MATRIX = re.compile(r"\\begin\{([pbvB]?matrix)\}(.*)\\end\{\1\}", re.DOTALL)


def extract_boxed(text: str) -> Optional[str]:
    """The content of the last `\\boxed{...}` / `\\fbox{...}` (nested braces allowed) or `\\boxed x`;
    None when there is none, or when the last one is unclosed (a truncated response)."""
    if not isinstance(text, str):
        return None
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    body = text[starts[-1] :].lstrip()
    if body.startswith("{"):
        end = _closing_brace(body, 0)
        return None if end < 0 else body[1:end]
    token = re.match(r"[^\s$]+", body)
    return token.group() if token else None


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` that closes the `{` at `start`, or -1; `\\{` and `\\}` do not count."""
    depth = 0
    pos = start
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return pos
        pos += 1
    return -1


def extract_answer(text: str) -> str:
    """The answer in a response: the last `<answer>...</answer>`, then the last `\\boxed{}` in it
    (or in the whole text); otherwise the stripped text. Short final answers pass through unchanged."""
    if not isinstance(text, str):
        return ""
    tagged = _ANSWER_TAG.findall(text)
    if tagged:
        text = tagged[-1]
    boxed = extract_boxed(text)
    return (boxed if boxed is not None else text).strip()


def normalize_math(answer: str) -> str:
    """A canonical string for a math answer: LaTeX decoration, units, degrees, percent signs,
    thousands separators and a leading `x =` removed. Tuples and intervals keep their structure."""
    s = re.sub(r"\s+", " ", str(answer)).strip()
    # `10,\!000` and `10{,}000` are LaTeX thousands separators; `(1,\!2)` does not have three digits after.
    s = re.sub(r"(\d)(?:,\\!|\{,\})\s*(?=\d{3}(?!\d))", r"\1", s)
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", s)
    # Spacing commands; a `\\` (matrix row break) followed by a space is not `\ `.
    s = re.sub(r"(?<!\\)\\[!,;: ]", " ", s)
    s = re.sub(r"\\q?quad(?![A-Za-z])|~", " ", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\displaystyle(?![A-Za-z])", "", s)
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|°|\\degree(?![A-Za-z])", "", s)
    s = _TRAILING_TEXT.sub("", s)
    previous = None
    while previous != s:  # nested wrappers: \text{\textbf{A}}
        previous, s = s, _TEXT_WRAPPER.sub(r"\1", s)
    if s.count("=") <= 1:
        prefixed = _VARIABLE_PREFIX.fullmatch(s.strip())
        if prefixed:
            s = prefixed.group(1)
    s = s.strip().rstrip(".").strip()
    s = _UNIT_LETTER.sub("", _UNIT_WORD.sub("", s))
    s = re.sub(r"\s*(?:\\?%|\bpercent\b)", "", s, flags=re.IGNORECASE)
    s = s.strip().rstrip(".").strip()
    s = re.sub(r"∞|(?<!\\)\binf(?:inity)?\b", r"\\infty", s)
    s = re.sub(r"\\(le|ge)(?:qslant)?(?![A-Za-z])", r"\\\1q", s)
    s = re.sub(r"([_^])\{(\w)\}", r"\1\2", s)
    if _THOUSANDS.fullmatch(s):  # before spaces go, so that `2, 345` stays a list
        s = s.replace(",", "")
    # Spaces matter only between letters (`\pi r`, `two lines`); one is kept there.
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r" (?![A-Za-z])|(?<![A-Za-z]) ", "", s)
    # Shorthand arguments: \frac12, \frac1{2}, \frac{1}2, \sqrt2.
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    return s


def math_equal(pred: Optional[str], gold: Optional[str], *, rel_tol: float = 1e-4, timeout: float = 5.0) -> bool:
    """Whether `pred` is the same answer as `gold` (see the module docstring for the rules); Python
    ints and floats are read as their str(). False, never an exception, for None, empty or unparsable input."""
    if isinstance(pred, (int, float)) and not isinstance(pred, bool):
        pred = str(pred)
    if isinstance(gold, (int, float)) and not isinstance(gold, bool):
        gold = str(gold)
    if not isinstance(pred, str) or not isinstance(gold, str):
        return False
    try:
        return _equal(pred, gold, rel_tol, timeout)
    except (ValueError, ArithmeticError, RecursionError):  # e.g. a 10,000-digit integer, deeply nested tuples
        return False


def _equal(pred: str, gold: str, rel_tol: float, timeout: float) -> bool:
    percent = _has_percent(pred) or _has_percent(gold)
    pred, gold = normalize_math(pred), normalize_math(gold)
    if not pred or not gold:
        return False
    if pred == gold:
        return True
    pred_number, gold_number = _parse_number(pred), _parse_number(gold)
    if pred_number is not None and gold_number is not None:
        return _numbers_equal(pred_number, gold_number, rel_tol, percent)
    pred_parts, gold_parts = _structure(pred), _structure(gold)
    if pred_parts is None and gold_parts is None:
        return symbolic_equal(pred, gold, rel_tol=rel_tol, timeout=timeout)
    if pred_parts is None or gold_parts is None:
        return False
    return _structures_equal(pred_parts, gold_parts, rel_tol, timeout)


def _has_percent(answer: str) -> bool:
    return "%" in answer or re.search(r"\bpercent\b", answer, re.IGNORECASE) is not None


@dataclass(frozen=True)
class _Number:
    value: Fraction
    integer: bool  # written as an integer literal: compared exactly, not within rel_tol


def _parse_number(s: str) -> Optional[_Number]:
    if match := _PLAIN_NUMBER.fullmatch(s):
        mantissa, exponent = match.groups()
        integer = exponent is None and "." not in mantissa
        return _Number(_scaled(Fraction(mantissa), exponent), integer)
    if match := _TIMES_TEN.fullmatch(s):
        return _Number(_scaled(Fraction(match.group(1)), match.group(2)), False)
    if match := _LATEX_FRACTION.fullmatch(s):
        sign, numerator, denominator = match.groups()
        return _fraction(Fraction(numerator), Fraction(denominator), negative=sign == "-")
    if match := _SLASH_FRACTION.fullmatch(s):
        return _fraction(Fraction(match.group(1)), Fraction(match.group(2)), negative=False)
    if match := _MIXED_NUMBER.fullmatch(s):
        sign, whole, numerator, denominator = match.groups()
        part = _fraction(Fraction(numerator), Fraction(denominator), negative=False)
        if part is None:
            return None
        value = int(whole) + part.value
        return _Number(-value if sign == "-" else value, False)
    return None


def _scaled(mantissa: Fraction, exponent: Optional[str]) -> Fraction:
    if exponent is None:
        return mantissa
    if abs(int(exponent)) > _MAX_EXPONENT:
        raise ValueError(f"exponent {exponent} out of range")
    return mantissa * Fraction(10) ** int(exponent)


def _fraction(numerator: Fraction, denominator: Fraction, *, negative: bool) -> Optional[_Number]:
    if denominator == 0:
        return None
    value = numerator / denominator
    return _Number(-value if negative else value, False)


def _numbers_equal(pred: _Number, gold: _Number, rel_tol: float, percent: bool) -> bool:
    tolerance = _FLOAT_NOISE if pred.integer or gold.integer else Fraction(rel_tol)
    golds = (gold.value, gold.value / 100, gold.value * 100) if percent else (gold.value,)
    return any(abs(pred.value - g) <= max(tolerance * max(abs(pred.value), abs(g)), _ABS_TOL) for g in golds)


@dataclass(frozen=True)
class _Structure:
    kind: str  # brackets ("[)"), "set", "list", "union" or a matrix shape; kinds must match
    items: tuple[str, ...]
    ordered: bool


def _structure(s: str) -> Optional[_Structure]:
    if matrix := _MATRIX.fullmatch(s):
        rows = [row for row in _split_top_level(matrix.group(2), "\\\\") if row.strip()]
        cells = [_split_top_level(row, "&") for row in rows]
        shape = "matrix " + ",".join(str(len(row)) for row in cells)
        return _Structure(shape, tuple(cell for row in cells for cell in row), ordered=True)
    pieces = _split_top_level(s, "\\cup")
    if len(pieces) > 1:
        return _Structure("union", tuple(pieces), True)
    if s.startswith("\\{") and s.endswith("\\}") and _encloses(s, len("\\{"), len(s) - len("\\}")):
        return _Structure("set", tuple(_split_top_level(s[2:-2], ",")), False)
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _encloses(s, 1, len(s) - 1):
        items = _split_top_level(s[1:-1], ",")
        if len(items) > 1:
            return _Structure(s[0] + s[-1], tuple(items), True)
    items = _split_top_level(s, ",")
    if len(items) > 1:
        return _Structure("list", tuple(items), False)
    return None


def _encloses(s: str, start: int, end: int) -> bool:
    """Whether s[start:end] is balanced, so the outer brackets pair with each other ("(1,2)", not "(1)+(2)")."""
    depth = 0
    for char in s[start:end]:
        depth += char in "([{"
        depth -= char in ")]}"
        if depth < 0:
            return False
    return depth == 0


def _split_top_level(s: str, separator: str) -> list[str]:
    """`s` split at `separator` outside any bracket."""
    parts: list[str] = []
    depth = 0
    start = 0
    pos = 0
    while pos < len(s):
        if depth == 0 and s.startswith(separator, pos):
            parts.append(s[start:pos])
            pos += len(separator)
            start = pos
            continue
        if s[pos] in "([{":
            depth += 1
        elif s[pos] in ")]}":
            depth -= 1
        pos += 1
    parts.append(s[start:])
    return parts


def _structures_equal(pred: _Structure, gold: _Structure, rel_tol: float, timeout: float) -> bool:
    if pred.kind != gold.kind or len(pred.items) != len(gold.items):
        return False
    if all(_equal(p, g, rel_tol, timeout) for p, g in zip(pred.items, gold.items)):
        return True
    if pred.ordered:
        return False
    unmatched = list(gold.items)
    for p in pred.items:
        match = next((g for g in unmatched if _equal(p, g, rel_tol, timeout)), None)
        if match is None:
            return False
        unmatched.remove(match)
    return True
