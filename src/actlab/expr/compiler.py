"""IR -> activation module: :func:`compile_expr` builds the registered ``expr`` activation.

The module class lives in :mod:`actlab.expr._activation`; it is imported here lazily so that
:mod:`actlab.expr` stays importable without loading the zoo.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from actlab.expr.ir import Binary, Const, Expr, ExprError, Param, Unary, Var

if TYPE_CHECKING:
    from actlab.expr._activation import ExprActivation

__all__ = ["compile_expr"]


def compile_expr(
    expr: str | Expr,
    *,
    params: Mapping[str, float] | None = None,
    learnable: bool = True,
    weight_decay: bool = True,
) -> ExprActivation:
    """An ``nn.Module`` computing ``expr`` with torch ops; learnable scalars are parameters."""
    from actlab.expr._activation import ExprActivation

    if not isinstance(expr, (str, Var, Const, Param, Unary, Binary)):
        raise ExprError(
            f"compile_expr needs a formula string or an expression tree, got {type(expr).__name__}"
        )
    return ExprActivation(
        formula=expr, params=params, learnable=learnable, weight_decay=weight_decay
    )
