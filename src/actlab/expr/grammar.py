"""Random expressions of the Swish grammar and mutation operators for evolution.

A core unit is ``b(u1(in1), u2(in2))`` (Ramachandran, Zoph & Le 2017): ``u1``, ``u2`` from
:data:`UNARY_UNITS`, ``b`` from :data:`BINARY_UNITS`. Units are chained: the first unit reads
x, unit k reads unit k-1's output and x or any earlier output. Every learnable scalar in a
generated expression is the one shared ``beta`` (init 1).

    rng = random.Random(0)
    e = random_expr(rng, max_depth=2)     # 1..2 chained units, canonical
    child = mutate(e, rng)                # change an op / insert or delete a unit / a constant

All functions return canonical expressions that depend on x and satisfy the IR's size and
depth bounds and the parser's length bound (so they always re-parse); :func:`mutate` always returns
an expression with a different hash.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from actlab.expr.canonical import canonical, round_const
from actlab.expr.ir import (
    BINARY_OPS,
    MAX_DEPTH,
    MAX_POW,
    MAX_SIZE,
    UNARY_OPS,
    Binary,
    Const,
    Expr,
    ExprError,
    Param,
    Unary,
    Var,
    children,
    depth,
    has_var,
    size,
    to_string,
)
from actlab.expr.parser import MAX_LEN

__all__ = [
    "BINARY_UNITS",
    "MUTATIONS",
    "UNARY_UNITS",
    "delete_unit",
    "insert_unit",
    "mutate",
    "mutate_const",
    "mutate_op",
    "nodes",
    "random_expr",
    "replace_at",
]

Path = tuple[int, ...]
DIV_EPS = 1e-3
_B = Param("beta")


def _u(op: str) -> Callable[[Expr], Expr]:
    return lambda u: Unary(op, u)


UNARY_UNITS: dict[str, Callable[[Expr], Expr]] = {
    "x": lambda u: u,
    "-x": _u("neg"),
    "beta*x": lambda u: Binary("mul", _B, u),
    "x+beta": lambda u: Binary("add", u, _B),
    "min(x,0)": lambda u: Binary("min", u, Const(0.0)),
    "beta": lambda u: _B,
    **{op: _u(op) for op in UNARY_OPS if op != "neg"},
}

BINARY_UNITS: dict[str, Callable[[Expr, Expr], Expr]] = {
    "x1+x2": lambda a, b: Binary("add", a, b),
    "x1*x2": lambda a, b: Binary("mul", a, b),
    "x1-x2": lambda a, b: Binary("sub", a, b),
    "x1/(x2+eps)": lambda a, b: Binary("div", a, Binary("add", b, Const(DIV_EPS))),
    "max(x1,x2)": lambda a, b: Binary("max", a, b),
    "min(x1,x2)": lambda a, b: Binary("min", a, b),
    "sigmoid(x1)*x2": lambda a, b: Binary("mul", Unary("sigmoid", a), b),
    "exp(-beta*(x1-x2)^2)": lambda a, b: Unary(
        "exp", Unary("neg", Binary("mul", _B, Unary("square", Binary("sub", a, b))))
    ),
    "exp(-beta*|x1-x2|)": lambda a, b: Unary(
        "exp", Unary("neg", Binary("mul", _B, Unary("abs", Binary("sub", a, b))))
    ),
    "beta*x1+(1-beta)*x2": lambda a, b: Binary(
        "add", Binary("mul", _B, a), Binary("mul", Binary("sub", Const(1.0), _B), b)
    ),
}


def _unit(rng: random.Random, a: Expr, b: Expr) -> Expr:
    u1 = UNARY_UNITS[rng.choice(list(UNARY_UNITS))]
    u2 = UNARY_UNITS[rng.choice(list(UNARY_UNITS))]
    return BINARY_UNITS[rng.choice(list(BINARY_UNITS))](u1(a), u2(b))


def _valid(e: Expr) -> bool:
    return (
        has_var(e)
        and depth(e) <= MAX_DEPTH
        and size(e) <= MAX_SIZE
        and len(to_string(e)) <= MAX_LEN
    )


def _finish(e: Expr) -> Expr | None:
    """Canonical form of ``e`` if it is a usable expression, else None."""
    try:
        c = canonical(e)
    except (ExprError, RecursionError):
        return None
    return c if _valid(c) else None


def random_raw(rng: random.Random, max_depth: int = 2) -> Expr:
    """One random chain of 1..``max_depth`` core units, not canonicalised (may be degenerate)."""
    if max_depth < 1:
        raise ValueError("max_depth (the number of chained units) must be >= 1")
    outputs: list[Expr] = [Var()]
    for _ in range(rng.randint(1, max_depth)):
        a, b = outputs[-1], rng.choice(outputs)
        if rng.random() < 0.5:
            a, b = b, a
        outputs.append(_unit(rng, a, b))
    return outputs[-1]


def random_expr(rng: random.Random, max_depth: int = 2, *, tries: int = 1000) -> Expr:
    """A random canonical grammar expression of 1..``max_depth`` chained core units.

    Draws that collapse to no dependence on x (e.g. ``x - x``), fold out of range or exceed
    the size bounds are re-drawn; raises :class:`ExprError` after ``tries`` failures.
    """
    for _ in range(tries):
        e = _finish(random_raw(rng, max_depth))
        if e is not None:
            return e
    raise ExprError(f"no valid random expression in {tries} draws (max_depth={max_depth})")


# ---------------------------------------------------------------- tree addressing
def nodes(e: Expr, path: Path = ()) -> list[tuple[Path, Expr]]:
    """All (path, node) pairs in pre-order; a path is the child indices from the root."""
    out = [(path, e)]
    for i, k in enumerate(children(e)):
        out.extend(nodes(k, (*path, i)))
    return out


def replace_at(e: Expr, path: Path, new: Expr) -> Expr:
    """``e`` with the node at ``path`` replaced by ``new``."""
    if not path:
        return new
    i, rest = path[0], path[1:]
    if isinstance(e, Unary) and i == 0:
        return Unary(e.op, replace_at(e.arg, rest, new))
    if isinstance(e, Binary) and i in (0, 1):
        if i == 0:
            return Binary(e.op, replace_at(e.a, rest, new), e.b)
        return Binary(e.op, e.a, replace_at(e.b, rest, new))
    raise ExprError(f"path {path} does not address a node")


# ---------------------------------------------------------------- mutations
_SWAPPABLE_BINARY = tuple(op for op in BINARY_OPS if op != "pow")


def _sites(e: Expr) -> list[tuple[Path, Expr]]:
    """Nodes that may be replaced by any expression (not the constant exponent of a power)."""
    exponents = {(*p, 1) for p, n in nodes(e) if isinstance(n, Binary) and n.op == "pow"}
    return [(p, n) for p, n in nodes(e) if p not in exponents]


def _operands(n: Expr) -> tuple[Expr, ...]:
    return (n.a,) if isinstance(n, Binary) and n.op == "pow" else children(n)


def mutate_op(e: Expr, rng: random.Random) -> Expr | None:
    """Change one operator to another of the same arity (or a power's exponent)."""
    sites = [(p, n) for p, n in _sites(e) if isinstance(n, (Unary, Binary))]
    if not sites:
        return None
    path, node = rng.choice(sites)
    if isinstance(node, Unary):
        new: Expr = Unary(rng.choice([op for op in UNARY_OPS if op != node.op]), node.arg)
    elif node.op == "pow":
        p = rng.choice([-2.0, -0.5, 0.5, 1.5, 2.0, 3.0, 4.0])
        new = Binary("pow", node.a, Const(p))
    else:
        new = Binary(rng.choice([op for op in _SWAPPABLE_BINARY if op != node.op]), node.a, node.b)
    return _finish(replace_at(e, path, new))


def insert_unit(e: Expr, rng: random.Random) -> Expr | None:
    """Wrap one sub-expression t in a new core unit b(u1(t), u2(x or t))."""
    path, node = rng.choice(_sites(e))
    other = rng.choice([Var(), node])
    a, b = (node, other) if rng.random() < 0.5 else (other, node)
    return _finish(replace_at(e, path, _unit(rng, a, b)))


def delete_unit(e: Expr, rng: random.Random) -> Expr | None:
    """Replace one operator node by one of its operands."""
    sites = [(p, n) for p, n in _sites(e) if children(n)]
    if not sites:
        return None
    path, node = rng.choice(sites)
    return _finish(replace_at(e, path, rng.choice(_operands(node))))


def mutate_const(e: Expr, rng: random.Random) -> Expr | None:
    """Perturb one numeric constant (log-normal scale, occasional sign flip or nudge)."""
    sites = [(p, n) for p, n in nodes(e) if isinstance(n, Const)]
    if not sites:
        return None
    path, node = rng.choice(sites)
    v = node.value
    if v == 0.0 or rng.random() < 0.2:
        v = v + rng.gauss(0.0, 0.5)
    else:
        v = v * math.exp(rng.gauss(0.0, 0.3)) * (-1.0 if rng.random() < 0.1 else 1.0)
    if path:
        parent = dict(nodes(e))[path[:-1]]
        if isinstance(parent, Binary) and parent.op == "pow":
            v = max(-MAX_POW, min(MAX_POW, v))
    try:
        v = round_const(v)
    except ExprError:
        return None
    return _finish(replace_at(e, path, Const(v)))


MUTATIONS: dict[str, Callable[[Expr, random.Random], Expr | None]] = {
    "op": mutate_op,
    "insert": insert_unit,
    "delete": delete_unit,
    "const": mutate_const,
}


def mutate(
    e: Expr, rng: random.Random, *, kinds: tuple[str, ...] = tuple(MUTATIONS), tries: int = 100
) -> Expr:
    """A random mutation of ``e`` (one of ``kinds``) with a different canonical form."""
    unknown = set(kinds) - set(MUTATIONS)
    if unknown or not kinds:
        raise ValueError(f"mutation kinds must be among {', '.join(MUTATIONS)}, got {kinds}")
    base = canonical(e)
    for _ in range(tries):
        child = MUTATIONS[rng.choice(kinds)](base, rng)
        if child is not None and child != base:
            return child
    raise ExprError(f"no valid mutation of the expression in {tries} tries")
