"""Safe formula parser: a whitelist over Python's :mod:`ast`; nothing is ever executed.

    parse("x*sigmoid(1.702*x)")
    parse("relu(x) + eps*x*exp(-x**2/2)")
    parse("max(x, sigmoid(x))")

Allowed: numbers (|c| <= 1e6; ``pi``), the variable ``x``, learnable scalars (alpha, beta,
gamma, delta, eps, theta, optionally indexed like ``beta2``; Greek letters α β γ δ ε θ
too), ``+ - * / **``, unary ``-``/``+``, and calls of the primitives in :data:`FUNCTIONS`
with positional arguments. ``**`` needs a constant exponent with |p| <= 4 (checked before
anything is folded, so ``10**10**10`` is rejected without computing it).

Everything else is rejected with an :class:`ExprError` that says what to write instead:
attribute access, subscripts, lambdas, comprehensions, strings, keyword arguments, other
names or calls, comparisons, ... Input longer than :data:`MAX_LEN` characters or nested
deeper than :data:`~actlab.expr.ir.MAX_DEPTH` is rejected by a linear pre-scan before
Python's parser sees it; if the parser itself runs out of stack (RecursionError,
MemoryError) that is reported the same way.
"""

from __future__ import annotations

import ast
import math
import warnings

from actlab.expr.canonical import canonical as _canonical
from actlab.expr.ir import (
    MAX_CONST,
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
    size,
    to_string,
)

__all__ = ["FUNCTIONS", "MAX_LEN", "parse"]

MAX_LEN = 4000  # characters of formula text
FUNCTIONS: dict[str, int] = {**{op: 1 for op in UNARY_OPS if op != "neg"}, "max": 2, "min": 2}
_ALIASES = {
    "α": "alpha",
    "β": "beta",
    "γ": "gamma",
    "δ": "delta",
    "ε": "eps",
    "θ": "theta",
    "epsilon": "eps",
}
_NAMED_CONSTS = {"pi": math.pi, "π": math.pi}
_BINOPS: dict[type[ast.operator], str] = {
    ast.Add: "add",
    ast.Sub: "sub",
    ast.Mult: "mul",
    ast.Div: "div",
    ast.Pow: "pow",
}
_FORBIDDEN: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access ('.')",
    ast.Subscript: "subscripts ('[...]')",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.Compare: "comparisons",
    ast.BoolOp: "and/or",
    ast.IfExp: "conditional expressions",
    ast.NamedExpr: "assignment expressions (':=')",
    ast.JoinedStr: "strings",
    ast.Tuple: "tuples",
    ast.List: "lists",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.Starred: "starred arguments",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slices",
}
_HELP = (
    "Write a formula in x with + - * / ** (constant exponent), numbers, learnable scalars "
    "(alpha, beta, gamma, delta, eps, theta) and the functions "
    + ", ".join(FUNCTIONS)
    + ", e.g. 'x*sigmoid(1.702*x)'."
)


def _prescan(text: str, max_depth: int) -> None:
    """Reject deep bracket nesting and long runs of unary operators in one linear pass."""
    level = 0
    run = 0
    for i, ch in enumerate(text):
        if ch in "([{":
            level += 1
            if level > max_depth:
                raise ExprError(
                    f"formula is nested too deeply: more than {max_depth} open brackets "
                    f"(at character {i})"
                )
        elif ch in ")]}":
            level -= 1
        if ch in "+-~":
            run += 1
            if run > max_depth:
                raise ExprError(
                    f"formula is nested too deeply: more than {max_depth} consecutive "
                    f"sign operators (at character {i})"
                )
        elif not ch.isspace():
            run = 0


class _Converter:
    """AST -> raw IR, with a depth bound enforced on the way down."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth

    def convert(self, node: ast.AST, level: int) -> Expr:
        if level > self.max_depth:
            raise ExprError(f"formula is nested too deeply (more than {self.max_depth} levels)")
        if isinstance(node, ast.Constant):
            return self._number(node.value)
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.UAdd):
                return self.convert(node.operand, level + 1)
            if isinstance(node.op, ast.USub):
                if isinstance(node.operand, ast.Constant):
                    return Const(-self._number(node.operand.value).value)
                return Unary("neg", self.convert(node.operand, level + 1))
            raise ExprError(f"operator {_opname(node.op)!r} is not allowed. {_HELP}")
        if isinstance(node, ast.BinOp):
            return self._binop(node, level)
        if isinstance(node, ast.Call):
            return self._call(node, level)
        what = _FORBIDDEN.get(type(node), type(node).__name__)
        raise ExprError(f"{what} not allowed in a formula. {_HELP}")

    def _number(self, v: object) -> Const:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            kind = "strings" if isinstance(v, (str, bytes)) else f"{type(v).__name__} constants"
            raise ExprError(f"{kind} not allowed in a formula; only real numbers. {_HELP}")
        if isinstance(v, int) and abs(v) > MAX_CONST:
            raise ExprError(f"constant {v} is out of range (|c| <= {MAX_CONST:g})")
        f = float(v)
        if not math.isfinite(f) or abs(f) > MAX_CONST:
            raise ExprError(f"constant {v!r} is out of range (|c| <= {MAX_CONST:g})")
        return Const(f)

    def _name(self, name: str) -> Expr:
        name = _ALIASES.get(name, name)
        if name == "x":
            return Var()
        if name in _NAMED_CONSTS:
            return Const(_NAMED_CONSTS[name])
        if name in FUNCTIONS:
            raise ExprError(f"{name!r} is a function: call it, e.g. {name}(x)")
        try:
            return Param(name)
        except ExprError:
            raise ExprError(f"unknown name {name!r}. {_HELP}") from None

    def _binop(self, node: ast.BinOp, level: int) -> Expr:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise ExprError(f"operator {_opname(node.op)!r} is not allowed. {_HELP}")
        a = self.convert(node.left, level + 1)
        if op != "pow":
            return Binary(op, a, self.convert(node.right, level + 1))
        exponent = self.convert(node.right, level + 1)  # its own ** are checked first
        try:
            p = _canonical(exponent)
        except ExprError as e:
            raise ExprError(f"exponent {to_string(exponent)!r}: {e}") from None
        if not isinstance(p, Const):
            raise ExprError(
                f"exponent must be a constant number, got {to_string(exponent)!r}; "
                "use exp(...) for variable powers"
            )
        if abs(p.value) > MAX_POW:
            raise ExprError(
                f"exponent {to_string(exponent)} is too large: only constants with "
                f"|p| <= {MAX_POW:g} are allowed"
            )
        return Binary("pow", a, p)

    def _call(self, node: ast.Call, level: int) -> Expr:
        if not isinstance(node.func, ast.Name):
            what = _FORBIDDEN.get(type(node.func))
            if what is not None:
                raise ExprError(f"{what} not allowed in a formula. {_HELP}")
            raise ExprError(f"only calls of whitelisted functions are allowed. {_HELP}")
        name = node.func.id
        if name not in FUNCTIONS:
            raise ExprError(f"call to {name!r} is not allowed. {_HELP}")
        if node.keywords:
            raise ExprError(f"{name}(): keyword arguments are not allowed")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise ExprError(f"{name}(): starred arguments are not allowed")
        arity = FUNCTIONS[name]
        if len(node.args) != arity:
            raise ExprError(
                f"{name}() takes {arity} argument{'s' if arity > 1 else ''}, got {len(node.args)}"
            )
        args = [self.convert(a, level + 1) for a in node.args]
        if arity == 1:
            return Unary(name, args[0])
        return Binary(name, args[0], args[1])


def _opname(op: ast.AST) -> str:
    names = {
        ast.FloorDiv: "//",
        ast.Mod: "%",
        ast.MatMult: "@",
        ast.LShift: "<<",
        ast.RShift: ">>",
        ast.BitOr: "|",
        ast.BitXor: "^",
        ast.BitAnd: "&",
        ast.Invert: "~",
        ast.Not: "not",
    }
    return names.get(type(op), type(op).__name__)


def parse(
    text: str,
    *,
    canonical: bool = True,
    max_len: int = MAX_LEN,
    max_depth: int = MAX_DEPTH,
) -> Expr:
    """Parse a formula into the IR (its canonical form unless ``canonical=False``).

    Raises :class:`ExprError` with a clear message for anything outside the language.
    """
    if not isinstance(text, str):
        raise ExprError(f"formula must be a str, got {type(text).__name__}")
    if len(text) > max_len:
        raise ExprError(f"formula is too long: {len(text)} characters (at most {max_len})")
    _prescan(text, max_depth)
    if not text.strip():
        raise ExprError(f"empty formula. {_HELP}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning on odd literals
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ExprError(f"cannot parse formula {text!r}: {e.msg}. {_HELP}") from None
    except (RecursionError, MemoryError):
        raise ExprError("formula is nested too deeply for Python's parser") from None
    except ValueError as e:  # e.g. null bytes
        raise ExprError(f"cannot parse formula: {e}") from None
    try:
        expr = _Converter(max_depth).convert(tree.body, 1)
        if size(expr) > MAX_SIZE:
            raise ExprError(f"formula is too large: {size(expr)} nodes (at most {MAX_SIZE})")
        return _canonical(expr) if canonical else expr
    except RecursionError:  # only reachable with a max_depth above the default
        raise ExprError("formula is nested too deeply") from None
