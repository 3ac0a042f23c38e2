"""Output formats of a report: one module each; `FORMATS` maps a name to its renderer."""

from __future__ import annotations

from collections.abc import Callable

from expmatrix.report.document import Report
from expmatrix.report.formats.html import render_html
from expmatrix.report.formats.interactive import render_interactive
from expmatrix.report.formats.latex import render_latex
from expmatrix.report.formats.text import render_markdown, render_terminal


def render_page(report: Report) -> str:
    """The interactive page where the report carries its data (`Report.page`), else the static one."""
    return render_interactive(report) if report.page is not None else render_html(report)


FORMATS: dict[str, Callable[[Report], str]] = {
    "terminal": render_terminal,
    "markdown": render_markdown,
    "latex": render_latex,
    "html": render_page,
}
