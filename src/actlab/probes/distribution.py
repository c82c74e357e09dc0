"""Pre-activation distribution summaries: fixed-edge histogram and moments per layer.

The pre-activation x is the input an activation module receives (``site = "input"``, read in
a forward *pre*-hook so in-place activations cannot overwrite it). Per layer we stream

- a histogram with fixed, user-chosen edges (plus underflow / overflow counts),
- power sums of x - c (c: the first batch's mean, so large offsets keep their precision)
  giving mean, variance, skewness E[(x-μ)³]/σ³ and excess kurtosis E[(x-μ)⁴]/σ⁴ - 3,
- the running min / max.

Padded tokens (``attention_mask`` of the model call, see :class:`ProbeContext`) are never
sampled. Each hook call looks at ``sample`` sampled token rows, at most ``max_elems`` (1024) values;
equally spaced edges (the default, linspace(-8, 8, 161)) are binned arithmetically, others
with ``torch.bucketize``. Bins are right-open [e_i, e_{i+1}); values >= the top edge count as
overflow.

``to_density(layer)`` turns the histogram into the measured density p and its derivative p'
on the bin centres (optionally Gaussian-smoothed): the measured-distribution input of the
EAFO "dynamic" variant (EAFO, arXiv 2405.12954: the Euler–Lagrange term needs p(y) and p'(y),
which CRReLU approximates by the standard normal).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from actlab.probes.base import (
    Probe,
    ProbeArgumentError,
    Row,
    check_int,
    first_tensor,
    sample_rows,
)
from actlab.probes.manager import register_probe

__all__ = ["DistributionProbe", "density_from_histogram"]


def density_from_histogram(
    counts: np.ndarray, edges: np.ndarray, total: float, smooth_bins: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid, p, p') from histogram counts: p = counts / (total * width) at bin centres.

    ``total`` includes values outside the edges, so p integrates to the in-range mass.
    ``smooth_bins`` > 0 convolves p with a Gaussian of that many bins' standard deviation
    (reflecting nothing: mass near the ends leaks out, as with any kernel estimate).
    p' is the central finite difference of p on the (possibly non-uniform) grid.
    """
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if counts.shape[0] + 1 != edges.shape[0]:
        raise ValueError("need len(edges) == len(counts) + 1")
    width = np.diff(edges)
    grid = 0.5 * (edges[:-1] + edges[1:])
    p = counts / max(total, 1.0) / width
    if smooth_bins > 0:
        half = int(np.ceil(4 * smooth_bins))
        k = np.exp(-0.5 * (np.arange(-half, half + 1) / smooth_bins) ** 2)
        p = np.convolve(p, k / k.sum(), mode="same")
    dp = np.gradient(p, grid) if p.size > 1 else np.zeros_like(p)
    return grid, p, dp


@register_probe(description="pre-activation histogram (fixed edges) and moments; to_density()")
class DistributionProbe(Probe):
    """Histogram (fixed edges) and moments of each activation layer's input."""

    name = "distribution"
    target = "activation"
    site = "input"

    def __init__(
        self,
        *,
        edges: Tensor | np.ndarray | list[float] | None = None,
        max_elems: int = 1024,
        where: str | list[str] | None = None,
    ) -> None:
        super().__init__(where=where)
        try:
            e = torch.linspace(-8.0, 8.0, 161) if edges is None else torch.as_tensor(edges)
            e = e.to(torch.float32).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise ProbeArgumentError(
                f"edges must be a sequence of numbers, got {edges!r}"
            ) from None
        if e.numel() < 2 or not bool((e[1:] > e[:-1]).all()) or not bool(torch.isfinite(e).all()):
            raise ProbeArgumentError(
                "edges must be a strictly increasing sequence of >= 2 finite values"
            )
        self.edges = e
        self.max_elems = check_int("max_elems", max_elems)
        w = e[1:] - e[:-1]
        self._uniform = bool(torch.allclose(w, w.mean().expand_as(w), rtol=1e-4, atol=0.0))
        self.reset()

    def reset(self) -> None:
        self.counts: dict[str, Tensor] = {}  # len(edges)+1 bins: [under, bins..., over]
        self.power: dict[str, Tensor] = {}  # [Σd, Σd², Σd³, Σd⁴] with d = x - shift
        self.n: dict[str, int] = {}
        self.shift: dict[str, Tensor] = {}
        self.extrema: dict[str, Tensor] = {}  # [min, max]
        self._reset_staging()

    def _bin(self, v: Tensor) -> Tensor:
        """Counts [under, bins..., over] of v; bins are right-open [e_i, e_{i+1}), so a value
        equal to the top edge counts as overflow."""
        edges = self.edges.to(v.device)
        nb = edges.numel() - 1
        if self._uniform:
            lo, hi = float(edges[0]), float(edges[-1])
            idx = ((v - lo) * (nb / (hi - lo))).floor_().clamp_(-1, nb).add_(1).long()
        else:
            idx = torch.bucketize(v, edges, right=True)
        return torch.bincount(idx, minlength=nb + 2)

    def update(self, name: str, module: nn.Module, output: Any) -> None:
        t = first_tensor(output)
        if t is None or t.numel() == 0 or not self.sampling(name, module):
            return
        d = max(1, t.shape[1] if t.ndim == 4 else (t.shape[-1] if t.ndim else 1))
        k = max(1, min(self.ctx.sample, self.max_elems // d))
        mask = self.ctx.token_mask(t)
        if mask is not None and mask.rows.size == 0:
            return
        self.stage(name, (sample_rows(t, k, self.ctx.rng(f"{self.name}/{name}"), mask),))

    def reduce(self, name: str, items: list[tuple[Any, ...]]) -> None:
        v = torch.cat([it[0].flatten() for it in items]).float()
        c = self._bin(v)
        if name not in self.shift:
            self.shift[name] = v.mean()
        dv = v - self.shift[name]
        d2 = dv * dv
        pw = torch.stack([dv.sum(), d2.sum(), (d2 * dv).sum(), (d2 * d2).sum()]).double()
        ex = torch.aminmax(v)
        if name in self.counts:
            self.counts[name] += c
            self.power[name] += pw
            self.n[name] += int(v.numel())
            old = self.extrema[name]
            self.extrema[name] = torch.stack(
                [torch.minimum(old[0], ex.min), torch.maximum(old[1], ex.max)]
            )
        else:
            self.counts[name], self.power[name], self.n[name] = c, pw, int(v.numel())
            self.extrema[name] = torch.stack([ex.min, ex.max])

    def moments(self, name: str) -> dict[str, float]:
        """mean, std, skew, excess kurtosis, min, max, n for one layer."""
        self.flush()
        s1, s2, s3, s4 = self.power[name].tolist()
        n = self.n[name]
        mu = s1 / n
        m2 = max(s2 / n - mu * mu, 0.0)
        m3 = s3 / n - 3 * mu * s2 / n + 2 * mu**3
        m4 = s4 / n - 4 * mu * s3 / n + 6 * mu * mu * s2 / n - 3 * mu**4
        sd = m2**0.5
        lo, hi = self.extrema[name].tolist()
        return {
            "n": int(n),
            "mean": mu + float(self.shift[name]),
            "std": sd,
            "skew": m3 / sd**3 if sd > 0 else float("nan"),
            "kurtosis": m4 / m2**2 - 3.0 if sd > 0 else float("nan"),
            "min": float(lo),
            "max": float(hi),
        }

    def histogram(self, name: str) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(counts per bin, edges, underflow, overflow) for one layer."""
        self.flush()
        c = self.counts[name].cpu().numpy()
        return (
            c[1:-1].astype(np.int64),
            self.edges.numpy().astype(np.float64),
            int(c[0]),
            int(c[-1]),
        )

    def to_density(
        self, name: str, smooth_bins: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(grid, p, p') of the measured pre-activation density of one layer."""
        self.flush()
        if name not in self.counts:
            raise KeyError(
                f"no distribution recorded for layer {name!r}; seen: {sorted(self.counts)}"
            )
        counts, edges, under, over = self.histogram(name)
        total = float(counts.sum() + under + over)
        return density_from_histogram(counts, edges, total, smooth_bins)

    def summary(self) -> dict[str, Row]:
        self.flush()
        out: dict[str, Row] = {}
        for name in self.counts:
            m = self.moments(name)
            counts, _, under, over = self.histogram(name)
            total = counts.sum() + under + over
            out[name] = {**m, "out_of_range_frac": (under + over) / total if total else 0.0}
        return out
