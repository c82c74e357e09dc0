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

Strategies by name live in :data:`STRATEGIES`, one registry filled by a decorator next to
each strategy (every module of ``actlab.search`` is imported before the first lookup, so
adding a strategy is adding one module there). A registered object is a
:class:`StrategyBuilder`: it takes the search's ``seed``, ``higher_is_better``, ``form`` and
``sampler`` (the last two used by formula-constant strategies, ignored by others) plus any
strategy options, and returns a fresh strategy. Metadata: ``description`` (one line),
``form=True`` for strategies that optimise the constants of ``--form``, ``density=True``
for strategies that use the measured pre-activation density of their parents.
"""

from __future__ import annotations

import random
from typing import Any, Protocol, runtime_checkable

from actlab.expr import random_expr
from actlab.registry import Registry
from actlab.search._candidate import Candidate, EvalResult

__all__ = ["STRATEGIES", "RandomSearch", "Strategy", "StrategyBuilder"]


@runtime_checkable
class Strategy(Protocol):
    """Propose a candidate (``ask``); learn from a result (``tell``)."""

    def ask(self) -> Candidate: ...

    def tell(self, candidate: Candidate, result: EvalResult) -> None: ...


class StrategyBuilder(Protocol):
    """What :data:`STRATEGIES` holds: keyword arguments in, a fresh strategy out."""

    def __call__(
        self, *, seed: int, higher_is_better: bool, form: str | None, sampler: str, **kw: Any
    ) -> Strategy: ...


#: search strategies by name (``actlab search --strategy``), with a ``description`` each
STRATEGIES: Registry[StrategyBuilder] = Registry("strategy", loader="actlab.search.*")


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


@STRATEGIES.register("random", description="uniform samples of the grammar (baseline)")
def _random(
    *, seed: int, higher_is_better: bool, form: str | None, sampler: str, **kw: Any
) -> Strategy:
    return RandomSearch(seed=seed, **kw)
