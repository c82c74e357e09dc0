"""What a search produced, read back from its study: rankings, Pareto front, statistics.

A :class:`SearchResult` holds every stored trial of the study (all sessions, all
processes). ``ranked()`` orders the distinct expressions that evaluated successfully by the
highest funnel level they reached, then by their quality there; ``pareto()`` is the
non-dominated set of (level-0 quality, cost per step); ``rejections()`` counts the stage and
reason of every rejected or failed candidate; ``progress()`` is the best level-0 quality
after each spent evaluation unit; ``wasted_fraction()`` is the share of the spent units
that went to candidates rejected after training started (quality floor, divergence).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from actlab.search._pareto import pareto_front
from actlab.search._study import TrialRecord

__all__ = ["SearchResult", "reason_pattern"]

_NUM = re.compile(r"[-+]?\d+(\.\d+)?([eE][-+]?\d+)?")


def reason_pattern(reason: str) -> str:
    """A rejection reason with its numbers replaced by ``#`` (to count similar reasons)."""
    return _NUM.sub("#", reason)[:160]


@dataclass
class SearchResult:
    """Trials of one study plus how this session ended (``stopped``: why it stopped;
    ``message``: one line explaining a stop other than a spent budget)."""

    study: str
    storage: str
    task: str
    metric: str
    higher_is_better: bool
    levels: tuple[float, ...]
    records: list[TrialRecord] = field(default_factory=list)
    stopped: str = "budget"
    evaluated_now: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    message: str = ""

    # ------------------------------------------------------------------ selections
    @property
    def finished(self) -> list[TrialRecord]:
        return [r for r in self.records if r.result is not None]

    def _q(self, q: float) -> float:
        return q if self.higher_is_better else -q

    def ranked(self) -> list[TrialRecord]:
        """Best record per expression, ordered by (highest level, quality there); equal
        qualities (common with accuracies on small validation sets) go to the cheaper."""
        best: dict[str, TrialRecord] = {}
        for r in self.finished:
            assert r.result is not None
            if not r.result.ok:
                continue
            h = r.candidate.hash
            cur = best.get(h)
            key = (r.candidate.level, self._q(r.result.quality))
            if cur is None or key > (cur.candidate.level, self._q(cur.result.quality)):  # type: ignore[union-attr]
                best[h] = r

        def order(r: TrialRecord) -> tuple[int, float, float]:
            assert r.result is not None
            cost = r.result.cost if math.isfinite(r.result.cost) else math.inf
            return (-r.candidate.level, -self._q(r.result.quality), cost)

        return sorted(best.values(), key=order)

    def best(self) -> TrialRecord | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def level0(self) -> list[TrialRecord]:
        return [
            r
            for r in self.finished
            if r.candidate.level == 0 and r.result is not None and r.result.ok
        ]

    def pareto(self) -> list[TrialRecord]:
        """Level-0 records on the Pareto front of (quality, cost per step)."""
        recs = [r for r in self.level0() if r.result is not None and math.isfinite(r.result.cost)]
        pts = [(self._q(r.result.quality), r.result.cost) for r in recs]  # type: ignore[union-attr]
        return [recs[i] for i in pareto_front(pts, (True, False))]

    # ------------------------------------------------------------------ statistics
    def rejections(self) -> dict[str, int]:
        """``{"rejected:checks": n, "rejected:cost": n, "failed:train": n, ...}``."""
        c: Counter[str] = Counter()
        for r in self.finished:
            assert r.result is not None
            if not r.result.ok:
                c[f"{r.result.status}:{r.result.stage}"] += 1
        return dict(c.most_common())

    def reasons(self, top: int = 10) -> list[tuple[str, str, int]]:
        """Most common ``(stage, reason pattern, count)``; numbers in reasons become ``#``."""
        c: Counter[tuple[str, str]] = Counter()
        for r in self.finished:
            assert r.result is not None
            if not r.result.ok:
                pattern = reason_pattern(r.result.reason)
                c[(r.result.stage, pattern)] += 1
        return [(s, p, n) for (s, p), n in c.most_common(top)]

    def units_spent(self) -> float:
        return sum(r.result.units for r in self.finished if r.result is not None)

    def wasted_fraction(self) -> float:
        """Share of the spent units that went to candidates rejected or failed in training."""
        total = self.units_spent()
        bad = sum(r.result.units for r in self.finished if r.result is not None and not r.result.ok)
        return bad / total if total > 0 else 0.0

    def progress(self) -> list[tuple[float, float]]:
        """``(units spent, best level-0 quality so far)`` after each finished trial."""
        out, used, best = [], 0.0, math.nan
        for r in sorted(self.finished, key=lambda r: r.number):
            assert r.result is not None
            used += r.result.units
            if r.candidate.level == 0 and r.result.ok:
                q = r.result.quality
                if math.isnan(best) or self._q(q) > self._q(best):
                    best = q
            if r.result.units > 0:
                out.append((used, best))
        return out

    def counts(self) -> dict[str, int]:
        fin = self.finished
        return {
            "trials": len(self.records),
            "finished": len(fin),
            "ok": sum(1 for r in fin if r.result is not None and r.result.ok),
            "rejected": sum(
                1 for r in fin if r.result is not None and r.result.status == "rejected"
            ),
            "failed": sum(1 for r in fin if r.result is not None and r.result.status == "failed"),
            "promotions": sum(1 for r in fin if r.candidate.level > 0),
        }
