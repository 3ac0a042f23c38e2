"""Test metrics on hand-made scores whose values are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from expmatrix.metrics import binary_metrics, higher_is_better


def test_hand_made_scores():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    m = binary_metrics(scores, labels)
    assert m["auroc"] == pytest.approx(15 / 16)  # 15 of 16 (signal, background) pairs ordered right
    assert m["accuracy"] == pytest.approx(6 / 8)  # 0.6 (bkg) and 0.4 (sig) on the wrong side of 0.5
    assert m["f1"] == pytest.approx(0.75)  # tp 3, fp 1, fn 1
    assert m["brier"] == pytest.approx(1.0 / 8)  # (0.01+0.04+0.09+0.36) * 2 / 8
    assert m["ece"] == pytest.approx(2.4 / 8)  # every score alone in its bin: mean |label - score|
    # 4 background events resolve no rejection working point; at eps_S 0.3 and 0.5 no background passes
    assert all(m[f"sig_eff_at_bkg_rej_{r}"] is None for r in (10, 50, 100, 1000))
    assert m["bkg_rej_at_sig_eff_30"] is None and m["bkg_rej_at_sig_eff_50"] is None


def test_working_points_on_interleaved_scores():
    bkg = np.arange(1, 101) / 100  # 0.01 .. 1.00
    sig = 0.501 + np.arange(100) / 200  # 0.501 .. 0.996, never tied with background
    scores, labels = np.concatenate([bkg, sig]), np.repeat([0, 1], 100)
    m = binary_metrics(scores, labels)
    # eps_B = 0.1: cut above 0.90 keeps 10 background (0.91..1.00) and 20 signal (0.901..0.996)
    assert m["sig_eff_at_bkg_rej_10"] == pytest.approx(0.2)
    # eps_S = 0.5: cut at 0.751 keeps 50 signal and 25 background (0.76..1.00): rejection 4
    assert m["bkg_rej_at_sig_eff_50"] == pytest.approx(4.0)
    assert m["sig_eff_at_bkg_rej_100"] is not None and m["sig_eff_at_bkg_rej_1000"] is None  # 100 bkg: 1/100 ok


def test_partial_auroc_is_mcclish_standardized():
    labels = np.repeat([0, 1], 50)
    perfect = np.linspace(0, 1, 100)
    assert binary_metrics(perfect, labels)["partial_auroc"] == pytest.approx(1.0)
    # inverted: area 0 over eps_B <= 0.1, min 0.005, max 0.1 -> 0.5 * (1 + (0 - 0.005) / 0.095)
    assert binary_metrics(1 - perfect, labels)["partial_auroc"] == pytest.approx(0.5 * (1 - 0.005 / 0.095))


def test_calibrated_scores_have_zero_ece():
    m = binary_metrics(np.full(4, 0.25), np.array([1, 0, 0, 0]))
    assert m["ece"] == pytest.approx(0.0)
    assert m["brier"] == pytest.approx((0.75**2 + 3 * 0.25**2) / 4)


def test_one_class_is_an_error():
    with pytest.raises(ValueError, match="need both classes"):
        binary_metrics(np.array([0.2, 0.8]), np.array([1, 1]))


def test_direction_by_name():
    assert higher_is_better("test.auroc") and higher_is_better("test.bkg_rej_at_sig_eff_50")
    assert (
        not higher_is_better("test.brier") and not higher_is_better("test.ece") and not higher_is_better("val.val_loss")
    )


def test_numpy_roc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 5000)
    scores = np.round(1 / (1 + np.exp(-rng.normal(labels * 0.8, 1.0))), 2)  # coarse: many tied scores
    m = binary_metrics(scores, labels)
    assert m["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert m["partial_auroc"] == pytest.approx(roc_auc_score(labels, scores, max_fpr=0.1), abs=1e-12)
