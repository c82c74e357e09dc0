"""actlab.expr: the search-space language of candidate activations.

    from actlab.expr import parse, to_string, expr_hash, compile_expr
    e = parse("x*sigmoid(1.702*x)")      # safe: a whitelist over Python's ast, never eval
    to_string(e)                         # 'x * sigmoid(1.702 * x)', re-parses to e
    expr_hash(e)                         # sha256 of the canonical formula (dedup key)
    act = compile_expr(e)                # nn.Module, registered in the zoo as `expr`
    run_checks(act)                      # cheap rejection before any training

Public here: the node types (``Expr``, ``Var``, ``Const``, ``Param``, ``Unary``,
``Binary``) and ``ExprError``; ``parse``, ``to_string``, ``canonical``, ``expr_hash``,
``size``, ``evaluate`` (float64 numpy oracle), ``compile_expr``, ``random_expr``, ``mutate``,
``run_checks`` / ``CheckReport``. Finer tools stay in their modules:
:mod:`~actlab.expr.ir` (primitive semantics, ``depth``, ``param_names``),
:mod:`~actlab.expr.parser` (``FUNCTIONS``), :mod:`~actlab.expr.canonical`,
:mod:`~actlab.expr.reference`, :mod:`~actlab.expr.torch_eval` (compiled torch program),
:mod:`~actlab.expr.grammar` (single mutations), :mod:`~actlab.expr.checks` (each check,
the zero-cost proxies). The grammar is the Swish search space (Ramachandran, Zoph & Le
2017, "Searching for Activation Functions").
"""

from __future__ import annotations

from actlab.expr.canonical import canonical, expr_hash
from actlab.expr.checks import CheckReport, run_checks
from actlab.expr.compiler import compile_expr
from actlab.expr.grammar import mutate, random_expr
from actlab.expr.ir import Binary, Const, Expr, ExprError, Param, Unary, Var, size, to_string
from actlab.expr.parser import parse
from actlab.expr.reference import evaluate

__all__ = [
    "Binary",
    "CheckReport",
    "Const",
    "Expr",
    "ExprError",
    "Param",
    "Unary",
    "Var",
    "canonical",
    "compile_expr",
    "evaluate",
    "expr_hash",
    "mutate",
    "parse",
    "random_expr",
    "run_checks",
    "size",
    "to_string",
]
