"""Adaptive KDE (aKDE) entropy and mutual information with explicit noise variance (bits).

Kolchinsky & Tracey, "Estimating mixture entropy with pairwise distances" (Entropy 2017), as
used by Saxe et al. (ICLR 2018) and Chelombiev et al. (ICLR 2019). Add isotropic Gaussian
noise of variance σ² to the activations T (n samples, d dims); T + Z is a mixture of n
Gaussians N(t_i, σ²I), whose entropy is bounded by pairwise distances:

    H_upper = d/2 · log(2πeσ²) - (1/n) Σ_i log (1/n) Σ_j exp(-||t_i - t_j||²/(2σ²))  (KL)
    H_lower = d/2 · log(2πeσ²) - (1/n) Σ_i log (1/n) Σ_j exp(-||t_i - t_j||²/(8σ²))  (Bhattacharyya)

    I(X;T) = H(T + Z) - H(T + Z | X) = H_KDE(T) - (d/2)(log 2πσ² + 1)
    I(T;Y) = H_KDE(T) - Σ_y p(y) H_KDE(T | Y = y)

Results are converted to bits. The noise variance is an explicit argument: Chelombiev et al.
scale σ² with the layer's maximum activity ("adaptive"), the published code uses a fixed 0.01.
:func:`adaptive_noise_var` gives the scaled choice ``(rel · max|T|)²``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from actlab.probes.base import label_array

__all__ = ["kde_entropy", "kde_mi_xt", "kde_mi_labels", "adaptive_noise_var"]

Bound = Literal["upper", "lower"]
_LN2 = math.log(2.0)


def _t(x: np.ndarray | Tensor) -> Tensor:
    t = x.detach().cpu() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    t = t.double()
    return t.reshape(t.shape[0], -1)


def adaptive_noise_var(t: np.ndarray | Tensor, rel: float = 0.1) -> float:
    """σ² = (rel · max|T|)²: noise scaled with the layer's maximum activity."""
    m = float(_t(t).abs().max())
    return (rel * m) ** 2 if m > 0 else rel**2


def kde_entropy(t: np.ndarray | Tensor, noise_var: float, bound: Bound = "upper") -> float:
    """Entropy (bits) of T + N(0, σ²I) from the pairwise-distance bound."""
    if noise_var <= 0:
        raise ValueError(f"noise_var must be > 0, got {noise_var}")
    x = _t(t)
    n, d = x.shape
    if n == 0:
        raise ValueError("no samples")
    scale = {"upper": 2.0, "lower": 8.0}.get(bound)
    if scale is None:
        raise ValueError(f"bound must be 'upper' or 'lower', got {bound!r}")
    d2 = torch.cdist(x, x).pow(2)
    lse = torch.logsumexp(-d2 / (scale * noise_var), dim=1) - math.log(n)
    h = 0.5 * d * (math.log(2 * math.pi * noise_var) + 1.0) - float(lse.mean())
    return h / _LN2


def kde_mi_xt(t: np.ndarray | Tensor, noise_var: float, bound: Bound = "upper") -> float:
    """I(X;T) in bits: H_KDE(T) minus the noise entropy (d/2)(log 2πσ² + 1)."""
    d = _t(t).shape[1]
    h_noise = 0.5 * d * (math.log(2 * math.pi * noise_var) + 1.0) / _LN2
    return kde_entropy(t, noise_var, bound) - h_noise


def kde_mi_labels(
    t: np.ndarray | Tensor, y: np.ndarray | Tensor, noise_var: float, bound: Bound = "upper"
) -> float:
    """I(T;Y) in bits: H_KDE(T) - Σ_y p(y) H_KDE(T | Y = y)."""
    x = _t(t)
    labels = label_array(y, x.shape[0])
    h = kde_entropy(x, noise_var, bound)
    h_cond = 0.0
    for lab in np.unique(labels):
        m = torch.as_tensor(labels == lab)
        h_cond += float(m.double().mean()) * kde_entropy(x[m], noise_var, bound)
    return h - h_cond
