"""Closed-form derivatives (f, f', f'', f''') of the smooth bases that ``eafo`` can correct.

Each entry maps x to the four tensors; everything is elementwise torch code so that it can be
fused by torch.compile. With s = σ(x), s1 = s(1-s), s2 = s1(1-2s), s3 = s1(1-6s+6s²) and
φ, Φ the standard normal density and CDF:

    gelu      xΦ          Φ + xφ         φ(2 - x²)         φ(x³ - 4x)
    silu      xs          s + x s1       2 s1 + x s2       3 s2 + x s3
    softplus  log(1+eˣ)   s              s1                s2
    sigmoid   s           s1             s2                s3
    tanh      t           1 - t²         -2t(1 - t²)       (1 - t²)(6t² - 2)
    elu       x | eˣ-1    1 | eˣ         0 | eˣ            0 | eˣ          (x > 0 | x <= 0)
    relu      max(0,x)    1[x>0]         0                 0

The monotone branch (f' > 0) is the whole line except for gelu (x > -0.7518) and silu
(x > -1.2785); relu's and elu's f' is positive or zero everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Derivs = tuple[Tensor, Tensor, Tensor, Tensor]
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def normal_pdf(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _sig(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    s = torch.sigmoid(x)
    s1 = s * (1 - s)
    return s, s1, s1 * (1 - 2 * s), s1 * (1 - 6 * s + 6 * s * s)


def _gelu(x: Tensor) -> Derivs:
    p = normal_pdf(x)
    c = 0.5 * (1 + torch.erf(x * (1 / math.sqrt(2.0))))
    return x * c, c + x * p, p * (2 - x * x), p * (x * x * x - 4 * x)


def _silu(x: Tensor) -> Derivs:
    s, s1, s2, s3 = _sig(x)
    return x * s, s + x * s1, 2 * s1 + x * s2, 3 * s2 + x * s3


def _softplus(x: Tensor) -> Derivs:
    s, s1, s2, _ = _sig(x)
    return torch.nn.functional.softplus(x), s, s1, s2


def _sigmoid(x: Tensor) -> Derivs:
    return _sig(x)


def _tanh(x: Tensor) -> Derivs:
    t = torch.tanh(x)
    u = 1 - t * t
    return t, u, -2 * t * u, u * (6 * t * t - 2)


def _elu(x: Tensor) -> Derivs:
    pos = x > 0
    e = torch.exp(torch.clamp(x, max=0.0))
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    return (
        torch.where(pos, x, e - 1),
        torch.where(pos, one, e),
        torch.where(pos, zero, e),
        torch.where(pos, zero, e),
    )


def _relu(x: Tensor) -> Derivs:
    zero = torch.zeros_like(x)
    return torch.relu(x), (x > 0).to(x.dtype), zero, zero


BASES: dict[str, Callable[[Tensor], Derivs]] = {
    "gelu": _gelu,
    "silu": _silu,
    "softplus": _softplus,
    "sigmoid": _sigmoid,
    "tanh": _tanh,
    "elu": _elu,
    "relu": _relu,
}

# Left end of the monotone branch (f' > 0 for x > this), for documentation and tests.
MONOTONE_FROM: dict[str, float] = {
    "gelu": -0.751791524693564,
    "silu": -1.278464542761074,
    "softplus": -math.inf,
    "sigmoid": -math.inf,
    "tanh": -math.inf,
    "elu": -math.inf,
    "relu": 0.0,
}
