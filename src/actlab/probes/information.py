"""Entropy of activations and the information plane, from bounded reservoirs.

EntropyProbe (token level): a uniform reservoir of token rows per layer (real tokens only
when the batch is padded); at summary time the EBAB entropy of the joint binned state H(T)
(bits; saturates at log2(rows) when every row is unique, as it will in wide layers) and the
mean per-unit binned entropy (bits, at most log2(n_bins + 1)). See
:mod:`actlab.probes.binning` (Chelombiev et al., ICLR 2019).

InfoPlaneProbe (sample level, for the information plane of Shwartz-Ziv & Tishby 2017): a
uniform reservoir of per-sample representations (token mean for sequences, over real tokens
when padded; global average pool for conv maps) with the batch's side information, given
per batch with ``ProbeManager.set_context``:

- ``labels=y`` (B,): class labels, for I(T;Y);
- ``input_ids=ids``: which input each sample is, for I(X;T): (B,) integer ids (dataset
  indices, say) or a (B, ...) tensor whose equal rows mean equal inputs (token ids). Without
  them I(X;T) cannot be told from H(T) (the two differ when one input is seen several times
  with different T: dropout, noise, augmentation).

A batch needs at least one of the two. At summary time, per layer and in bits:

- EBAB (zeros of ReLU-like layers in their own bin, as published):
  ``H_T_ebab`` = H(T), an upper bound on I(X;T) (equal to it for a deterministic net on
  distinct inputs); ``I_XT_ebab`` = H(T) - Σ_x p(x) H(T|X=x) (with input ids);
  ``I_TY_ebab`` = H(T) - Σ_y p(y) H(T|Y=y) (with labels);
- aKDE with the noise variance σ² explicit (``noise_var``; None = adaptive (0.1·max|T|)²), see
  :mod:`actlab.probes.kde`: ``I_XT_kde_upper`` = H_KDE(T) - (d/2)(log 2πσ² + 1), the same
  upper bound; ``I_XT_kde`` = H_KDE(T) - Σ_x p(x) H_KDE(T|X=x) (with input ids; equal to the
  bound when every input is distinct); ``I_TY_kde`` = H_KDE(T) - Σ_y p(y) H_KDE(T|Y=y);
- PCA-compressed (Butakov et al., ICLR 2024) when the layer is wider than ``pca_dims``:
  ``I_TY_pca`` = I(C(T); Y) with the Kozachenko–Leonenko estimator, see
  :mod:`actlab.probes.knn`.

Each quantity is computed on the kept points that carry what it needs (``points_labelled``,
``points_with_ids``). Log it once per epoch (``p.log(epoch, reset=True)``) to draw
trajectories.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from actlab.probes.base import (
    Probe,
    Reservoir,
    Row,
    check_float,
    check_int,
    first_tensor,
    pooled_samples,
    sample_rows,
)
from actlab.probes.binning import conditional_entropy, digitize, discrete_entropy, ebab_edges
from actlab.probes.kde import adaptive_noise_var, kde_mi_labels, kde_mi_xt
from actlab.probes.knn import compressed_mi_labels
from actlab.probes.manager import register_probe

__all__ = ["EntropyProbe", "InfoPlaneProbe"]


def input_codes(ids: Tensor) -> Tensor:
    """One float64 code per sample from input ids: (B,) integers below 2**53 as they are,
    anything else (rows of (B, ...) tensors, floats, larger integers) as a 48-bit hash of the
    sample's values (exact in float64; equal inputs, equal codes)."""
    if ids.ndim == 1 and not ids.dtype.is_floating_point and ids.numel():
        v = ids.detach().cpu().long()
        if int(v.abs().max()) < 2**53:
            return v.double()
    rows = ids.detach().cpu().reshape(ids.shape[0], -1)
    rows = rows.double() if rows.dtype.is_floating_point else rows.long()
    arr = rows.numpy()
    return torch.tensor(
        [
            float(int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=6).digest(), "little"))
            for r in arr
        ],
        dtype=torch.float64,
    )


@register_probe(description="EBAB entropy of token activations")
class EntropyProbe(Probe):
    """EBAB entropy of token activations: joint H(T) and mean per-unit H (bits)."""

    name = "entropy"
    target = "activation"

    def __init__(
        self, *, n_bins: int = 30, rows: int = 1024, where: str | list[str] | None = None
    ) -> None:
        super().__init__(where=where)
        self.n_bins, self.rows = check_int("n_bins", n_bins), check_int("rows", rows)
        self.reset()

    def reset(self) -> None:
        self.res: dict[str, Reservoir] = {}

    def update(self, name: str, module: nn.Module, output: Any) -> None:
        t = first_tensor(output)
        if t is None or t.ndim < 2:
            return
        r = self.reservoir(self.res, name, self.rows)
        mask = self.ctx.token_mask(t)
        r.add(sample_rows(t, self.ctx.sample, self.ctx.rng(f"{self.name}/{name}"), mask))

    def summary(self) -> dict[str, Row]:
        out: dict[str, Row] = {}
        for name, r in self.res.items():
            if r.rows is None:
                continue
            v = r.rows.cpu().double().numpy()
            edges = ebab_edges(v, self.n_bins, "auto")  # zeros of ReLU-like layers: own bin
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


@register_probe(
    description="H(T); I(X;T) (needs input ids), I(T;Y) (needs labels): EBAB, aKDE, PCA-kNN",
    needs_labels=True,
)
class InfoPlaneProbe(Probe):
    """H(T), I(X;T) and I(T;Y) per layer with EBAB, aKDE and (wide layers) PCA-compressed kNN.

    Side information per batch: ``set_context(labels=y, input_ids=ids)`` (either or both; see
    the module docstring). I(X;T) needs ``input_ids``; without them the rows carry H(T)
    (``H_T_ebab``) and the aKDE bound (``I_XT_kde_upper``), upper bounds on I(X;T).
    """

    name = "infoplane"
    target = "activation"

    def __init__(
        self,
        *,
        n_bins: int = 30,
        noise_var: float | None = 0.01,
        points: int = 1000,
        pca_dims: int = 4,
        k: int = 3,
        where: str | list[str] | None = None,
    ) -> None:
        super().__init__(where=where)
        self.noise_var = (
            None if noise_var is None else check_float("noise_var", noise_var, 0.0, strict=True)
        )
        self.n_bins, self.points = check_int("n_bins", n_bins), check_int("points", points, lo=4)
        self.pca_dims, self.k = check_int("pca_dims", pca_dims), check_int("k", k)
        self.reset()

    def reset(self) -> None:
        self.res: dict[str, Reservoir] = {}
        self._codes: tuple[Tensor, int, Tensor] | None = None  # (input_ids, version, codes)

    def _input_codes(self, ids: Tensor) -> Tensor:
        """Codes of the current input ids, computed once per batch (shared by all layers)."""
        c = self._codes
        if c is None or c[0] is not ids or c[1] != ids._version:
            self._codes = c = (ids, int(ids._version), input_codes(ids))
        return c[2]

    def update(self, name: str, module: nn.Module, output: Any) -> None:
        h = first_tensor(output)
        labels, ids = self.ctx.extras.get("labels"), self.ctx.extras.get("input_ids")
        labels = labels if isinstance(labels, Tensor) else None
        ids = ids if isinstance(ids, Tensor) and ids.ndim >= 1 else None
        if h is None or h.ndim < 2 or (labels is None and ids is None):
            return
        z = pooled_samples(h, self.ctx.token_mask(h))
        b = z.shape[0]
        if (labels is not None and labels.shape[0] != b) or (ids is not None and ids.shape[0] != b):
            return  # a site whose rows are not the batch's samples
        nan = torch.full((b,), float("nan"), dtype=torch.float64, device=z.device)
        y = nan if labels is None else labels.detach().reshape(-1).to(z.device, torch.float64)
        x = nan if ids is None else self._input_codes(ids).to(z.device)
        r = self.reservoir(self.res, name, self.points)
        r.add(z, torch.stack([y, x], dim=1).to(z.device))

    def summary(self) -> dict[str, Row]:
        out: dict[str, Row] = {}
        for name, r in self.res.items():
            if r.rows is None or r.extra is None or len(r) < 4:
                continue
            t = r.rows.cpu().double().numpy()
            extra = r.extra.cpu().numpy()
            has_y, has_x = ~np.isnan(extra[:, 0]), ~np.isnan(extra[:, 1])
            codes = digitize(t, ebab_edges(t, self.n_bins, "auto"))
            var = self.noise_var if self.noise_var is not None else adaptive_noise_var(t)
            row: Row = {
                "H_T_ebab": discrete_entropy(codes),
                "I_XT_kde_upper": kde_mi_xt(t, var),
                "noise_var": var,
                "points": len(r),
                "points_labelled": int(has_y.sum()),
                "points_with_ids": int(has_x.sum()),
                "dims": t.shape[1],
            }
            if has_x.sum() >= 2:
                tx, cx, xid = t[has_x], codes[has_x], extra[has_x, 1]
                row["I_XT_ebab"] = discrete_entropy(cx) - conditional_entropy(cx, xid)
                row["I_XT_kde"] = kde_mi_labels(tx, xid, var)
                row["inputs_distinct"] = int(np.unique(xid).size)
            if has_y.sum() >= 2:
                ty, cy, y = t[has_y], codes[has_y], extra[has_y, 0]
                row["I_TY_ebab"] = discrete_entropy(cy) - conditional_entropy(cy, y)
                row["I_TY_kde"] = kde_mi_labels(ty, y, var)
                row["H_Y"] = discrete_entropy(y)
                if ty.shape[1] > self.pca_dims:
                    counts = np.unique(y, return_counts=True)[1]
                    if counts.min() > self.k:
                        row["I_TY_pca"] = compressed_mi_labels(
                            ty, y, self.pca_dims, self.k, self.ctx.seed
                        )
            out[name] = row
        return out
