"""Entropy-based adaptive binning (EBAB) and plug-in entropy / mutual information (bits).

Chelombiev, Houghton & O'Donnell, "Adaptive estimators show information compression in deep
neural networks" (ICLR 2019). Per layer and per measurement take the sorted UNIQUE activation
values U (pooled over the layer's units) and place n (= 30) bins so that each holds the same
number of unique values; for ReLU-like layers the lowest edge is 0. Every unit's value is
replaced by its bin index and a sample's state T is the tuple of its units' bins. Plug-in
estimates, in bits:

    H(T) = -Σ_t p(t) log2 p(t)
    I(X;T) = H(T) - H(T|X)      (H(T|X) = 0 for a deterministic net on distinct inputs)
    I(T;Y) = H(T) - Σ_y p(y) H(T | Y = y)

The edges follow the authors' code: [lower] + [U[floor(k·|U|/n)] for k < n] + [U[-1]], and
values map to right-open bins [e_i, e_{i+1}); a value equal to the top edge is its own state
(``np.digitize(v, edges) - 1``, as in that code), so K <= n distinct values keep K states.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

__all__ = [
    "ebab_edges",
    "digitize",
    "discrete_entropy",
    "ebab_entropy",
    "ebab_mi",
    "ebab_mi_labels",
    "plugin_mi",
]

ArrayLike = np.ndarray | Tensor


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def ebab_edges(values: ArrayLike, n_bins: int = 30, lower: float | None = None) -> np.ndarray:
    """Bin edges holding equal numbers of unique values (``lower`` prepended if given)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    u = np.unique(_np(values).ravel())
    u = u[np.isfinite(u)]
    if lower is not None:
        u = u[u > lower]
    if u.size == 0:
        return np.array([0.0 if lower is None else lower, np.inf])
    inner = [u[int(k * (u.size / n_bins))] for k in range(n_bins)] + [u[-1]]
    edges = np.unique(np.asarray(([] if lower is None else [lower]) + inner, dtype=np.float64))
    return edges


def digitize(values: ArrayLike, edges: np.ndarray) -> np.ndarray:
    """Bin index of every value (int64, same shape): i for e_i <= v < e_{i+1}, the last
    index for v >= top edge, -1 below the lowest edge."""
    return np.asarray(np.digitize(_np(values), edges) - 1, dtype=np.int64)


def discrete_entropy(codes: ArrayLike) -> float:
    """Plug-in entropy (bits) of discrete states: a 1-D array of symbols or rows of codes."""
    c = np.asarray(codes.detach().cpu().numpy() if isinstance(codes, Tensor) else codes)
    if c.ndim == 1:
        c = c[:, None]
    if c.shape[0] == 0:
        raise ValueError("no samples")
    _, counts = np.unique(c.reshape(c.shape[0], -1), axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def plugin_mi(a: ArrayLike, b: ArrayLike) -> float:
    """I(A;B) = H(A) + H(B) - H(A,B) (bits) for discrete states with equal sample counts."""
    ca, cb = np.asarray(_codes(a)), np.asarray(_codes(b))
    if ca.shape[0] != cb.shape[0]:
        raise ValueError(f"sample counts differ: {ca.shape[0]} vs {cb.shape[0]}")
    return discrete_entropy(ca) + discrete_entropy(cb) - discrete_entropy(np.hstack([ca, cb]))


def _codes(x: ArrayLike) -> np.ndarray:
    c = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    return c.reshape(c.shape[0], -1)


def ebab_entropy(t: ArrayLike, n_bins: int = 30, lower: float | None = None) -> float:
    """H(T) in bits of samples t (n, units) binned with EBAB edges pooled over the layer."""
    v = _np(t)
    v = v.reshape(v.shape[0], -1)
    return discrete_entropy(digitize(v, ebab_edges(v, n_bins, lower)))


def ebab_mi(a: ArrayLike, b: ArrayLike, n_bins: int = 30) -> float:
    """I(A;B) in bits between two continuous samples, each binned with its own EBAB edges."""
    va, vb = _np(a), _np(b)
    va, vb = va.reshape(va.shape[0], -1), vb.reshape(vb.shape[0], -1)
    return plugin_mi(digitize(va, ebab_edges(va, n_bins)), digitize(vb, ebab_edges(vb, n_bins)))


def ebab_mi_labels(t: ArrayLike, y: ArrayLike, n_bins: int = 30,
                   lower: float | None = None) -> float:
    """I(T;Y) = H(T) - Σ_y p(y) H(T|Y=y) in bits; y holds discrete labels (n,)."""
    v = _np(t)
    v = v.reshape(v.shape[0], -1)
    labels = np.asarray(y.detach().cpu().numpy() if isinstance(y, Tensor) else y).ravel()
    if labels.shape[0] != v.shape[0]:
        raise ValueError(f"{v.shape[0]} samples but {labels.shape[0]} labels")
    codes = digitize(v, ebab_edges(v, n_bins, lower))
    h = discrete_entropy(codes)
    h_cond = 0.0
    for lab in np.unique(labels):
        m = labels == lab
        h_cond += m.mean() * discrete_entropy(codes[m])
    return h - h_cond
