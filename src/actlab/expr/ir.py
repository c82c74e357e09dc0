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

Bounds, in one place: every node checks its children when it is built, so *any* tree, built
through this API or by the parser, has depth <= :data:`MAX_TREE_DEPTH` and at most
:data:`MAX_TREE_SIZE` nodes (counting a shared sub-tree once per use), else
:class:`ExprError`. Each node caches its depth and size, so the checks cost O(1) per node,
and every walker (printer, canonical form, interpreters, pickling, ``==``, ``hash``) recurses
at most MAX_TREE_DEPTH levels: far from Python's recursion limit. Formula text has the
stricter language bounds :data:`MAX_DEPTH` and :data:`MAX_SIZE` (checked by the parser).
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BINARY_OPS",
    "MAX_CONST",
    "MAX_DEPTH",
    "MAX_SIZE",
    "MAX_TREE_DEPTH",
    "MAX_TREE_SIZE",
    "PARAM_DEFAULTS",
    "UNARY_OPS",
    "Binary",
    "Const",
    "Expr",
    "ExprError",
    "Param",
    "Unary",
    "Var",
    "children",
    "depth",
    "format_const",
    "has_var",
    "param_default",
    "param_names",
    "size",
    "to_string",
]

UNARY_OPS: tuple[str, ...] = (
    "neg",
    "abs",
    "square",
    "cube",
    "sqrt",
    "log",
    "exp",
    "sin",
    "cos",
    "sinh",
    "cosh",
    "tanh",
    "asinh",
    "atan",
    "sinc",
    "relu",
    "sigmoid",
    "softplus",
    "gauss",
    "erf",
    "gelu",
    "silu",
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
MAX_DEPTH = 48  # node depth bound of formula text (a leaf has depth 1)
MAX_SIZE = 256  # node count bound of formula text
MAX_TREE_DEPTH = 128  # depth bound of any IR tree (canonical forms of text included)
MAX_TREE_SIZE = 4096  # node count bound of any IR tree


class ExprError(ValueError):
    """A formula or IR that is not a valid actlab expression; the message says why."""


class _Node:
    """Shared behaviour of the node types: immutable, so copies are the node itself."""

    _depth = 1  # leaves; Unary and Binary set their own in __post_init__
    _size = 1

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict) -> Any:
        return self


@dataclass(frozen=True)
class Var(_Node):
    """The activation's input ``x``."""

    name: str = "x"

    def __post_init__(self) -> None:
        if self.name != "x":
            raise ExprError(f"the only variable is x, got {self.name!r}")


@dataclass(frozen=True)
class Const(_Node):
    """A finite numeric constant with |value| <= MAX_CONST."""

    value: float

    def __post_init__(self) -> None:
        v = self.value
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ExprError(f"constant must be a real number, got {type(v).__name__}")
        try:
            f = float(v)
        except (OverflowError, ValueError, TypeError):
            f = math.inf
        if not math.isfinite(f) or abs(f) > MAX_CONST:
            shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
            raise ExprError(f"constant {shown} is out of range (|c| <= {MAX_CONST:g})")
        object.__setattr__(self, "value", f + 0.0)  # int -> float, -0.0 -> 0.0


@dataclass(frozen=True)
class Param(_Node):
    """A learnable scalar: alpha, beta, gamma, delta, eps, theta, optionally indexed."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _PARAM_RE.fullmatch(self.name):
            raise ExprError(
                f"unknown learnable scalar {self.name!r}; use one of "
                f"{', '.join(PARAM_DEFAULTS)} (optionally indexed, e.g. beta2)"
            )


def _bounded(node: Unary | Binary, kids: tuple[object, ...]) -> None:
    """Check the operands of a new node and cache its depth and size (O(1) per node)."""
    for k in kids:
        if not isinstance(k, _Node):
            raise ExprError(
                f"operand of {node.op!r} must be an expression node (Var, Const, Param, Unary, "
                f"Binary), got {type(k).__name__}"
            )
    d = 1 + max(k._depth for k in kids)  # type: ignore[attr-defined]
    n = 1 + sum(k._size for k in kids)  # type: ignore[attr-defined]
    if d > MAX_TREE_DEPTH:
        raise ExprError(
            f"expression is nested too deeply: depth {d} > {MAX_TREE_DEPTH} (the bound of any "
            "actlab expression); simplify the formula"
        )
    if n > MAX_TREE_SIZE:
        raise ExprError(
            f"expression is too large: {n} nodes > {MAX_TREE_SIZE} (shared sub-trees count once "
            "per use); simplify the formula"
        )
    object.__setattr__(node, "_depth", d)
    object.__setattr__(node, "_size", n)


@dataclass(frozen=True)
class Unary(_Node):
    op: str
    arg: Expr

    def __post_init__(self) -> None:
        if not isinstance(self.op, str) or self.op not in UNARY_OPS:
            raise ExprError(f"unknown unary op {self.op!r}; allowed: {', '.join(UNARY_OPS)}")
        _bounded(self, (self.arg,))


@dataclass(frozen=True)
class Binary(_Node):
    op: str
    a: Expr
    b: Expr

    def __post_init__(self) -> None:
        if not isinstance(self.op, str) or self.op not in BINARY_OPS:
            raise ExprError(f"unknown binary op {self.op!r}; allowed: {', '.join(BINARY_OPS)}")
        _bounded(self, (self.a, self.b))
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


def _check_node(e: object) -> None:
    if not isinstance(e, _Node):
        raise ExprError(f"not an expression node: {type(e).__name__}")


def depth(e: Expr) -> int:
    """Nesting depth: 1 for a leaf (cached when the node was built)."""
    _check_node(e)
    return e._depth


def size(e: Expr) -> int:
    """Number of nodes, a shared sub-tree counted once per use (cached when built)."""
    _check_node(e)
    return e._size


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
    _check_node(e)
    stack = [e]
    while stack:
        n = stack.pop()
        if isinstance(n, Var):
            return True
        stack.extend(children(n))
    return False


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
    _check_node(e)
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
