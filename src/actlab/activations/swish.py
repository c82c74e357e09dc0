"""Swish with a learnable β (Ramachandran, Zoph & Le 2017, "Searching for Activation Functions").

    swish_β(x) = x · σ(βx)
    ∂/∂x = σ(βx) + βx·σ(βx)(1 - σ(βx))        ∂/∂β = x²·σ(βx)(1 - σ(βx))

β is one learnable scalar per instance (init 1.0, where Swish equals SiLU). The lean path
saves only x and β for backward; the fused path computes forward and backward in one pass
each (see :mod:`actlab.activations._fused`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from actlab.activations._base import Activation, scalar
from actlab.activations._fused import ElementwiseKernel, acc_sum
from actlab.registry import register_activation


def _fwd(x: Tensor, beta: Tensor) -> Tensor:
    return x * torch.sigmoid(beta * x)


def _bwd(x: Tensor, g: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    bx = beta * x
    s = torch.sigmoid(bx)
    ds = s * torch.sigmoid(-bx)  # σ'(βx); s·(1 - s) would lose it where s rounds to 1
    # where σ'(βx) underflowed to 0 (|βx| > ~100, or ±inf) both products take their limit 0:
    # βx·σ'(βx) and x²·σ'(βx) would otherwise be inf·0 = nan at ±inf and at huge finite x
    live = ds > 0
    gx = g * (s + torch.where(live, bx * ds, 0.0))
    return gx, acc_sum(g * torch.where(live, x * x * ds, 0.0))


SWISH = ElementwiseKernel("swish", _fwd, _bwd)


@register_activation(
    "swish",
    formula="x * sigmoid(beta*x)   (beta learnable, init 1)",
    paper="Ramachandran, Zoph & Le 2017, Searching for Activation Functions",
    reference=lambda x, m: x / (1 + torch.exp(-float(m.beta.detach()) * x)),
    limits=(math.nan, math.inf),
    family="search",
    fused=True,
)
class Swish(Activation):
    beta: Tensor

    def __init__(
        self,
        *,
        beta: float = 1.0,
        learnable: bool = True,
        weight_decay: bool = True,
        inplace: bool = False,
    ) -> None:
        super().__init__(inplace=inplace)
        scalar(self, "beta", beta, learnable)
        self.weight_decay = bool(weight_decay)
        self._set_hparams(
            beta=float(beta), learnable=bool(learnable), weight_decay=self.weight_decay
        )

    def forward(self, x: Tensor) -> Tensor:
        return SWISH(x, self.beta)
