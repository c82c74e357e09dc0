"""Random grammar expressions and the mutation operators used by evolution."""

from __future__ import annotations

import random

import pytest

from actlab.expr import ExprError, Var, canonical, mutate, parse, random_expr, size, to_string
from actlab.expr.grammar import (
    BINARY_UNITS,
    MUTATIONS,
    UNARY_UNITS,
    delete_unit,
    insert_unit,
    mutate_const,
    mutate_op,
    nodes,
    replace_at,
)
from actlab.expr.ir import MAX_DEPTH, MAX_SIZE, depth, has_var


def test_swish_search_space_is_covered() -> None:
    assert len(UNARY_UNITS) == 27  # the 25 unary units of the Swish space, plus gelu and silu
    assert len(BINARY_UNITS) == 10
    for name in ("sinc", "gauss", "min(x,0)", "beta", "x+beta", "gelu", "silu"):
        assert name in UNARY_UNITS
    assert "exp(-beta*(x1-x2)^2)" in BINARY_UNITS


def test_random_expr_is_deterministic_and_valid() -> None:
    a = [to_string(random_expr(random.Random(7), 3)) for _ in range(2)]
    assert a[0] == a[1]
    rng = random.Random(1)
    for _ in range(200):
        e = random_expr(rng, 3)
        assert canonical(e) == e and has_var(e)
        assert depth(e) <= MAX_DEPTH and size(e) <= MAX_SIZE
    with pytest.raises(ValueError, match="max_depth"):
        random_expr(rng, 0)


def test_nodes_and_replace_at() -> None:
    e = parse("x*sigmoid(beta*x)")
    paths = dict(nodes(e))
    assert paths[()] == e and paths[(1, 0, 1)] == Var()
    assert to_string(replace_at(e, (1,), parse("tanh(x)"))) == "x * tanh(x)"
    with pytest.raises(ExprError, match="path"):
        replace_at(e, (0, 0), Var())


@pytest.mark.parametrize("kind", list(MUTATIONS))
def test_each_mutation_gives_valid_canonical_children(kind: str) -> None:
    rng = random.Random(3)
    produced = 0
    for _ in range(60):
        parent = random_expr(rng, 2)
        child = MUTATIONS[kind](parent, rng)
        if child is None:
            continue
        produced += 1
        assert canonical(child) == child and has_var(child)
        assert parse(to_string(child)) == child
    assert produced > 10


def test_specific_mutations() -> None:
    rng = random.Random(0)
    e = parse("x*sigmoid(1.702*x)")
    consts = {to_string(mutate_const(e, rng) or e) for _ in range(20)}
    assert len(consts) > 5 and all("sigmoid(" in s for s in consts)
    assert mutate_const(parse("x*sigmoid(x)"), rng) is None  # no constant to change
    ops = {to_string(mutate_op(e, rng) or e) for _ in range(30)}
    assert len(ops) > 5
    grown = insert_unit(e, rng)
    assert grown is not None and size(grown) > 1
    shrunk = delete_unit(parse("x*sigmoid(x) + tanh(x)"), rng)
    assert shrunk is not None and size(shrunk) < 7
    assert delete_unit(parse("x"), rng) is None
    powered = parse("x**1.5 + x")
    for _ in range(20):  # the constant exponent of a power stays a small constant
        child = mutate(powered, rng)
        assert parse(to_string(child)) == child


def test_mutate_always_changes_the_hash() -> None:
    rng = random.Random(5)
    e = random_expr(rng, 2)
    seen = {to_string(e)}
    for _ in range(50):
        child = mutate(e, rng)
        assert child != e
        seen.add(to_string(child))
        e = child
    assert len(seen) > 30
    with pytest.raises(ValueError, match="mutation kinds"):
        mutate(e, rng, kinds=("teleport",))
