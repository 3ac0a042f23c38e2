"""`expmatrix tokenizer fit` pretrains outside a matrix into the shared cache (a later run reuses it) and
prints the codebook health; `expmatrix tokenizer inspect` prints it again and writes the plots."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import PRESETS, write_experiment

from expmatrix.cli import main
from expmatrix.matrix import build_matrix
from expmatrix.shared_stages import pending_stages
from expmatrix.store import RunStore

pytestmark = pytest.mark.slow  # trains, or starts processes


def test_fit_then_inspect_then_a_matrix_reuses_the_artifact(tmp_path, small_h5, one_thread):
    runs = tmp_path / "runs"
    args = ["tokenizer", "fit", "vqvae512", "--data", str(small_h5), "--presets", str(PRESETS), "--runs", str(runs),
            "--set", "tokenizer.epochs=2", "--set", "tokenizer.codebook_size=64"]  # fmt: skip
    fitted = CliRunner().invoke(main, args)
    assert fitted.exit_code == 0, fitted.output
    assert "utilisation" in fitted.output and "perplexity" in fitted.output and "median relative" in fitted.output
    (artifact,) = (runs / "_cache" / "tokenizers").glob("*.json")
    assert f"fitted: {artifact}" in fitted.output
    shown = CliRunner().invoke(main, ["tokenizer", "inspect", str(artifact), "--plots", str(tmp_path / "plots")])
    assert shown.exit_code == 0, shown.output
    assert fitted.output.split("fitted:")[0] == shown.output.split("data: ")[1].split("\n", 1)[1].split("fitted:")[0]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["codebook.png", "reconstruction.png"]
    preset = {"tokenizer": "vqvae512", "tokenizer.epochs": 2, "tokenizer.codebook_size": 64}
    exp = write_experiment(tmp_path, factors={}, data={"path": str(small_h5)}, base={})
    matrix = build_matrix(exp, overrides=preset)
    assert pending_stages(matrix.jobs, RunStore(runs, "tiny")) == []  # the run reuses what `fit` made


def test_inspect_names_a_missing_or_damaged_artifact(tmp_path):
    missing = CliRunner().invoke(main, ["tokenizer", "inspect", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1 and "nope.json: no such fitted tokenizer" in missing.output
    cut = tmp_path / "cut.json"
    cut.write_text('{"signature": "x", "da')
    damaged = CliRunner().invoke(main, ["tokenizer", "inspect", str(cut)])
    assert damaged.exit_code == 1 and "cut.json is damaged" in damaged.output and "Traceback" not in damaged.output
