"""Canonical form, printing and hashing: property-based round trips over the grammar."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from actlab.expr import (
    Binary,
    Const,
    Expr,
    ExprError,
    Param,
    Unary,
    Var,
    canonical,
    evaluate,
    expr_hash,
    parse,
    random_expr,
    size,
    to_string,
)
from actlab.expr.grammar import random_raw
from actlab.expr.ir import UNARY_OPS, depth, param_names

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GRID = np.linspace(-4.0, 4.0, 81)


def test_hash_is_sha256_of_canonical_string() -> None:
    e = parse("sigmoid(x*1.702)*x")
    assert expr_hash(e) == hashlib.sha256(b"x * sigmoid(1.702 * x)").hexdigest()
    assert expr_hash(parse("x*sigmoid(1.702*x)")) == expr_hash(e)
    assert expr_hash(parse("x*sigmoid(1.7020000001*x)")) == expr_hash(e)  # 9 significant digits
    assert expr_hash(parse("x*sigmoid(1.7021*x)")) != expr_hash(e)


def test_depth_size_and_params() -> None:
    e = parse("x*sigmoid(beta*x) + eps")
    assert to_string(e) == "eps + x * sigmoid(beta * x)"
    assert size(e) == 8 and depth(e) == 5
    assert param_names(e) == ("beta", "eps")
    assert size(Var()) == depth(Var()) == 1


def test_ir_validation() -> None:
    with pytest.raises(ExprError, match="unknown unary op"):
        Unary("eval", Var())
    with pytest.raises(ExprError, match="exponent"):
        Binary("pow", Var(), Var())
    with pytest.raises(ExprError, match="exponent"):
        Binary("pow", Var(), Const(5.0))
    with pytest.raises(ExprError, match="out of range"):
        Const(float("inf"))
    with pytest.raises(ExprError, match="unknown learnable scalar"):
        Param("__class__")
    with pytest.raises(ExprError, match="only variable"):
        Var("y")


def test_folding_out_of_range_raises() -> None:
    with pytest.raises(ExprError, match="allowed range"):
        canonical(Binary("mul", Const(1e6), Binary("mul", Const(1e6), Var())))


def test_division_by_zero_constant_is_kept() -> None:
    e = parse("x/0")
    assert to_string(e) == "x / 0"


@given(rng=st.randoms(use_true_random=False), units=st.integers(1, 4))
@SETTINGS
def test_random_grammar_round_trip(rng: random.Random, units: int) -> None:
    e = random_expr(rng, units)
    text = to_string(e)
    assert canonical(e) == e
    assert parse(text) == e
    assert to_string(parse(text)) == text
    assert expr_hash(parse(text)) == expr_hash(e)


@given(rng=st.randoms(use_true_random=False), units=st.integers(1, 3))
@SETTINGS
def test_raw_grammar_round_trip_and_semantics(rng: random.Random, units: int) -> None:
    raw = random_raw(rng, units)
    assume(len(to_string(raw)) <= 4000)
    assert parse(to_string(raw), canonical=False) == raw
    try:
        c = canonical(raw)
    except ExprError:
        assume(False)
        raise
    assert canonical(c) == c
    assert canonical(parse(to_string(raw), canonical=False)) == c
    a, b = evaluate(raw, GRID), evaluate(c, GRID)
    both = np.isfinite(a) & np.isfinite(b) & (np.abs(a) < 1e6)
    np.testing.assert_allclose(b[both], a[both], rtol=1e-6, atol=1e-6)


_CONSTS = st.sampled_from([0.0, 1.0, -1.0, 2.0, 0.5, -3.0, 1.702, 0.001])
_LEAVES = st.one_of(
    st.just(Var()), st.builds(Const, _CONSTS), st.sampled_from([Param("beta"), Param("eps")])
)


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.builds(Unary, st.sampled_from(UNARY_OPS), children),
        st.builds(
            Binary, st.sampled_from(["add", "sub", "mul", "div", "max", "min"]), children, children
        ),
        st.builds(
            lambda a, p: Binary("pow", a, Const(p)),
            children,
            st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]),
        ),
    )


@given(e=st.recursive(_LEAVES, _extend, max_leaves=12))
@SETTINGS
def test_arbitrary_trees_canonical_fixed_point(e: Expr) -> None:
    # raw trees re-parse exactly except that "-2" is read as the literal Const(-2)
    try:
        c = canonical(e)
    except ExprError:
        assume(False)
        raise
    assert canonical(c) == c
    assert parse(to_string(c)) == c
    assert canonical(parse(to_string(e), canonical=False)) == c
