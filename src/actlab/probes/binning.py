"""Entropy-based adaptive binning (EBAB) and plug-in entropy / mutual information (bits).

Chelombiev, Houghton & O'Donnell, "Adaptive estimators show information compression in deep
neural networks" (ICLR 2019). Per layer and per measurement take the sorted UNIQUE activation
values U (pooled over the layer's units) and place n (= 30) bins so that each holds the same
number of unique values; for ReLU-like layers the lowest edge is 0. Every unit's value is
replaced by its bin index and a sample's state T is the tuple of its units' bins. Plug-in
estimates, in bits:

    H(T) = -Σ_t p(t) log2 p(t)
    I(X;T) = H(T) - Σ_x p(x) H(T | X = x)     (:func:`ebab_mi_inputs`, X = input identities)
    I(T;Y) = H(T) - Σ_y p(y) H(T | Y = y)     (:func:`ebab_mi_labels`)

H(T) equals I(X;T) only when T is a deterministic function of distinct inputs (H(T|X) = 0);
when inputs repeat and T varies for one input (dropout, noise, augmentation), H(T) is an
upper bound that overstates I(X;T) by H(T|X), so I(X;T) needs the input identities.

The edges follow the authors' code: [lower] + [U[floor(k·|U|/n)] for k < n] + [U[-1]], and
values map to right-open bins [e_i, e_{i+1}); a value equal to the top edge is its own state
(``np.digitize(v, edges) - 1``, as in that code), so K <= n distinct values keep K states.

Zeros of ReLU-like layers. The published scheme (paper and code: ``set_up_bins`` in
github.com/ivansche/adaptive_estimators, ``low = 0`` for ReLU layers, and the value 0 removed
from U before the n edges are placed) gives zeros a bin of their own, [0, min positive
value), with the n equal-count bins over the positive values. ``lower="auto"`` (the default
of every function here) does exactly that when every value is >= 0, and places no lower edge
otherwise (the authors' tanh / signed branch: an extra empty bottom bin there changes no
state). ``lower=None`` treats 0 as an ordinary value (pooled with the smallest positive
values in the first bin: fewer states, lower entropy, not the published scheme); a number
sets the lowest edge (values below it get state -1).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from torch import Tensor

from actlab.probes.base import ProbeArgumentError, check_int, label_array

__all__ = [
    "ebab_edges",
    "digitize",
    "discrete_entropy",
    "ebab_entropy",
    "ebab_mi",
    "ebab_mi_labels",
    "ebab_mi_inputs",
    "conditional_entropy",
    "plugin_mi",
    "resolve_lower",
]

ArrayLike = np.ndarray | Tensor
Lower = float | None | Literal["auto"]


def resolve_lower(values: np.ndarray, lower: Lower = "auto") -> float | None:
    """The lowest edge for ``values``: "auto" = 0.0 when every finite value is >= 0 (ReLU-like
    layers, zeros in their own bin), else None; None or a finite number pass through."""
    if lower is None:
        return None
    if isinstance(lower, str):
        if lower != "auto":
            raise ProbeArgumentError(f"lower must be 'auto', None or a number, got {lower!r}")
        fin = values[np.isfinite(values)]
        return 0.0 if fin.size and float(fin.min()) >= 0.0 else None
    if isinstance(lower, bool) or not isinstance(lower, (int, float, np.integer, np.floating)):
        raise ProbeArgumentError(f"lower must be 'auto', None or a number, got {lower!r}")
    if not np.isfinite(lower):
        raise ProbeArgumentError(f"lower must be finite, got {lower!r}")
    return float(lower)


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def ebab_edges(values: ArrayLike, n_bins: int = 30, lower: Lower = "auto") -> np.ndarray:
    """Bin edges holding equal numbers of unique values, ``lower`` prepended (see the module
    docstring: "auto" puts the zeros of ReLU-like layers in their own bin)."""
    n_bins = check_int("n_bins", n_bins)
    u = np.unique(_np(values).ravel())
    u = u[np.isfinite(u)]
    lower = resolve_lower(u, lower)
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


def conditional_entropy(codes: np.ndarray, groups: ArrayLike) -> float:
    """H(C | G) = Σ_g p(g) H(C | G = g) in bits; ``groups`` holds one id per sample (n,) or
    one row per sample (n, ...) (equal rows = equal group)."""
    g = np.asarray(groups.detach().cpu().numpy() if isinstance(groups, Tensor) else groups)
    if g.shape[0] != codes.shape[0]:
        raise ProbeArgumentError(f"{codes.shape[0]} samples but {g.shape[0]} group ids")
    g = g.reshape(g.shape[0], -1)
    _, inv = np.unique(g, axis=0, return_inverse=True)
    inv = inv.ravel()
    h = 0.0
    for k in range(int(inv.max()) + 1 if inv.size else 0):
        m = inv == k
        h += m.mean() * discrete_entropy(codes[m])
    return float(h)


def ebab_entropy(t: ArrayLike, n_bins: int = 30, lower: Lower = "auto") -> float:
    """H(T) in bits of samples t (n, units) binned with EBAB edges pooled over the layer."""
    v = _np(t)
    v = v.reshape(v.shape[0], -1)
    return discrete_entropy(digitize(v, ebab_edges(v, n_bins, lower)))


def ebab_mi(a: ArrayLike, b: ArrayLike, n_bins: int = 30, lower: Lower = "auto") -> float:
    """I(A;B) in bits between two continuous samples, each binned with its own EBAB edges
    (``lower`` resolved for each side separately)."""
    va, vb = _np(a), _np(b)
    va, vb = va.reshape(va.shape[0], -1), vb.reshape(vb.shape[0], -1)
    return plugin_mi(
        digitize(va, ebab_edges(va, n_bins, lower)), digitize(vb, ebab_edges(vb, n_bins, lower))
    )


def ebab_mi_inputs(
    t: ArrayLike, x_ids: ArrayLike, n_bins: int = 30, lower: Lower = "auto"
) -> float:
    """I(X;T) = H(T) - Σ_x p(x) H(T | X = x) in bits. ``x_ids`` says which input each sample
    of t (n, units) came from: (n,) ids or (n, ...) rows (e.g. token ids), equal = same input.
    With every input distinct this is H(T); with repeated inputs and a T that varies for one
    input it is smaller by H(T|X)."""
    v = _np(t)
    v = v.reshape(v.shape[0], -1)
    codes = digitize(v, ebab_edges(v, n_bins, lower))
    return discrete_entropy(codes) - conditional_entropy(codes, x_ids)


def ebab_mi_labels(t: ArrayLike, y: ArrayLike, n_bins: int = 30, lower: Lower = "auto") -> float:
    """I(T;Y) = H(T) - Σ_y p(y) H(T|Y=y) in bits; y holds discrete labels (n,)."""
    v = _np(t)
    v = v.reshape(v.shape[0], -1)
    labels = label_array(y, v.shape[0])
    codes = digitize(v, ebab_edges(v, n_bins, lower))
    h = discrete_entropy(codes)
    h_cond = 0.0
    for lab in np.unique(labels):
        m = labels == lab
        h_cond += m.mean() * discrete_entropy(codes[m])
    return h - h_cond
