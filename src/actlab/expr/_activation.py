"""``expr``: an activation written as a formula of the :mod:`actlab.expr` language.

    create_activation('expr(formula="x*sigmoid(1.702*x)")')
    create_activation('expr(formula="relu(x) + eps*x*exp(-x**2/2)", params={"eps": 0.02})')

The formula is parsed safely (never evaluated as Python), reduced to its canonical form and
compiled into a straight-line torch program; gradients come from autograd.

Memory: the lean path saves only the input (and scalars) for backward and recomputes the
formula inside backward (activation checkpointing of one elementwise op): saved bytes = 1x
the input instead of one tensor per intermediate, for one extra forward evaluation in
backward (+20-50% activation time, ``benchmarks/bench_activations.py``). Kernel modes (see
:mod:`actlab.activations`): "reference" is plain autograd; "auto" takes the lean path
for tensors of >= ACTLAB_FUSE_MIN_NUMEL elements (65536), where memory matters, and plain
autograd below (small search proxies stay fast); the other modes always take it. Each learnable
scalar of the formula (alpha, beta, gamma, delta, eps, theta, beta2, ...) becomes a 0-dim
parameter initialised from ``params`` or its documented default (:mod:`actlab.expr.ir`).
It lives in :mod:`actlab.expr` (above the zoo: it imports only public names of
:mod:`actlab.activations`); the activation registry loads it by name. The primitives are
those of the Swish search space (Ramachandran, Zoph & Le 2017, "Searching for Activation
Functions") plus gelu and silu.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from actlab.activations import Activation, fuse_min_numel, get_kernel_mode, scalar
from actlab.expr.canonical import canonical
from actlab.expr.ir import Expr, ExprError, param_default, param_names, to_string
from actlab.expr.parser import parse
from actlab.expr.reference import evaluate
from actlab.expr.torch_eval import Program
from actlab.registry import ParamRule, register_activation

__all__ = ["ExprActivation"]


def _reference(x: Tensor, m: nn.Module) -> Tensor:
    """Float64 oracle: the numpy interpreter with the module's current scalar values."""
    assert isinstance(m, ExprActivation)
    params = {n: float(getattr(m, n).detach()) for n in m.param_names}
    out = evaluate(m.expr, x.detach().cpu().double().numpy(), params)
    return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)


def _formula(value: object) -> str | Expr:
    """A formula string in its canonical text (so equivalent formulas give one spec)."""
    if isinstance(value, str):
        return to_string(parse(value))
    if isinstance(value, Expr):
        return value
    raise TypeError(f"expr: formula must be a string, got {type(value).__name__}")


def _params(value: object) -> dict[str, float] | None:
    """Initial values: a mapping of names to finite numbers, as floats sorted by name. (Entries
    equal to a default are kept: the constructor must still refuse names the formula lacks.)"""
    if not isinstance(value, Mapping):
        raise TypeError(f"expr: params must be a dict of name: number, got {type(value).__name__}")
    rule = ParamRule("float")
    out: dict[str, float] = {}
    for name in sorted(value, key=str):
        if not isinstance(name, str):
            raise TypeError(f"expr: params keys must be names, got {name!r}")
        out[name] = rule.apply("expr", f"params[{name!r}]", value[name])
    return out or None


@register_activation(
    "expr",
    formula="any formula of the actlab.expr language, e.g. x*sigmoid(beta*x) (the default)",
    paper="Ramachandran, Zoph & Le 2017, Searching for Activation Functions (search space)",
    reference=_reference,
    limits=(math.nan, math.inf),
    family="search",
    smooth=False,
    fused=True,
    rules={
        "formula": ParamRule("any", check=_formula),
        "params": ParamRule("any", optional=True, check=_params),
    },
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
            formula=self.formula,
            params=init,
            learnable=bool(learnable),
            weight_decay=self.weight_decay,
        )

    def forward(self, x: Tensor) -> Tensor:
        params = [getattr(self, n) for n in self.param_names]
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in params)
        )
        mode = get_kernel_mode()
        plain = mode == "reference" or (mode == "auto" and x.numel() < fuse_min_numel())
        if not needs_grad or plain or torch.compiler.is_compiling():
            return self._program(x, dict(zip(self.param_names, params)))
        return _Recompute.apply(self._program, self.param_names, x, *params)


class _Recompute(torch.autograd.Function):
    """Saves x and the scalars only; backward re-evaluates the program under autograd."""

    @staticmethod
    def forward(
        ctx: Any, program: Program, names: tuple[str, ...], x: Tensor, *params: Tensor
    ) -> Tensor:  # type: ignore[override]
        ctx.program, ctx.names = program, names
        ctx.save_for_backward(x, *params)
        with torch.no_grad():
            return program(x, dict(zip(names, params)))

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, *params = ctx.saved_tensors
        want = ctx.needs_input_grad[2:]
        # grad mode is on here exactly when the caller asked for create_graph: then the
        # recomputation must hang off the saved inputs themselves (higher derivatives)
        create = torch.is_grad_enabled()
        leaves = (
            [x, *params]
            if create
            else [t.detach().requires_grad_(w) for t, w in zip([x, *params], want)]
        )
        inputs = [t for t, w in zip(leaves, want) if w]
        with torch.enable_grad():
            y = ctx.program(leaves[0], dict(zip(ctx.names, leaves[1:])))
            grads = iter(
                torch.autograd.grad(y, inputs, g, allow_unused=True, create_graph=create)
                if y.requires_grad
                else [None] * len(inputs)
            )
        return (None, None, *(next(grads) if w else None for w in want))
