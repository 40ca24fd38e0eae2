from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ray_distill.scoring import (
    Score,
    exact_match,
    extract_answer,
    extract_boxed,
    f1_score,
    latex_to_sympy,
    math_equal,
    normalize_answer,
    normalize_math,
    score_answer,
    symbolic_equal,
)

EQUIVALENT = [
    # fractions
    ("\\frac{1}{2}", "0.5"),
    ("1/2", "0.5"),
    ("\\frac{1}{2}", "1/2"),
    ("\\dfrac{3}{4}", "0.75"),
    ("\\tfrac34", "0.75"),
    ("\\frac{270}7", "\\frac{270}{7}"),
    ("-\\frac{1}{2}", "-0.5"),
    ("0.33333", "\\frac{1}{3}"),
    ("2\\frac{1}{2}", "2.5"),  # a mixed number, as MATH writes them
    # LaTeX wrappers and decoration
    ("$5$", "5"),
    ("\\text{5 cm}", "5"),
    ("5\\text{ cm}", "5"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("\\text{Evelyn}", "Evelyn"),
    ("90^\\circ", "90"),
    ("90^{\\circ}", "90°"),
    ("x = 5", "5"),
    ("y=2x+3", "2x + 3"),
    ("7.", "7"),
    # units
    ("15\\mbox{ cm}^2", "15"),
    ("12 inches", "12"),
    ("4 square feet", "4"),
    ("\\$32,\\!348", "32348"),
    ("382 \\text{ dollars}", "382"),
    ("3 m", "3"),
    # thousands separators
    ("1,000", "1000"),
    ("10,\\!080", "10080"),
    ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
    # negative and scientific numbers
    ("-5", "-5.0"),
    ("-0", "0"),
    ("1.5\\times10^{3}", "1500"),
    ("1e3", "1000"),
    # percent: a percent sign on either side lets gold/100 and gold*100 match
    ("50\\%", "50"),
    ("50\\%", "0.5"),
    ("0.07", "7%"),
    ("50 percent", "0.5"),
    # GSM-Hard floats
    ("561161.7000000001", "561161.7"),
    ("2.0", "2"),
    ("82.50", "82.5"),
    # tuples, intervals, sets, lists
    ("(1, 2)", "(1,2)"),
    ("(0.5, 1)", "(\\frac{1}{2}, 1)"),
    ("[0, 1)", "[0,1)"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("(-\\infty, 1) \\cup (1, 3)", "(-\\infty,1)\\cup(1,3)"),
    ("x \\in [-2,7]", "[-2, 7]"),
    ("\\{4,5,7\\}", "\\{7,5,4\\}"),
    ("3, 5, 7", "7,5,3"),  # several solutions: order does not matter
    # matrices
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{bmatrix}1\\\\2\\end{bmatrix}"),
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}", "\\begin{pmatrix} -\\frac13 \\\\ \\frac{2}{3} \\end{pmatrix}"),
    ("\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}"),
    # symbolic
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}"),
    ("\\sqrt[3]{8}", "2"),
    ("\\binom{5}{2}", "10"),
    ("\\cot x", "\\frac{\\cos x}{\\sin x}"),
    ("6 - 5i", "-5i+6"),
    ("2xy", "2yx"),
    ("2.8284", "2\\sqrt{2}"),  # a decimal approximation of a constant, within rel_tol
    ("\\sqrt 2+\\sqrt 5", "\\sqrt{5}+\\sqrt{2}"),
]

NOT_EQUIVALENT = [
    ("0.5", "0.6"),
    ("1/2", "2"),
    ("\\frac{1}{2}", "\\frac{2}{1}"),
    ("(1,2)", "(2,1)"),
    ("(1,2)", "(1,2,3)"),
    ("[0,1)", "(0,1)"),
    ("[0,1)", "[0,1]"),
    ("(1,2)", "1,2"),
    ("x+1", "x-1"),
    ("561161.7", "561162"),  # an integer answer is exact, whatever rel_tol
    ("1000001", "1000000"),
    ("1000", "100"),
    ("-5", "5"),
    ("50", "0.5"),  # no percent sign: no scaling by 100
    ("0.33", "\\frac{1}{3}"),
    ("10^6+1", "10^6"),
    ("\\sqrt{2}", "1.41"),
    ("2m", "2"),  # a one-letter unit needs a space: this may be a variable
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"),
    ("\\begin{pmatrix} 1 & 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("Monday", "dynamo"),  # words are not products of letters
    ("\\text{Evelyn}", "\\text{Navin}"),
    ("5", ""),
]


@pytest.mark.parametrize("a, b", EQUIVALENT)
def test_equivalent(a: str, b: str) -> None:
    assert math_equal(a, b)
    assert math_equal(b, a)


@pytest.mark.parametrize("a, b", NOT_EQUIVALENT)
def test_not_equivalent(a: str, b: str) -> None:
    assert not math_equal(a, b)
    assert not math_equal(b, a)


def test_rel_tol_is_honoured() -> None:
    assert not math_equal("0.5001", "0.5", rel_tol=1e-6)
    assert math_equal("0.5001", "0.5", rel_tol=1e-3)


@pytest.mark.parametrize(
    "text, boxed",
    [
        ("The answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("First \\boxed{1}, then \\boxed{2}", "2"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("so \\boxed 5 is it", "5"),
        ("\\fbox{x^{2}}", "x^{2}"),
        ("\\boxed{}", ""),
        ("\\boxed {7} and \\boxedfoo{8}", "7"),
        ("no box here", None),
        ("truncated \\boxed{1} then \\boxed{\\frac{1}{", None),
    ],
)
def test_extract_boxed(text: str, boxed: str | None) -> None:
    assert extract_boxed(text) == boxed


@pytest.mark.parametrize(
    "text, answer",
    [
        ("Thinking... <answer>7</answer> more <answer> 8 </answer>", "8"),
        ("<answer>So \\boxed{12}.</answer>", "12"),
        ("Hence $x = \\boxed{\\dfrac{3}{4}}$.", "\\dfrac{3}{4}"),
        ("  1821 ", "1821"),
        ("\\frac{1}{2}", "\\frac{1}{2}"),
    ],
)
def test_extract_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "raw, normal",
    [
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("2, 345", "2,345"),  # a list: the comma is not a thousands separator
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\pi r^{2}", "\\pi r^2"),  # the space between letters is kept
        ("x = 30^\\circ.", "30"),
        ("\\text{two lines}", "two lines"),
    ],
)
def test_normalize_math(raw: str, normal: str) -> None:
    assert normalize_math(raw) == normal


def test_latex_to_sympy_translates_and_rejects() -> None:
    assert latex_to_sympy("\\frac{a}{b}").replace(" ", "") == "((a)/(b))"
    assert latex_to_sympy("\\sqrt[3]{x}").replace(" ", "") == "((x)**(1/(3)))"
    with pytest.raises(ValueError):
        latex_to_sympy("__import__('os')")
    with pytest.raises(ValueError):
        latex_to_sympy("\\unknowncommand{1}")
    with pytest.raises(ValueError):
        latex_to_sympy("(1).real")


GARBAGE = [None, "", "   ", "}{", "\\frac{", "\\boxed{", "((((", "1/0", "\\frac{1}{0}", "0/0", "\\sqrt", "$$", "\\\\",
           "__import__('os').system('true')", "lambda: 1", "1" * 5000, "(" * 3000 + "1,2" + ")" * 3000,
           "((1,2)," * 1000 + "3" + ")" * 1000, "1e999999999", "\\begin{pmatrix}", "&&&", "\ud800"]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_is_false_and_never_raises(garbage: str | None) -> None:
    assert math_equal(garbage, "5", timeout=2.0) is False
    assert math_equal("5", garbage, timeout=2.0) is False
    assert score_answer("math", garbage, "5", timeout=2.0).correct is False
    assert score_answer("fact", garbage, "Paris").correct is False


def test_numbers_pass_as_python_numbers() -> None:
    assert math_equal(0.5, "\\frac{1}{2}")
    assert math_equal("3", 3)
    assert not math_equal(True, "1")


def _live_descendants() -> set[int]:
    import psutil

    pids = set()
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.status() != psutil.STATUS_ZOMBIE:
                pids.add(process.pid)
    return pids


def test_symbolic_timeout_returns_false_and_kills_the_worker() -> None:
    pytest.importorskip("psutil")
    assert symbolic_equal("x+x", "2x")  # the checker server is up before the clock starts
    before = _live_descendants()
    start = time.monotonic()
    # Deciding this makes sympy expand (x+1)^100000: far more than a second of work.
    assert symbolic_equal("(x+1)^{100000}", "x^{100000}+1", timeout=1.0) is False
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 4.0
    assert _live_descendants() <= before  # nothing started by the check still runs


def test_symbolic_checks_from_threads() -> None:
    pairs = [("2\\sqrt{2}", "\\sqrt{8}"), ("x+1", "x-1"), ("\\frac{\\pi}{2}", "\\pi/2"), ("(x+1)^2", "x^2+1")] * 3
    with ThreadPoolExecutor(max_workers=6) as pool:
        verdicts = list(pool.map(lambda pair: math_equal(*pair), pairs))
    assert verdicts == [True, False, True, False] * 3


_SCORE = 'from ray_distill.scoring import score_answer\nprint("verdict", score_answer("math", "(x+1)^2", "x^2+2x+1").correct)\n'


@pytest.mark.parametrize("how", ["script without a main guard", "python -c", "interactive session"])
def test_scorer_gives_the_same_verdict_from_any_caller(tmp_path, how) -> None:
    """multiprocessing's children import the caller's main module: an unguarded script used to print a
    bootstrapping traceback and score a right answer wrong."""
    if how == "script without a main guard":
        script = tmp_path / "score.py"
        script.write_text(_SCORE)
        run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    elif how == "python -c":
        run = subprocess.run([sys.executable, "-c", _SCORE], capture_output=True, text=True, timeout=120)
    else:  # a REPL, like a notebook kernel: a __main__ without a file
        run = subprocess.run([sys.executable, "-i", "-q"], input=_SCORE, capture_output=True, text=True, timeout=120)
    assert "verdict True" in run.stdout, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr


def test_checker_that_cannot_start_raises_instead_of_answering_false(monkeypatch) -> None:
    from ray_distill.scoring import symbolic

    monkeypatch.setattr(symbolic, "_current", None)
    monkeypatch.setattr(symbolic.sys, "executable", "/bin/false")
    with pytest.raises(RuntimeError, match="symbolic checker exited with status 1"):
        symbolic_equal("(x+1)^2", "x^2+2x+1")
    monkeypatch.undo()
    assert symbolic_equal("(x+1)^2", "x^2+2x+1")  # a new server once the interpreter is back


# --- fact QA ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, normal",
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  an   apple,  a pear! ", "apple pear"),
        ("U.S.A.", "usa"),
        ("Theater", "theater"),  # "the" only as a whole word
        ("A", ""),
    ],
)
def test_normalize_answer(raw: str, normal: str) -> None:
    assert normalize_answer(raw) == normal


def test_exact_match_over_aliases() -> None:
    assert exact_match("the Big Apple", ["New York City", "Big Apple"]) == 1.0
    assert exact_match("New York", ["New York City", "Big Apple"]) == 0.0
    assert exact_match("Paris.", "paris") == 1.0
    assert exact_match(None, "paris") == 0.0


def test_f1_partial_overlap() -> None:
    # pred tokens {new, york}, gold {new, york, city}: precision 1, recall 2/3.
    assert f1_score("New York", "New York City") == pytest.approx(0.8)
    assert f1_score("New York", ["Boston", "New York City", "york"]) == pytest.approx(0.8)
    assert f1_score("Boston", "New York City") == 0.0


def test_f1_yes_no_gets_no_partial_credit() -> None:
    assert f1_score("no", "no way") == 0.0
    assert f1_score("yes it is", "yes") == 0.0
    assert f1_score("yes", "Yes.") == 1.0


# --- score_answer ----------------------------------------------------------


def test_score_math() -> None:
    response = "Adding them up gives \\boxed{\\frac{1}{2}}."
    assert score_answer("math", response, "0.5") == Score(correct=True, exact_match=1.0, f1=1.0, method="math")
    assert score_answer("math", response, "The total is \\boxed{0.5}.").correct
    assert score_answer("math", "1821", "1822", aliases=["1821"]).correct
    assert score_answer("math", "0.6", "0.5") == Score(correct=False, exact_match=0.0, f1=0.0, method="math")


def test_score_fact() -> None:
    score = score_answer("fact", "The Big Apple", "New York City", aliases=["Big Apple"])
    assert score == Score(correct=True, exact_match=1.0, f1=1.0, method="em")
    partial = score_answer("fact", "<answer>New York</answer>", "New York City")
    assert partial.correct is False and partial.exact_match == 0.0 and partial.f1 == pytest.approx(0.8)


@pytest.mark.parametrize("prediction", [None, "", "  \n"])
def test_score_empty_prediction(prediction: str | None) -> None:
    for domain in ("math", "fact"):
        assert score_answer(domain, prediction, "5") == Score(correct=False, exact_match=0.0, f1=0.0, method="empty")


def test_score_unknown_domain() -> None:
    with pytest.raises(ValueError, match="fact, math"):
        score_answer("code", "1", "1")
