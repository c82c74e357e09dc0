"""TEAL's histogram threshold: the inverse CDF of a binned signed distribution.

TEAL (``teal/utils.py``) bins the signed activations of each input into ``bins`` equal bins
between the 1st and 99th percentiles plus one outer bin on each side, and takes the
threshold of sparsity s as ``icdf(0.5 + s/2)``: exact when the distribution is symmetric
about zero, biased otherwise (the exact quantile of |x| is the default in actlab). Inside a
bin the CDF is linear; in an outer bin the icdf returns the percentile edge.
"""

from __future__ import annotations

import torch

from actlab.sparse._modules import exact_quantile
from actlab.sparse._state import SparseError

__all__ = ["histogram_icdf"]


def histogram_icdf(values: torch.Tensor, q: float, *, bins: int = 10_000) -> float:
    """``icdf(q)`` of the histogram of ``values`` (signed) as TEAL builds it."""
    if not 0.0 <= q <= 1.0:
        raise SparseError(f"icdf level must be in [0, 1], got {q}")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise SparseError(f"histogram bins must be a positive integer, got {bins!r}")
    v = values.detach().reshape(-1).double()
    if v.numel() == 0:
        raise SparseError("cannot build a histogram of no values (calibration captured nothing)")
    lo, hi = exact_quantile(v, 0.01), exact_quantile(v, 0.99)
    n = v.numel()
    below = int((v < lo).sum())
    if hi <= lo:  # (nearly) constant values: one edge
        return lo
    inner = v[(v >= lo) & (v <= hi)]
    counts = torch.histc(inner, bins=bins, min=lo, max=hi)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), counts.cumsum(0)]) + below
    cdf = cdf / n  # cdf[j] = P(x < edge j), edges = linspace(lo, hi, bins + 1)
    if q <= float(cdf[0]):
        return lo
    if q >= float(cdf[-1]):
        return hi
    j = int(torch.searchsorted(cdf, torch.tensor([q], dtype=torch.float64), right=True)) - 1
    j = min(max(j, 0), bins - 1)
    width = (hi - lo) / bins
    mass = float(cdf[j + 1] - cdf[j])
    frac = (q - float(cdf[j])) / mass if mass > 0 else 0.0
    return lo + width * (j + frac)
