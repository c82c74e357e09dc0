"""PPL-p% sparsity (Sparsing Law, Luo et al., arXiv 2411.02335) of a causal LM's FFNs.

CETT (the cumulative error of tail truncation) of a down projection at threshold eps is
``||W_down (h * [|h_i| ||W_down[:, i]|| < eps])|| / ||W_down h||`` averaged over tokens; the
CETT-τ point of a layer is the largest eps with CETT <= τ (:class:`actlab.probes.CETTProbe`
samples the down-projection inputs and finds it). The PPL-p% sparsity is the fraction of FFN
neurons skipped at the largest τ whose perplexity, with *every* FFN truncated at its CETT-τ
per-neuron thresholds ``eps / ||W_down[:, i]||``, rises by at most p% over the dense model
(bisection on τ, :func:`actlab.probes.cett.ppl_p_search`).

Here the CETT samples come from the calibration windows and the perplexity from held-out
windows (every position truncated: the paper's setting), so τ is chosen on text the
thresholds were not fitted on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from actlab.probes import probe
from actlab.probes.cett import CETTProbe, PPLPoint, ppl_p_search
from actlab.sparse._sites import find_blocks, run_model
from actlab.sparse._state import SparseError

__all__ = ["PPLPSparsity", "ppl_p_sparsity"]


@dataclass(frozen=True)
class PPLPSparsity:
    """The PPL-p% point: τ, perplexity ratio, overall and per-layer FFN sparsity."""

    point: PPLPoint
    dense_ppl: float
    per_layer: dict[str, float] = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        return self.point.sparsity


@torch.no_grad()
def _loss(model: nn.Module, windows: torch.Tensor) -> float:
    """Mean next-token loss (nats) over every position of ``windows`` [n, T]."""
    total, count = 0.0, 0
    for row in windows:
        logits = run_model(model, row[None]).logits[0, :-1].float()
        total += float(F.cross_entropy(logits, row[1:].to(logits.device), reduction="sum"))
        count += row.numel() - 1
    return total / count


def ppl_p_sparsity(
    model: nn.Module,
    calibration: Iterable[torch.Tensor],
    windows: torch.Tensor,
    *,
    p: float = 1.0,
    tokens: int = 2048,
    steps: int = 8,
) -> PPLPSparsity:
    """PPL-p% sparsity of ``model``'s FFNs: CETT samples (up to ``tokens`` rows per layer)
    from ``calibration`` batches, perplexity on ``windows`` (token ids ``[n, T]``)."""
    find_blocks(model)
    if not isinstance(windows, torch.Tensor) or windows.ndim != 2 or windows.shape[1] < 2:
        raise SparseError("PPL-p% needs held-out token windows [n, T] with T >= 2")
    cp = CETTProbe(tokens=tokens)
    with probe(model, probes=[cp], sample=tokens) as _mgr, torch.no_grad():
        for batch in calibration:
            run_model(model, batch)
    downs = dict(model.named_modules())
    dense = _loss(model, windows)
    per_layer: dict[float, dict[str, float]] = {}

    def loss_at(tau: float) -> tuple[float, float]:
        points = cp.search(tau)  # one CETT search per tolerance (it sorts every sample)
        hooks = [
            downs[name].register_forward_pre_hook(
                lambda _m, a, t=t: (torch.where(a[0].abs() < t.to(a[0].device), 0.0, a[0]),)
            )
            for name, t in cp.thresholds(tau, points=points).items()
        ]
        try:
            loss = _loss(model, windows)
        finally:
            for h in hooks:
                h.remove()
        per_layer[tau] = {n: pt.sparsity for n, pt in points.items()}
        return loss, cp.overall_sparsity(tau, points=points)

    point = ppl_p_search(loss_at, dense, p=p, steps=steps)
    layers = per_layer.get(point.tau) or {n: pt.sparsity for n, pt in cp.search(point.tau).items()}
    return PPLPSparsity(point, math.exp(dense), layers)
