"""LaTeX: booktabs tables, every cell escaped, a standalone document that pdflatex compiles.

`render_table` gives one `table` float to `\\input` into a thesis (needs `booktabs` and `graphicx`);
`render_latex` wraps all of them in an article with the warnings above.
"""

from __future__ import annotations

from expmatrix.report.document import Report
from expmatrix.report.tables import Table

SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}
SYMBOLS = {
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
    "ε": r"$\varepsilon$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "η": r"$\eta$",
    "²": r"$^2$",
}


def escape(text: str) -> str:
    """Plain text -> LaTeX source that prints it; an unknown non-ASCII character is an error here,
    not a failure at compile time."""
    out = []
    for ch in text:
        if ch in SPECIALS or ch in SYMBOLS:
            out.append(SPECIALS.get(ch) or SYMBOLS[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            raise ValueError(f"no LaTeX form for {ch!r} in {text!r}: add it to SYMBOLS")
    return "".join(out)


def _line(cells: list[str]) -> str:
    return " & ".join(cells) + r" \\"


def render_table(table: Table) -> str:
    """One table float; bold cells in \\textbf, notes as a footnote-size paragraph below."""
    body = [
        _line([rf"\textbf{{{escape(c)}}}" if (i, j) in table.bold else escape(c) for j, c in enumerate(row)])
        for i, row in enumerate(table.rows)
    ]
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        r"\footnotesize",
        rf"\caption{{{escape(table.title)}}}",
        rf"\label{{tab:{table.name.replace('_', '-')}}}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",  # shrink only if too wide
        r"\begin{tabular}{" + "l" * len(table.headers) + "}",
        r"\toprule",
        _line([escape(h) for h in table.headers]),
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}}",
    ]
    if table.notes:
        lines += [
            r"\par\smallskip",
            r"\parbox{\linewidth}{\scriptsize " + " ".join(escape(n) for n in table.notes) + "}",
        ]
    return "\n".join(lines + [r"\end{table}"]) + "\n"


def render_latex(report: Report) -> str:
    """A standalone article (pdflatex, booktabs, landscape A4 so that wide cell tables fit)."""
    warnings = ""
    if report.warnings:
        items = "\n".join(rf"\item {escape(w)}" for w in report.warnings)
        warnings = f"\\paragraph{{Left out.}}\n\\begin{{itemize}}\\small\n{items}\n\\end{{itemize}}\n"
    tables = "\n".join(render_table(t) for t in report.tables)
    return (
        "\\documentclass{article}\n"
        "\\usepackage[a4paper,landscape,margin=1.5cm]{geometry}\n"
        "\\usepackage{booktabs,graphicx}\n"
        "\\begin{document}\n"
        f"\\section*{{{escape(report.title)}}}\n{warnings}{tables}"
        "\\end{document}\n"
    )
