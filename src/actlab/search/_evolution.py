"""Regularised (aging) evolution over expressions, and its EAFO-guided variant.

Regularised evolution (Real et al. 2019, "Regularized Evolution for Image Classifier
Architecture Search", arXiv 1802.01548), as used for programs by Lion (Chen et al. 2023,
arXiv 2302.06675):

- warm start: the known activations of :data:`~actlab.search.WARM_START` (relu, gelu,
  swish, crrelu written as expressions) are proposed first, then random grammar samples
  until the population holds ``population_size`` evaluated members;
- each later proposal mutates the winner of a tournament among ``sample_size`` members
  drawn at random (change an op, insert or delete a core unit, perturb a constant, or, for
  :class:`EAFOGuided`, add the EAFO entropy correction of :mod:`actlab.search._eafo`);
- every evaluated child joins the population and the **oldest** member dies (not the
  worst), which regularises against lucky noisy evaluations.

Rejected candidates never join the population. ``selection="pareto"`` makes the tournament
prefer the lowest Pareto rank of (quality, cost per step) within the sample, ties broken
by quality.

Bloat control (mutations that insert units outnumber deletions, so formulas grow):

- parsimony pressure (lexicographic, Luke & Panait 2002, "Lexicographic Parsimony
  Pressure"): in a tournament, members whose quality is within ``parsimony`` of the best
  of the sample count as tied, and the tie goes to the formula with the fewest nodes;
- a child with more than ``max_nodes`` nodes is re-drawn (another mutation) instead of
  being proposed and rejected by the size check.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from actlab.expr import Expr, ExprError, parse, random_expr, size
from actlab.expr.grammar import MUTATIONS as GRAMMAR_MUTATIONS
from actlab.search._candidate import WARM_START, Candidate, EvalResult
from actlab.search._eafo import eafo_mutation
from actlab.search._pareto import pareto_ranks
from actlab.search._strategy import STRATEGIES, Strategy

__all__ = ["MUTATIONS", "EAFOGuided", "Mutation", "RegularizedEvolution"]

# mutation(parent expression, rng, parent's result) -> child expression or None
Mutation = Callable[[Expr, random.Random, EvalResult], Expr | None]


def _grammar(kind: str) -> Mutation:
    fn = GRAMMAR_MUTATIONS[kind]
    return lambda e, rng, _r: fn(e, rng)


MUTATIONS: dict[str, Mutation] = {
    **{k: _grammar(k) for k in GRAMMAR_MUTATIONS},
    "eafo": eafo_mutation,
}


def _warm(items: Sequence[str] | Mapping[str, str]) -> list[Candidate]:
    pairs = (
        items.items() if isinstance(items, Mapping) else ((s, WARM_START.get(s, s)) for s in items)
    )
    out = []
    for name, formula in pairs:
        try:
            out.append(Candidate(parse(formula), f"warm:{name}"))
        except ExprError as e:
            raise ValueError(f"warm-start entry {name!r} is not a valid formula: {e}") from None
    return out


class RegularizedEvolution:
    """Aging evolution with tournament selection (see the module docstring)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        population_size: int = 20,
        sample_size: int = 5,
        warm_start: Sequence[str] | Mapping[str, str] = tuple(WARM_START),
        mutations: Mapping[str, float] | None = None,
        max_units: int = 2,
        selection: str = "quality",
        higher_is_better: bool = True,
        parsimony: float = 0.002,
        max_nodes: int | None = None,
    ) -> None:
        if parsimony < 0 or parsimony != parsimony:
            raise ValueError(f"parsimony is a quality tolerance >= 0, got {parsimony}")
        if max_nodes is not None and max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1 or None, got {max_nodes}")
        if population_size < 2 or not 1 <= sample_size <= population_size:
            raise ValueError("need population_size >= 2 and 1 <= sample_size <= population_size")
        if selection not in ("quality", "pareto"):
            raise ValueError(f"selection must be 'quality' or 'pareto', got {selection!r}")
        weights = (
            dict(mutations) if mutations is not None else dict.fromkeys(GRAMMAR_MUTATIONS, 1.0)
        )
        unknown = set(weights) - set(MUTATIONS)
        if unknown or not any(w > 0 for w in weights.values()):
            raise ValueError(
                f"mutation weights must name some of {', '.join(MUTATIONS)} with a "
                f"positive weight, got {weights}"
            )
        self.rng = random.Random(seed)
        self.population_size, self.sample_size = population_size, sample_size
        self.weights = {k: float(w) for k, w in weights.items() if w > 0}
        self.max_units, self.selection, self.higher = max_units, selection, higher_is_better
        self.parsimony, self.max_nodes = float(parsimony), max_nodes
        self.warm: deque[Candidate] = deque(_warm(warm_start))
        self.population: deque[tuple[Candidate, EvalResult]] = deque()
        self.seen_ok = 0

    # ------------------------------------------------------------------ interface
    def ask(self) -> Candidate:
        if self.warm:
            return self.warm.popleft()
        if self.seen_ok < self.population_size or len(self.population) < 2:
            return Candidate(random_expr(self.rng, self.max_units), "random")
        parent, presult = self._tournament()
        kinds, w = list(self.weights), list(self.weights.values())
        for _ in range(20):
            kind = self.rng.choices(kinds, w)[0]
            try:
                child = MUTATIONS[kind](parent.expr, self.rng, presult)
            except ExprError:
                child = None
            if child is not None and (self.max_nodes is None or size(child) <= self.max_nodes):
                c = Candidate(child, self._origin(kind, presult), (parent.hash,))
                if c.hash != parent.hash:
                    return c
        return Candidate(random_expr(self.rng, self.max_units), "random")

    def tell(self, candidate: Candidate, result: EvalResult) -> None:
        if candidate.level != 0 or not result.ok:
            return
        self.seen_ok += 1
        self.population.append((candidate, result))
        while len(self.population) > self.population_size:
            self.population.popleft()  # the oldest dies

    # ------------------------------------------------------------------ helpers
    def _origin(self, kind: str, presult: EvalResult) -> str:
        if kind == "eafo":
            return "eafo:measured" if "density" in presult.extra else "eafo:gaussian"
        return f"mutate:{kind}"

    def _fitness(self, r: EvalResult) -> float:
        return r.quality if self.higher else -r.quality

    def _tournament(self) -> tuple[Candidate, EvalResult]:
        k = min(self.sample_size, len(self.population))
        sample = self.rng.sample(list(self.population), k)
        if self.selection == "pareto":
            ranks = pareto_ranks([(self._fitness(r), r.cost) for _, r in sample], (True, False))
            i = min(range(k), key=lambda j: (ranks[j], -self._fitness(sample[j][1])))
            return sample[i]
        top = max(self._fitness(r) for _, r in sample)
        tied = [cr for cr in sample if self._fitness(cr[1]) >= top - self.parsimony]
        return min(tied, key=lambda cr: (size(cr[0].expr), -self._fitness(cr[1])))


class EAFOGuided(RegularizedEvolution):
    """Regularised evolution whose mutations add the EAFO entropy correction half the time.

    The correction is the first-order EAFO step (eafo.md) with a learnable ε: the Gaussian
    form when the parent's pre-activation density is unknown, the measured-distribution form
    when the parent's evaluation recorded one (see :mod:`actlab.search._eafo`).
    """

    def __init__(self, *, eafo_weight: float = 0.5, **kw: object) -> None:
        if not 0.0 < eafo_weight < 1.0:
            raise ValueError(f"eafo_weight must be in (0, 1), got {eafo_weight}")
        share = (1.0 - eafo_weight) / len(GRAMMAR_MUTATIONS)
        weights = {**dict.fromkeys(GRAMMAR_MUTATIONS, share), "eafo": eafo_weight}
        super().__init__(mutations=weights, **kw)  # type: ignore[arg-type]


@STRATEGIES.register(
    "evolution", description="regularised evolution with warm start (tournament, oldest dies)"
)
def _evolution(
    *, seed: int, higher_is_better: bool, form: str | None, sampler: str, **kw: Any
) -> Strategy:
    return RegularizedEvolution(seed=seed, higher_is_better=higher_is_better, **kw)


@STRATEGIES.register(
    "eafo",
    description="evolution with EAFO entropy-correction mutations (Gaussian or measured density)",
    density=True,
)
def _eafo(
    *, seed: int, higher_is_better: bool, form: str | None, sampler: str, **kw: Any
) -> Strategy:
    return EAFOGuided(seed=seed, higher_is_better=higher_is_better, **kw)
