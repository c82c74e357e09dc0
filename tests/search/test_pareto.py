"""Pareto ranking of (quality up, cost down) against a brute-force definition."""

from __future__ import annotations

import math
import random

from actlab.search import pareto_front
from actlab.search._pareto import dominates, pareto_ranks


def _brute_front(points: list[tuple[float, float]]) -> list[int]:
    return [
        i
        for i, p in enumerate(points)
        if not any(q[0] >= p[0] and q[1] <= p[1] and (q[0] > p[0] or q[1] < p[1]) for q in points)
    ]


def test_front_and_ranks_match_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(60):
        n = rng.randint(1, 30)
        # coarse values so that ties and duplicates occur
        pts = [(rng.randint(0, 6) / 6, rng.randint(0, 6) / 2) for _ in range(n)]
        assert pareto_front(pts) == _brute_front(pts), pts
        ranks = pareto_ranks(pts)
        rest = list(range(n))
        r = 0
        while rest:
            sub = [pts[i] for i in rest]
            front = {rest[j] for j in _brute_front(sub)}
            assert {i for i in rest if ranks[i] == r} == front
            rest = [i for i in rest if i not in front]
            r += 1


def test_dominance_orientation_and_nan() -> None:
    assert dominates((0.9, 1.0), (0.8, 2.0))
    assert not dominates((0.9, 1.0), (0.9, 1.0))
    assert dominates((0.1, 5.0), (0.2, 6.0), maximize=(False, False))
    pts = [(0.9, 1.0), (math.nan, 0.1), (0.5, 0.5)]
    assert pareto_front(pts) == [0, 2]
    assert pareto_ranks(pts)[1] == max(pareto_ranks(pts))
