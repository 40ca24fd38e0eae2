"""The evaluation report: Markdown tables laid out like the paper's Table 2, and a plot of accuracy
against student size per method. Pure functions of evaluation results (see `stages/evaluate.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from ray_distill.evaluation.methods import method_rank
from ray_distill.models.size import size_label


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _student(result: dict) -> str:
    return f"{result['student']} ({size_label(result.get('parameters'))})"


def _sorted(results: Sequence[dict]) -> list[dict]:
    return sorted(results, key=lambda r: (r.get("parameters") or 0, r["student"], method_rank(r["method"])))


def summary_table(results: Sequence[dict]) -> str:
    """Average accuracy (%): a row per student, a column per method (Table 2's layout)."""
    results = _sorted(results)
    methods = sorted({r["method"] for r in results}, key=method_rank)
    students = list(dict.fromkeys(_student(r) for r in results))
    cells = {(_student(r), r["method"]): _pct(r["average"]) for r in results}
    lines = ["| student | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for student in students:
        lines.append(f"| {student} | " + " | ".join(cells.get((student, m), "") for m in methods) + " |")
    return "\n".join(lines)


def benchmark_table(results: Sequence[dict]) -> str:
    """Accuracy (%) per benchmark and the average, with what went wrong, for every evaluation."""
    results = _sorted(results)
    sets = list(dict.fromkeys(name for r in results for name in r["sets"]))
    lines = ["| student | method | " + " | ".join(sets) + " | avg | answered (final_answer / all) "
             "| parse errors | execution errors | mean steps |",
             "|---" * (len(sets) + 7) + "|"]
    for r in results:
        per_set = [r["sets"].get(name) for name in sets]
        found = [m for m in per_set if m]
        agent = r["mode"] == "agent"
        answered = (f"{sum(m['answered_by_final_answer'] for m in found)} / "
                    f"{sum(m['questions'] * m['samples_per_question'] for m in found):g}") if agent else "-"
        errors = [str(sum(m[k] for m in found)) if agent else "-" for k in ("parse_errors", "execution_errors")]
        steps = [m["mean_steps"] for m in found if agent and m["mean_steps"] is not None]
        lines.append(f"| {_student(r)} | {r['method']} | "
                     + " | ".join(_pct(m["accuracy"]) if m else "" for m in per_set)
                     + f" | {_pct(r['average'])} | {answered} | {errors[0]} | {errors[1]} | "
                     + (f"{sum(steps) / len(steps):.2f}" if steps else "-") + " |")
    return "\n".join(lines)


def fact_table(results: Sequence[dict]) -> Optional[str]:
    """Exact match and F1 (%) on the fact sets, and the judge's accuracy where it ran."""
    results = _sorted(results)
    rows = []
    for r in results:
        for name, m in r["sets"].items():
            if "exact_match" in m:
                rows.append(f"| {_student(r)} | {r['method']} | {name} | {_pct(m['exact_match'])} | {_pct(m['f1'])} "
                            f"| {_pct(m.get('judge_accuracy'))} |")
    if not rows:
        return None
    return "\n".join(["| student | method | benchmark | EM | F1 | judge |", "|---|---|---|---|---|---|", *rows])


def markdown(results: Sequence[dict]) -> str:
    parts = ["## Average accuracy (%)", "", summary_table(results), "", "## Per benchmark (accuracy %)", "",
             benchmark_table(results)]
    facts = fact_table(results)
    if facts:
        parts += ["", "## Fact questions: exact match, F1 and judge (%)", "", facts]
    return "\n".join(parts) + "\n"


def plot(results: Sequence[dict], path: Path) -> Optional[Path]:
    """Average accuracy against student parameters, a line per method; None when no result has a size."""
    # local: the backend must be chosen before pyplot is imported, and only a plot needs matplotlib
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node
    import matplotlib.pyplot as plt

    sized = [r for r in _sorted(results) if r.get("parameters") and r["average"] is not None]
    if not sized:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for method in sorted({r["method"] for r in sized}, key=method_rank):
        points = [(r["parameters"], 100 * r["average"]) for r in sized if r["method"] == method]
        axes.plot([p for p, _ in points], [a for _, a in points], marker="o", label=method)
    axes.set_xscale("log")
    sizes = sorted({r["parameters"] for r in sized})
    axes.set_xticks(sizes, [size_label(s) for s in sizes])
    axes.minorticks_off()
    axes.set_xlabel("student parameters")
    axes.set_ylabel("average accuracy (%)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def results_payload(results: Sequence[dict]) -> dict[str, Any]:
    return {"results": _sorted(results)}
