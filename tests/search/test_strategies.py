"""Each strategy on a toy objective (curve matching, no training)."""

from __future__ import annotations

import statistics

import pytest
from search_helpers import drive

from actlab.expr import parse
from actlab.search import Candidate, CurveObjective, EvalResult, Funnel, Strategy, make_strategy
from actlab.search._bo import ConstantsBO
from actlab.search._evolution import EAFOGuided, RegularizedEvolution
from actlab.search._strategy import RandomSearch


def _ok(q: float, **extra: object) -> EvalResult:
    return EvalResult("ok", "done", quality=q, units=1.0, extra=dict(extra))


def test_random_search_samples_valid_grammar_expressions() -> None:
    rs = RandomSearch(seed=1, max_units=2)
    cands = [rs.ask() for _ in range(50)]
    assert isinstance(rs, Strategy)
    assert all(c.origin == "random" and "x" in c.formula for c in cands)
    assert len({c.hash for c in cands}) > 40
    again = RandomSearch(seed=1, max_units=2)
    assert [c.hash for c in cands] == [again.ask().hash for _ in range(50)]


def test_evolution_beats_random_at_equal_budget() -> None:
    """Without warm start, so the test measures selection + mutation, not the seed list."""
    obj = CurveObjective("softplus(x) - 0.5*tanh(x)")
    seeds = range(6)
    evo = [
        drive(
            RegularizedEvolution(seed=s, warm_start=(), population_size=16, sample_size=4), obj, 200
        )
        for s in seeds
    ]
    rnd = [drive(RandomSearch(seed=s), obj, 200) for s in seeds]
    assert statistics.median(evo) > statistics.median(rnd), (evo, rnd)


def test_evolution_warm_starts_then_ages_out_the_oldest() -> None:
    ev = RegularizedEvolution(seed=0, population_size=3, sample_size=2)
    warm = [ev.ask() for _ in range(4)]
    assert [c.origin for c in warm] == ["warm:relu", "warm:gelu", "warm:swish", "warm:crrelu"]
    assert warm[1].formula == "gelu(x)"
    for i, c in enumerate(warm):
        ev.tell(c, _ok(0.1 * i))
    ev.tell(Candidate(parse("tanh(x)")), EvalResult.rejected("checks", "bad"))  # never joins
    assert [c.origin for c, _ in ev.population] == ["warm:gelu", "warm:swish", "warm:crrelu"]
    child = ev.ask()
    assert child.origin.startswith("mutate:") and len(child.parents) == 1
    assert child.parents[0] in {c.hash for c, _ in ev.population}


def test_pareto_selection_prefers_cheap_equals() -> None:
    ev = RegularizedEvolution(
        seed=0, population_size=2, sample_size=2, warm_start=(), selection="pareto"
    )
    fast, slow = Candidate(parse("relu(x)")), Candidate(parse("gelu(x)"))
    ev.tell(fast, EvalResult("ok", "done", quality=0.9, cost=1.0))
    ev.tell(slow, EvalResult("ok", "done", quality=0.9, cost=5.0))
    assert all(ev.ask().parents == (fast.hash,) for _ in range(10))


def test_parsimony_breaks_near_ties_towards_the_smaller_formula() -> None:
    small, big = Candidate(parse("relu(x)")), Candidate(parse("relu(x) + 0.1*sin(x)*tanh(x)"))
    for tol, parent in ((0.01, small), (0.0, big)):
        ev = RegularizedEvolution(
            seed=0, population_size=2, sample_size=2, warm_start=(), parsimony=tol
        )
        ev.tell(big, _ok(0.905))
        ev.tell(small, _ok(0.900))
        assert all(ev.ask().parents == (parent.hash,) for _ in range(10)), tol
    ev = RegularizedEvolution(
        seed=0, population_size=2, sample_size=2, warm_start=(), parsimony=0.001
    )
    ev.tell(big, _ok(0.95))
    ev.tell(small, _ok(0.90))
    assert all(ev.ask().parents == (big.hash,) for _ in range(10))  # a real gap still wins
    with pytest.raises(ValueError, match="parsimony"):
        RegularizedEvolution(parsimony=-1.0)


def test_evolution_children_respect_max_nodes() -> None:
    from actlab.expr import size

    ev = RegularizedEvolution(seed=3, population_size=2, sample_size=2, warm_start=(), max_nodes=12)
    ev.tell(Candidate(parse("x*sigmoid(x) + tanh(x)")), _ok(0.9))
    ev.tell(Candidate(parse("relu(x) + sin(x)")), _ok(0.8))
    kids = [ev.ask() for _ in range(200)]
    assert all(size(k.expr) <= 12 for k in kids)
    assert sum(k.origin.startswith("mutate:") for k in kids) > 150


def test_eafo_guided_uses_gaussian_then_measured_density() -> None:
    ev = EAFOGuided(seed=0, population_size=2, sample_size=1, warm_start=(), eafo_weight=0.99)
    relu = Candidate(parse("relu(x)"))
    ev.tell(relu, _ok(0.9))
    ev.tell(relu, _ok(0.9))
    kids = [ev.ask() for _ in range(20)]
    eafo = [k for k in kids if k.origin.startswith("eafo")]
    assert eafo and all(k.origin == "eafo:gaussian" for k in eafo)
    assert "relu(x) - eps * x * exp(-0.5 * square(x))" in {k.formula for k in eafo}
    import numpy as np

    xs = np.linspace(-5.9, 5.9, 60)
    dens = {
        "lo": -6.0,
        "hi": 6.0,
        "p": list(np.exp(-0.5 * ((xs - 1) / 2) ** 2) / (2 * np.sqrt(2 * np.pi))),
    }
    ev2 = EAFOGuided(seed=0, population_size=2, sample_size=1, warm_start=(), eafo_weight=0.99)
    ev2.tell(relu, _ok(0.9, density=dens))
    ev2.tell(relu, _ok(0.9, density=dens))
    kids2 = [k for k in (ev2.ask() for _ in range(20)) if k.origin.startswith("eafo")]
    assert kids2 and all(k.origin == "eafo:measured" for k in kids2)
    assert all("square(0.51 * x - 0.49)" in k.formula for k in kids2), kids2  # z ~ (x - 1) / 2


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_bo_recovers_a_known_constant(sampler: str) -> None:
    obj = CurveObjective("x*sigmoid(1.702*x)")
    n = 40 if sampler == "tpe" else 14
    bo = ConstantsBO(
        "x*sigmoid(2*x)",
        ranges={"c0": (0.2, 4.0)},
        sampler=sampler,
        seed=2,
        n_startup_trials=8 if sampler == "tpe" else 5,
    )
    drive(bo, obj, n)
    assert abs(bo.study.best_params["c0"] - 1.702) < (0.05 if sampler == "gp" else 0.1)
    assert len(bo.study.trials) >= n


def test_bo_rebuilds_its_sampler_from_replayed_results() -> None:
    first = ConstantsBO("x*sigmoid(2*x)", seed=0)
    c = first.ask()
    second = ConstantsBO("x*sigmoid(2*x)", seed=0)
    second.tell(c, _ok(-0.5))  # a result it never asked for (resume)
    assert len(second.study.trials) == 1 and second.study.best_value == -0.5
    with pytest.raises(ValueError, match="no numeric constant"):
        ConstantsBO("relu(x)")
    with pytest.raises(ValueError, match="unknown constants"):
        ConstantsBO("x*sigmoid(2*x)", ranges={"c9": (0, 1)})


def test_funnel_promotes_by_the_asha_rule_once() -> None:
    import numpy as np

    inner = RandomSearch(seed=0)
    fun = Funnel(inner, levels=3, keep=0.25, min_seen=4)
    cands = [fun.ask() for _ in range(12)]
    assert all(c.level == 0 for c in cands)
    quality = [3.0, 9.0, 1.0, 6.0, 0.0, 5.0, 11.0, 2.0, 4.0, 10.0, 7.0, 8.0]
    expected: list[str] = []
    for i, (c, q) in enumerate(zip(cands, quality)):
        fun.tell(c, EvalResult("ok", "done", quality=q, cost=1.0 + q, units=1.0))
        seen = quality[: i + 1]
        if len(seen) >= 4:  # rule: top 25% of the level's results so far, each promoted once
            t = np.quantile(seen, 0.75)
            expected += [
                cands[j].hash
                for j in np.argsort(seen)[::-1]
                if seen[j] >= t and cands[j].hash not in expected
            ]
    promoted = list(fun.queue)
    assert [p.hash for p in promoted] == expected
    assert cands[4].hash not in expected and cands[6].hash in expected  # worst never, best yes
    assert len(expected) <= 6
    assert {p.level for p in promoted} == {1} and {p.origin for p in promoted} == {"funnel"}
    assert (
        promoted[0].meta["cost"]
        == 1.0 + quality[cands.index(next(c for c in cands if c.hash == promoted[0].hash))]
    )
    for _ in promoted:
        assert fun.ask().level == 1
    assert fun.ask().level == 0  # queue empty again: back to the inner strategy
    assert inner.told == 12  # the inner strategy only hears level 0


def test_funnel_replay_does_not_promote_twice() -> None:
    fun = Funnel(RandomSearch(seed=0), levels=2, keep=0.5, min_seen=2)
    a, b = Candidate(parse("relu(x)")), Candidate(parse("gelu(x)"))
    fun.tell(a.promoted(1), _ok(0.95))  # replayed level-1 result first
    fun.tell(a, _ok(0.9))
    fun.tell(b, _ok(0.1))
    assert all(c.key != a.promoted(1).key for c in fun.queue)


def test_make_strategy_names() -> None:
    assert isinstance(make_strategy("random"), RandomSearch)
    assert isinstance(make_strategy("eafo"), EAFOGuided)
    assert isinstance(make_strategy("evolution", levels=2), Funnel)
    with pytest.raises(ValueError, match="--form"):
        make_strategy("bo")
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("ppo")
