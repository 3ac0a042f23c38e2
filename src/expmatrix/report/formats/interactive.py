"""The interactive report: one self-contained HTML file (Bokeh, its JavaScript inlined: no CDN, no server).

The cells table sorts by any column (click its header) and filters by the levels of every factor; beside it,
every cell's seed points and mean. Selecting a row draws that cell's curves, one line per seed: ROC (or the
angular-error distribution), the learning curve, and the codebook health of a VQ tokenizer. Below: the forest
plot of every Δ with its interval, then every table of the report (effects with P(better), ANOVA, seeds needed,
tuning) with its notes.
"""

from __future__ import annotations

from html import escape
from typing import Any

from bokeh.embed import file_html
from bokeh.layouts import column, row
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    DataTable,
    Div,
    InlineStyleSheet,
    MultiChoice,
    NumberFormatter,
    Range1d,
    Span,
    TableColumn,
)
from bokeh.palettes import Category10
from bokeh.plotting import figure
from bokeh.resources import INLINE

from expmatrix.report.document import Report
from expmatrix.report.formats.html import STYLE, render_table
from expmatrix.report.page_data import CHECKS

FILTER = """
const keep = [];
for (let i = 0; i < full.data.key.length; i++) {
  if (Object.entries(filters).every(([f, w]) => w.value.includes(full.data[f][i]))) keep.push(i);
}
const data = {};
for (const [k, col] of Object.entries(full.data)) data[k] = keep.map((i) => col[i]);
shown.selected.indices = [];
shown.data = data;
const keys = new Set(data.key);
const pd = {key: [], value: []};
points_all.data.key.forEach((k, i) => {
  if (keys.has(k)) { pd.key.push(k); pd.value.push(points_all.data.value[i]); }
});
points.data = pd;
yr.factors = [...data.key].reverse();
"""

SELECT = """
const i = shown.selected.indices[0];
if (i === undefined) return;
const key = shown.data.key[i];
const c = curves[key];
const colors = c.seed.map((s, j) => palette[j % palette.length]);
label.text = `<b>Selected cell:</b> ${key} (seeds ${c.seed.join(", ")})`;
curve.data = {xs: c.curve_x, ys: c.curve_y, seed: c.seed, color: colors};
learning.data = {xs: c.epoch, ys: c.learning, seed: c.seed, color: colors};
const h = c.utilisation || [];
health.data = {xs: h.length ? c.health_epoch : [], ys: h, seed: h.length ? c.seed : [], color: h.length ? colors : []};
"""

CURVES = {  # task -> (title, x label, y label, log y)
    "classification": ("ROC", "signal efficiency εS", "background rejection 1/εB", True),
    "direction": ("Angular error", "angular error [rad]", "fraction of test events below", False),
}


def _lines(title: str, x: str, y: str, log: bool = False) -> tuple[Any, ColumnDataSource]:
    src = ColumnDataSource({"xs": [], "ys": [], "seed": [], "color": []})
    fig = figure(
        title=title,
        width=420,
        height=320,
        x_axis_label=x,
        y_axis_label=y,
        y_axis_type="log" if log else "linear",
        tools="pan,wheel_zoom,box_zoom,reset,save",
        tooltips=[("seed", "@seed")],
    )
    fig.multi_line("xs", "ys", source=src, line_color="color", line_width=2, legend_field="seed")
    return fig, src


def _cells_table(page: dict[str, Any]) -> tuple[DataTable, ColumnDataSource, ColumnDataSource]:
    full = ColumnDataSource(page["cells"], name="cells_all")
    shown = ColumnDataSource(dict(page["cells"]), name="cells_shown")
    number = NumberFormatter(format="0.0000")
    cols = [TableColumn(field=f, title=f) for f in page["factors"]]
    for j, m in enumerate(page["metrics"]):
        cols.append(TableColumn(field=f"{m} mean", title=m if j else f"{m} mean", formatter=number))
        if j == 0:
            cols.append(TableColumn(field=f"{m} std", title="std", formatter=number))
    cols += [TableColumn(field="n", title="n"), TableColumn(field="seeds", title=f"{page['metric']} per seed")]
    cols += [TableColumn(field=c, title=c) for c in CHECKS if c in page["cells"]]  # the convergence check
    table = DataTable(
        source=shown, columns=cols, width=1250, height=420, sortable=True, index_position=None, name="cells_table"
    )
    return table, full, shown


def _seed_points(page: dict[str, Any], shown: ColumnDataSource) -> tuple[Any, ColumnDataSource, ColumnDataSource]:
    keys, values = [], []
    for k, vs in zip(page["cells"]["key"], page["cells"]["seed_values"], strict=True):
        keys += [k] * len(vs)
        values += vs
    points_all = ColumnDataSource({"key": keys, "value": values})
    points = ColumnDataSource({"key": keys, "value": values}, name="points_shown")
    metric = page["metric"]
    fig = figure(
        y_range=list(reversed(page["cells"]["key"])),
        width=620,
        height=max(300, 16 * len(keys) // 2),
        title=f"{metric}: seeds (dots) and mean (bar) per cell",
        x_axis_label=metric,
        tools="xpan,xwheel_zoom,reset,save",
    )
    fig.scatter("value", "key", source=points, size=6, alpha=0.6, color="#1f77b4")
    fig.scatter(f"{metric} mean", "key", source=shown, marker="dash", size=16, line_width=3, color="#d62728")
    return fig, points_all, points


def _forest(page: dict[str, Any]) -> Any:
    data = page["forest"]
    height = max(250, 22 * len(data["label"]) + 80)
    fig = figure(
        y_range=list(reversed(data["label"])),
        width=620,
        height=height,
        x_axis_label=f"Δ {page['metric']}",
        title="Δ vs baseline [interval]: effects (black), within levels (blue)",
        tools="xpan,xwheel_zoom,reset,save",
    )
    src = ColumnDataSource({**data, "color": ["black" if g == "effect" else "#1f77b4" for g in data["group"]]})
    fig.segment("low", "label", "high", "label", source=src, line_width=2, color="color")
    fig.scatter("delta", "label", source=src, size=7, color="color")
    fig.add_layout(Span(location=0, dimension="height", line_dash="dashed", line_color="grey"))
    return fig


def render_interactive(report: Report) -> str:
    """The page of `report` (which carries `page`, the data of `page_data`)."""
    page = report.page
    assert page is not None
    verdict = "".join(f"<li>{escape(s)}</li>" for s in report.verdict)
    warnings = "".join(f"<li>{escape(w)}</li>" for w in report.warnings)
    summary = f"Notes and what was left out ({len(report.warnings)})"
    left = f"<details><summary>{summary}</summary><ul>{warnings}</ul></details>"
    head = Div(text=f"<h1>{escape(report.title)}</h1><h2>Verdict</h2><ul>{verdict}</ul>" + left * bool(warnings))
    table, full, shown = _cells_table(page)
    dots, points_all, points = _seed_points(page, shown)
    filters = {
        f: MultiChoice(title=f, options=lv, value=list(lv), name=f"filter:{f}", width=300)
        for f, lv in page["levels"].items()
    }
    filter_js = CustomJS(
        args={
            "full": full,
            "shown": shown,
            "filters": filters,
            "points_all": points_all,
            "points": points,
            "yr": dots.y_range,
        },
        code=FILTER,
    )
    for w in filters.values():
        w.js_on_change("value", filter_js)
    title, x, y, log = CURVES[page["task"]]
    curve_fig, curve = _lines(title, x, y, log)
    learning_fig, learning = _lines("Learning curve", "epoch", page["learning_label"])
    health_fig, health = _lines("Codebook health (VQ tokenizers)", "pretraining epoch", "codebook utilisation")
    health_fig.y_range = Range1d(0, 1.05)
    curve.name, learning.name, health.name = "curve", "learning", "health"
    label = Div(text="<b>Select a row of the table</b> to draw its cell's curves (one line per seed).", name="selected")
    select_js = CustomJS(
        args={
            "shown": shown,
            "curves": page["curves"],
            "curve": curve,
            "learning": learning,
            "health": health,
            "label": label,
            "palette": list(Category10[10]),
        },
        code=SELECT,
    )
    shown.selected.js_on_change("indices", select_js)
    tables = Div(
        text="".join(render_table(t) for t in report.tables), width=1250, stylesheets=[InlineStyleSheet(css=STYLE)]
    )
    layout = column(
        head,
        Div(text="<h2>Cells</h2>Click a header to sort; choose levels to filter; select a row for its curves."),
        row(*filters.values()),
        table,
        label,
        row(curve_fig, learning_fig, health_fig),
        row(dots, _forest(page)),
        tables,
    )
    return file_html(layout, INLINE, title=report.title)
