"""Terminal and Markdown, through tabulate.

The terminal report fits `WIDTH` columns by default: the verdict first, warnings wrapped, and each table too
wide for the terminal split into parts that repeat the columns naming a row (`Table.keys`). `width=None`
(`report --wide`) prints every table whole, as the files hold them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from tabulate import tabulate

from expmatrix.report.document import Report
from expmatrix.report.tables import Table

WIDTH = 100  # an ordinary terminal
GAP = 2  # tabulate's `simple` format: two spaces between columns
PAD = 2  # and a header two wider than its text (tabulate's MIN_PADDING)


def _rows(table: Table, bold: Callable[[str], str]) -> list[list[str]]:
    return [[bold(c) if (i, j) in table.bold else c for j, c in enumerate(row)] for i, row in enumerate(table.rows)]


def _table(table: Table, tablefmt: str, bold: Callable[[str], str]) -> str:
    return tabulate(_rows(table, bold), headers=table.headers, tablefmt=tablefmt, disable_numparse=True)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def column_parts(widths: list[int], keys: int, width: int) -> tuple[int, list[list[int]]]:
    """(key columns kept, the other columns in parts that fit `width` beside them): greedy, in order."""
    while keys > 1 and sum(widths[:keys]) + GAP * keys > width // 2:
        keys -= 1  # the names of a row may not take more than half the line
    room = width - sum(widths[:keys]) - GAP * keys
    parts: list[list[int]] = [[]]
    used = 0
    for j in range(keys, len(widths)):
        if parts[-1] and used + widths[j] > room:
            parts.append([])
            used = 0
        parts[-1].append(j)
        used += widths[j] + GAP
    return keys, parts


def fitted(table: Table, width: int) -> list[str]:
    """The table as one or more `simple` blocks, each line at most `width` characters."""
    rows = _rows(table, lambda c: c + " *")
    widths = [max([len(h) + PAD] + [len(r[j]) for r in rows]) for j, h in enumerate(table.headers)]
    if sum(widths) + GAP * (len(widths) - 1) <= width:
        return [f"{table.title}\n{tabulate(rows, table.headers, 'simple', disable_numparse=True)}"]
    keys, parts = column_parts(widths, min(table.keys, len(widths) - 1), width)
    room = width - sum(widths[:keys]) - GAP * keys
    blocks = []
    for i, part in enumerate(parts, 1):
        cols = list(range(keys)) + part
        clip = room if len(part) == 1 else width  # a column too wide on its own is cut
        clip_head = clip - PAD
        cut = [[_clip(r[j], clip) if j in part else r[j] for j in cols] for r in rows]
        heads = [_clip(table.headers[j], clip_head) if j in part else table.headers[j] for j in cols]
        title = _clip(f"{table.title} ({i}/{len(parts)})", width)
        blocks.append(f"{title}\n{tabulate(cut, heads, 'simple', disable_numparse=True)}")
    return blocks


def _wrap(text: str, first: str, width: int | None) -> str:
    return textwrap.fill(text, width, initial_indent=first, subsequent_indent="  ") if width else first + text


def render_terminal(report: Report, width: int | None = WIDTH) -> str:
    """The verdict, the warnings and the tables; every line within `width` (None: tables whole)."""
    parts = []
    if report.verdict:
        parts += ["Verdict"] + [_wrap(s, "- ", width) for s in report.verdict]
    parts += [_wrap(w, "warning: ", width) for w in report.warnings]
    for t in report.tables:
        blocks = fitted(t, width) if width else [f"{t.title}\n{_table(t, 'simple', lambda c: c + ' *')}"]
        parts += ["\n" + b for b in blocks]
    return "\n".join(parts) + ("\n(* best)\n" if any(t.bold for t in report.tables) else "\n")


def render_markdown(report: Report) -> str:
    parts = [f"# {report.title}"]
    if report.verdict:
        parts.append("## Verdict\n\n" + "\n".join(f"- {s}" for s in report.verdict))
    if report.warnings:
        parts.append("\n".join(f"> warning: {w}  " for w in report.warnings))
    for t in report.tables:
        parts.append(f"## {t.title}\n\n{_table(t, 'github', lambda c: f'**{c}**')}")
        if t.notes:
            parts.append("\n".join(f"- {n}" for n in t.notes))
    parts += [f"![{p.stem}](plots/{p.name})" for p in report.plots]
    return "\n\n".join(parts) + "\n"
