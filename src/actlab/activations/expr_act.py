"""``expr``: an activation written as a formula of the :mod:`actlab.expr` language.

    create_activation('expr(formula="x*sigmoid(1.702*x)")')
    create_activation('expr(formula="relu(x) + eps*x*exp(-x**2/2)", params={"eps": 0.02})')

The formula is parsed safely (never evaluated as Python), reduced to its canonical form and
compiled into a straight-line torch program; gradients come from autograd. Each learnable
scalar of the formula (alpha, beta, gamma, delta, eps, theta, beta2, ...) becomes a 0-dim
parameter initialised from ``params`` or its documented default (:mod:`actlab.expr.ir`).
The primitives are those of the Swish search space (Ramachandran, Zoph & Le 2017,
"Searching for Activation Functions") plus gelu and silu.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from actlab.activations._base import Activation, scalar
from actlab.expr.canonical import canonical
from actlab.expr.ir import Expr, ExprError, param_default, param_names, to_string
from actlab.expr.parser import parse
from actlab.expr.reference import evaluate
from actlab.expr.torch_eval import Program
from actlab.registry import register_activation

__all__ = ["ExprActivation"]


def _reference(x: Tensor, m: nn.Module) -> Tensor:
    """Float64 oracle: the numpy interpreter with the module's current scalar values."""
    assert isinstance(m, ExprActivation)
    params = {n: float(getattr(m, n).detach()) for n in m.param_names}
    out = evaluate(m.expr, x.detach().cpu().double().numpy(), params)
    return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)


@register_activation(
    "expr",
    formula="any formula of the actlab.expr language, e.g. x*sigmoid(beta*x) (the default)",
    paper="Ramachandran, Zoph & Le 2017, Searching for Activation Functions (search space)",
    reference=_reference,
    limits=(math.nan, math.inf),
    family="search",
    smooth=False,
    notes="Learnable scalars are 0-dim parameters; see actlab.expr for the grammar. "
    "limits are those of the default formula (Swish); any other formula has its own.",
)
class ExprActivation(Activation):
    """An activation compiled from a formula string or an :mod:`actlab.expr` IR tree."""

    def __init__(
        self,
        *,
        formula: str | Expr = "x*sigmoid(beta*x)",
        params: Mapping[str, float] | None = None,
        learnable: bool = True,
        weight_decay: bool = True,
        inplace: bool = False,
    ) -> None:
        super().__init__(inplace=inplace)
        expr = parse(formula) if isinstance(formula, str) else canonical(formula)
        names = param_names(expr)
        given = dict(params or {})
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ExprError(
                f"formula {to_string(expr)!r} has no learnable scalar "
                f"{', '.join(map(repr, unknown))}; its scalars are: {', '.join(names) or '(none)'}"
            )
        init = {n: float(given[n]) if n in given else param_default(n) for n in names}
        for n, v in init.items():
            if not math.isfinite(v):
                raise ExprError(f"initial value of {n!r} must be finite, got {v!r}")
            scalar(self, n, v, learnable)
        self.expr = expr
        self.formula = to_string(expr)
        self.param_names = names
        self.weight_decay = bool(weight_decay)
        self._program = Program(expr)
        self._set_hparams(
            formula=self.formula, params=init, learnable=bool(learnable),
            weight_decay=self.weight_decay,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self._program(x, {n: getattr(self, n) for n in self.param_names})
