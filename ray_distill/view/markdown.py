"""The report's Markdown (headings, tables, paragraphs, code blocks) as HTML, every text escaped.

The report stage writes only these constructs; a Markdown library would be
one more dependency for them.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_DIVIDER = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str], number: int) -> str:
    head, *body = [_cells(line) for line in lines if not _DIVIDER.match(line)]
    rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return (f'<table class="md" data-testid="report-table-{number}"><thead><tr>'
            + "".join(f"<th>{escape(c)}</th>" for c in head) + f"</tr></thead><tbody>{rows}</tbody></table>")


def to_html(text: str) -> Markup:
    out: list[str] = []
    lines = text.splitlines()
    i, tables = 0, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            out.append(f"<pre>{escape(chr(10).join(lines[i + 1:end]))}</pre>")
            i = end + 1
        elif line.startswith("|"):
            end = next((j for j in range(i, len(lines)) if not lines[j].startswith("|")), len(lines))
            out.append(_table(lines[i:end], tables))
            tables += 1
            i = end
        elif heading := re.match(r"^(#{1,6})\s+(.*)$", line):
            level = min(len(heading.group(1)) + 1, 6)  # the page has its own h1
            out.append(f"<h{level}>{escape(heading.group(2))}</h{level}>")
            i += 1
        elif line.strip():
            end = next((j for j in range(i, len(lines)) if not lines[j].strip() or lines[j].startswith(("|", "#", "```"))),
                       len(lines))
            out.append(f"<p>{escape(' '.join(lines[i:end]))}</p>")
            i = end
        else:
            i += 1
    return Markup("\n".join(out))
