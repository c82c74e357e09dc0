"""Polynomial activations: PolyReLU (PolyCom) and squared ReLU.

PolyReLU — Zhuo et al. 2024, "Polynomial Composition Activations" (arXiv 2411.03884):

    polyrelu(x) = Σ_{i=0..r} a_i · relu(x)^i          (ReLU first, then the polynomial)
    ∂/∂x = 1[x>0] · Σ_{i>=1} i·a_i·relu(x)^(i-1)        ∂/∂a_i = relu(x)^i

with order r = 3 and init a_0 = 0, a_1 = a_2 = a_3 = 1/3; the coefficients are one learnable
vector per layer. (PolyNorm, which normalises each power over the feature axis, is not
elementwise and comes with the normalisation-activation layers.)

relu2 — So et al. 2021, "Primer: Searching for Efficient Transformers": relu(x)².
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from actlab.activations._base import Activation
from actlab.activations._fused import ElementwiseKernel, acc_sum
from actlab.registry import ParamRule, register_activation


def _poly_fwd(x: Tensor, coef: Tensor) -> Tensor:
    r = torch.relu(x)
    y = coef[-1] * r
    for i in range(coef.shape[0] - 2, 0, -1):  # Horner: ((a_r r + a_{r-1}) r + ...) r + a_0
        y = (y + coef[i]) * r
    return y + coef[0]


def _poly_bwd(x: Tensor, g: Tensor, coef: Tensor) -> tuple[Tensor, Tensor]:
    r = torch.relu(x)
    n = coef.shape[0]
    d = (n - 1) * coef[n - 1] * torch.ones_like(r)
    for i in range(n - 2, 0, -1):  # derivative polynomial by Horner
        d = d * r + i * coef[i]
    gx = g * torch.where(x > 0, d, torch.zeros_like(d))
    powers = [acc_sum(g)]
    p = r
    for _ in range(1, n):
        powers.append(acc_sum(g * p))
        p = p * r
    return gx, torch.stack(powers)


POLYRELU = ElementwiseKernel("polyrelu", _poly_fwd, _poly_bwd)

MAX_ORDER = 32  # Horner is unrolled into the compiled kernel; PolyCom uses order 3


def _coefficients(value: object) -> tuple[float, ...]:
    """``init``: a tuple or list of at most MAX_ORDER + 1 finite numbers, as floats."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"polyrelu: init must be a tuple of numbers, got {type(value).__name__}")
    if not 2 <= len(value) <= MAX_ORDER + 1:
        raise ValueError(
            f"polyrelu: init needs 2 to {MAX_ORDER + 1} coefficients, got {len(value)}"
        )
    rule = ParamRule("float")
    return tuple(rule.apply("polyrelu", f"init[{i}]", v) for i, v in enumerate(value))


def _poly_ref(x: Tensor, m: Any) -> Tensor:
    r = torch.where(x > 0, x, torch.zeros_like(x))
    c = [float(v) for v in m.coef.detach().cpu()]
    return sum((c[i] * r**i for i in range(len(c))), torch.zeros_like(x))


@register_activation(
    "polyrelu",
    formula="sum_i a_i * relu(x)^i, i = 0..order (order 3, a = [0, 1/3, 1/3, 1/3], learnable)",
    paper="Zhuo et al. 2024, Polynomial Composition Activations (PolyCom), arXiv 2411.03884",
    reference=_poly_ref,
    limits=(0.0, math.inf),
    family="polycom",
    smooth=False,
    fused=True,
    rules={
        "order": ParamRule("int", ge=1, le=MAX_ORDER),
        "init": ParamRule("any", optional=True, check=_coefficients),
    },
)
class PolyReLU(Activation):
    coef: Tensor

    def __init__(
        self,
        *,
        order: int = 3,
        init: tuple[float, ...] | None = None,
        learnable: bool = True,
        weight_decay: bool = True,
        inplace: bool = False,
    ) -> None:
        super().__init__(inplace=inplace)
        order = int(order)  # validated by the registry's rules (1 <= order <= MAX_ORDER)
        coef = list(init) if init is not None else [0.0] + [1.0 / order] * order
        if len(coef) != order + 1:
            raise ValueError(
                f"polyrelu: init needs order+1 = {order + 1} coefficients, got {len(coef)}"
            )
        t = torch.tensor(coef, dtype=torch.float32)
        if learnable:
            self.coef = nn.Parameter(t)
        else:
            self.register_buffer("coef", t)
        self.weight_decay = bool(weight_decay)
        self._set_hparams(order=order, learnable=bool(learnable), weight_decay=self.weight_decay)
        if init is not None:
            self._hparams["init"] = tuple(float(c) for c in coef)

    def forward(self, x: Tensor) -> Tensor:
        return POLYRELU(x, self.coef)


def _relu2_fwd(x: Tensor) -> Tensor:
    r = torch.relu(x)
    return r * r


def _relu2_bwd(x: Tensor, g: Tensor) -> tuple[Tensor]:
    return (2 * g * torch.relu(x),)


RELU2 = ElementwiseKernel("relu2", _relu2_fwd, _relu2_bwd)


@register_activation(
    "relu2",
    formula="relu(x)^2",
    paper="So et al. 2021, Primer: Searching for Efficient Transformers for Language Modeling",
    reference=lambda x, m: torch.where(x > 0, x * x, torch.zeros_like(x)),
    limits=(0.0, math.inf),
    family="polycom",
    aliases=("squared_relu",),
    smooth=False,
    fused=True,
)
class ReLU2(Activation):
    def forward(self, x: Tensor) -> Tensor:
        return RELU2(x)
