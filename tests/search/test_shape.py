"""Shape checks (EAFO's boundary conditions) on hand-built formulas on both sides of each."""

from __future__ import annotations

import pytest

from actlab.expr.checks import as_module
from actlab.search import Pipeline, ShapeChecks, check_shape
from actlab.search._candidate import as_candidate
from actlab.search._objectives import CurveObjective
from actlab.search._pipeline import evaluate_candidate

ISSUE = "silu(sigmoid(x) - x) + cube(sigmoid(x * silu(x)) - x) - eps * (x - 0.905)"  # issue 15


def _check(formula: str, **kw: object) -> tuple[bool, str]:
    r = check_shape(as_module(formula), ShapeChecks(**kw))  # type: ignore[arg-type]
    return r.ok, r.reason


@pytest.mark.parametrize(
    "formula", ["relu(x)", "gelu(x)", "x*sigmoid(x)", "relu(x) + 0.01*x*exp(-x**2/2)", "elu"]
)
def test_relu_family_passes_every_default_condition(formula: str) -> None:
    assert _check(formula) == (True, "ok")


@pytest.mark.parametrize(
    ("formula", "exponent"),
    [("x**3", "3.00"), ("-x**3", "3.00"), ("x**2", "2.00"), (ISSUE, "3.00")],
)
def test_growth_faster_than_linear_is_rejected(formula: str, exponent: str) -> None:
    ok, why = _check(formula)
    assert not ok and why.startswith("growth:") and f"x^{exponent}" in why


def test_growth_condition_boundary_and_overflow() -> None:
    assert _check("x", negative="any")[0]  # linear: allowed
    assert _check("tanh(x)")[0]  # bounded above: allowed (at most linear)
    ok, why = _check("x*log(1 + abs(x))", negative="any")  # x log x: faster than linear
    assert not ok and why.startswith("growth:")
    ok, why = _check("exp(x)")
    assert not ok and why.startswith("growth:") and "not finite" in why
    assert _check("x**3", growth=False)[0] is False  # x^3 also grows on the negative side
    assert _check("relu(x)**3", growth=False) == (True, "ok")


def test_negative_side_bounded_linear_or_any() -> None:
    for formula in ("x", "abs(x)", "leaky_relu", "relu(x) - 0.1*x"):
        ok, why = _check(formula)
        assert not ok and why.startswith("negative:") and "bounded needed" in why
        assert _check(formula, negative="linear")[0], formula
    ok, why = _check("relu(x) + relu(-x)**2", negative="linear")
    assert not ok and why.startswith("negative:") and "at most linear" in why
    assert _check("relu(x) + relu(-x)**2", negative="any")[0]


def test_poles_and_flat_gradients_on_the_input_range() -> None:
    ok, why = _check("relu(x) + 0.001/(x - 0.3333)")
    assert not ok and why.startswith("range: pole")
    ok, why = _check("relu(x - 1)")  # flat on 84% of N(0, 1)
    assert not ok and why.startswith("range: flat")
    assert _check("relu(x - 0.5)")[0]  # flat on 69%: below the 75% default
    assert not _check("relu(x - 0.5)", max_flat=0.6)[0]
    ok, why = _check("relu(x) + 0.01*sin(1000*x)")  # slope 10: fine at the default max_slope
    assert ok, why
    assert not _check("relu(x) + 0.01*sin(1000*x)", max_slope=5.0)[0]


def test_monotone_and_sign_of_f0_options() -> None:
    assert _check("gelu(x)")[0] and not _check("gelu(x)", monotone=True)[0]
    assert _check("relu(x)", monotone=True)[0] and _check("softplus(x)", monotone=True)[0]
    ok, why = _check("gelu(x)", monotone=True)
    assert why.startswith("monotone: f decreases")
    assert _check("relu(x)", f0="zero")[0] and not _check("softplus(x)", f0="zero")[0]
    assert _check("softplus(x)", f0="positive")[0] and _check("softplus(x)", f0="nonnegative")[0]
    ok, why = _check("softplus(x) - 1", f0="nonnegative")
    assert not ok and why.startswith("f0:") and "-0.3069" in why


def test_bad_settings_fail_in_one_line() -> None:
    with pytest.raises(ValueError, match="negative must be one of bounded, linear, any"):
        ShapeChecks(negative="up")
    with pytest.raises(ValueError, match="f0 must be one of"):
        ShapeChecks(f0="big")
    with pytest.raises(ValueError, match="max_flat must be in"):
        ShapeChecks(max_flat=2.0)


def test_pipeline_records_the_shape_stage_and_can_turn_it_off() -> None:
    obj = CurveObjective("gelu")
    r = evaluate_candidate(as_candidate(ISSUE), obj, Pipeline(cost=None, proxies=False))
    assert (r.status, r.stage) == ("rejected", "shape") and r.reason.startswith("growth:")
    assert r.units == 0.0
    off = evaluate_candidate(as_candidate(ISSUE), obj, Pipeline(cost=None, shape=None))
    assert off.stage != "shape"
    strict = Pipeline(cost=None, proxies=False, shape=ShapeChecks(monotone=True))
    r = evaluate_candidate(as_candidate("gelu(x)"), obj, strict)
    assert (r.status, r.stage) == ("rejected", "shape") and r.reason.startswith("monotone:")
