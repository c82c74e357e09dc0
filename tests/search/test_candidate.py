"""Candidates hash by canonical form, round-trip through trial attributes; budgets parse."""

from __future__ import annotations

import math

import pytest

from actlab.expr import parse
from actlab.search import WARM_START, Budget, Candidate, EvalResult, parse_budget
from actlab.search._candidate import as_candidate


def test_equal_functions_written_differently_share_a_hash() -> None:
    a = as_candidate("x*sigmoid(1.702*x)")
    b = as_candidate("sigmoid(x*1.702) * x")
    assert a.hash == b.hash and a.key == b.key and a.formula == b.formula
    assert a.promoted(1).key == (a.hash, 1) and a.promoted(1).parents == (a.hash,)
    assert a.spec.startswith('expr(formula="')


def test_attrs_round_trip() -> None:
    c = Candidate(parse("relu(x) + eps*x*exp(-x**2/2)"), "mutate:op", ("ab",), 2, {"cost": 1.5})
    back = Candidate.from_attrs(c.to_attrs())
    assert back == c and back.meta == {"cost": 1.5} and back.hash == c.hash
    r = EvalResult("ok", "done", "ok", quality=0.9, cost=math.nan, units=1.0, proxies={"e": 1.0})
    r2 = EvalResult.from_attrs(r.to_attrs())
    assert r2.ok and r2.quality == 0.9 and math.isnan(r2.cost) and r2.proxies == {"e": 1.0}
    assert not EvalResult.rejected("cost", "slow").ok


def test_warm_start_formulas_parse() -> None:
    for formula in WARM_START.values():
        parse(formula)


@pytest.mark.parametrize(
    ("text", "units", "seconds"),
    [
        ("200", 200.0, None),
        (50, 50.0, None),
        ("90s", None, 90.0),
        ("10m", None, 600.0),
        ("1h30m", None, 5400.0),
        ("2.5h", None, 9000.0),
    ],
)
def test_parse_budget(text: str | int, units: float | None, seconds: float | None) -> None:
    b = parse_budget(text)
    assert (b.units, b.seconds) == (units, seconds)


@pytest.mark.parametrize("bad", ["", "ten", "10x", "-5", "0"])
def test_bad_budgets_say_what_to_write(bad: str) -> None:
    with pytest.raises(ValueError, match="budget"):
        parse_budget(bad)


def test_budget_exhaustion() -> None:
    b = Budget(units=10, seconds=60)
    assert not b.exhausted(9.5, 10) and b.exhausted(10, 0) and b.exhausted(0, 61)
