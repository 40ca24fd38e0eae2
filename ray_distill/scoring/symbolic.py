"""Symbolic equality of two LaTeX answers, decided by sympy in a worker process under a time limit.

`simplify` can run for minutes (or exhaust memory) on a hostile answer, and a
thread cannot be stopped, so every check runs in its own process that is
killed when it overruns: a fork of a checker server (`sympy_server.py`)
that this module starts once per process and that has sympy imported.
Callers are often threads in a process with other threads (Ray workers,
torch), which forking is not safe from; the server has one thread.

LaTeX is converted to a sympy string here, in the caller, by a small
recursive-descent translator that knows a fixed set of commands and rejects
the rest: `parse_expr` evaluates Python, so only digits, operators,
parentheses, single-letter variables and known names may reach it.
"""

from __future__ import annotations

import cmath
import itertools
import json
import os
import re
import string
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future

# Starting the server (a sympy import) is not part of a check's time limit.
_STARTUP_LIMIT_S = 60.0

_FUNCTIONS = {
    "sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc",
    "arcsin": "asin", "arccos": "acos", "arctan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh",
    "log": "log", "ln": "log", "exp": "exp",
}
_GREEK = (
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
    "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega",
)
_COMMANDS = {
    **_FUNCTIONS,
    # `lambda` is a Python keyword, so every Greek letter gets a prefix that no other name has.
    **{name: f"greek{name}" for name in _GREEK},
    "pi": "pi", "infty": "oo", "cdot": "*", "times": "*", "div": "/",
}
# Names `parse_expr` may see besides single letters; each maps to a sympy object in the worker.
_NAMES = frozenset({*_FUNCTIONS.values(), *(f"greek{name}" for name in _GREEK), "pi", "oo", "sqrt", "binomial"})
# Longer unknown runs are words ("Evelyn"), not products of variables: letting
# them through would make anagrams equal.
_MAX_VARIABLE_RUN = 3
# Python's parser refuses 200 nested parentheses; deeper input would only spend a worker's time limit.
_MAX_NESTING = 100
_ALLOWED = re.compile(r"[0-9A-Za-z+\-*/()., !]*")
_COMMAND_NAME = re.compile(r"[A-Za-z]+")


def latex_to_sympy(latex: str) -> str:
    """A string for sympy's `parse_expr`; ValueError for anything outside the supported LaTeX."""
    converted = _Translator(latex).sequence(closer=None)
    if not _ALLOWED.fullmatch(converted):
        raise ValueError(f"unsupported characters in {latex!r}")
    if re.search(r"\.(?!\d)", converted):  # a dot that is not a decimal point would be attribute access
        raise ValueError(f"stray '.' in {latex!r}")
    if _nesting(converted) > _MAX_NESTING:
        raise ValueError(f"parentheses nested deeper than {_MAX_NESTING}")
    return re.sub(r"[A-Za-z]+", _split_word, converted)


def _nesting(expr: str) -> int:
    depth = deepest = 0
    for char in expr:
        depth += (char == "(") - (char == ")")
        deepest = max(deepest, depth)
    return deepest


def _split_word(match: re.Match) -> str:
    word = match.group()
    if word in _NAMES:
        return f" {word} "
    if len(word) > _MAX_VARIABLE_RUN:
        raise ValueError(f"{word!r} is a word, not an expression")
    # Adjacent letters are a product of single-letter variables (`xy`).
    return " " + " ".join(word) + " "


class _Translator:
    """LaTeX -> sympy syntax, one pass: braces group, commands are translated or rejected."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def sequence(self, closer: str | None) -> str:
        parts: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == closer:
                return "".join(parts)
            parts.append(self._atom(char))
        if closer is not None:
            raise ValueError(f"missing {closer!r}")
        return "".join(parts)

    def _atom(self, char: str) -> str:
        if char == "{":
            return "(" + self.sequence(closer="}") + ")"
        if char == "\\":
            return self._command()
        if char == "^":
            return "**"
        return char  # checked against the allowed characters once translated

    def _argument(self) -> str:
        """One command argument: a brace group, a command, or a single character (`\\frac12`)."""
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        if self.pos >= len(self.text):
            raise ValueError("missing command argument")
        char = self.text[self.pos]
        self.pos += 1
        if char == "{":
            return self.sequence(closer="}")
        if char == "\\":
            return self._command()
        return char

    def _command(self) -> str:
        match = _COMMAND_NAME.match(self.text, self.pos)
        if match is None:
            raise ValueError(f"unsupported escape at {self.pos} in {self.text!r}")
        name = match.group()
        self.pos = match.end()
        if name == "frac":
            numerator, denominator = self._argument(), self._argument()
            return f"(({numerator})/({denominator}))"
        if name == "binom":
            top, bottom = self._argument(), self._argument()
            return f" binomial({top},{bottom}) "
        if name == "sqrt":
            if self.text.startswith("[", self.pos):
                self.pos += 1
                index = self.sequence(closer="]")
                return f"(({self._argument()})**(1/({index})))"
            return f" sqrt({self._argument()}) "
        if name in _COMMANDS:
            return f" {_COMMANDS[name]} "
        raise ValueError(f"unsupported command \\{name}")


def symbolic_equal(a: str, b: str, *, rel_tol: float = 1e-4, timeout: float = 5.0) -> bool:
    """Whether LaTeX `a` and `b` are the same expression: `simplify(a - b) == 0`, or, for constants
    written with decimals, numerically equal within `rel_tol`. A check that runs past `timeout`
    seconds, or that cannot parse either side, is False; the process of an overrunning check is
    killed. A checker that cannot run at all raises RuntimeError rather than answer False."""
    try:
        expr_a, expr_b = latex_to_sympy(a), latex_to_sympy(b)
    except (ValueError, RecursionError):
        return False
    return _checker().check(expr_a, expr_b, rel_tol, timeout) is True


class _Checker:
    """This process's connection to its checker server; requests from any thread, answered in any order."""

    def __init__(self) -> None:
        if not sys.executable:
            raise RuntimeError("symbolic checks need a Python interpreter to start (sys.executable is empty)")
        self._stderr = tempfile.TemporaryFile()
        # The caller's own path, so the server imports the same ray_distill and sympy.
        path = [p for p in sys.path if p] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from ray_distill.scoring.sympy_server import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, start_new_session=True,
        )
        self.pid = os.getpid()
        self._ids = itertools.count()
        self._pending: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._ready: Future = Future()
        self.failure: str | None = None
        threading.Thread(target=self._read, name="sympy-checker", daemon=True).start()

    def check(self, a: str, b: str, rel_tol: float, timeout: float) -> bool | None:
        try:
            self._ready.result(_STARTUP_LIMIT_S)
        except TimeoutError:
            raise RuntimeError(f"the symbolic checker did not start within {_STARTUP_LIMIT_S:g} s") from None
        future: Future = Future()
        with self._lock:
            if self.failure:
                raise RuntimeError(self.failure)
            key = next(self._ids)
            self._pending[key] = future
            line = json.dumps({"id": key, "a": a, "b": b, "rel_tol": rel_tol, "timeout": timeout}) + "\n"
            try:
                self.process.stdin.write(line.encode())
                self.process.stdin.flush()
            except OSError:
                pass  # the reader reports the exit to every pending check
        return future.result(timeout + _STARTUP_LIMIT_S)

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            if "ready" in message:
                self._ready.set_result(True)
                continue
            with self._lock:
                future = self._pending.pop(message["id"])
            future.set_result(message["verdict"])
        self.process.wait()
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:].decode(errors="replace").strip()
        with self._lock:
            self.failure = f"the symbolic checker exited with status {self.process.returncode}: {tail or 'no output'}"
            pending, self._pending = list(self._pending.values()), {}
        error = RuntimeError(self.failure)
        if not self._ready.done():
            self._ready.set_exception(error)
        for future in pending:
            future.set_exception(error)


_current: _Checker | None = None
_current_lock = threading.Lock()


def _forget_after_fork() -> None:
    # A forked caller starts its own server; the lock may have been held by a thread that is not here.
    global _current, _current_lock
    _current, _current_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _checker() -> _Checker:
    """The running checker of this process: a new one after a fork of the caller or after the last one exited."""
    global _current
    with _current_lock:
        if _current is None or _current.pid != os.getpid() or _current.failure:
            _current = _Checker()
        return _current


def sympy_equal(a: str, b: str, rel_tol: float) -> bool:
    # local: this runs only in the checker server's forks (sympy_server.py); the callers of this module,
    # which import it with ray_distill.scoring, never load sympy (~1 s and much memory)
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    names = {letter: sympy.Symbol(letter) for letter in string.ascii_letters}  # E, I, N, S... stay variables
    names.update({name: getattr(sympy, name) for name in set(_FUNCTIONS.values()) | {"sqrt", "binomial"}})
    names.update({f"greek{name}": sympy.Symbol(name) for name in _GREEK})
    names.update({"pi": sympy.pi, "oo": sympy.oo})
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    expr_a = parse_expr(a, local_dict=names, transformations=transformations)
    expr_b = parse_expr(b, local_dict=names, transformations=transformations)
    if not isinstance(expr_a, sympy.Expr) or not isinstance(expr_b, sympy.Expr):
        return False
    if sympy.simplify(expr_a - expr_b).is_zero is True:
        return True
    # A tolerance is for decimal approximations of constants (`2.8284` for `2\sqrt{2}`); exact forms
    # and integers are never approximations, so `10^6 + 1` stays unequal to `10^6`.
    approximate = expr_a.has(sympy.Float) or expr_b.has(sympy.Float)
    if expr_a.free_symbols or expr_b.free_symbols or not approximate or expr_a.is_Integer or expr_b.is_Integer:
        return False
    return cmath.isclose(complex(expr_a.evalf()), complex(expr_b.evalf()), rel_tol=rel_tol, abs_tol=1e-9)
