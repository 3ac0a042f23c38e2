"""Terminal and Markdown, through tabulate."""

from __future__ import annotations

from collections.abc import Callable

from tabulate import tabulate

from expmatrix.report.document import Report
from expmatrix.report.tables import Table


def _rows(table: Table, bold: Callable[[str], str]) -> list[list[str]]:
    return [[bold(c) if (i, j) in table.bold else c for j, c in enumerate(row)] for i, row in enumerate(table.rows)]


def _table(table: Table, tablefmt: str, bold: Callable[[str], str]) -> str:
    return tabulate(_rows(table, bold), headers=table.headers, tablefmt=tablefmt, disable_numparse=True)


def render_terminal(report: Report) -> str:
    parts = [f"warning: {w}" for w in report.warnings]
    for t in report.tables:
        parts.append(f"\n{t.title}\n{_table(t, 'simple', lambda c: c + ' *')}")
    return "\n".join(parts) + ("\n(* best)\n" if report.tables else "\n")


def render_markdown(report: Report) -> str:
    parts = [f"# {report.title}"]
    if report.warnings:
        parts.append("\n".join(f"> warning: {w}  " for w in report.warnings))
    for t in report.tables:
        parts.append(f"## {t.title}\n\n{_table(t, 'github', lambda c: f'**{c}**')}")
        if t.notes:
            parts.append("\n".join(f"- {n}" for n in t.notes))
    parts += [f"![{p.stem}](plots/{p.name})" for p in report.plots]
    return "\n\n".join(parts) + "\n"
