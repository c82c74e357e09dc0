"""Hostile inputs to the formula API: trees built through Python, not only parsed text.

Each case builds (or passes) something and runs every tree walker on it: printing, parsing
the printed text back, the canonical form and its hash, the float64 reference, the torch
program and the compiled module, pickling and copying. It is classified as

    clear       ValueError (ExprError) with a one-line message naming the problem
    unclear     such an error, but on several lines or without the expected words
    traceback   any other exception (RecursionError, AttributeError, OverflowError, ...)
    silent      no error although the input is not a valid expression
    unbounded   still running after the time limit (SIGALRM)

and the test asserts ``clear``. ``python tests/expr/test_hostile_expr.py`` prints the table.
"""

from __future__ import annotations

import copy
import pickle
import signal
import sys
from collections.abc import Callable

import numpy as np
import pytest

from actlab.expr import (
    Binary,
    Const,
    Expr,
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
from actlab.expr.ir import depth
from actlab.expr.torch_eval import Program

TIME_LIMIT_S = 20


def walk_all(e: Expr) -> None:
    """Every walker of the package, on ``e``."""
    c = canonical(e)
    s = to_string(e)
    parse(s, canonical=False, max_len=10**7, max_depth=10**6)
    expr_hash(e)
    hash(e), e == c, repr(e)  # noqa: B018 - the dataclass walkers
    pickle.loads(pickle.dumps(e))
    copy.deepcopy(e)
    evaluate(e, np.array([0.5, -1.0]))
    Program(c)
    compile_expr(e)
    depth(e), size(e), nodes(e)  # noqa: B018


def _unary_chain(n: int, op: str = "sin") -> Expr:
    e: Expr = Var()
    for _ in range(n):
        e = Unary(op, e)
    return e


def _left_chain(n: int) -> Expr:
    e: Expr = Var()
    for _ in range(n):
        e = Binary("add", e, Param("beta"))
    return e


def _right_chain(n: int) -> Expr:
    e: Expr = Var()
    for _ in range(n):
        e = Binary("sub", Param("eps"), e)
    return e


def _doubling(n: int) -> Expr:
    e: Expr = Var()
    for _ in range(n):
        e = Binary("add", e, e)
    return e


def _balanced_sum(k: int) -> Expr:
    """A sum of k distinct terms as a balanced tree: shallow, but its canonical form is a chain."""
    names = [f"{p}{i}" for p in ("alpha", "beta", "gamma", "delta", "eps") for i in range(1, 100)]
    terms: list[Expr] = [Binary("mul", Param(names[i]), Var()) for i in range(k)]
    while len(terms) > 1:
        terms = [
            Binary("add", terms[i], terms[i + 1]) if i + 1 < len(terms) else terms[i]
            for i in range(0, len(terms), 2)
        ]
    return terms[0]


def _build_and_walk(build: Callable[[], Expr]) -> Callable[[], None]:
    return lambda: walk_all(build())


# (call, words the message must contain)
CASES: dict[str, tuple[Callable[[], object], str]] = {
    "unary-chain-2000": (_build_and_walk(lambda: _unary_chain(2000)), "deep"),
    "neg-chain-2000": (_build_and_walk(lambda: _unary_chain(2000, "neg")), "deep"),
    "left-chain-2000": (_build_and_walk(lambda: _left_chain(2000)), "deep"),
    "right-chain-2000": (_build_and_walk(lambda: _right_chain(2000)), "deep"),
    "unary-chain-600": (_build_and_walk(lambda: _unary_chain(600)), "deep"),
    "shared-subtree-doubling-40": (_build_and_walk(lambda: _doubling(40)), "large"),
    "balanced-sum-of-480-terms": (_build_and_walk(lambda: _balanced_sum(480)), "deep"),
    "unary-arg-not-a-node": (lambda: walk_all(Unary("sin", 5)), "expression"),  # type: ignore[arg-type]
    "binary-arg-is-a-str": (lambda: walk_all(Binary("add", Var(), "x")), "expression"),  # type: ignore[arg-type]
    "binary-arg-is-none": (lambda: walk_all(Binary("mul", None, Var())), "expression"),  # type: ignore[arg-type]
    "const-huge-int": (lambda: walk_all(Const(10**400)), "out of range"),
    "const-nan": (lambda: walk_all(Const(float("nan"))), "out of range"),
    "const-str": (lambda: walk_all(Const("1")), "real number"),  # type: ignore[arg-type]
    "const-bool": (lambda: walk_all(Const(True)), "real number"),
    "const-complex": (lambda: walk_all(Const(1j)), "real number"),  # type: ignore[arg-type]
    "param-not-a-str": (lambda: walk_all(Param(5)), "learnable scalar"),  # type: ignore[arg-type]
    "param-unknown": (lambda: walk_all(Param("os")), "learnable scalar"),
    "var-other-name": (lambda: walk_all(Var("y")), "variable"),
    "unary-op-unknown": (lambda: walk_all(Unary("system", Var())), "unary op"),
    "unary-op-unhashable": (lambda: walk_all(Unary(["sin"], Var())), "unary op"),  # type: ignore[arg-type]
    "binary-op-unknown": (lambda: walk_all(Binary("xor", Var(), Var())), "binary op"),
    "pow-variable-exponent": (lambda: walk_all(Binary("pow", Var(), Var())), "exponent"),
    "pow-huge-exponent": (lambda: walk_all(Binary("pow", Var(), Const(1e5))), "exponent"),
    "to-string-of-int": (lambda: to_string(5), "expression"),  # type: ignore[arg-type]
    "depth-of-str": (lambda: depth("x"), "expression"),  # type: ignore[arg-type]
    "size-of-none": (lambda: size(None), "expression"),  # type: ignore[arg-type]
    "canonical-of-float": (lambda: canonical(1.5), "expression"),  # type: ignore[arg-type]
    "compile-of-list": (lambda: compile_expr([Var()]), "formula"),  # type: ignore[arg-type]
    "parse-deep-text-unbounded": (
        lambda: parse("x" + "+x" * 1500, max_len=10**6, max_depth=10**6),
        "deep",
    ),
    "parse-bytes": (lambda: parse(b"x"), "str"),  # type: ignore[arg-type]
}


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError("time limit")


def classify(call: Callable[[], object], words: str) -> str:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_LIMIT_S)
    try:
        call()
    except TimeoutError:
        return "unbounded"
    except ValueError as e:
        msg = str(e)
        ok = msg and "\n" not in msg.strip() and words.lower() in msg.lower()
        return "clear" if ok else f"unclear: {msg[:200]!r}"
    except Exception as e:  # noqa: BLE001 - the census counts exactly these
        return f"traceback: {type(e).__name__}: {str(e)[:160]}"
    else:
        return "silent"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return "silent"


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_hostile_formula_api(case_id: str) -> None:
    call, words = CASES[case_id]
    assert classify(call, words) == "clear", case_id


if __name__ == "__main__":
    from collections import Counter

    counts: Counter[str] = Counter()
    for case_id in sorted(CASES):
        result = classify(*CASES[case_id])
        counts[result.split(":")[0]] += 1
        print(f"{case_id:32s} {result}", flush=True)
    print(dict(counts), "of", len(CASES))
    sys.exit(0)
