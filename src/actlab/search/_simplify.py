"""Simplify a found formula without changing the function it computes.

Lion (Chen et al. 2023, arXiv 2302.06675) simplifies the winning program by removing
statements that do not affect its output. Here, starting from the canonical form, greedy
passes try

- replacing an operator node by one of its operands (``x + 1e-9*sin(x) -> x``),
- replacing a sub-expression that depends on x but is constant on the grid by that constant,
- rounding a constant to 1, 2, 3, 4 or 6 significant digits,

and keep a change when the result is smaller (fewer nodes, or a shorter formula for
constant rounding) and numerically equivalent: ``|f_new - f| <= tol * (1 + |f|)`` on 2001
points of [-20, 20], for the learnable scalars at their initial values and at two other
deterministic settings (a simplification must hold whatever training makes of them).
Passes repeat until nothing changes.
"""

from __future__ import annotations

import numpy as np

from actlab.expr import Const, Expr, ExprError, canonical, evaluate, size, to_string
from actlab.expr.grammar import nodes, replace_at
from actlab.expr.ir import children, has_var, param_default, param_names

__all__ = ["equivalent", "simplify"]

_GRID = np.linspace(-20.0, 20.0, 2001)


def _param_sets(e: Expr) -> list[dict[str, float]]:
    names = param_names(e)
    base = {n: param_default(n) for n in names}
    return [
        base,
        {n: v * 1.37 + 0.11 for n, v in base.items()},
        {n: -0.6 * v + 0.29 for n, v in base.items()},
    ]


def _values(e: Expr, params: dict[str, float]) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(evaluate(e, _GRID, params), dtype=np.float64)


def equivalent(a: Expr, b: Expr, tol: float = 1e-6) -> bool:
    """Whether ``a`` and ``b`` agree on the grid for three settings of the learnable scalars."""
    if not set(param_names(b)) <= set(param_names(a)):
        return False
    for params in _param_sets(a):
        ya, yb = _values(a, params), _values(b, params)
        fa, fb = np.isfinite(ya), np.isfinite(yb)
        if not np.array_equal(fa, fb):
            return False
        if not np.all(np.abs(ya[fa] - yb[fa]) <= tol * (1.0 + np.abs(ya[fa]))):
            return False
    return True


def _proposals(e: Expr) -> list[Expr]:
    out: list[Expr] = []
    for path, node in nodes(e):
        for k in children(node):
            out.append(replace_at(e, path, k))
        if children(node) and has_var(node):
            ys = _values(node, {n: param_default(n) for n in param_names(node)})
            if np.all(np.isfinite(ys)) and np.ptp(ys) <= 1e-12 * (1.0 + abs(float(ys[0]))):
                out.append(replace_at(e, path, Const(float(f"{float(ys[0]):.9g}"))))
    return out


def _rounded(e: Expr) -> list[Expr]:
    out: list[Expr] = []
    for path, node in nodes(e):
        if isinstance(node, Const) and node.value != 0:
            for digits in (1, 2, 3, 4, 6):
                v = float(f"{node.value:.{digits}g}")
                if v != node.value:
                    out.append(replace_at(e, path, Const(v)))
    return out


def _try(e: Expr) -> Expr | None:
    try:
        c = canonical(e)
    except (ExprError, RecursionError):
        return None
    return c if has_var(c) else None


def simplify(expr: Expr, *, tol: float = 1e-6, max_passes: int = 20) -> Expr:
    """The smallest equivalent form found by greedy passes (see the module docstring)."""
    orig = cur = canonical(expr)
    for _ in range(max_passes):
        changed = False
        for prop in _proposals(cur):
            cand = _try(prop)
            if cand is not None and size(cand) < size(cur) and equivalent(orig, cand, tol):
                cur, changed = cand, True
                break
        if not changed:
            for prop in _rounded(cur):
                cand = _try(prop)
                if (
                    cand is not None
                    and len(to_string(cand)) < len(to_string(cur))
                    and equivalent(orig, cand, tol)
                ):
                    cur, changed = cand, True
                    break
        if not changed:
            return cur
    return cur
