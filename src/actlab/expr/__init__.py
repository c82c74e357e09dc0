"""actlab.expr: the search-space language of candidate activations.

    from actlab.expr import parse, to_string, expr_hash, compile_expr
    e = parse("x*sigmoid(1.702*x)")      # safe: a whitelist over Python's ast, never eval
    to_string(e)                         # 'x * sigmoid(1.702 * x)', re-parses to e
    expr_hash(e)                         # sha256 of the canonical formula (dedup key)
    act = compile_expr(e)                # nn.Module, registered in the zoo as `expr`
    run_checks(act)                      # cheap rejection before any training

Modules: :mod:`~actlab.expr.ir` (node types, primitive semantics, printer),
:mod:`~actlab.expr.parser`, :mod:`~actlab.expr.canonical`, :mod:`~actlab.expr.reference`
(float64 numpy oracle), :mod:`~actlab.expr.torch_eval` (compiled torch program),
:mod:`~actlab.expr.grammar` (random expressions, mutations), :mod:`~actlab.expr.checks`.
The grammar is the Swish search space (Ramachandran, Zoph & Le 2017, "Searching for
Activation Functions").
"""

from __future__ import annotations

from actlab.expr.canonical import canonical, expr_hash
from actlab.expr.checks import (
    CheckReport,
    CheckResult,
    check_gradients,
    check_numerics,
    check_stability,
    output_entropy,
    proxies,
    run_checks,
    wafbc_distance,
)
from actlab.expr.compiler import compile_expr
from actlab.expr.grammar import (
    delete_unit,
    insert_unit,
    mutate,
    mutate_const,
    mutate_op,
    random_expr,
)
from actlab.expr.ir import (
    PARAM_DEFAULTS,
    Binary,
    Const,
    Expr,
    ExprError,
    Param,
    Unary,
    Var,
    depth,
    param_names,
    size,
    to_string,
)
from actlab.expr.parser import FUNCTIONS, parse
from actlab.expr.reference import evaluate

__all__ = [
    "FUNCTIONS",
    "PARAM_DEFAULTS",
    "Binary",
    "CheckReport",
    "CheckResult",
    "Const",
    "Expr",
    "ExprError",
    "Param",
    "Unary",
    "Var",
    "canonical",
    "check_gradients",
    "check_numerics",
    "check_stability",
    "compile_expr",
    "delete_unit",
    "depth",
    "evaluate",
    "expr_hash",
    "insert_unit",
    "mutate",
    "mutate_const",
    "mutate_op",
    "output_entropy",
    "param_names",
    "parse",
    "proxies",
    "random_expr",
    "run_checks",
    "size",
    "to_string",
    "wafbc_distance",
]
