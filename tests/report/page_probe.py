"""Open an interactive report page in headless Chromium, act on it as a reader would, and say what happened.

A copy of the page gets a script at the top of its head that records console errors, then, once the page has
drawn: reads the table's rows as drawn, clicks a column header (sort), picks one level in a factor's filter,
clicks a row (select), and writes what it saw as JSON into the page, which `--dump-dom` prints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path
from typing import Any

PROBE = """
<script>
window.__errors = [];
const __error = console.error;
console.error = (...a) => { window.__errors.push(a.map(String).join(" ")); __error(...a); };
window.addEventListener("error", (e) => window.__errors.push(String(e.message)));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function deep(root, sel, out = []) {  // through Bokeh's shadow roots
  root.querySelectorAll(sel).forEach((e) => out.push(e));
  root.querySelectorAll("*").forEach((e) => { if (e.shadowRoot) deep(e.shadowRoot, sel, out); });
  return out;
}
function rows() {  // the drawn rows, top to bottom, as lists of cell texts
  return deep(document, ".slick-row")
    .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))
    .map((r) => [...r.querySelectorAll(".slick-cell")].map((c) => c.textContent));
}
async function probe() {
  const out = {errors: window.__errors};
  const doc = Bokeh.documents[0];
  const shown = doc.get_model_by_name("cells_shown");
  out.before = rows();
  out.headers = deep(document, ".slick-header-column").map((h) => h.textContent);
  const SORT_BY = __SORT_BY__;
  const head = deep(document, ".slick-header-column").find((h) => h.textContent === SORT_BY);
  head.click();
  await sleep(500);
  out.sorted = rows();
  const FILTER = __FILTER__;
  doc.get_model_by_name("filter:" + FILTER[0]).value = [FILTER[1]];
  await sleep(500);
  out.filtered = rows();
  out.filtered_keys = shown.data.key.length;
  const cell = deep(document, ".slick-row .slick-cell")[0];
  cell.dispatchEvent(new MouseEvent("click", {bubbles: true}));
  await sleep(500);
  out.selected = shown.selected.indices;
  out.label = doc.get_model_by_name("selected").text;
  out.curve_lines = doc.get_model_by_name("curve").data.xs.length;
  out.learning_lines = doc.get_model_by_name("learning").data.xs.length;
  out.health_lines = doc.get_model_by_name("health").data.xs.length;
  out.errors = window.__errors;
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}
window.addEventListener("load", () => setTimeout(() => probe().catch((e) => {
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({failed: String(e), errors: window.__errors});
  document.body.appendChild(pre);
}), 1500));
</script>
"""


def browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def flags(tmp: Path) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}"]


def probe_page(page: Path, tmp: Path, sort_by: str, level: tuple[str, str]) -> dict[str, Any]:
    """What a reader sees: rows before and after sorting by the column `sort_by` and filtering the factor
    `level[0]` to `level[1]`, the selection and its curves, and every console error."""
    script = PROBE.replace("__SORT_BY__", json.dumps(sort_by)).replace("__FILTER__", json.dumps(list(level)))
    copy = tmp / "probed.html"
    copy.write_text(page.read_text().replace("<head>", "<head>" + script, 1))
    command = [browser(), *flags(tmp), "--window-size=1400,2400", "--virtual-time-budget=30000", "--dump-dom"]
    dom = subprocess.run([*command, copy.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, f"the probe did not finish: {dom.stderr[-2000:]}"
    return json.loads(unescape(found.group(1)))


def screenshot(page: Path, tmp: Path, shot: Path) -> Path:
    """A picture of the page as it opens."""
    command = [browser(), *flags(tmp), f"--screenshot={shot}", "--window-size=1400,2400", "--virtual-time-budget=10000"]
    subprocess.run([*command, page.as_uri()], capture_output=True, timeout=180)
    return shot
