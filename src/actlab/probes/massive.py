"""Massive activations on transformer block outputs, and their trend across checkpoints.

Sun et al. 2024 ("Massive Activations in Large Language Models"): measured on the
post-residual output h of each block, a massive activation is an entry with |a| > 100 AND
|a| / median(|h|) >= ~1000. Small models rarely pass the absolute rule, so the probe reports
the ratio r = max|h| / median|h| per layer as the primary number, plus where the maxima sit:
the top dimensions (largest max|h| per dim) and the top tokens (largest max|h| per token,
with the call index, batch index, position and dim of each; the dim is the one whose
maximum in that call equals the token's maximum, -1 when the token holds no dim's maximum).

"Hidden Dynamics of Massive Activations" (arXiv 2508.03616) fits the ratio across training
checkpoints t with five parameters:

    f(t) = A · exp(-λ x_t) · log(x_t) + K,   x_t = γ t + t0,   λ >= 0

fitted by :func:`fit_ratio_curve` (scipy's trust-region reflective least squares, as
``curve_fit(method='trf')``, bounded; initialised A = range(y), K = min(y) + A/2, λ = 1/std(t),
γ = 1/range(t), t0 = 1, plus a few extra starts so a bad initial scale cannot trap the fit).

The median (``median_abs``) is the lower median of |h| over ALL entries of a call (the
((n-1)//2)-th smallest of n, ``torch.median``'s convention), exact whenever the call holds at
most ``median_elems`` entries (2**18 = 262,144 by default: 455 tokens of SmolLM2's 576 dims,
682 tokens of MiniLM's 384). Larger calls use the lower median of ``median_elems`` entries
drawn uniformly with replacement from all entries (element level, seeded): by the
Dvoretzky-Kiefer-Wolfowitz inequality its rank in the call, as a quantile q of the empirical
distribution of |h|, satisfies P(|q - 1/2| > ε) <= 2 exp(-2 m ε²) for m = ``median_elems``
draws; with the default m that is |q - 1/2| <= 0.005 with probability >= 1 - 4e-6 (the
relative error of the value then depends on the density of |h| near its median: about 1%
on SmolLM2's blocks). Summary rows say how many calls were estimated
(``median_estimated_calls``). max|h| and the per-token maxima are always exact over the
sampled calls (every call in eval mode). Across calls, ``median_abs`` is the mean of the
per-call medians and ``ratio`` = max|h| / that mean; ``ratio_mean`` and ``ratio_max`` are the
mean and the maximum of the per-call ratios.

Padding: when the model is called with ``attention_mask=`` (or ``set_context`` gives one) and
the block output is (B, T, D) with the mask's (B, T), padded tokens are left out of every
statistic (maxima, median, top tokens, massive-token counts).

Cost per sampled hook call (every call in eval mode, every ``train_stride``-th call in train
mode, since massive activations are systematic rather than rare events): |h| once, the
per-dim and per-token max-reductions over the whole output and one median (``torch.median``,
about 3 ms per 150k entries on one CPU thread), staged and reduced in bulk on device
without host syncs (a padding mask costs one host copy of the mask per forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from actlab.probes.base import Probe, Row, check_float, check_int, draw, first_tensor
from actlab.probes.manager import register_probe

__all__ = ["MassiveActivationProbe", "RatioCurveFit", "fit_ratio_curve", "ratio_curve"]


@register_probe(description="max|h| / median|h| on block outputs, where the maxima sit")
class MassiveActivationProbe(Probe):
    """max|h| / median|h| per block output, the >100 & >=1000x rule, and where maxima sit."""

    name = "massive"
    target = "block"

    def __init__(
        self,
        *,
        top_k: int = 5,
        abs_threshold: float = 100.0,
        ratio_threshold: float = 1000.0,
        median_elems: int = 1 << 18,
        where: str | list[str] | None = None,
    ) -> None:
        super().__init__(where=where)
        self.top_k = check_int("top_k", top_k)
        self.abs_threshold = check_float("abs_threshold", abs_threshold, 0.0)
        self.ratio_threshold = check_float("ratio_threshold", ratio_threshold, 0.0)
        self.median_elems = check_int("median_elems", median_elems)
        self.reset()

    def reset(self) -> None:
        self.calls: dict[str, int] = {}
        self.sampled_calls: dict[str, int] = {}
        self.estimated_calls: dict[str, int] = {}  # calls whose median came from a sample
        self.dim_max: dict[str, Tensor] = {}  # (D,) running max|h| per dim
        self.acc: dict[str, Tensor] = {}  # [Σ median, Σ ratio, max ratio, n_massive_tokens]
        self.top_vals: dict[str, Tensor] = {}  # (k,) largest per-token max|h|
        self.top_where: dict[str, Tensor] = {}  # (k, 4) call, batch, position, dim
        self._reset_staging()

    def update(self, name: str, module: nn.Module, output: Any) -> None:
        h = first_tensor(output)
        if h is None or h.ndim < 2 or h.numel() == 0:
            return
        call = self.calls.get(name, 0)
        self.calls[name] = call + 1
        if not self.sampling(name, module):
            return
        d = int(h.shape[-1])
        seq = int(h.shape[-2]) if h.ndim >= 3 else 1
        mask = self.ctx.token_mask(h)
        mag = h.reshape(-1, d).abs()  # one pass; the reductions below read it from cache
        real = mag if mask is None else mag.index_select(0, mask.rows_on(mag.device))
        if real.numel() == 0:
            return  # every token of this call is padding
        dim_max = real.amax(dim=0)  # (D,)
        prev = self.dim_max.get(name)
        if prev is not None and prev.shape == dim_max.shape:
            torch.maximum(prev, dim_max, out=prev)
        else:
            self.dim_max[name] = dim_max.float()
        tok_max = mag.amax(dim=1)  # (rows,) per-token max; padded tokens get -1 (never top)
        if mask is not None:
            tok_max = tok_max.masked_fill(~mask.bool_on(mag.device).reshape(-1), -1.0)
        self.stage(name, (tok_max, dim_max, self._median(name, real), call, seq))

    def _median(self, name: str, real: Tensor) -> Tensor:
        """Lower median of every entry (exact up to ``median_elems`` entries, else of an
        element-level uniform sample of that size); a 0-d tensor, no host sync."""
        flat = real.reshape(-1)
        n = flat.numel()
        if n <= self.median_elems:
            return flat.median()
        self.estimated_calls[name] = self.estimated_calls.get(name, 0) + 1
        rng = self.ctx.rng(f"{self.name}/{name}")
        return flat.index_select(0, draw(rng, n, self.median_elems, flat.device)).median()

    def reduce(self, name: str, items: list[tuple[Any, ...]]) -> None:
        self.sampled_calls[name] = self.sampled_calls.get(name, 0) + len(items)
        tok = torch.stack([it[0] for it in items]).float()  # (n, rows)
        dmax_call = torch.stack([it[1] for it in items]).float()  # (n, D)
        med = torch.stack([it[2] for it in items]).float()  # (n,) per-call medians
        top = tok.amax(dim=1)
        ratio = top / med.clamp_min(torch.finfo(torch.float32).tiny)
        thr = torch.clamp_min(med * self.ratio_threshold, self.abs_threshold)
        n_massive = (tok > thr[:, None]).sum()
        vec = torch.stack(
            [med.sum().double(), ratio.sum().double(), ratio.max().double(), n_massive.double()]
        )
        vals, ridx = torch.topk(tok, min(self.top_k, tok.shape[1]), dim=1)  # (n, k) per call
        k = ridx.shape[1]
        # the dim of a top token: the dim whose maximum in that call equals the token's
        # maximum (exact whenever the token holds its dim's maximum, as massive ones do);
        # -1 when no dim matches
        hit = vals[:, :, None] == dmax_call[:, None, :]  # (n, k, D)
        dims = torch.where(hit.any(dim=2), hit.float().argmax(dim=2), torch.full_like(ridx, -1))
        seq = int(items[0][4])
        calls = torch.tensor([int(it[3]) for it in items], device=tok.device)[:, None].expand(-1, k)
        where = torch.stack([calls, ridx // seq, ridx % seq, dims], dim=2).reshape(-1, 4)
        vals = vals.reshape(-1)
        if name in self.acc:
            acc = self.acc[name]
            self.acc[name] = torch.stack(
                [acc[0] + vec[0], acc[1] + vec[1], torch.maximum(acc[2], vec[2]), acc[3] + vec[3]]
            )
            vals = torch.cat([self.top_vals[name], vals])
            where = torch.cat([self.top_where[name], where])
        else:
            self.acc[name] = vec
        kk = min(self.top_k, vals.numel())
        self.top_vals[name], sel = torch.topk(vals, kk)
        self.top_where[name] = where.index_select(0, sel)

    def summary(self) -> dict[str, Row]:
        self.flush()
        out: dict[str, Row] = {}
        for name, acc in self.acc.items():
            n = self.calls[name]
            med_sum, ratio_sum, ratio_max, n_massive = acc.tolist()
            n_sampled = self.sampled_calls[name]
            dm = self.dim_max[name]
            max_abs = float(dm.max())
            med = med_sum / n_sampled
            ratio = max_abs / med if med > 0 else float("inf")
            kd = min(self.top_k, dm.numel())
            dv, di = torch.topk(dm, kd)
            out[name] = {
                "max_abs": max_abs,
                "median_abs": med,
                "ratio": ratio,
                "ratio_mean": ratio_sum / n_sampled,
                "ratio_max": ratio_max,
                "massive": bool(max_abs > self.abs_threshold and ratio >= self.ratio_threshold),
                "massive_tokens": int(n_massive),
                "top_dims": [
                    [int(i), float(v)] for v, i in zip(dv.tolist(), di.tolist(), strict=True)
                ],
                "top_tokens": [
                    {
                        "value": float(v),
                        "call": int(w[0]),
                        "batch": int(w[1]),
                        "position": int(w[2]),
                        "dim": int(w[3]),
                    }
                    for v, w in zip(
                        self.top_vals[name].tolist(), self.top_where[name].tolist(), strict=True
                    )
                    if v >= 0  # padded tokens hold -1
                ],
                "calls": n,
                "sampled_calls": n_sampled,
                "median_estimated_calls": self.estimated_calls.get(name, 0),
            }
        return out


def ratio_curve(
    t: np.ndarray, a: float, lam: float, gamma: float, t0: float, k: float
) -> np.ndarray:
    """f(t) = A · exp(-λ x) · log(x) + K with x = γ t + t0."""
    x = gamma * np.asarray(t, dtype=np.float64) + t0
    return np.asarray(a * np.exp(-lam * x) * np.log(x) + k)


def _ratio_jac(
    t: np.ndarray, a: float, lam: float, gamma: float, t0: float, k: float
) -> np.ndarray:
    x = gamma * t + t0
    e = np.exp(-lam * x)
    lg = np.log(x)
    dfdx = a * e * (1.0 / x - lam * lg)
    return np.stack([e * lg, -a * x * e * lg, dfdx * t, dfdx, np.ones_like(t)], axis=1)


@dataclass(frozen=True)
class RatioCurveFit:
    """Fitted parameters of :func:`ratio_curve`, with the root-mean-square residual."""

    a: float
    lam: float
    gamma: float
    t0: float
    k: float
    rmse: float

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        return ratio_curve(np.asarray(t), self.a, self.lam, self.gamma, self.t0, self.k)

    def as_dict(self) -> dict[str, float]:
        return {
            "A": self.a,
            "lambda": self.lam,
            "gamma": self.gamma,
            "t0": self.t0,
            "K": self.k,
            "rmse": self.rmse,
        }


def fit_ratio_curve(
    steps: np.ndarray | list[float], ratios: np.ndarray | list[float], *, max_nfev: int = 400
) -> RatioCurveFit:
    """Fit the five-parameter massive-activation trend to (checkpoint step, ratio) pairs.

    The fit runs on standardised data (t / range(t), (y - min y) / range(y)), which keeps the
    problem well conditioned whatever the step and ratio scales; parameters are mapped back
    (γ -> γ / range(t), A -> A · range(y), K -> K · range(y) + min y). The paper's
    initialisation is the first start; the best of all starts (lowest RMSE) is returned.
    """
    from scipy.optimize import least_squares

    t = np.asarray(steps, dtype=np.float64).ravel()
    y = np.asarray(ratios, dtype=np.float64).ravel()
    if t.shape != y.shape or t.size < 5:
        raise ValueError(
            f"need >= 5 (step, ratio) pairs of equal length, got {t.size} and {y.size}"
        )
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(y))):
        raise ValueError("steps and ratios must be finite")
    if t.min() < 0:
        raise ValueError("steps must be >= 0 (x_t = γ t + t0 must stay positive)")
    span_t = float(np.ptp(t)) or 1.0
    y_min, span_y = float(y.min()), float(np.ptp(y)) or 1.0
    ts, ys = t / span_t, (y - y_min) / span_y
    sd = float(np.std(ts)) or 1.0
    starts = [[1.0, 1.0 / sd, 1.0, 1.0, 0.5]]  # the paper's init, in standardised units
    for g in (0.3, 3.0):
        for lam in (0.1, 1.0):
            for a in (4.0, -4.0):
                starts.append([a, lam, g, 1.0, 0.0 if a > 0 else 1.0])
    lower = [-np.inf, 0.0, 1e-12, 1e-9, -np.inf]
    upper = [np.inf, np.inf, np.inf, np.inf, np.inf]
    best: tuple[float, np.ndarray] | None = None
    for p0 in starts:
        try:  # the same trust-region solver curve_fit uses; keeps the iterate at max_nfev
            res = least_squares(
                lambda p: ratio_curve(ts, *p) - ys,
                p0,
                jac=lambda p: _ratio_jac(ts, *p),
                bounds=(lower, upper),
                method="trf",
                max_nfev=max_nfev,
                x_scale="jac",
            )
        except (RuntimeError, ValueError, FloatingPointError):
            continue
        popt = res.x
        rmse = float(np.sqrt(np.mean((ratio_curve(ts, *popt) - ys) ** 2)))
        if np.isfinite(rmse) and (best is None or rmse < best[0]):
            best = (rmse, popt)
        if best is not None and best[0] <= 1e-10:
            break  # exact fit: no need for the other starts
    if best is None:
        raise RuntimeError("the five-parameter fit did not converge from any start")
    rmse, p = best
    return RatioCurveFit(
        a=float(p[0]) * span_y,
        lam=float(p[1]),
        gamma=float(p[2]) / span_t,
        t0=float(p[3]),
        k=float(p[4]) * span_y + y_min,
        rmse=rmse * span_y,
    )
