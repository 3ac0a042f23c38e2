"""One self-contained HTML page: warnings, tables and the PNG plots embedded as data URIs.

A few lines of script mark the body with how many images failed to decode
(`data-broken-images`), so a headless browser can check the page it opened.
"""

from __future__ import annotations

import base64
from html import escape

from expmatrix.report.document import Report
from expmatrix.report.tables import Table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.85em; }
th, td { padding: 0.25em 0.7em; text-align: left; white-space: nowrap; }
thead th { border-top: 2px solid #222; border-bottom: 1px solid #222; }
tbody tr:last-child td { border-bottom: 2px solid #222; }
.warnings { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; }
.notes { font-size: 0.8em; color: #555; max-width: 60em; }
img { max-width: 48%; margin: 0.5em; border: 1px solid #ddd; }
"""

CHECK = """
window.addEventListener("load", () => {
  const broken = [...document.images].filter((i) => !i.complete || i.naturalWidth === 0);
  document.body.dataset.brokenImages = String(broken.length);
});
"""


def render_table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    rows = []
    for i, row in enumerate(table.rows):
        cells = (f"<strong>{escape(c)}</strong>" if (i, j) in table.bold else escape(c) for j, c in enumerate(row))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    notes = "".join(f"<li>{escape(n)}</li>" for n in table.notes)
    return (
        f'<h2 id="{escape(table.name)}">{escape(table.title)}</h2>\n'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table></div>\n"
        + (f'<ul class="notes">{notes}</ul>\n' if notes else "")
    )


def render_html(report: Report) -> str:
    warnings = ""
    if report.warnings:
        items = "".join(f"<li>{escape(w)}</li>" for w in report.warnings)
        warnings = f'<div class="warnings"><strong>Left out</strong><ul>{items}</ul></div>\n'
    images = "\n".join(
        f'<img alt="{escape(p.stem)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in report.plots
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>{escape(report.title)}</title>\n<style>{STYLE}</style>\n<script>{CHECK}</script>\n</head>\n"
        f"<body>\n<h1>{escape(report.title)}</h1>\n{warnings}"
        + "".join(render_table(t) for t in report.tables)
        + (f"<h2>Plots</h2>\n<div>{images}</div>\n" if images else "")
        + "</body></html>\n"
    )
