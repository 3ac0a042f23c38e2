"""Angular error by event length in the report: means per bin, paired differences to the baseline, the plot."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from expmatrix.report.lengths import length_bins, length_plot, length_tables


def _results() -> pl.DataFrame:
    """Two readers x 3 seeds; the hierarchical arm is better on long events by 0.1, 0.2, 0.3 rad."""
    rows = []
    for seed, gain in zip([0, 1, 2], [0.1, 0.2, 0.3], strict=True):
        for reader, long_error in (("flat_L128", 1.0), ("hierarchical", 1.0 - gain)):
            rows.append({"job": f"{reader}{seed}", "reader": reader, "seed": seed, "state": "done",
                         "test.angular_error_mean_len_1_64": 0.5 + 0.01 * seed, "test.events_len_1_64": 70,
                         "test.angular_error_mean_len_1025_up": long_error, "test.events_len_1025_up": 3,
                         "test.events_len_65_256": 0})  # fmt: skip
    rows.append({**rows[-1], "job": "failed", "seed": 3, "state": "failed", "test.angular_error_mean_len_1_64": 9.0})
    return pl.DataFrame(rows)


def test_cells_and_paired_differences_by_length_bin():
    results = _results()
    assert length_bins(results) == ["len_1_64", "len_1025_up"]  # shortest first; a bin without a value is left out
    cells, diff = length_tables(results, ["reader"], {"reader": "flat_L128"}, 0.95)
    assert cells.headers == ["reader", "seeds", "1-64 pulses", "> 1024 pulses"]
    half = stats.t.ppf(0.975, 2) * 0.01 / np.sqrt(3)  # seeds 0.50, 0.51, 0.52: std 0.01
    assert cells.rows[0][:3] == ["flat_L128", "3", f"0.510 [{0.51 - half:.3f}, {0.51 + half:.3f}] (n=70)"]
    assert cells.rows[1][3] == f"0.800 [{0.8 - stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3):.3f}, " \
                               f"{0.8 + stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3):.3f}] (n=3)"  # fmt: skip
    assert diff.name == "length_bins_vs_flat_L128" and diff.rows[0][:2] == ["hierarchical", "3"]
    low, high = -0.2 - stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3), -0.2 + stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert diff.rows[0][2] == "0.000 [0.000, 0.000]" and diff.rows[0][3] == f"-0.200 [{low:.3f}, {high:.3f}]"


def test_one_seed_prints_no_interval_and_no_length_metrics_give_nothing(tmp_path):
    one = _results().filter(pl.col("seed") == 0)
    cells = length_tables(one, ["reader"], {}, 0.95)
    assert len(cells) == 1 and cells[0].rows[0][2] == "0.500 (n=70)"
    assert length_tables(pl.DataFrame({"job": ["a"], "state": ["done"], "test.auroc": [0.9]}), ["cell"], {}, 0.95) == []
    path = length_plot(_results(), ["reader"], tmp_path)
    assert path.name == "angular_error_by_length.png" and path.stat().st_size > 5000


@pytest.mark.parametrize("name,label", [("len_1_64", "1-64"), ("len_1025_up", "> 1024")])
def test_bin_labels(name, label):
    from expmatrix.report.lengths import bin_label

    assert bin_label(name) == label


def test_metrics_by_length_bins_the_events_by_their_length_in_the_file():
    from expmatrix.training.directions import length_bins as bins_of
    from expmatrix.training.directions import metrics_by_length

    assert [b[0] for b in bins_of()] == ["len_1_64", "len_65_256", "len_257_1024", "len_1025_up"]
    angle = np.array([0.1, 0.3, 0.2, 1.0, 2.0, 0.5])
    length = np.array([1, 64, 65, 256, 257, 5000])
    m = metrics_by_length(angle, length)
    assert m["events_len_1_64"] == 2 and m["angular_error_mean_len_1_64"] == pytest.approx(0.2)
    assert m["angular_error_median_len_65_256"] == pytest.approx(0.6)
    assert m["events_len_257_1024"] == 1 and m["angular_error_68_len_1025_up"] == pytest.approx(0.5)
    assert metrics_by_length(angle[:2], length[:2])["events_len_1025_up"] == 0
    assert "angular_error_mean_len_1025_up" not in metrics_by_length(angle[:2], length[:2])
