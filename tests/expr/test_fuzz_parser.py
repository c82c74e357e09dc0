"""Property-based fuzzing of the formula parser and the tree bounds.

Random text (arbitrary unicode, and token soup over the language's own alphabet) must give
either an expression or :class:`ExprError`, never another exception; what parses prints and
is a canonical fixed point. Trees at the bounds work in every walker even when called from
deep in the stack; one node past a bound is an ExprError, whether built through the API or
reached by the canonical form.
"""

from __future__ import annotations

import copy
import pickle
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
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
    compile_expr,
    evaluate,
    expr_hash,
    parse,
    size,
    to_string,
)
from actlab.expr.grammar import nodes
from actlab.expr.ir import MAX_TREE_DEPTH, MAX_TREE_SIZE, depth
from actlab.expr.torch_eval import Program

FUZZ = settings(
    derandomize=True,
    database=None,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TIME_CAP_S = 15.0

_TOKENS = [
    "x", "x", "beta", "eps", "alpha2", "pi", "1", "0", "2.5", "1e6", "1e7", "1e-300", "0x10",
    "+", "-", "*", "/", "**", "//", "%", "@", "(", ")", ",", " ", "sigmoid", "exp", "log",
    "max", "min", "sqrt", "pow", "sinc", "relu", "gelu", "abs", "lambda", ":", ".", "[", "]",
    "'a'", "j", "1j", "__import__", "os", "=", "==", "if", "else", "not", "...", "\x00", "\n",
    "β", "θ", "𝑥", "\u00b2", "\\", "#", ";",
]  # fmt: skip


def _guarded(text: str) -> Expr | None:
    try:
        e = parse(text)
    except ExprError as err:
        assert "\n" not in str(err).strip() or "\n" in text, str(err)
        return None
    assert isinstance(e, (Var, Const, Param, Unary, Binary))
    s = to_string(e)
    assert canonical(e) == e  # parse returns the canonical form, a fixed point
    assert isinstance(s, str) and expr_hash(e)
    return e


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, None  # type: tuple[float, float | None]

    def spent(self) -> bool:
        now = time.monotonic()
        if self.start is None:
            self.start = now
        return now - self.start > self.seconds


_text_budget = _Budget(TIME_CAP_S)
_soup_budget = _Budget(TIME_CAP_S)


@FUZZ
@given(st.text(max_size=120))
def test_fuzz_random_text(text: str) -> None:
    if _text_budget.spent():
        return
    _guarded(text)


@FUZZ
@given(st.lists(st.sampled_from(_TOKENS), max_size=40))
def test_fuzz_token_soup(tokens: list[str]) -> None:
    if _soup_budget.spent():
        return
    _guarded("".join(tokens))


def test_fuzzers_reach_both_outcomes() -> None:
    assert _guarded("x*sigmoid(1.702*x)") is not None
    assert _guarded("x*(") is None and _guarded("__import__('os')") is None


# ---------------------------------------------------------------- bounds, through the API
def _chain(n: int, step: Callable[[Expr], Expr]) -> Expr:
    e: Expr = Var()
    for _ in range(n):
        e = step(e)
    return e


_AT_BOUND: dict[str, Callable[[], Expr]] = {
    "unary": lambda: _chain(MAX_TREE_DEPTH - 1, lambda e: Unary("sin", e)),
    "neg": lambda: _chain(MAX_TREE_DEPTH - 1, lambda e: Unary("neg", e)),
    "left": lambda: _chain(MAX_TREE_DEPTH - 1, lambda e: Binary("add", e, Param("beta"))),
    "right": lambda: _chain(MAX_TREE_DEPTH - 1, lambda e: Binary("sub", Param("eps"), e)),
    "pow": lambda: _chain(MAX_TREE_DEPTH - 1, lambda e: Binary("pow", e, Const(1.0001))),
    "max": lambda: _chain(MAX_TREE_DEPTH - 2, lambda e: Binary("max", e, Unary("tanh", Var()))),
    "shared": lambda: _chain(10, lambda e: Binary("add", Unary("sin", e), Unary("cos", e))),
}


def _deep_stack(frames: int, f: Callable[[], Any]) -> Any:
    return f() if frames == 0 else _deep_stack(frames - 1, f)


@pytest.mark.parametrize("shape", sorted(_AT_BOUND))
def test_every_walker_works_at_the_bounds_from_a_deep_stack(shape: str) -> None:
    e = _AT_BOUND[shape]()
    assert depth(e) <= MAX_TREE_DEPTH and size(e) <= MAX_TREE_SIZE
    assert shape != "shared" or size(e) == 4 * 2**10 - 3  # 4093 nodes, 21 of them distinct

    def walk() -> None:
        s = to_string(e)
        if size(e) <= 256:
            assert parse(s, canonical=False, max_depth=MAX_TREE_DEPTH, max_len=10**6) == e
        c = canonical(e)
        assert canonical(c) == c
        assert hash(e) == hash(copy.deepcopy(e)) and pickle.loads(pickle.dumps(e)) == e
        assert len(nodes(e)) == size(e)
        evaluate(e, np.array([0.5, -0.25]))
        Program(c)
        if size(c) <= 512:
            compile_expr(e)

    _deep_stack(250, walk)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Unary("sin", _AT_BOUND["unary"]()), "nested too deeply: depth 129"),
        (lambda: Binary("add", _AT_BOUND["left"](), Var()), "nested too deeply"),
        (lambda: Binary("add", _AT_BOUND["shared"](), _AT_BOUND["shared"]()), "too large: 8187"),
        (lambda: _chain(12, lambda e: Binary("mul", e, e)), "too large: 8191 nodes"),
    ],
)
def test_one_node_past_a_bound_is_refused(build: Callable[[], Expr], match: str) -> None:
    with pytest.raises(ExprError, match=match):
        build()


def test_canonical_form_past_the_bound_is_refused() -> None:
    """A shallow balanced sum of 200 distinct terms canonicalises to a chain of depth ~200."""
    names = [f"{p}{i}" for p in ("alpha", "beta", "gamma") for i in range(1, 68)][:200]
    terms: list[Expr] = [Binary("mul", Param(n), Var()) for n in names]
    while len(terms) > 1:
        pairs: list[Expr] = [
            Binary("add", terms[i], terms[i + 1]) if i + 1 < len(terms) else terms[i]
            for i in range(0, len(terms), 2)
        ]
        terms = pairs
    assert depth(terms[0]) <= 10
    with pytest.raises(ExprError, match="nested too deeply"):
        canonical(terms[0])
