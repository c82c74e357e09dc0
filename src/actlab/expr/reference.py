"""Plain float64 numpy interpreter of the IR: the oracle for the torch compiler.

Written independently of :mod:`actlab.expr.torch_eval` (closed forms from numpy and
scipy.special), with the primitive semantics documented in :mod:`actlab.expr.ir`. Constant
folding in :mod:`actlab.expr.canonical` uses the same functions, so a folded constant equals
what the compiled module would compute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy import special

from actlab.expr.ir import Binary, Const, Expr, ExprError, Param, Unary, Var, param_default

__all__ = ["NP_BINARY", "NP_UNARY", "evaluate", "fold_binary", "fold_unary"]

SQRT_FLOOR = 1e-12
LOG_FLOOR = 1e-6
Array = np.ndarray


def _sinc(u: Array) -> Array:
    return np.sinc(u / np.pi)  # numpy's sinc is sin(pi t)/(pi t)


def _gelu(u: Array) -> Array:
    return 0.5 * u * (1.0 + special.erf(u / np.sqrt(2.0)))


NP_UNARY: dict[str, Callable[[Array], Array]] = {
    "neg": np.negative,
    "abs": np.abs,
    "square": lambda u: u * u,
    "cube": lambda u: u * u * u,
    "sqrt": lambda u: np.sqrt(np.maximum(np.abs(u), SQRT_FLOOR)),
    "log": lambda u: np.log(np.maximum(np.abs(u), LOG_FLOOR)),
    "exp": np.exp,
    "sin": np.sin,
    "cos": np.cos,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "asinh": np.arcsinh,
    "atan": np.arctan,
    "sinc": _sinc,
    "relu": lambda u: np.maximum(u, 0.0),
    "sigmoid": special.expit,
    "softplus": lambda u: np.logaddexp(0.0, u),
    "gauss": lambda u: np.exp(-u * u),
    "erf": special.erf,
    "gelu": _gelu,
    "silu": lambda u: u * special.expit(u),
}


def _pow(u: Array, p: Array) -> Array:
    pf = float(p)
    if pf == int(pf):
        return np.power(u, pf)
    return np.power(np.maximum(np.abs(u), SQRT_FLOOR), pf)


NP_BINARY: dict[str, Callable[[Array, Array], Array]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
    "pow": _pow,
}


def _eval(e: Expr, x: Array, params: Mapping[str, float]) -> Array:
    if isinstance(e, Var):
        return x
    if isinstance(e, Const):
        return np.asarray(e.value, dtype=np.float64)
    if isinstance(e, Param):
        v = params[e.name] if e.name in params else param_default(e.name)
        return np.asarray(float(v), dtype=np.float64)
    if isinstance(e, Unary):
        return NP_UNARY[e.op](_eval(e.arg, x, params))
    if isinstance(e, Binary):
        return NP_BINARY[e.op](_eval(e.a, x, params), _eval(e.b, x, params))
    raise ExprError(f"not an expression node: {type(e).__name__}")


def evaluate(e: Expr, x: Array | float, params: Mapping[str, float] | None = None) -> Array:
    """f(x) in float64 with numpy; learnable scalars from ``params`` else their defaults.

    Overflow gives inf and invalid operations give nan, silently (the checks look at them).
    """
    xa = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        out = _eval(e, xa, params or {})
    return np.broadcast_to(out, xa.shape).astype(np.float64)


def fold_unary(op: str, c: float) -> float:
    """``op(c)`` in float64 (may be non-finite; the caller decides)."""
    with np.errstate(all="ignore"):
        return float(NP_UNARY[op](np.float64(c)))


def fold_binary(op: str, a: float, b: float) -> float:
    """``op(a, b)`` in float64 (may be non-finite; the caller decides)."""
    with np.errstate(all="ignore"):
        return float(NP_BINARY[op](np.float64(a), np.float64(b)))
