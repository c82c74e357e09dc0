"""Statistics for multi-seed comparisons: confidence intervals, paired tests, Holm correction.

Everything here works on small samples (3-10 seeds), the usual case for training runs:

- :func:`mean_ci` -- mean and half-width of the two-sided Student-t interval,
  ``mean ± t_{(1+c)/2, n-1} · s / sqrt(n)`` with ``s`` the sample standard deviation.
- :func:`paired_ttest` -- paired t-test on ``d = b - a``: ``t = mean(d) / (s_d / sqrt(n))`` with
  ``n - 1`` degrees of freedom, two-sided p-value (matches ``scipy.stats.ttest_rel``).
- :func:`wilcoxon_signed_rank` -- Wilcoxon signed-rank test on ``d = b - a``, zeros dropped,
  average ranks for ties. For ``n <= 50`` the p-value is exact: the null distribution of
  ``W+`` is enumerated over all ``2^n`` sign patterns of the (tied) ranks by dynamic
  programming; above 50 the normal approximation with tie correction is used. This matches
  ``scipy.stats.wilcoxon`` (exact without ties, its permutation test with ties for n <= 13,
  asymptotic above 50). Note the exact test cannot reach p < 0.05 with fewer than 6 pairs.
- :func:`holm` -- Holm-Bonferroni step-down adjusted p-values (family-wise error control).
- :func:`cohens_dz` -- effect size of paired samples, ``mean(d) / s_d``.
- :func:`significance_mark` -- ``***`` p<0.001, ``**`` p<0.01, ``*`` p<0.05, else ``n.s.``.

Degenerate inputs never raise: fewer than two pairs gives ``nan``; identical samples give
``p = 1``; a constant non-zero difference gives ``p = 0`` (as scipy's t-test does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TestResult",
    "cohens_dz",
    "holm",
    "mean_ci",
    "paired_ttest",
    "significance_mark",
    "t_quantile",
    "wilcoxon_signed_rank",
]

_EXACT_MAX_N = 50

Values = Sequence[float] | np.ndarray  # a 1-d sample


@dataclass(frozen=True)
class TestResult:
    """A test statistic, its two-sided p-value and the number of pairs used."""

    statistic: float
    pvalue: float
    n: int


def _as_array(values: Values, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains nan or inf; drop failed runs before computing stats")
    return arr


def _paired_diff(a: Values, b: Values) -> np.ndarray:
    x, y = _as_array(a, "a"), _as_array(b, "b")
    if x.shape != y.shape:
        raise ValueError(
            f"paired samples must have the same length (got {x.size} and {y.size}); "
            "pair runs by seed first"
        )
    return y - x


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student-t critical value ``t_{(1+confidence)/2, df}``."""
    from scipy.stats import t

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(t.ppf(0.5 + confidence / 2.0, df))


def mean_ci(values: Values, confidence: float = 0.95) -> tuple[float, float]:
    """``(mean, half_width)`` of the t-interval; half-width is nan for fewer than 2 values."""
    x = _as_array(values)
    if x.size == 0:
        return math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, t_quantile(confidence, x.size - 1) * sem


def paired_ttest(a: Values, b: Values) -> TestResult:
    """Two-sided paired t-test of ``b - a`` against zero."""
    from scipy.stats import t

    d = _paired_diff(a, b)
    n = int(d.size)
    if n < 2:
        return TestResult(math.nan, math.nan, n)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        if mean == 0.0:
            return TestResult(0.0, 1.0, n)
        return TestResult(math.copysign(math.inf, mean), 0.0, n)
    stat = mean / (sd / math.sqrt(n))
    return TestResult(stat, float(min(1.0, 2.0 * t.sf(abs(stat), n - 1))), n)


def _signed_rank_null(doubled_ranks: np.ndarray) -> np.ndarray:
    """Probability of each value of ``2·W+`` over all equally likely sign patterns."""
    total = int(doubled_ranks.sum())
    counts = np.zeros(total + 1, dtype=np.float64)
    counts[0] = 1.0
    for r in doubled_ranks.astype(np.int64):
        shifted = np.zeros_like(counts)
        shifted[r:] = counts[: total + 1 - r]
        counts = counts + shifted
    return counts / counts.sum()


def wilcoxon_signed_rank(a: Values, b: Values) -> TestResult:
    """Two-sided Wilcoxon signed-rank test of ``b - a``; statistic is ``min(W+, W-)``."""
    from scipy.stats import norm, rankdata

    d = _paired_diff(a, b)
    d = d[d != 0.0]
    n = int(d.size)
    if n == 0:
        return TestResult(0.0, 1.0, 0)
    ranks = rankdata(np.abs(d))  # average ranks for ties
    w_plus = float(ranks[d > 0].sum())
    w_minus = float(ranks[d < 0].sum())
    stat = min(w_plus, w_minus)
    if n <= _EXACT_MAX_N:
        doubled = np.rint(2.0 * ranks).astype(np.int64)  # average ranks are multiples of 1/2
        probs = _signed_rank_null(doubled)
        k = int(round(2.0 * w_plus))
        p = 2.0 * min(float(probs[k:].sum()), float(probs[: k + 1].sum()))
        return TestResult(stat, min(1.0, p), n)
    _, tie_counts = np.unique(ranks, return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((tie_counts**3 - tie_counts).sum()) / 48.0
    z = (w_plus - n * (n + 1) / 4.0) / math.sqrt(var)
    return TestResult(stat, float(min(1.0, 2.0 * norm.sf(abs(z)))), n)


def holm(pvalues: Values) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order; nan entries stay nan and don't count."""
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    running = 0.0
    for i, idx in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - i) * float(p[idx])))
        out[idx] = running
    return [float(v) for v in out]


def cohens_dz(a: Values, b: Values) -> float:
    """Paired effect size ``mean(b - a) / sd(b - a)``; nan with fewer than 2 pairs or sd = 0."""
    d = _paired_diff(a, b)
    if d.size < 2:
        return math.nan
    sd = float(d.std(ddof=1))
    return math.nan if sd == 0.0 else float(d.mean()) / sd


def significance_mark(p: float, alpha: float = 0.05) -> str:
    """Stars for a (corrected) p-value: ``***`` < 0.001, ``**`` < 0.01, ``*`` < ``alpha``."""
    if p is None or math.isnan(p):
        return "n/a"
    if p < min(alpha, 0.001):
        return "***"
    if p < min(alpha, 0.01):
        return "**"
    if p < alpha:
        return "*"
    return "n.s."
