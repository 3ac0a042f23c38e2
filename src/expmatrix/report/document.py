"""A whole report before it is written in any format: warnings, tables, frames and plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from expmatrix.report.tables import Table


@dataclass
class Report:
    title: str
    warnings: list[str]  # what was left out, stated above the tables
    tables: list[Table]
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)  # CSV stem -> numbers behind the tables
    plots: list[Path] = field(default_factory=list)  # PNG files (a PDF beside each)
    verdict: list[str] = field(default_factory=list)  # the answer in sentences, before everything else
    page: dict[str, Any] | None = None  # the interactive page's data (`page_data`); None: the static page
