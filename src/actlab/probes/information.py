"""Entropy of activations and the information plane, from bounded reservoirs.

EntropyProbe (token level): a uniform reservoir of token rows per layer; at summary time
the EBAB entropy of the joint binned state H(T) (bits; saturates at log2(rows) when every
row is unique, as it will in wide layers) and the mean per-unit binned entropy (bits, at most
log2(n_bins + 1)). See :mod:`actlab.probes.binning` (Chelombiev et al., ICLR 2019).

InfoPlaneProbe (sample level, for the information plane of Shwartz-Ziv & Tishby 2017): a
uniform reservoir of per-sample representations (token mean for sequences, global average
pool for conv maps) with the batch labels (``ProbeManager.set_context(labels=y)``). At
summary time, per layer and in bits:

- EBAB:  I(X;T) = H(T) (distinct inputs, deterministic net), I(T;Y) = H(T) - H(T|Y);
- aKDE:  I(X;T) = H_KDE(T) - (d/2)(log 2πσ² + 1), I(T;Y) = H_KDE(T) - H_KDE(T|Y) with the
         noise variance σ² explicit (``noise_var``; None = adaptive (0.1·max|T|)²), see
         :mod:`actlab.probes.kde`;
- PCA-compressed (Butakov et al., ICLR 2024) when the layer is wider than ``pca_dims``:
         I(C(T); Y) with the Kozachenko–Leonenko estimator, see :mod:`actlab.probes.knn`.

Log it once per epoch (``p.log(epoch, reset=True)``) to draw trajectories.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor, nn

from actlab.probes.base import Probe, Reservoir, Row, first_tensor, pooled_samples, sample_rows
from actlab.probes.binning import digitize, discrete_entropy, ebab_edges, ebab_mi_labels
from actlab.probes.kde import adaptive_noise_var, kde_mi_labels, kde_mi_xt
from actlab.probes.knn import compressed_mi_labels

__all__ = ["EntropyProbe", "InfoPlaneProbe"]


def _lower_edge(values: np.ndarray) -> float | None:
    """0 for layers whose outputs are all >= 0 (ReLU-like), as EBAB prescribes."""
    return 0.0 if values.size and float(values.min()) >= 0.0 else None


class EntropyProbe(Probe):
    """EBAB entropy of token activations: joint H(T) and mean per-unit H (bits)."""

    name = "entropy"
    target = "activation"

    def __init__(self, *, n_bins: int = 30, rows: int = 1024,
                 where: str | list[str] | None = None) -> None:
        super().__init__(where=where)
        self.n_bins, self.rows = int(n_bins), int(rows)
        self.reset()

    def reset(self) -> None:
        self.res: dict[str, Reservoir] = {}

    def update(self, name: str, module: nn.Module, output: Any) -> None:
        t = first_tensor(output)
        if t is None or t.ndim < 2:
            return
        r = self.res.get(name)
        if r is None:
            cap = min(self.rows, self.ctx.max_tokens)
            r = self.res[name] = Reservoir(cap, self.ctx.generator(f"{self.name}/{name}"))
        r.add(sample_rows(t, self.ctx.sample, self.ctx.rng(f"{self.name}/{name}")))

    def summary(self) -> dict[str, Row]:
        out: dict[str, Row] = {}
        for name, r in self.res.items():
            if r.rows is None:
                continue
            v = r.rows.cpu().double().numpy()
            edges = ebab_edges(v, self.n_bins, _lower_edge(v))
            codes = digitize(v, edges)
            per_unit = [discrete_entropy(codes[:, j]) for j in range(codes.shape[1])]
            out[name] = {
                "H_joint": discrete_entropy(codes),
                "H_joint_max": math.log2(len(r)),
                "H_unit_mean": float(np.mean(per_unit)),
                "H_unit_max": math.log2(len(edges)),
                "rows": len(r),
            }
        return out


class InfoPlaneProbe(Probe):
    """I(X;T) and I(T;Y) per layer with EBAB, aKDE and (wide layers) PCA-compressed kNN."""

    name = "infoplane"
    target = "activation"

    def __init__(
        self, *, n_bins: int = 30, noise_var: float | None = 0.01, points: int = 1000,
        pca_dims: int = 4, k: int = 3, where: str | list[str] | None = None,
    ) -> None:
        super().__init__(where=where)
        if noise_var is not None and noise_var <= 0:
            raise ValueError("noise_var must be > 0 (or None for the adaptive choice)")
        self.n_bins, self.noise_var, self.points = int(n_bins), noise_var, int(points)
        self.pca_dims, self.k = int(pca_dims), int(k)
        self.reset()

    def reset(self) -> None:
        self.res: dict[str, Reservoir] = {}

    def update(self, name: str, module: nn.Module, output: Any) -> None:
        h = first_tensor(output)
        labels = self.ctx.extras.get("labels")
        if h is None or h.ndim < 2 or not isinstance(labels, Tensor):
            return
        z = pooled_samples(h)
        if labels.shape[0] != z.shape[0]:
            return
        r = self.res.get(name)
        if r is None:
            cap = min(self.points, self.ctx.max_tokens)
            r = self.res[name] = Reservoir(cap, self.ctx.generator(f"{self.name}/{name}"))
        r.add(z, labels.reshape(-1, 1).to(z.device).double())

    def summary(self) -> dict[str, Row]:
        out: dict[str, Row] = {}
        for name, r in self.res.items():
            if r.rows is None or r.extra is None or len(r) < 4:
                continue
            t = r.rows.cpu().double().numpy()
            y = r.extra.cpu().numpy().ravel()
            lower = _lower_edge(t)
            codes = digitize(t, ebab_edges(t, self.n_bins, lower))
            var = self.noise_var if self.noise_var is not None else adaptive_noise_var(t)
            row: Row = {
                "I_XT_ebab": discrete_entropy(codes),
                "I_TY_ebab": ebab_mi_labels(t, y, self.n_bins, lower),
                "I_XT_kde": kde_mi_xt(t, var),
                "I_TY_kde": kde_mi_labels(t, y, var),
                "noise_var": var,
                "H_Y": discrete_entropy(y),
                "points": len(r),
                "dims": t.shape[1],
            }
            if t.shape[1] > self.pca_dims:
                counts = np.unique(y, return_counts=True)[1]
                if counts.min() > self.k:
                    row["I_TY_pca"] = compressed_mi_labels(t, y, self.pca_dims, self.k, self.ctx.seed)
            out[name] = row
        return out
