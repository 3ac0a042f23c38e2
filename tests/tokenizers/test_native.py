"""The compiled binning kernels (native.c) against the numpy reference path: the same edges, tokens,
codes, counts and errors on adversarial tables; the compile cache and the numpy fallback."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
from conftest import make_events

from expmatrix.config import BinnedTokenizerConfig, FactorizedTokenizerConfig
from expmatrix.tokenizers import TokenizerError, build_tokenizer, native
from expmatrix.tokenizers.binned import CHUNK_EVENTS
from expmatrix.tokenizers.quantiles import QuantileSketch

CYCLIC = {"kind": "cyclic", "range": [-np.pi, np.pi], "width": 2 * np.pi / 5}
RULES = {"E": "quantile", "pT": "quantile", "eta": "quantile", "phi": CYCLIC, "MET": "quantile", "MET_phi": CYCLIC}
FIXED = {**RULES, "pT": {"kind": "quantile", "bins": 20}, "eta": {"kind": "fixed", "range": [-2.5, 2.5], "bins": 7}}
FOUR, FIVE = ("pT", "eta", "phi"), ("E", "pT", "eta", "phi")
CONFIGS = {  # name -> (kind, config fields, features, MET)
    "ambre 4-vector + MET": ("binned", {}, FOUR, True),
    "5-vector, no MET": ("binned", {}, FIVE, False),
    "per object type, background": ("binned", {"per_object_type": True, "fit_on": "background"}, FOUR, True),
    "fixed eta, 20 pT bins": ("binned", {"rules": FIXED}, FOUR, True),
    "factorized": ("factorized", {}, FOUR, True),
    "factorized per type": ("factorized", {"per_object_type": True}, FIVE, True),
}


def config(kind: str, fields: dict):
    cls = BinnedTokenizerConfig if kind == "binned" else FactorizedTokenizerConfig
    return cls.model_validate({"kind": kind, "name": "t", "n_bins": 5, "rules": RULES, **fields})


def adversarial_events(n: int, features: tuple[str, ...], seed: int, edges: dict | None = None):
    """Every type and empty slots holding NaN, inf and junk; phi at +-pi, float32(-pi) and beyond; values
    far outside the training range (float32(-3pi) wraps onto float32(pi): the last edge case of `wrap`); with
    `edges`, real values exactly on fitted edges."""
    rng = np.random.default_rng(seed)
    o = 9
    ids = rng.integers(0, 8, (n, o))
    cols = {"E": rng.exponential(120, (n, o)), "pT": rng.exponential(50, (n, o)), "eta": rng.normal(0, 1.6, (n, o)),
            "phi": rng.uniform(-np.pi, np.pi, (n, o))}  # fmt: skip
    special = {"phi": [-np.pi, np.pi, np.float32(-np.pi), np.float32(np.pi), -4.0, 7.5, 12.0, -3 * np.pi],
               "eta": [-9.0, 9.0, -2.5, 2.5]}  # fmt: skip
    for f, values in special.items():
        cols[f].flat[::7] = rng.choice(np.float32(values), cols[f].flat[::7].size)
    cols["pT"].flat[::11] *= 30  # beyond the training maximum
    if edges:
        for f, e in edges.items():
            if f in cols:
                flat = np.ravel(list(e.values()) if isinstance(e, dict) else e)
                cols[f].flat[::5] = rng.choice(flat, cols[f].size)[::5]
    cont = np.stack([cols[f] for f in features], -1)
    junk = rng.choice([np.nan, np.inf, -np.inf, 1e30, 0.0], (n, o, len(features)))
    cont = np.where((ids == 0)[..., None], junk, cont)
    met = np.stack([rng.exponential(80, n), rng.uniform(-4, 4, n)], 1)
    return make_events(ids, cont, met, label=rng.integers(0, 2, n), features=features)


def both_paths(monkeypatch, run):
    """run() with the compiled kernels, then with numpy alone."""
    assert native.lib() is not None
    compiled = run()
    with monkeypatch.context() as m:
        m.setattr(native, "lib", lambda: None)
        reference = run()
    return compiled, reference


def error_messages(monkeypatch, calls) -> list[str]:
    """The TokenizerError of each call: the same with the kernels and with numpy, on 1 and on 2 threads."""
    import torch

    def messages():
        out = []
        for call in calls:
            with pytest.raises(TokenizerError) as e:
                call()
            out.append(str(e.value))
        return out

    before, seen = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            compiled, reference = both_paths(monkeypatch, messages)
            assert compiled == reference, threads
            seen.append(compiled)
    finally:
        torch.set_num_threads(before)
    assert seen[0] == seen[1]
    return seen[0]


def test_the_kernels_compile_here():
    if not shutil.which(os.environ.get("CC") or "cc"):
        pytest.skip("no C compiler: the numpy path runs (tested below)")
    assert native.lib() is not None  # a CI machine with a compiler must run the fast path


@pytest.mark.parametrize("name", list(CONFIGS))
def test_kernels_give_the_numpy_edges_tokens_and_counts(monkeypatch, name):
    kind, fields, features, met = CONFIGS[name]
    train = adversarial_events(3000, features, seed=1)
    train.cont[train.ids > 0] = np.nan_to_num(train.cont[train.ids > 0])  # training values are finite

    def run():
        tok = build_tokenizer(config(kind, fields), features, use_met=met)
        tok.fit(train)
        test = adversarial_events(2 * CHUNK_EVENTS + 101, features, seed=2, edges=tok.binner.edges)
        test.cont[test.ids > 0] = np.nan_to_num(test.cont[test.ids > 0])
        out = {k: v.numpy() for k, v in tok.transform(test).items()}
        if kind == "binned":
            out["thesis"] = tok.thesis_rows(test)
        return tok.state_dict(), out, dict(tok.out_of_range)

    (state, out, counts), (state_np, out_np, counts_np) = both_paths(monkeypatch, run)
    assert state == state_np
    assert out.keys() == out_np.keys()
    for key in out:
        np.testing.assert_array_equal(out[key], out_np[key], err_msg=key)
    assert counts == counts_np and counts["pT"] > 0  # values beyond the training range are counted
    if "phi" in features:  # float32(-pi) is in range: the first phi bin on both paths, in any chunk
        assert counts.get("phi") is None


def test_float32_minus_pi_stays_in_the_first_phi_bin_whatever_else_the_chunk_holds(monkeypatch):
    """The numpy path used to wrap every phi of a chunk that held one out-of-range value: float32(-pi),
    in range, then wrapped to the last bin, so its bin depended on its neighbours."""
    tok = build_tokenizer(config("binned", {}), ("pT", "eta", "phi"), use_met=False)
    tok.fit(adversarial_events(500, ("pT", "eta", "phi"), seed=3, edges=None))
    alone = make_events([[1, 1]], [[[20, 0, np.float32(-np.pi)], [20, 0, 0.5]]])
    beside_outlier = make_events([[1, 1]], [[[20, 0, np.float32(-np.pi)], [20, 0, 7.0]]])

    def phi_bins():
        return [tok.decode(tok.transform(ev)["tokens"].numpy())["phi"][0, 0] for ev in (alone, beside_outlier)]

    compiled, reference = both_paths(monkeypatch, phi_bins)
    assert compiled == reference == [1, 1]


@pytest.mark.parametrize("kind", ["binned", "factorized"])
def test_kernel_errors_are_the_numpy_errors(monkeypatch, kind):
    tok = build_tokenizer(config(kind, {}), FOUR, use_met=True)
    tok.fit(adversarial_events(500, FOUR, seed=4))
    nan_real = make_events([[1, 2]], [[[30, 0.1, 0.2], [40, np.nan, 0.0]]], [[50, 0.0]])
    bad_id = make_events([[1, 9]], [[[30, 0.1, 0.2], [40, 0.5, 0.0]]], [[50, 0.0]])
    assert error_messages(monkeypatch, [lambda ev=ev: tok.transform(ev) for ev in (nan_real, bad_id)]) == [
        "feature eta: 1 NaN/inf values cannot be binned",
        "object-type ids outside 0..7: [9]",
    ]


def test_bracket_counts_equal_the_numpy_counts(monkeypatch):
    rng = np.random.default_rng(6)
    v = np.concatenate([rng.normal(size=300_000), [np.inf, -np.inf, np.nan], np.zeros(1000)]).astype(np.float32)
    qs = np.array([0.1, 0.5, 0.5001, 0.9])  # two close quantiles share a bracket

    def count():
        sk = QuantileSketch(qs, len(v))
        sk.add_sample(v)
        sk.start_counting()
        for part in np.array_split(v, 3):
            sk.add_count(part)
        inside = np.concatenate(sk._inside)
        return sk._at_least.tolist(), inside.tolist(), sk.result().tolist()

    compiled, reference = both_paths(monkeypatch, count)
    assert compiled == reference


def test_no_compiler_falls_back_to_numpy_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("EXPMATRIX_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    native.lib.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            assert native.lib() is None
        assert "falls back to numpy" in caplog.text and "no-such-cc" in caplog.text
        assert list((tmp_path / "native").glob("*")) == []  # nothing half-written left behind
        native.lib.cache_clear()
        monkeypatch.setenv("CC", "false")  # a compiler that fails
        assert native.lib() is None and list((tmp_path / "native").glob("*")) == []
        native.lib.cache_clear()
        monkeypatch.setenv("EXPMATRIX_NATIVE", "0")
        monkeypatch.delenv("CC")
        assert native.lib() is None  # switched off
    finally:
        native.lib.cache_clear()


@pytest.mark.slow
def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    monkeypatch.setenv("EXPMATRIX_CACHE", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    native.lib.cache_clear()
    try:
        assert native.lib() is not None
        built = list((tmp_path / "native").glob("*"))
        assert len(built) == 1 and built[0].name.startswith("binning-") and built[0].suffix == ".so"
        stamp = built[0].stat().st_mtime_ns
        native.lib.cache_clear()
        assert native.lib() is not None and built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    finally:
        native.lib.cache_clear()


@pytest.mark.parametrize("kind", ["binned", "factorized"])
def test_errors_come_in_the_order_ids_objects_met_on_both_paths(monkeypatch, kind):
    tok = build_tokenizer(config(kind, {}), FOUR, use_met=True)
    tok.fit(adversarial_events(500, FOUR, seed=7))
    n = 2 * CHUNK_EVENTS + 5
    ids, cont = np.ones((n, 2), np.int64), np.full((n, 2, 3), 0.5)
    cont[[0, CHUNK_EVENTS + 1], 0, 1] = np.nan  # eta in two chunks: counted together
    cont[2 * CHUNK_EVENTS, 1, 0] = np.inf  # pT in a later chunk: pT comes first, the features in order
    met = np.tile([[40.0, 0.5]], (n, 1))
    met[3, 0] = np.nan
    bad_ids = ids.copy()
    bad_ids[4, 1] = 9
    cases = [(bad_ids, cont), (ids, cont), (ids, np.nan_to_num(cont, nan=0.5, posinf=0.5))]
    assert error_messages(monkeypatch, [lambda i=i, c=c: tok.transform(make_events(i, c, met)) for i, c in cases]) == [
        "object-type ids outside 0..7: [9]",
        "feature pT: 1 NaN/inf values cannot be binned",
        "feature MET: 1 NaN/inf values cannot be binned",
    ]


def test_fit_errors_do_not_depend_on_threads_and_nan_met_is_an_error(monkeypatch):
    train = adversarial_events(1000, FOUR, seed=8)
    train.cont[0, :, 1] = np.nan  # eta in the first part
    train.ids[0, 0] = 1
    train.ids[901, 0] = 1
    train.cont[901, 0, 0] = np.inf  # pT in the second part (2 threads): pT is still the one named
    met_nan = adversarial_events(1000, FOUR, seed=8)
    met_nan.globals_[:300, 0] = np.nan  # once looped for ever: NaN counted, never inside a bracket
    fits = [lambda ev=ev: build_tokenizer(config("binned", {}), FOUR, use_met=True).fit(ev) for ev in (train, met_nan)]
    nan_pt = int((~np.isfinite(train.cont[..., 0]) & (train.ids > 0)).sum())
    assert error_messages(monkeypatch, fits) == [
        f"feature pT: {nan_pt} NaN/inf values cannot be binned",
        "feature MET: 300 NaN/inf values cannot be binned",
    ]


def test_events_without_object_slots(monkeypatch):
    met = [[10.0, 0.1], [500.0, -3.0]]
    empty = make_events(np.zeros((2, 0), np.int64), np.zeros((2, 0, 3)), met)

    def run():
        tok = build_tokenizer(config("binned", {}), FOUR, use_met=True)
        with pytest.raises(TokenizerError, match="no real training entries"):
            tok.fit(empty)
        tok.fit(adversarial_events(500, FOUR, seed=9))
        return tok.transform(empty)["tokens"].tolist(), tok.transform(empty)["mask"].tolist()

    compiled, reference = both_paths(monkeypatch, run)
    # MET 10 and 500: the first and last bins (876, 880); MET-phi 0.1 and -3.0: bins 3 and 1 (883, 881)
    assert compiled == reference == ([[876, 883], [880, 881]], [[True, True]] * 2)


@pytest.mark.slow
def test_first_use_from_many_threads_builds_once(monkeypatch, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    log = tmp_path / "calls"
    wrapper = tmp_path / "cc-logged"
    wrapper.write_text(f'#!/bin/sh\necho x >> {log}\nexec cc "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("EXPMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", f"{wrapper} -g0")  # a compiler with arguments, as make's CC may be
    native.lib.cache_clear()
    try:
        with ThreadPoolExecutor(8) as pool:
            libs = list(pool.map(lambda _: native.lib(), range(8)))
        assert all(so is not None for so in libs)
        assert log.read_text().count("x") == 1
        assert [p.suffix for p in (tmp_path / "cache" / "native").iterdir()] == [".so"]  # no temporary left
    finally:
        native.lib.cache_clear()


@pytest.mark.slow
def test_broken_builds_and_damaged_files_fall_back_or_rebuild(monkeypatch, tmp_path, caplog):
    if not shutil.which("cc"):
        pytest.skip("no C compiler")
    cache = tmp_path / "cache"
    monkeypatch.setenv("EXPMATRIX_CACHE", str(cache))
    silent = tmp_path / "cc-silent"  # exits 0 and writes nothing
    silent.write_text("#!/bin/sh\nexit 0\n")
    hangs = tmp_path / "cc-hangs"
    hangs.write_text("#!/bin/sh\nsleep 30\n")
    for script in (silent, hangs):
        script.chmod(0o755)
    monkeypatch.setattr(native, "BUILD_TIMEOUT", 1)
    try:
        for cc, said in ((silent, "wrote no library"), (hangs, "took more than 1 s")):
            native.lib.cache_clear()
            monkeypatch.setenv("CC", str(cc))
            with caplog.at_level(logging.WARNING):
                assert native.lib() is None
            assert said in caplog.text
            assert list((cache / "native").iterdir()) == []  # nothing a later run would trust
        monkeypatch.delenv("CC")
        monkeypatch.setattr(native, "BUILD_TIMEOUT", 300)
        native.lib.cache_clear()
        built = native.library_path()
        built.write_bytes(b"truncated")  # e.g. by a full disk elsewhere: built afresh, not trusted
        assert native.lib() is not None and built.stat().st_size > 1000 and built.stat().st_mode & 0o044
    finally:
        native.lib.cache_clear()


def test_gather_gives_the_values_their_range_and_nonfinite_count(monkeypatch):
    from expmatrix.tokenizers.binning import gather

    rng = np.random.default_rng(10)
    cases = []
    for n in (1, 7, 8, 9, 17, 300, 5000):  # the 8-wide vector body and the scalar tail both hold the extremes
        for where in (0, n - 1, n // 2):
            ids = rng.integers(0, 3, (n, 3))
            ids[where, 0] = 2
            cont = rng.normal(size=(n, 3, 2))
            cont[where, 0] = [-50.0, 50.0]  # the extremes, at the first, last or middle real value
            cases.append(make_events(ids, cont, features=("pT", "eta")))
    bad = make_events([[1, 1, 0], [2, 1, 1]], [[[np.nan, 1], [np.inf, 2], [np.nan, 3]], [[1, -np.inf], [2, 0], [0, 1]]],
                      features=("pT", "eta"))  # fmt: skip

    def run():  # NaN as a string: NaN != NaN
        return [[(np.where(np.isnan(c.values), "nan", c.values).tolist(), *c[1:]) for c in gather(ev, [0, 1], None, k)]
                for ev in cases + [bad] for k in (None, 2)]  # fmt: skip

    compiled, reference = both_paths(monkeypatch, run)
    assert [[c[:2] for c in r] for r in compiled] == [[c[:2] for c in r] for r in reference]  # values, NaN/inf counts
    for r in compiled[:-2]:
        (pt, lo, hi), (eta, lo2, hi2) = [(np.float32(c[0]), c[2], c[3]) for c in r]
        assert (lo, hi, lo2, hi2) == (min(pt), max(pt), min(eta), max(eta)) and lo == -50.0 and hi2 == 50.0
    assert [c[1] for c in compiled[-2]] == [2, 1]  # pT: NaN and inf of real slots (not the empty one); eta: -inf


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_exact_quantiles_refuse_values_that_are_not_finite(monkeypatch, bad):
    """A bracket never holds NaN or +inf: once NaN gave finite wrong quantiles and +inf a misleading error."""
    from expmatrix.tokenizers.quantiles import exact_quantiles

    v = np.random.default_rng(11).normal(size=1_000_000).astype(np.float32)
    v[::1000] = bad

    def run():
        with pytest.raises(ValueError, match="exact quantiles need finite values"):
            exact_quantiles(v, np.arange(1, 5) / 5)
        return True

    assert both_paths(monkeypatch, run) == (True, True)
