"""Strategies by name (what ``actlab search --strategy`` accepts).

    random     uniform samples of the Swish grammar (the baseline)
    evolution  regularised evolution, warm-started from relu/gelu/swish/crrelu
    eafo       evolution whose mutations add the EAFO entropy correction half the time
    bo         Optuna Bayesian optimisation of the constants of one formula (``form``)

The names come from :data:`~actlab.search.STRATEGIES` (one registry, filled by a decorator
next to each strategy). With a funnel (``levels > 1``) the strategy is wrapped in
:class:`~actlab.search.Funnel`.
"""

from __future__ import annotations

from typing import Any

from actlab.search._funnel import Funnel
from actlab.search._strategy import STRATEGIES, Strategy

__all__ = ["STRATEGIES", "make_strategy"]


def make_strategy(
    name: str,
    *,
    seed: int = 0,
    higher_is_better: bool = True,
    levels: int = 1,
    keep: float | tuple[float, ...] = 0.2,
    form: str | None = None,
    sampler: str = "tpe",
    **kw: Any,
) -> Strategy:
    """A strategy by ``name`` (see :data:`STRATEGIES`), funnel-wrapped when ``levels > 1``."""
    build = STRATEGIES.get(name)  # unknown names fail with the closest matches
    inner = build(seed=seed, higher_is_better=higher_is_better, form=form, sampler=sampler, **kw)
    if levels > 1:
        return Funnel(inner, levels=levels, keep=keep, higher_is_better=higher_is_better)
    return inner
