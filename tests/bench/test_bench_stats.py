"""Statistics helpers against scipy on known samples, and the CI against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as ss

from actlab.bench import stats

A = [0.891, 0.898, 0.906, 0.900, 0.895, 0.902, 0.889]
B = [0.927, 0.911, 0.931, 0.918, 0.913, 0.905, 0.899]


def test_mean_ci_by_hand() -> None:
    # x = 1, 2, 3, 4: mean 2.5, s = sqrt(5/3), t_{0.975, 3} = 3.182446305284263
    mean, hw = stats.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert hw == pytest.approx(3.182446305284263 * math.sqrt(5.0 / 3.0) / 2.0, rel=1e-12)
    assert stats.t_quantile(0.95, 3) == pytest.approx(3.182446305284263, rel=1e-12)


def test_mean_ci_against_scipy_interval() -> None:
    x = np.array(A)
    lo, hi = ss.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=ss.sem(x))
    mean, hw = stats.mean_ci(x, confidence=0.9)
    assert (mean - hw, mean + hw) == pytest.approx((lo, hi), rel=1e-12)


def test_mean_ci_degenerate() -> None:
    assert math.isnan(stats.mean_ci([])[0])
    mean, hw = stats.mean_ci([0.5])
    assert mean == 0.5 and math.isnan(hw)
    with pytest.raises(ValueError, match="nan"):
        stats.mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        stats.mean_ci([1.0, 2.0], confidence=1.5)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_paired_ttest_matches_scipy(n: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.normal(size=n)
    b = a + rng.normal(0.4, 1.0, size=n)
    ours = stats.paired_ttest(a, b)
    ref = ss.ttest_rel(b, a)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-10)
    assert ours.n == n


def test_paired_ttest_degenerate() -> None:
    assert math.isnan(stats.paired_ttest([1.0], [2.0]).pvalue)
    assert stats.paired_ttest([1.0, 2.0], [1.0, 2.0]).pvalue == 1.0
    shifted = stats.paired_ttest([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert shifted.pvalue == 0.0 and shifted.statistic == math.inf
    with pytest.raises(ValueError, match="same length"):
        stats.paired_ttest([1.0, 2.0], [1.0])


@pytest.mark.parametrize("n", [3, 5, 9, 20, 50, 70])
def test_wilcoxon_matches_scipy_without_ties(n: int) -> None:
    rng = np.random.default_rng(100 + n)
    a = rng.normal(size=n)
    b = a + rng.normal(0.3, 1.0, size=n)
    ours = stats.wilcoxon_signed_rank(a, b)
    ref = ss.wilcoxon(b, a)  # exact up to 50, normal approximation above
    assert ours.statistic == ref.statistic
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wilcoxon_matches_scipy_with_ties_and_zeros(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = np.zeros(11)
    b = np.round(rng.normal(0.5, 1.0, size=11))  # many ties and some zeros
    ours = stats.wilcoxon_signed_rank(a, b)
    ref = ss.wilcoxon(b, a)  # scipy: exact permutation test for n <= 13 with ties
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-9)


def test_wilcoxon_known_values() -> None:
    # all 5 differences positive: W+ = 15, two-sided exact p = 2 / 2^5
    assert stats.wilcoxon_signed_rank([0] * 5, [1, 2, 3, 4, 5]).pvalue == pytest.approx(1 / 16)
    assert stats.wilcoxon_signed_rank([1.0, 2.0], [1.0, 2.0]).pvalue == 1.0


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.02, 0.04, 0.30 -> 4*0.01, max(., 3*0.02), max(., 2*0.04), max(., 1*0.30)
    adjusted = stats.holm([0.04, 0.01, 0.30, 0.02])
    assert adjusted == pytest.approx([0.08, 0.04, 0.30, 0.06])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped, monotone
    out = stats.holm([float("nan"), 0.01, 0.04])
    assert math.isnan(out[0]) and out[1:] == pytest.approx([0.02, 0.04])
    assert stats.holm([]) == []


def test_holm_against_scipy_bonferroni_bound() -> None:
    p = np.random.default_rng(3).uniform(0, 0.2, size=8)
    adj = np.array(stats.holm(p))
    assert np.all(adj >= p) and np.all(adj <= np.minimum(1, p * len(p)) + 1e-15)


def test_cohens_dz_and_marks() -> None:
    d = np.array(B) - np.array(A)
    assert stats.cohens_dz(A, B) == pytest.approx(d.mean() / d.std(ddof=1))
    # d_z * sqrt(n) is the paired t statistic
    assert stats.cohens_dz(A, B) * math.sqrt(len(A)) == pytest.approx(ss.ttest_rel(B, A).statistic)
    assert math.isnan(stats.cohens_dz([1.0], [2.0]))
    marks = [stats.significance_mark(p) for p in (0.0005, 0.005, 0.03, 0.2, float("nan"))]
    assert marks == ["***", "**", "*", "n.s.", "n/a"]
