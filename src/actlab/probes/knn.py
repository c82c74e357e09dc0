"""k-nearest-neighbour entropy / MI and PCA-compressed MI for wide layers (bits).

- Kozachenko–Leonenko entropy (Kozachenko & Leonenko 1987; Kraskov et al. 2004, eq. 20):
  H = ψ(n) - ψ(k) + log V_d + (d/n) Σ_i log ε_i, with ε_i the distance from x_i to its k-th
  neighbour (max-norm, so V_d = 2^d).
- KSG mutual information (Kraskov, Stögbauer & Grassberger 2004, algorithm 1):
  I(X;Y) = ψ(k) + ψ(n) - <ψ(n_x + 1) + ψ(n_y + 1)>, max-norm in the joint space, n_x / n_y
  the marginal neighbours strictly inside the joint k-th neighbour distance.
- Lossy-compression MI (Butakov et al., "Information bottleneck analysis of deep neural
  networks via lossy compression", ICLR 2024): compress X and T with PCA to a few dimensions,
  then estimate I(C(X); C(T)) (KSG here); with labels, I(C(T); Y) = H(C(T)) - Σ_y p(y)
  H(C(T) | Y = y) with the Kozachenko–Leonenko estimator.

Samples are standardised per dimension before the kNN step (MI is invariant to it; it only
balances the max-norm). Ties are broken with noise of 1e-10 of the scale. Needs scipy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from actlab.probes.base import label_array

__all__ = ["kl_entropy", "ksg_mi", "pca_compress", "compressed_mi", "compressed_mi_labels"]

_LN2 = math.log(2.0)


def _np2(x: np.ndarray | Tensor) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, np.float64)
    return a.reshape(a.shape[0], -1)


def _jitter(x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = np.maximum(x.std(axis=0), 1e-12)
    return x + 1e-10 * scale * rng.standard_normal(x.shape)


def kl_entropy(x: np.ndarray | Tensor, k: int = 3, seed: int = 0) -> float:
    """Kozachenko–Leonenko differential entropy (bits), max-norm balls."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    a = _jitter(_np2(x), seed)
    n, d = a.shape
    if n <= k:
        raise ValueError(f"need more than k={k} samples, got {n}")
    eps, _ = cKDTree(a).query(a, k=k + 1, p=np.inf)
    r = np.maximum(eps[:, -1], 1e-300)
    h = digamma(n) - digamma(k) + d * math.log(2.0) + d * float(np.mean(np.log(r)))
    return float(h) / _LN2


def ksg_mi(x: np.ndarray | Tensor, y: np.ndarray | Tensor, k: int = 3, seed: int = 0) -> float:
    """KSG (algorithm 1) mutual information I(X;Y) in bits."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    a, b = _np2(x), _np2(y)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"sample counts differ: {a.shape[0]} vs {b.shape[0]}")
    n = a.shape[0]
    if n <= k:
        raise ValueError(f"need more than k={k} samples, got {n}")
    a = _jitter((a - a.mean(0)) / np.maximum(a.std(0), 1e-12), seed)
    b = _jitter((b - b.mean(0)) / np.maximum(b.std(0), 1e-12), seed + 1)
    joint = np.hstack([a, b])
    eps, _ = cKDTree(joint).query(joint, k=k + 1, p=np.inf)
    r = np.nextafter(eps[:, -1], 0)  # strictly inside
    ta, tb = cKDTree(a), cKDTree(b)
    nx = ta.query_ball_point(a, r, p=np.inf, return_length=True) - 1
    ny = tb.query_ball_point(b, r, p=np.inf, return_length=True) - 1
    mi = digamma(k) + digamma(n) - float(np.mean(digamma(nx + 1) + digamma(ny + 1)))
    return max(float(mi), 0.0) / _LN2


def pca_compress(x: np.ndarray | Tensor, dims: int) -> np.ndarray:
    """Project centred samples onto their top ``dims`` principal components."""
    a = _np2(x)
    a = a - a.mean(axis=0)
    if a.shape[1] <= dims:
        return a
    t = torch.from_numpy(a)
    _, _, v = torch.pca_lowrank(t, q=min(dims + 4, min(a.shape)), center=False, niter=4)
    return (t @ v[:, :dims]).numpy()


def compressed_mi(
    x: np.ndarray | Tensor, t: np.ndarray | Tensor, dims: int = 4, k: int = 3, seed: int = 0
) -> float:
    """I(C(X); C(T)) in bits with PCA to ``dims`` dimensions each, then KSG."""
    torch.manual_seed(seed)
    return ksg_mi(pca_compress(x, dims), pca_compress(t, dims), k=k, seed=seed)


def compressed_mi_labels(
    t: np.ndarray | Tensor, y: np.ndarray | Tensor, dims: int = 4, k: int = 3, seed: int = 0
) -> float:
    """I(C(T); Y) = H(C(T)) - Σ_y p(y) H(C(T) | Y=y) in bits (Kozachenko–Leonenko)."""
    torch.manual_seed(seed)
    c = pca_compress(t, dims)
    c = (c - c.mean(0)) / np.maximum(c.std(0), 1e-12)
    labels = label_array(y, c.shape[0])
    h = kl_entropy(c, k, seed)
    h_cond = 0.0
    for lab in np.unique(labels):
        m = labels == lab
        if m.sum() <= k:
            raise ValueError(f"class {lab!r} has {int(m.sum())} samples; need more than k={k}")
        h_cond += m.mean() * kl_entropy(c[m], k, seed)
    return h - h_cond
