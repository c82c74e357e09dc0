"""Funnel selection: promote survivors of a cheap budget to growing budgets.

Lion (Chen et al. 2023, arXiv 2302.06675) closes the gap between a cheap proxy and the
target task by re-evaluating the candidates that pass a threshold on larger and larger
proxies. :class:`Funnel` wraps any strategy: its candidates are evaluated at level 0 (the
cheapest budget of the pipeline), and after every result at level k the threshold of level
k is recomputed as

    threshold_k = max( absolute_k, quantile_{1 - keep_k}(qualities seen at level k) )

(orientation flipped when lower is better); every candidate of level k at or above it that
was not promoted yet is queued for level k+1 (best first), once at least ``min_seen``
results of level k exist -- the asynchronous successive-halving rule of ASHA (Li et al.
2020, arXiv 1810.05934), so candidates seen early are judged against fewer results. Promotions
are proposed before new candidates. The wrapped
strategy only learns from level-0 results, so its fitness stays comparable across
candidates; the higher levels decide the final ranking.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from actlab.search._candidate import Candidate, EvalResult
from actlab.search._strategy import Strategy

__all__ = ["Funnel"]


class Funnel:
    """Promote the best ``keep`` fraction of each level to the next (see the module docstring)."""

    def __init__(
        self,
        inner: Strategy,
        *,
        levels: int,
        keep: float | Sequence[float] = 0.2,
        thresholds: Sequence[float | None] | None = None,
        min_seen: int = 5,
        higher_is_better: bool = True,
    ) -> None:
        if levels < 1:
            raise ValueError(f"a funnel needs >= 1 level, got {levels}")
        keeps = (
            [float(keep)] * (levels - 1)
            if isinstance(keep, (int, float))
            else [float(k) for k in keep]
        )
        if len(keeps) != levels - 1 or not all(0.0 < k <= 1.0 for k in keeps):
            raise ValueError(f"keep needs {levels - 1} fraction(s) in (0, 1], got {keep}")
        thr = list(thresholds) if thresholds is not None else [None] * (levels - 1)
        if len(thr) != levels - 1:
            raise ValueError(
                f"thresholds needs {levels - 1} value(s) (None for none), got {thresholds}"
            )
        self.inner, self.levels, self.keep, self.thresholds = inner, levels, keeps, thr
        self.min_seen, self.higher = max(1, min_seen), higher_is_better
        self.results: list[dict[str, tuple[Candidate, EvalResult]]] = [{} for _ in range(levels)]
        self.promoted: list[set[str]] = [set() for _ in range(levels)]
        self.queue: deque[Candidate] = deque()

    def ask(self) -> Candidate:
        if self.queue:
            return self.queue.popleft()
        return self.inner.ask()

    def tell(self, candidate: Candidate, result: EvalResult) -> None:
        lv = candidate.level
        if lv == 0:
            self.inner.tell(candidate, result)
        if lv >= self.levels:
            return
        if lv > 0 and candidate.hash not in self.promoted[lv - 1]:
            self.promoted[lv - 1].add(candidate.hash)  # replayed or from another process
            self.queue = deque(c for c in self.queue if c.key != candidate.key)
        if result.ok:
            self.results[lv][candidate.hash] = (candidate, result)
            self._promote(lv)

    def threshold(self, level: int) -> float:
        """The current promotion threshold of ``level`` (nan before ``min_seen`` results)."""
        q = [r.quality if self.higher else -r.quality for _, r in self.results[level].values()]
        if len(q) < self.min_seen or level >= self.levels - 1:
            return math.nan
        t = float(np.quantile(q, 1.0 - self.keep[level]))
        a = self.thresholds[level]
        if a is not None:
            t = max(t, a if self.higher else -a)
        return t if self.higher else -t

    def _promote(self, level: int) -> None:
        t = self.threshold(level)
        if math.isnan(t):
            return
        sign = 1.0 if self.higher else -1.0
        ready = [
            (c, r)
            for h, (c, r) in self.results[level].items()
            if h not in self.promoted[level] and sign * r.quality >= sign * t
        ]
        for c, r in sorted(ready, key=lambda cr: -sign * cr[1].quality):
            self.promoted[level].add(c.hash)
            up = c.promoted(level + 1)
            meta = dict(up.meta, cost=r.cost) if math.isfinite(r.cost) else up.meta
            self.queue.append(Candidate(up.expr, up.origin, up.parents, up.level, meta))
