"""Canonical form and stable hash of an expression.

The canonical form is a fixed point (``canonical(canonical(e)) == canonical(e)``) and is
what :func:`actlab.expr.parse` returns, so that duplicates are recognised by hash:

- constants are folded (with the same float64 semantics as the reference interpreter) and
  rounded to 9 significant digits; magnitudes below 1e-12 become 0;
- sums are flattened into terms with coefficients: like terms merge (``x - x -> 0``,
  ``x + 2*x -> 3*x``), constant factors distribute over sums, terms are sorted;
- products are flattened, constants and signs collected in front, factors sorted;
- max/min chains are flattened, deduplicated and sorted; ``max(u, 0) -> relu(u)``;
- division by a constant becomes a product; signs move out of numerator and denominator;
- even functions drop a sign (``cos(-u) -> cos(u)``), odd ones pull it out;
- small identities: ``u**0 -> 1``, ``u**1 -> u``, ``u**2 -> square(u)``, ``u**3 -> cube(u)``,
  ``u**0.5 -> sqrt(u)``, ``u**-1 -> 1/u``, ``exp(-u²) -> gauss(u)``, ``abs(abs u)``,
  ``relu(relu u)``.

Folding that leaves the allowed range (|c| <= 1e6, finite) raises :class:`ExprError`.
The hash is the sha256 of the canonical formula string.
"""

from __future__ import annotations

import hashlib
import math

from actlab.expr.ir import (
    MAX_CONST,
    Binary,
    Const,
    Expr,
    ExprError,
    Param,
    Unary,
    Var,
    size,
    to_string,
)
from actlab.expr.reference import fold_binary, fold_unary

__all__ = ["canonical", "expr_hash", "round_const"]

SIG_DIGITS = 9
ZERO_BELOW = 1e-12

_EVEN = frozenset({"abs", "square", "cos", "cosh", "gauss", "sinc", "sqrt", "log"})
_NONNEG = frozenset({"square", "gauss", "exp", "cosh", "sqrt", "relu", "sigmoid", "softplus"})
_ODD = frozenset({"sin", "sinh", "tanh", "asinh", "atan", "erf", "cube"})


def round_const(v: float) -> float:
    """``v`` rounded to the canonical precision; raises if it is non-finite or too large."""
    if not math.isfinite(v) or abs(v) > MAX_CONST:
        raise ExprError(f"constant folds to {v!r}, outside the allowed range |c| <= {MAX_CONST:g}")
    if abs(v) < ZERO_BELOW:
        return 0.0
    return float(f"{v:.{SIG_DIGITS}g}") + 0.0


def _c(v: float) -> Const:
    return Const(round_const(v))


def _key(e: Expr) -> tuple[int, str]:
    return (size(e), to_string(e))


def canonical(e: Expr) -> Expr:
    """The canonical form of ``e`` (see the module docstring)."""
    if isinstance(e, (Var, Param)):
        return e
    if isinstance(e, Const):
        return _c(e.value)
    if isinstance(e, Unary):
        return _unary(e.op, canonical(e.arg))
    if isinstance(e, Binary):
        return _binary(e.op, canonical(e.a), canonical(e.b))
    raise ExprError(f"not an expression node: {type(e).__name__}")


def expr_hash(e: Expr) -> str:
    """Stable hex sha256 of the canonical formula (equal for equal canonical forms)."""
    return hashlib.sha256(to_string(canonical(e)).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- helpers on canonical trees
def _is_sum(e: Expr) -> bool:
    return isinstance(e, Binary) and e.op in ("add", "sub")


def _split(e: Expr) -> tuple[float, Expr]:
    """(k, m) with e == k*m, m free of a leading constant or sign (e canonical, not Const)."""
    if isinstance(e, Unary) and e.op == "neg":
        k, m = _split(e.arg)
        return -k, m
    if isinstance(e, Binary) and e.op == "mul":
        factors: list[Expr] = []
        _flatten(e, "mul", factors)
        if isinstance(factors[0], Const):
            return factors[0].value, _fold_chain("mul", factors[1:])
    return 1.0, e


def _flatten(e: Expr, op: str, out: list[Expr]) -> None:
    if isinstance(e, Binary) and e.op == op:
        _flatten(e.a, op, out)
        _flatten(e.b, op, out)
    else:
        out.append(e)


def _fold_chain(op: str, items: list[Expr]) -> Expr:
    acc = items[0]
    for t in items[1:]:
        acc = Binary(op, acc, t)
    return acc


# ---------------------------------------------------------------- unary
def _unary(op: str, a: Expr) -> Expr:
    if isinstance(a, Const):
        return _c(fold_unary(op, a.value))
    if op == "neg":
        return _mul([Const(-1.0), a])
    if op in _EVEN or op in _ODD:
        k, m = _split(a)
        if k < 0:
            inner = _unary(op, _mul([_c(-k), m]))
            return inner if op in _EVEN else _mul([Const(-1.0), inner])
    if op in ("abs", "relu") and isinstance(a, Unary) and a.op == op:
        return a
    if op == "abs" and isinstance(a, Unary) and a.op in _NONNEG:
        return a  # already non-negative
    if op == "exp" and isinstance(a, Unary) and a.op == "neg":
        inner = a.arg
        if isinstance(inner, Unary) and inner.op == "square":
            return _unary("gauss", inner.arg)
    return Unary(op, a)


# ---------------------------------------------------------------- binary
def _binary(op: str, a: Expr, b: Expr) -> Expr:
    if isinstance(a, Const) and isinstance(b, Const):
        return _c(fold_binary(op, a.value, b.value))
    if op == "add":
        return _add([(1.0, a), (1.0, b)])
    if op == "sub":
        return _add([(1.0, a), (-1.0, b)])
    if op == "mul":
        return _mul([a, b])
    if op == "div":
        return _div(a, b)
    if op in ("max", "min"):
        return _minmax(op, [a, b])
    return _pow(a, b)


def _add(terms: list[tuple[float, Expr]]) -> Expr:
    const = 0.0
    coef: dict[Expr, float] = {}

    def visit(k: float, t: Expr) -> None:
        nonlocal const
        if isinstance(t, Const):
            const += k * t.value
        elif isinstance(t, Binary) and t.op in ("add", "sub"):
            visit(k, t.a)
            visit(k if t.op == "add" else -k, t.b)
        else:
            c, m = _split(t)
            coef[m] = coef.get(m, 0.0) + k * c

    for k, t in terms:
        visit(k, t)
    rounded = [(round_const(k), m) for m, k in coef.items()]
    built = [(k, _mul([Const(abs(k)), m])) for k, m in rounded if k != 0.0]
    pos = sorted((t for k, t in built if k > 0), key=_key)
    neg = sorted((t for k, t in built if k < 0), key=_key)
    const = round_const(const)
    signed: list[tuple[bool, Expr]] = [(True, t) for t in pos]
    if const > 0:
        signed.append((True, Const(const)))
    signed += [(False, t) for t in neg]
    if const < 0:
        signed.append((False, Const(-const)))
    if not signed:
        return Const(0.0)
    positive, head = signed[0]
    acc = head if positive else _mul([Const(-1.0), head])
    for positive, t in signed[1:]:
        acc = Binary("add" if positive else "sub", acc, t)
    return acc


def _mul(items: list[Expr]) -> Expr:
    k = 1.0
    factors: list[Expr] = []

    def visit(t: Expr) -> None:
        nonlocal k
        if isinstance(t, Const):
            k *= t.value
        elif isinstance(t, Unary) and t.op == "neg":
            k = -k
            visit(t.arg)
        elif isinstance(t, Binary) and t.op == "mul":
            visit(t.a)
            visit(t.b)
        else:
            factors.append(t)

    for t in items:
        visit(t)
    k = round_const(k)
    if k == 0.0 or not factors:
        return Const(k)
    factors.sort(key=_key)
    sums = [i for i, f in enumerate(factors) if _is_sum(f)]
    if sums and (k not in (1.0, -1.0) or (len(factors) == 1 and k != 1.0)):
        # a constant factor distributes over the first sum: 2*(x+1)*y -> (2*x + 2)*y
        i = sums[0]
        return _mul([_add([(k, factors[i])]), *factors[:i], *factors[i + 1 :]])
    prod = _fold_chain("mul", factors)
    if k == 1.0:
        return prod
    if k == -1.0:
        return Unary("neg", prod)
    return _fold_chain("mul", [Const(k), *factors])


def _div(a: Expr, b: Expr) -> Expr:
    if isinstance(b, Const):
        if b.value == 0.0:
            return Binary("div", a, b)  # a pole everywhere: kept for the checks to reject
        return _mul([a, _c(1.0 / b.value)])
    ka: float
    ua: Expr
    if isinstance(a, Const):
        if a.value == 0.0:
            return Const(0.0)
        ka, ua = a.value, Const(1.0)
    else:
        ka, ua = _split(a)
    kb, vb = _split(b)
    node = Binary("div", ua, vb)
    k = ka / kb
    return node if k == 1.0 else _mul([_c(k), node])


def _minmax(op: str, items: list[Expr]) -> Expr:
    flat: list[Expr] = []
    for t in items:
        _flatten(t, op, flat)
    consts = [t.value for t in flat if isinstance(t, Const)]
    rest: list[Expr] = sorted({t for t in flat if not isinstance(t, Const)}, key=_key)
    if consts:
        c = max(consts) if op == "max" else min(consts)
        if op == "max" and c == 0.0 and len(rest) == 1:
            return _unary("relu", rest[0])
        rest.append(Const(c))
    return _fold_chain(op, rest)


def _pow(a: Expr, b: Expr) -> Expr:
    if not isinstance(b, Const):
        raise ExprError(f"exponent must be a constant, got {to_string(b)}")
    p = b.value
    if p == 0.0:
        return Const(1.0)
    if p == 1.0:
        return a
    if p == -1.0:
        return _div(Const(1.0), a)
    named = {2.0: "square", 3.0: "cube", 0.5: "sqrt"}
    if p in named:
        return _unary(named[p], a)
    return Binary("pow", a, b)
