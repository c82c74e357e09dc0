"""Multi-objective ranking: Pareto dominance and non-dominated sorting.

Point ``a`` dominates ``b`` when it is at least as good in every objective and strictly
better in one. The Pareto front is the set of non-dominated points; ``pareto_ranks``
assigns rank 0 to the front, rank 1 to the front of the rest, and so on (the non-dominated
sorting of NSGA-II, Deb et al. 2002, as used on (error, cost) by EEEA-Net). Searches rank
(quality, cost per step): quality maximised, cost minimised. Points with a NaN coordinate
are ranked after every finite point (as if dominated by all of them).

Optuna cannot prune multi-objective studies (optuna#3450), so the studies of
:mod:`actlab.search` are single-objective (quality) and cost is kept as a trial attribute;
the Pareto ranking is done here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["dominates", "pareto_front", "pareto_ranks"]

Point = Sequence[float]


def _oriented(p: Point, maximize: Sequence[bool]) -> tuple[float, ...]:
    if len(p) != len(maximize):
        raise ValueError(f"point {tuple(p)} has {len(p)} objectives, expected {len(maximize)}")
    return tuple(float(v) if m else -float(v) for v, m in zip(p, maximize))


def dominates(a: Point, b: Point, maximize: Sequence[bool] = (True, False)) -> bool:
    """Whether ``a`` Pareto-dominates ``b`` (``maximize[i]``: objective i is maximised)."""
    oa, ob = _oriented(a, maximize), _oriented(b, maximize)
    return all(x >= y for x, y in zip(oa, ob)) and any(x > y for x, y in zip(oa, ob))


def pareto_ranks(points: Sequence[Point], maximize: Sequence[bool] = (True, False)) -> list[int]:
    """Non-dominated sorting: rank 0 = Pareto front; NaN points get the last rank."""
    n = len(points)
    finite = [i for i, p in enumerate(points) if all(math.isfinite(float(v)) for v in p)]
    oriented = {i: _oriented(points[i], maximize) for i in finite}
    ranks = [-1] * n
    remaining = set(finite)
    rank = 0
    while remaining:
        front = {
            i
            for i in remaining
            if not any(
                all(x >= y for x, y in zip(oriented[j], oriented[i]))
                and any(x > y for x, y in zip(oriented[j], oriented[i]))
                for j in remaining
                if j != i
            )
        }
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return [r if r >= 0 else rank for r in ranks]


def pareto_front(points: Sequence[Point], maximize: Sequence[bool] = (True, False)) -> list[int]:
    """Indices of the non-dominated points (ascending), NaN points excluded."""
    ranks = pareto_ranks(points, maximize)
    return [
        i for i, r in enumerate(ranks) if r == 0 and all(math.isfinite(float(v)) for v in points[i])
    ]
