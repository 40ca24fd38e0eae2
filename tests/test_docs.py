"""The documentation stays true to the tree: layout sections name paths that exist, the README names
where the main parts live, links stay inside the repository, and every measured figure says when, where
and how it was measured.

The code moves (modules are split, renamed, merged) faster than prose is reread, and a manual that points
at a module that is gone misleads more than one that says nothing. These checks read Markdown only: no
Ray, no models, well under a second.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
BENCHMARKS = REPO / "docs" / "BENCHMARKS.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]

# The five parts a reader looks for first, each with a name the code must define at the path the README
# gives for it: a layout line that points at the wrong module fails even when that module exists.
ROLES = {
    "agent loop": "Agent",
    "sandbox": "SandboxSession",
    "engines": "Engine",
    "trainer": "train_steps",
    "stage driver": "run_pipeline",
}

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
LAYOUT_PATH = re.compile(r"^[\w.\-/]+$")


def sections(text: str) -> dict[str, str]:
    """`## ` sections by heading, headings inside fenced blocks ignored (a report example has its own)."""
    found: dict[str, str] = {}
    heading, lines = None, []
    in_fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        if not in_fence and line.startswith("## "):
            if heading is not None:
                found[heading] = "\n".join(lines)
            heading, lines = line[3:].strip(), []
        elif heading is not None:
            lines.append(line)
    if heading is not None:
        found[heading] = "\n".join(lines)
    return found


def layout_entries(doc: Path) -> list[tuple[int, str, str]]:
    """(line number in the block, path from the repository root, description) for every line of the
    layout block. A line is `PATH  description`, indented two spaces under the directory it belongs to;
    a description wrapped onto its own line reads as a path, and fails, so the format stays one a test
    can check."""
    layouts = [body for heading, body in sections(doc.read_text()).items() if "layout" in heading.lower()]
    assert len(layouts) == 1, f"{doc.name} must have exactly one layout section, has {len(layouts)}"
    block = re.search(r"^```\n(.*?)^```", layouts[0], re.S | re.M)
    assert block, f"{doc.name}'s layout section has no code block"
    entries, parents = [], []  # parents: (indent, directory) of the lines above
    for number, line in enumerate(block.group(1).splitlines(), 1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        token, _, description = line.strip().partition(" ")
        assert LAYOUT_PATH.match(token), f"{doc.name} layout line {number} does not start with a path: {line!r}"
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = "".join(directory for _, directory in parents) + token
        entries.append((number, path, description.strip()))
        if token.endswith("/"):
            parents.append((indent, token))
    return entries


@pytest.mark.parametrize("doc", [README, ARCHITECTURE], ids=lambda d: d.name)
def test_every_path_a_layout_section_names_exists(doc):
    entries = layout_entries(doc)
    assert entries
    missing = [f"line {n}: {path}" for n, path, _ in entries
               if not ((REPO / path).is_dir() if path.endswith("/") else (REPO / path).is_file())]
    assert not missing, f"{doc.name}'s layout names paths that are not in the tree: {missing}"


def test_the_architecture_layout_lists_every_package():
    listed = {path for _, path, _ in layout_entries(ARCHITECTURE)}
    packages = {f"{init.parent.relative_to(REPO).as_posix()}/" for init in (REPO / "ray_distill").rglob("__init__.py")}
    assert not packages - listed, f"packages missing from docs/ARCHITECTURE.md's layout: {sorted(packages - listed)}"


def defines(path: Path, name: str) -> bool:
    files = [path] if path.is_file() else sorted(path.rglob("*.py"))
    pattern = re.compile(rf"^(class|def|async def) {name}\b", re.M)
    return any(pattern.search(f.read_text()) for f in files)


@pytest.mark.parametrize("role, defined", ROLES.items(), ids=list(ROLES))
def test_the_readme_layout_names_where_each_main_part_lives(role, defined):
    places = [(path, description) for _, path, description in layout_entries(README)
              if description.lower().startswith(f"the {role}:")]
    assert len(places) == 1, f"README's layout must name one place for the {role} ('the {role}: ...'), has {places}"
    path = REPO / places[0][0]
    assert path.exists(), f"the README puts the {role} at {places[0][0]}, which does not exist"
    assert defines(path, defined), f"the README puts the {role} at {places[0][0]}, which does not define {defined}"


def test_the_readme_is_a_manual_not_a_book():
    lines = len(README.read_text().splitlines())
    assert lines <= 300, f"README.md has {lines} lines; move depth into docs/ and link to it"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = FENCE.sub("", doc.read_text())
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_links_stay_inside_the_repository_and_resolve(doc):
    text = doc.read_text()
    assert "../shared" not in text, f"{doc.name} points at a folder outside the repository"
    problems = []
    for target in LINK.findall(INLINE_CODE.sub("", FENCE.sub("", text))):
        if re.match(r"^[a-z][a-z+.-]*:", target):  # https:, mailto:: not a file
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.is_relative_to(REPO):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading with that anchor")
    assert not problems, f"{doc.name}: {problems}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_modules_named_in_the_docs_exist(doc):
    """A module the prose names in code quotes (`stages/paths.py`, `scripts/bench/sandbox.py`) exists,
    as given from the repository root, from `ray_distill/`, or as the tail of a file's path. A module
    that was moved or removed then shows up here as a stale name."""
    files = [p.relative_to(REPO).as_posix() for top in ("ray_distill", "scripts", "tests", ".ci")
             for p in (REPO / top).rglob("*") if p.is_file()]
    stale = []
    for quoted in re.findall(r"`([^`\s]+\.(?:py|sh))`", doc.read_text()):
        if not ((REPO / quoted).is_file() or (REPO / "ray_distill" / quoted).is_file()
                or any(f == quoted or f.endswith("/" + quoted) for f in files)):
            stale.append(quoted)
    assert not stale, f"{doc.name} names modules that are not in the tree: {sorted(set(stale))}"


def test_every_measured_figure_says_when_where_and_how():
    figures = sections(BENCHMARKS.read_text())
    assert figures, "docs/BENCHMARKS.md has no figure sections"
    for heading, body in figures.items():
        fields = dict(re.findall(r"^- (Date|Machine|Command): (.+)$", body, re.M))
        assert set(fields) == {"Date", "Machine", "Command"}, \
            f"BENCHMARKS '{heading}' must have '- Date:', '- Machine:' and '- Command:' lines; has {sorted(fields)}"
        datetime.date.fromisoformat(fields["Date"][:10])  # starts with the day, YYYY-MM-DD
        for script in re.findall(r"(?:scripts|tests)/[\w/.-]+\.py", fields["Command"]):
            assert (REPO / script).is_file(), f"BENCHMARKS '{heading}': {script} is not in the tree"
