"""The strategy interface and the random-sampling baseline.

A strategy proposes candidates and learns from their results:

    class Strategy(Protocol):
        def ask(self) -> Candidate: ...
        def tell(self, candidate: Candidate, result: EvalResult) -> None: ...

``ask`` may be called several times before the matching ``tell`` (parallel workers), and
``tell`` may receive candidates the strategy never proposed (results replayed from a study
when a search resumes, or written by another process sharing the study); a strategy must
accept both. Duplicates are the search loop's business: a strategy may propose an
expression already evaluated, and is then told the stored result.

:class:`RandomSearch` samples expressions of 1..``max_units`` chained core units of the
Swish grammar (Ramachandran, Zoph & Le 2017, arXiv 1710.05941) uniformly: the baseline
every other strategy must beat.
"""

from __future__ import annotations

import random
from typing import Protocol, runtime_checkable

from actlab.expr import random_expr
from actlab.search._candidate import Candidate, EvalResult

__all__ = ["RandomSearch", "Strategy"]


@runtime_checkable
class Strategy(Protocol):
    """Propose a candidate (``ask``); learn from a result (``tell``)."""

    def ask(self) -> Candidate: ...

    def tell(self, candidate: Candidate, result: EvalResult) -> None: ...


class RandomSearch:
    """Uniform samples of the grammar (the baseline)."""

    def __init__(self, *, seed: int = 0, max_units: int = 2) -> None:
        if max_units < 1:
            raise ValueError(f"max_units must be >= 1, got {max_units}")
        self.rng = random.Random(seed)
        self.max_units = max_units
        self.told = 0

    def ask(self) -> Candidate:
        return Candidate(random_expr(self.rng, self.max_units), "random")

    def tell(self, candidate: Candidate, result: EvalResult) -> None:
        self.told += 1
