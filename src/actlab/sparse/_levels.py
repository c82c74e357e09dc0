"""Learned sparsity levels: the thresholds of the sites re-balanced by the tuning's own loss.

A calibrated allocation (TEAL's greedy, the Fisher allocation) decides how sparse each site
is from the *dense* model's statistics, one site at a time. With ``TuneConfig(levels=True)``
the tuning (:func:`~actlab.sparse.tune_gains`) also moves each threshold site's level by the
distillation loss of the whole sparsified model, under the constraint that the
parameter-weighted sparsity stays where the calibration put it:

    t_j = t_j^0 * exp(theta_j),    sum_j P_j F_j(theta_j) = sum_j P_j F_j(0)

where ``t_j^0`` is site j's calibrated threshold (a scalar or one per channel: the offset
scales all of them), ``P_j`` its linear's parameter count and ``F_j(theta)`` the fraction of
its inputs with ``log|x_i| - log t_j^0 <= theta``, measured on tuning windows (the
sparsified positions of the second half) before the first step. The forward keeps the hard
mask ``|x| > t_j`` (the deployed function); the backward reaches ``theta_j`` through a
straight-through surrogate, the mask's value plus ``s - stop_grad(s)`` with
``s = sigmoid((log|x| - log t_j^0 - theta_j) / beta)``, ``beta = 0.25`` (the gradient of the
input itself stays the hard mask's). After every Adam step (learning rate 10x the tuning's,
the same cosine decay) a common shift of all offsets, found by bisection, restores the
weighted sparsity, so the loss can move sparsity between sites but not lower it overall.

actlab's, not a published method (learned thresholds with straight-through estimators are
common in pruning and quantisation; here only one scalar per site is learned). The
constraint holds on the windows ``F`` was measured on; the held-out realised sparsity is
measured as always. Only threshold sites (:class:`~actlab.sparse.SparseLinear`, TEAL's) have
levels; WINA's top-k and the gated-MLP sites are refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from actlab.sparse._modules import SparseLinear
from actlab.sparse._state import SparseError, Threshold
from actlab.sparse._topk import SparseTopKLinear

__all__ = ["BETA", "SiteLevels"]

BETA = 0.25  # the surrogate's width, in log-threshold units
_TINY = 1e-30
_SAMPLES = 32768  # per site: the resolution of F_j


class SiteLevels(nn.Module):
    """The offsets ``theta`` of the threshold sites of a sparsified model (module docstring).

    ``sites`` maps paths to the model's :class:`SparseLinear` sites (dense ones, with a
    negative threshold, are left out). :meth:`measure` fills ``F`` from windows,
    :meth:`set_thresholds` writes ``t^0 exp(theta)`` into the sites before a forward and
    :meth:`project` restores the weighted sparsity after a step.
    """

    def __init__(self, sites: dict[str, SparseLinear], beta: float = BETA) -> None:
        super().__init__()
        for path, site in sites.items():
            if isinstance(site, SparseTopKLinear) or not isinstance(site, SparseLinear):
                raise SparseError(
                    f"tune levels needs threshold sites (TEAL's); {path!r} is a "
                    f"{type(site).__name__}: tune without levels"
                )
        self.sites = {p: s for p, s in sites.items() if not _dense(s.threshold)}
        if not self.sites:
            raise SparseError("tune levels: the state sparsifies no threshold site")
        self.paths = list(self.sites)
        self.beta = float(beta)
        self.base: dict[str, Threshold] = {p: s.threshold for p, s in self.sites.items()}
        self.theta = nn.Parameter(torch.zeros(len(self.paths)))
        sizes = [s.in_features * s.out_features for s in self.sites.values()]
        self.weights = torch.tensor(sizes, dtype=torch.float64) / sum(sizes)
        self.sorted: torch.Tensor | None = None  # [J, n] log-ratios, each row sorted
        self.goal = math.nan

    def _log_base(self, j: int, like: torch.Tensor) -> torch.Tensor:
        t = self.base[self.paths[j]]
        if isinstance(t, torch.Tensor):
            return t.to(like.device, torch.float32).clamp_min(_TINY).log()
        return torch.tensor(math.log(max(t, _TINY)), device=like.device)

    def measure(
        self, forward: Callable[[torch.Tensor], object], batches: list[torch.Tensor]
    ) -> None:
        """``F``: the log-ratios ``log|x| - log t^0`` at every site's sparsified positions
        (the second half of each window) while ``forward`` runs on ``batches`` (a random
        subsample of ``32768`` per site, seeded), and the weighted sparsity they give."""
        seen: dict[int, list[torch.Tensor]] = {j: [] for j in range(len(self.paths))}

        def hook(j: int) -> Callable[..., None]:
            def capture(module: nn.Module, args: tuple) -> None:
                x = args[0].detach()
                if x.ndim >= 3 and x.shape[-2] > 1:
                    x = x[..., x.shape[-2] // 2 :, :]  # [..., T/2, d]: the sparse positions
                r = x.float().abs().clamp_min(_TINY).log() - self._log_base(j, x)
                seen[j].append(r.reshape(-1).cpu())

            return capture

        handles = [s.register_forward_pre_hook(hook(j)) for j, s in enumerate(self.sites.values())]
        try:
            with torch.no_grad():
                for ids in batches:
                    forward(ids)
        finally:
            for h in handles:
                h.remove()
        gen = torch.Generator().manual_seed(0)
        rows = []
        for j in range(len(self.paths)):
            r = torch.cat(seen[j]) if seen[j] else torch.empty(0)
            if r.numel() == 0:
                raise SparseError(f"tune levels: site {self.paths[j]!r} saw no input")
            pick = torch.randint(0, r.numel(), (_SAMPLES,), generator=gen)
            rows.append(r[pick].sort().values)
        self.sorted = torch.stack(rows).double()  # [J, n]
        self.goal = self.weighted(torch.zeros(len(self.paths), dtype=torch.float64))

    def fractions(self, theta: torch.Tensor) -> torch.Tensor:
        """``F_j(theta_j)`` for every site ``[J]`` (fraction of log-ratios <= theta_j)."""
        if self.sorted is None:
            raise SparseError("tune levels: measure() before fractions()")
        q = theta.detach().double().cpu().unsqueeze(1)  # [J, 1]
        below = torch.searchsorted(self.sorted, q, right=True).squeeze(1)
        return below.double() / self.sorted.shape[1]

    def weighted(self, theta: torch.Tensor) -> float:
        """The parameter-weighted sparsity ``sum_j P_j F_j(theta_j) / sum_j P_j``."""
        return float((self.weights * self.fractions(theta)).sum())

    def project(self) -> float:
        """Shift every offset by one common ``delta`` (bisection) so the weighted sparsity is
        back at its calibrated value; returns ``delta``."""
        theta = self.theta.detach().double().cpu()
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if self.weighted(theta + mid) < self.goal:
                lo = mid
            else:
                hi = mid
        delta = 0.5 * (lo + hi)
        with torch.no_grad():
            self.theta.add_(delta)
        return delta

    def set_thresholds(self) -> None:
        """Write ``t^0 exp(theta)`` into the sites (the hard masks of the next forward)."""
        with torch.no_grad():
            for j, (path, site) in enumerate(self.sites.items()):
                site.threshold = _scaled(self.base[path], float(self.theta[j].detach()))

    def thresholds(self) -> dict[str, Threshold]:
        """The learned thresholds by path."""
        return {
            p: _scaled(self.base[p], float(self.theta[j].detach()))
            for j, p in enumerate(self.paths)
        }

    def attach(self) -> None:
        """Give every site the straight-through surrogate of its mask (``SparseLinear.relax``)."""
        for j, site in enumerate(self.sites.values()):
            site.relax = self._relax(j, site)

    def _relax(
        self, j: int, site: SparseLinear
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def relax(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
            v = x.detach()
            if site.mode == "last-half" and v.ndim >= 3 and v.shape[-2] > 1:
                v = v[..., v.shape[-2] // 2 :, :]  # only the sparsified positions
            z = v.float().abs().clamp_min(_TINY).log() - self._log_base(j, v) - self.theta[j]
            s = torch.sigmoid(z / self.beta)
            ste = (s - s.detach()).to(x.dtype)  # value 0, gradient ds/dtheta
            mask = keep.to(x.dtype)
            if ste.shape != mask.shape:  # last-half: the surrogate covers the second half
                tail = mask[..., mask.shape[-2] - ste.shape[-2] :, :] + ste
                return torch.cat([mask[..., : mask.shape[-2] - ste.shape[-2], :], tail], -2)
            return mask + ste

        return relax


def _dense(t: Threshold) -> bool:
    return not isinstance(t, torch.Tensor) and t < 0


def _scaled(t: Threshold, theta: float) -> Threshold:
    f = math.exp(theta)
    return t * f if isinstance(t, torch.Tensor) else float(t) * f
