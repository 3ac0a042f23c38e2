"""Reports: collect run directories, compute effects and statistics, render tables and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from expmatrix.matrix import Matrix
from expmatrix.report.build import build_report, write_report
from expmatrix.report.formats import FORMATS
from expmatrix.report.formats.text import WIDTH, render_terminal
from expmatrix.report.settings import ReportSettings, task_of
from expmatrix.store import RunStore


def make_report(
    matrix: Matrix,
    runs_root: str | Path,
    profile: str | None = None,
    spec_file: str | Path | None = None,
    flags: dict[str, Any] | None = None,
    out: str | Path | None = None,
    fmt: str = "terminal",
    plots: bool = True,
    wide: bool = False,
) -> tuple[str, Path]:
    """Build the report of `matrix`'s runs, write every format to `out` (default runs/<experiment>);
    returns the text in `fmt` (the terminal's within 100 columns unless `wide`) and the folder written."""
    store = RunStore.for_spec(runs_root, matrix.spec)  # `running` means what it means to `status`
    settings = ReportSettings.resolve(matrix.spec.report, spec_file, flags, task_of(matrix))
    folder = Path(out) if out is not None else store.dir
    title = matrix.spec.name + (f" (profile {profile})" if profile else "")
    report, results = build_report(matrix, store, settings, folder if plots else None, title)
    write_report(report, results, folder)
    if fmt == "terminal":
        return render_terminal(report, None if wide else WIDTH), folder
    return FORMATS[fmt](report), folder
