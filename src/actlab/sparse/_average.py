"""Averaging tuned sparsity states: a uniform "model soup" of tuning runs.

Wortsman et al., "Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time" (ICML 2022, arXiv 2203.05482): models fine-tuned
from one starting point with different seeds lie in one basin, and the average of their
weights is often better than each of them. Here the starting point is one calibrated state
(the same thresholds, targets and rotation bases), and the runs are
:func:`~actlab.sparse.tune_gains` with different ``TuneConfig.seed`` (other windows, other
random low-rank factors). For K states the average is taken component by component:

    g = 1/K sum_k g_k            (normalisation gains)
    r = 1/K sum_k r_k            (output-row scales)
    dW = 1/K sum_k dW_k          (weight changes)
    U V = 1/K sum_k U_k V_k      (low-rank corrections: U = [U_1 .. U_K] / K, V = [V_1; ..; V_K],
                                  rank K r, exact)

so the averaged linear is ``diag(r) (W + dW + U V)``. That differs from the average of the K
merged weights ``1/K sum_k diag(r_k) (W + dW_k + U_k V_k)`` only by the covariance of the row
scales with the weight changes, ``-1/K sum_k (r_k - r)(dW_k + U_k V_k - dW - U V)``, second
order in the small changes tuning makes; in exchange it needs no dense weights. The averaged
model reads exactly as many weight bytes as each member (the corrections are merged into the
weights by ``apply``). Averaging multiplies the tuning's cost by K; the held-out evaluation
says what it buys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from actlab.sparse._state import SparseError, SparsityState, same_thresholds

__all__ = ["average_states"]


def _mean(tensors: list[torch.Tensor]) -> torch.Tensor:
    # float64 sum: the order of the members does not change the result beyond float32 rounding
    return (torch.stack([t.double() for t in tensors]).sum(0) / len(tensors)).float()


def average_states(states: Sequence[SparsityState]) -> SparsityState:
    """The uniform average of tuned states of one calibration (module docstring).

    Every state must be tuned (``gains``) from the same calibrated state: the same method,
    parameters, thresholds, targets and rotation bases, and the same tuned parts (the same
    linears with row scales, corrections and weight changes). The result's ``tuning`` is
    ``{"average": K, "members": [each member's tuning]}`` plus the keys on which all members
    agree (``rows``, ``rank``, ``weights``, ...), so it says how it was made.
    """
    states = list(states)
    if len(states) < 2:
        raise SparseError(f"averaging needs at least 2 tuned states; got {len(states)}")
    for i, s in enumerate(states):
        if not isinstance(s, SparsityState):
            raise SparseError(f"state {i} is a {type(s).__name__}, not a SparsityState")
        if not s.gains:
            raise SparseError(
                f"state {i} is not tuned (no gains); average states from tune_gains runs"
            )
    first = states[0]
    for i, s in enumerate(states[1:], 1):
        if (s.method, s.params, s.targets) != (first.method, first.params, first.targets):
            raise SparseError(
                f"state {i} has another method, parameters or targets than state 0; "
                "average tuning runs of one calibrated state only"
            )
        if not same_thresholds(first.thresholds, s.thresholds):
            raise SparseError(
                f"state {i} has other thresholds than state 0; average tuning runs of one "
                "calibrated state only (the same calibration, other tune seeds)"
            )
        if set(s.bases) != set(first.bases) or not all(
            torch.equal(q, first.bases[k]) for k, q in s.bases.items()
        ):
            raise SparseError(f"state {i} has other rotation bases than state 0")
        for part in ("gains", "scales", "lowrank", "deltas"):
            if set(getattr(s, part)) != set(getattr(first, part)):
                raise SparseError(
                    f"state {i} tuned other {part} than state 0; average runs of one tuning "
                    "configuration (only the seed differs)"
                )
    gains = {k: _mean([s.gains[k] for s in states]) for k in first.gains}
    scales = {k: _mean([s.scales[k] for s in states]) for k in first.scales}
    deltas = {k: _mean([s.deltas[k] for s in states]) for k in first.deltas}
    lowrank: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for k in first.lowrank:
        # [out, K r] and [K r, in]: U V = 1/K sum_k U_k V_k exactly
        u = torch.cat([s.lowrank[k][0] for s in states], 1) / len(states)
        v = torch.cat([s.lowrank[k][1] for s in states], 0)
        lowrank[k] = (u, v)
    members = [dict(s.tuning) for s in states]
    shared = {
        k: v
        for k, v in members[0].items()
        if k not in ("seed", "kl_first", "kl_last", "feature_first", "feature_last")
        and all(m.get(k) == v for m in members)
    }
    tuning: dict[str, Any] = {**shared, "average": len(states), "members": members}
    return SparsityState(
        first.method,
        dict(first.params),
        dict(first.thresholds),
        dict(first.targets),
        dict(first.bases),
        gains=gains,
        tuning=tuning,
        scales=scales,
        lowrank=lowrank,
        deltas=deltas,
    )
