"""Strategies by name (what ``actlab search --strategy`` accepts).

    random     uniform samples of the Swish grammar (the baseline)
    evolution  regularised evolution, warm-started from relu/gelu/swish/crrelu
    eafo       evolution whose mutations add the EAFO entropy correction half the time
    bo         Optuna Bayesian optimisation of the constants of one formula (``form``)

With a funnel (``levels > 1``) the strategy is wrapped in :class:`~actlab.search.Funnel`.
"""

from __future__ import annotations

from typing import Any

from actlab.search._bo import ConstantsBO
from actlab.search._evolution import EAFOGuided, RegularizedEvolution
from actlab.search._funnel import Funnel
from actlab.search._strategy import RandomSearch, Strategy

__all__ = ["STRATEGIES", "make_strategy"]

STRATEGIES: dict[str, str] = {
    "random": "uniform samples of the grammar (baseline)",
    "evolution": "regularised evolution with warm start (tournament, oldest dies)",
    "eafo": "evolution with EAFO entropy-correction mutations (Gaussian or measured density)",
    "bo": "Bayesian optimisation (Optuna TPE/GP) of the constants of --form",
}


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
    key = name.strip().lower()
    inner: Strategy
    if key == "random":
        inner = RandomSearch(seed=seed, **kw)
    elif key == "evolution":
        inner = RegularizedEvolution(seed=seed, higher_is_better=higher_is_better, **kw)
    elif key == "eafo":
        inner = EAFOGuided(seed=seed, higher_is_better=higher_is_better, **kw)
    elif key == "bo":
        if not form:
            raise ValueError("strategy 'bo' optimises the constants of a formula: give one, "
                             "e.g. --form 'x*sigmoid(1.702*x)'")
        inner = ConstantsBO(form, seed=seed, higher_is_better=higher_is_better, sampler=sampler, **kw)
    else:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if levels > 1:
        return Funnel(inner, levels=levels, keep=keep, higher_is_better=higher_is_better)
    return inner
