"""The typed IR of the expression language: five frozen node types and a printer.

    Var()                 the input x
    Const(1.702)          a finite numeric constant
    Param("beta")         a learnable 0-dim scalar (init from :data:`PARAM_DEFAULTS`)
    Unary("sigmoid", a)   one of :data:`UNARY_OPS`
    Binary("mul", a, b)   one of :data:`BINARY_OPS`; ``pow`` takes a constant exponent

Primitive semantics (shared by the torch compiler, the float64 reference and constant
folding; the set is the Swish search space of Ramachandran, Zoph & Le 2017, plus gelu/silu):

    neg -u  abs |u|  square u²  cube u³  exp sin cos sinh cosh tanh asinh atan erf
    sqrt(u) = sqrt(max(|u|, 1e-12))        (safe: defined and differentiable everywhere)
    log(u)  = log(max(|u|, 1e-6))          (the Swish space's log(|x|+eps), eps as a floor)
    sinc(u) = sin(u)/u, sinc(0) = 1        (unnormalised)
    relu(u) = max(u, 0)   sigmoid   softplus = log(1+e^u)   gauss(u) = exp(-u²)
    gelu (exact, erf)     silu(u) = u·sigmoid(u)
    add sub mul div (true division: a pole is left for the checks to reject) max min
    pow(u, p): |p| <= 4 constant; integer p is the plain power, other p act on max(|u|, 1e-12)

Learnable scalars have documented defaults: alpha = beta = gamma = 1 (scales, Swish's β),
delta = 0 (shift), eps = 0.01 (CRReLU's ε), theta = 0.5 (mixing weight). A name may carry an
index (``beta2``) to get a separate parameter with the same default.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "BINARY_OPS",
    "MAX_CONST",
    "MAX_DEPTH",
    "MAX_SIZE",
    "PARAM_DEFAULTS",
    "UNARY_OPS",
    "Binary",
    "Const",
    "Expr",
    "ExprError",
    "Param",
    "Unary",
    "Var",
    "depth",
    "format_const",
    "has_var",
    "param_default",
    "param_names",
    "size",
    "to_string",
]

UNARY_OPS: tuple[str, ...] = (
    "neg", "abs", "square", "cube", "sqrt", "log", "exp", "sin", "cos", "sinh", "cosh",
    "tanh", "asinh", "atan", "sinc", "relu", "sigmoid", "softplus", "gauss", "erf",
    "gelu", "silu",
)
BINARY_OPS: tuple[str, ...] = ("add", "sub", "mul", "div", "max", "min", "pow")

PARAM_DEFAULTS: dict[str, float] = {
    "alpha": 1.0,
    "beta": 1.0,
    "gamma": 1.0,
    "delta": 0.0,
    "eps": 0.01,
    "theta": 0.5,
}
_PARAM_RE = re.compile(r"(alpha|beta|gamma|delta|eps|theta)([1-9][0-9]?)?")

MAX_CONST = 1e6  # |constant| bound, literals and folded values alike
MAX_POW = 4.0  # |exponent| bound of **
MAX_DEPTH = 48  # node depth bound (a leaf has depth 1)
MAX_SIZE = 256  # node count bound


class ExprError(ValueError):
    """A formula or IR that is not a valid actlab expression; the message says why."""


@dataclass(frozen=True)
class Var:
    """The activation's input ``x``."""

    name: str = "x"

    def __post_init__(self) -> None:
        if self.name != "x":
            raise ExprError(f"the only variable is x, got {self.name!r}")


@dataclass(frozen=True)
class Const:
    """A finite numeric constant with |value| <= MAX_CONST."""

    value: float

    def __post_init__(self) -> None:
        v = self.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ExprError(f"constant must be a real number, got {type(v).__name__}")
        if not math.isfinite(v) or abs(v) > MAX_CONST:
            raise ExprError(f"constant {v!r} is out of range (|c| <= {MAX_CONST:g})")
        object.__setattr__(self, "value", float(v) + 0.0)  # int -> float, -0.0 -> 0.0


@dataclass(frozen=True)
class Param:
    """A learnable scalar: alpha, beta, gamma, delta, eps, theta, optionally indexed."""

    name: str

    def __post_init__(self) -> None:
        if not _PARAM_RE.fullmatch(self.name):
            raise ExprError(
                f"unknown learnable scalar {self.name!r}; use one of "
                f"{', '.join(PARAM_DEFAULTS)} (optionally indexed, e.g. beta2)"
            )


@dataclass(frozen=True)
class Unary:
    op: str
    arg: Expr

    def __post_init__(self) -> None:
        if self.op not in UNARY_OPS:
            raise ExprError(f"unknown unary op {self.op!r}; allowed: {', '.join(UNARY_OPS)}")


@dataclass(frozen=True)
class Binary:
    op: str
    a: Expr
    b: Expr

    def __post_init__(self) -> None:
        if self.op not in BINARY_OPS:
            raise ExprError(f"unknown binary op {self.op!r}; allowed: {', '.join(BINARY_OPS)}")
        if self.op == "pow":
            if not isinstance(self.b, Const) or abs(self.b.value) > MAX_POW:
                raise ExprError(
                    f"exponent must be a constant number with |p| <= {MAX_POW:g}, got "
                    f"{to_string(self.b)}"
                )


Expr = Var | Const | Param | Unary | Binary


def param_default(name: str) -> float:
    """The documented initial value of learnable scalar ``name`` (``beta2`` -> beta's)."""
    m = _PARAM_RE.fullmatch(name)
    if m is None:
        raise ExprError(f"unknown learnable scalar {name!r}")
    return PARAM_DEFAULTS[m.group(1)]


def children(e: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of ``e``."""
    if isinstance(e, Unary):
        return (e.arg,)
    if isinstance(e, Binary):
        return (e.a, e.b)
    return ()


def depth(e: Expr) -> int:
    """Nesting depth: 1 for a leaf."""
    kids = children(e)
    return 1 + max((depth(k) for k in kids), default=0)


def size(e: Expr) -> int:
    """Number of nodes."""
    return 1 + sum(size(k) for k in children(e))


def param_names(e: Expr) -> tuple[str, ...]:
    """Sorted names of the learnable scalars used in ``e``."""
    out: set[str] = set()
    stack = [e]
    while stack:
        n = stack.pop()
        if isinstance(n, Param):
            out.add(n.name)
        stack.extend(children(n))
    return tuple(sorted(out))


def has_var(e: Expr) -> bool:
    """Whether ``e`` depends on x at all."""
    return isinstance(e, Var) or any(has_var(k) for k in children(e))


# ---------------------------------------------------------------- printing
_INFIX = {"add": ("+", 1), "sub": ("-", 1), "mul": ("*", 2), "div": ("/", 2)}
_ATOM = 10
_NEG = 3
_POW = 4


def format_const(v: float) -> str:
    """Shortest text that re-parses to exactly ``v`` (integers without a trailing .0)."""
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _prec(e: Expr) -> int:
    if isinstance(e, Const):
        return _NEG if e.value < 0 else _ATOM
    if isinstance(e, Unary) and e.op == "neg":
        return _NEG
    if isinstance(e, Binary):
        if e.op == "pow":
            return _POW
        if e.op in _INFIX:
            return _INFIX[e.op][1]
    return _ATOM


def _wrap(e: Expr, min_prec: int) -> str:
    s = to_string(e)
    return f"({s})" if _prec(e) < min_prec else s


def to_string(e: Expr) -> str:
    """Printable formula that :func:`actlab.expr.parse` reads back to the same IR.

    Parentheses follow the tree exactly (``a*(b*c)`` stays so), hence raw and canonical
    trees both round-trip.
    """
    if isinstance(e, Var):
        return "x"
    if isinstance(e, Const):
        return format_const(e.value)
    if isinstance(e, Param):
        return e.name
    if isinstance(e, Unary):
        if e.op == "neg":
            return "-" + _wrap(e.arg, _NEG + 1)
        return f"{e.op}({to_string(e.arg)})"
    if e.op in ("max", "min"):
        return f"{e.op}({to_string(e.a)}, {to_string(e.b)})"
    if e.op == "pow":
        return f"{_wrap(e.a, _ATOM)}**{_wrap(e.b, _POW)}"
    sym, p = _INFIX[e.op]
    return f"{_wrap(e.a, p)} {sym} {_wrap(e.b, p + 1)}"
