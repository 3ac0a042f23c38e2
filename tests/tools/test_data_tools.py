"""`data bin`, `data compare`, `data explore` on generated files, through the CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import PRESETS

from expmatrix.cli import main
from expmatrix.config import load_preset
from expmatrix.config.layout import CONT_NAMES
from expmatrix.data.events import Events
from expmatrix.data.fourtops import split_columns
from expmatrix.tokenizers import build_tokenizer


def cli(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def raw_events(path, split: str, cont_features=(1, 2, 3), background=(2, 3, 4, 5)) -> Events:
    with h5py.File(path) as f:
        x, y = f[f"X_{split}"][:], f["Y_train" if split == "train" else f"y_{split}"][:]
    ids, cont, g = split_columns(x, list(cont_features), True, "GeV")
    process = y.astype(np.int64)
    label = (~np.isin(process, background)).astype(np.int64)
    return Events(ids, cont, g, label, process, tuple(CONT_NAMES[i] for i in cont_features))


@pytest.fixture(scope="module")
def binned(small_h5, tmp_path_factory):
    out = tmp_path_factory.mktemp("bin") / "binned.h5"
    result = cli("data", "bin", "--input", small_h5, "--output", out, "--presets", PRESETS, "--chunk-rows", 1000)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("name,vect", [("binned_ambre5", "4"), ("binned_ambre5_bkg", "5")])
def test_data_bin_equals_the_in_memory_tokenizer(name, vect, small_h5, tmp_path):
    out = tmp_path / "b.h5"
    args = ["--presets", PRESETS, "--tokenizer", name, "--vect", vect, "--chunk-rows", 700]
    result = cli("data", "bin", "--input", small_h5, "--output", out, *args)
    assert result.exit_code == 0, result.output
    features = [1, 2, 3] if vect == "4" else [0, 1, 2, 3]
    tok = build_tokenizer(load_preset(name, PRESETS), tuple(CONT_NAMES[i] for i in features), use_met=True)
    tok.fit(raw_events(small_h5, "train", features))  # in memory, all at once
    with h5py.File(out) as f, h5py.File(small_h5) as raw:
        assert json.loads(f.attrs["state"]) == tok.state_dict()
        assert f.attrs["vocab_size"] == (886 if vect == "4" else 4386)
        for split, y_key in (("train", "Y_train"), ("val", "y_val"), ("test", "y_test")):
            x = f[f"X_{split}"][:]
            assert x.dtype == np.int64 and x.shape == (len(raw[f"X_{split}"]), 20)
            np.testing.assert_array_equal(x, tok.thesis_rows(raw_events(small_h5, split, features)))
            np.testing.assert_array_equal(f[y_key][:], raw[y_key][:])
    if name == "binned_ambre5":  # every quantile bin holds a fifth of the training objects
        decoded = tok.decode(x_train := h5py.File(out)["X_train"][:, :18])
        real = x_train > 0
        for feat in ("pT", "eta"):
            shares = np.bincount(decoded[feat][real], minlength=6)[1:] / real.sum()
            np.testing.assert_allclose(shares, 0.2, atol=0.002)


def test_data_bin_rejects_a_non_joint_tokenizer_and_bad_keys(small_h5, tmp_path):
    result = cli("data", "bin", "--input", small_h5, "--output", tmp_path / "x.h5", "--presets", PRESETS,
                 "--tokenizer", "integer_fourtops")  # fmt: skip
    assert result.exit_code == 1 and "tokenizer 'integer_fourtops' is 'integer', not 'binned'" in result.output
    result = cli("data", "bin", "--input", small_h5, "--output", tmp_path / "x.h5", "--presets", PRESETS,
                 "--keys", "y_train=y_train")  # fmt: skip
    assert result.exit_code == 1 and "dataset 'y_train' not found" in result.output
    assert not (tmp_path / "x.h5").exists()


def _their_file(binned, path, flip_rows: int) -> tuple[int, int]:
    """The colleague's layout: one combined dataset 'X' (train then test); object 0 of the first rows moved by
    one phi bin. Returns the rows and the real objects."""
    with h5py.File(binned) as f:
        x = np.concatenate([f["X_train"][:], f["X_test"][:]])
    t = x[:flip_rows, 0]
    d = (t - 1) % 5  # the phi digit of the joint token
    x[:flip_rows, 0] = t - d + (d + 1) % 5
    with h5py.File(path, "w") as f:
        f["X"] = x
    return len(x), int((x[:, :18] > 0).sum())


def _line(output: str, start: str) -> str:
    return next(line for line in output.splitlines() if line.lstrip("| ").startswith(start))


def test_data_compare_identical_files_agree_everywhere(binned):
    result = cli("data", "compare", binned, binned)
    assert result.exit_code == 0, result.output
    assert "100.000%" in _line(result.output, "all positions")
    assert "ours: X_train + X_val + X_test" in result.output


def test_data_compare_a_combined_split_with_other_names(binned, tmp_path):
    theirs = tmp_path / "4top_5bins_train_AND_test.h5"
    n, real = _their_file(binned, theirs, flip_rows=30)
    result = cli("data", "compare", binned, theirs, "--their-keys", "X", "--format", "markdown")
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"ours: X_train + X_test ({n} rows); theirs: X ({n})" in out
    assert f"{100 * (1 - 30 / (n * 20)):.3f}%" in _line(out, "all positions")
    assert f"{100 * (1 - 30 / n):.3f}%" in _line(out, "object 0 ")
    assert "100.000%" in _line(out, "object 1 ")
    assert f"{100 * (1 - 30 / real):.3f}%" in _line(out, "bin of phi")
    for feature in ("type", "pT", "eta", "MET", "MET_phi"):
        assert "100.000%" in _line(out, f"bin of {feature} "), feature
    table = out.split("ours decoded")[1].splitlines()[2:]  # the disagreements, most frequent first
    cells = [c.strip() for c in table[0].split("|")]
    ours, theirs = cells[4].split(", "), cells[5].split(", ")
    assert ours[:3] == theirs[:3] and ours[3] != theirs[3] and ours[3].startswith("phi bin")


def test_data_compare_unaligned_files_compare_frequencies_only(binned, tmp_path):
    theirs = tmp_path / "t.h5"
    with h5py.File(binned) as f, h5py.File(theirs, "w") as g:
        g["tokens"] = f["X_val"][:10]
    result = cli("data", "compare", binned, theirs, "--our-splits", "train")
    assert result.exit_code == 0, result.output
    assert "row counts differ: only the token frequencies are compared" in result.output


@pytest.mark.slow
def test_data_explore_statistics_histograms_and_vocabulary(small_h5, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(small_h5.read_bytes())
    with h5py.File(bad, "r+") as f:
        x = f["X_train"][:]
        x[0, 21], x[1, 21] = np.nan, -5.0  # the pT of object 0 in rows 0 and 1
        f["X_train"][...] = x
    args = ["--plots", tmp_path / "plots", "--tokenizer", "integer_fourtops", "--presets", PRESETS]
    result = cli("data", "explore", bad, *args)
    assert result.exit_code == 0, result.output
    with h5py.File(bad) as f:
        x = f["X_train"][:]
    pt = x[:, 20:].reshape(-1, 18, 4)[..., 1][x[:, :18] > 0]
    row = next(line.split() for line in result.output.splitlines() if line.startswith("pT "))
    assert int(row[1]) == len(pt) and float(row[-1]) == pytest.approx(2 / len(pt), rel=1e-3)
    ok = pt[np.isfinite(pt) & (pt > 0)]
    assert float(row[2]) == pytest.approx(ok.min(), rel=1e-3)
    assert float(row[7]) == pytest.approx(np.median(ok), rel=1e-3)
    for name in ("E", "pT", "eta", "phi", "MET", "MET_phi"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert _line(result.output.split("tokenizer part")[1], "eta").split()[:2] == ["eta", "53"]  # 51 + pad + mask
