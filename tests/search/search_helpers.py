"""Helpers of the search tests: drive a strategy on a toy objective without a study."""

from __future__ import annotations

import hashlib
import math
import os
import signal
import time
from typing import Any

from actlab.search import Candidate, CurveObjective, EvalResult, Rejected, Score, Strategy


def drive(strategy: Strategy, objective: Any, budget: int, max_asks: int | None = None) -> float:
    """Ask/evaluate/tell until ``budget`` distinct evaluations; returns the best quality."""
    done: dict[tuple[str, int], EvalResult] = {}
    best, asks = -math.inf, 0
    while len(done) < budget and asks < (max_asks or 20 * budget):
        asks += 1
        c = strategy.ask()
        if c.key in done:
            strategy.tell(c, done[c.key])
            continue
        try:
            s = objective.evaluate(c, 1.0, seed=0, floor=None)
            r = EvalResult("ok", "done", quality=s.value, units=1.0)
        except Rejected as e:
            r = EvalResult.rejected(e.stage, e.reason)
        done[c.key] = r
        strategy.tell(c, r)
        if r.ok:
            best = max(best, r.quality)
    return best


class CountingObjective(CurveObjective):
    """A curve objective that logs every evaluated key to a file (one line per evaluation)."""

    def __init__(self, target: str, log: str, sleep: float = 0.0, **kw: Any) -> None:
        super().__init__(target, sleep=sleep, **kw)
        self.log = log

    def evaluate(self, candidate: Candidate, budget: float, *, seed: int, floor: Any) -> Score:
        score = super().evaluate(candidate, budget, seed=seed, floor=floor)
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(f"{candidate.hash}:{candidate.level}\n")
        return score


class SuicidalObjective(CurveObjective):
    """Kills its own process (SIGKILL) once, on the first evaluation after ``marker`` is absent
    (creating it): a worker process that dies mid-evaluation."""

    def __init__(self, target: str, marker: str, **kw: Any) -> None:
        super().__init__(target, **kw)
        self.marker = marker

    def evaluate(self, candidate: Candidate, budget: float, *, seed: int, floor: Any) -> Score:
        if not os.path.exists(self.marker):
            with open(self.marker, "w", encoding="utf-8") as f:
                f.write(f"{candidate.hash}\n")
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().evaluate(candidate, budget, seed=seed, floor=floor)


def fake_train(task: str, activation: str, seed: int, **kw: Any) -> dict[str, Any]:
    """A stand-in trainer for the compare machinery: a deterministic accuracy per activation."""
    h = int(hashlib.sha256(f"{activation}:{seed}".encode()).hexdigest()[:6], 16) / 16**6
    base = 0.95 if "gelu" in activation else 0.9
    return {
        "metric_name": "accuracy",
        "metric_value": base + 0.01 * h,
        "higher_is_better": True,
        "history": [{"epoch": 1, "val_accuracy": base}],
        "seconds": 0.01,
    }
