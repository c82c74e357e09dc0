"""Closed-form derivatives of the smooth bases that ``eafo`` can correct.

Each entry maps x to (f, f', f'', A, A') with A = f'' + x f' and A' = f''' + f' + x f'' —
the pieces the EAFO correction needs. Everything is elementwise torch code so that it can be
fused by torch.compile; where A and A' simplify (gelu: A = 2φ + xΦ, A' = Φ - xφ) the
simplified form is used, because Inductor fuses but does not simplify algebra.

With s = σ(x), s1 = s(1-s), s2 = s1(1-2s), s3 = s1(1-6s+6s²) and φ, Φ the standard normal
density and CDF:

    base      f           f'             f''               f'''
    gelu      xΦ          Φ + xφ         φ(2 - x²)         φ(x³ - 4x)
    silu      xs          s + x s1       2 s1 + x s2       3 s2 + x s3
    softplus  log(1+eˣ)   s              s1                s2
    sigmoid   s           s1             s2                s3
    tanh      t           1 - t²         -2t(1 - t²)       (1 - t²)(6t² - 2)
    relu      max(0,x)    1[x>0]         0                 0

The monotone branch (f' > 0) is the whole line except for gelu (x > -0.7518), silu
(x > -1.2785) and relu (x > 0).

Which bases are allowed: the correction c = φ·(f'' + x f')·w(f') must be continuous, so f''
must be. ELU is refused (:data:`REFUSED`): its f'' jumps from 1 to 0 at x = 0, so its
correction would jump by ε·φ(0) ≈ 0.399·ε there. ReLU is kept although it is not C²: its f''
is 0 off the kink and x·f'(x) = relu(x) is continuous, so its correction x·φ(x)·1[x>0] is
continuous (this is CRReLU's positive branch).

Limits: f' is exact at ±inf (the products x·φ(x) and x·σ'(x) take their limit 0 there instead
of inf·0 = nan); f'', A and A' may be nan at ±inf, where the correction is masked to 0 anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Derivs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # f, f', f'', A, A'
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def normal_pdf(x: Tensor) -> Tensor:
    return torch.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _xmul(x: Tensor, t: Tensor) -> Tensor:
    """x·t with the limit 0 where t underflowed to 0 (x = ±inf would give inf·0 = nan)."""
    return torch.where(t == 0, 0.0, x * t)


def _sig(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    s = torch.sigmoid(x)
    s1 = s * (1 - s)
    return s, s1, s1 * (1 - 2 * s), s1 * (1 - 6 * s + 6 * s * s)


def _generic(x: Tensor, f: Tensor, f1: Tensor, f2: Tensor, f3: Tensor) -> Derivs:
    return f, f1, f2, f2 + x * f1, f3 + f1 + x * f2


def _gelu(x: Tensor) -> Derivs:
    p = normal_pdf(x)
    c = 0.5 * (1 + torch.erf(x * (1 / math.sqrt(2.0))))
    xc, xp = x * c, _xmul(x, p)
    return xc, c + xp, p * (2 - x * x), 2 * p + xc, c - xp


def _silu(x: Tensor) -> Derivs:
    s, s1, s2, s3 = _sig(x)
    return _generic(x, x * s, s + _xmul(x, s1), 2 * s1 + x * s2, 3 * s2 + x * s3)


def _softplus(x: Tensor) -> Derivs:
    s, s1, s2, _ = _sig(x)
    return _generic(x, torch.nn.functional.softplus(x), s, s1, s2)


def _sigmoid(x: Tensor) -> Derivs:
    return _generic(x, *_sig(x))


def _tanh(x: Tensor) -> Derivs:
    t = torch.tanh(x)
    u = 1 - t * t
    return _generic(x, t, u, -2 * t * u, u * (6 * t * t - 2))


def _relu(x: Tensor) -> Derivs:
    step = (x > 0).to(x.dtype)
    return torch.relu(x), step, torch.zeros_like(x), x * step, step


BASES: dict[str, Callable[[Tensor], Derivs]] = {
    "gelu": _gelu,
    "silu": _silu,
    "softplus": _softplus,
    "sigmoid": _sigmoid,
    "tanh": _tanh,
    "relu": _relu,
}

# Bases that are refused, with the reason (their correction would be discontinuous).
REFUSED: dict[str, str] = {
    "elu": "ELU's second derivative jumps at 0, so its correction would jump by eps*phi(0)",
}

# Left end of the monotone branch (f' > 0 for x > this), for documentation and tests.
MONOTONE_FROM: dict[str, float] = {
    "gelu": -0.751791524693564,
    "silu": -1.278464542761074,
    "softplus": -math.inf,
    "sigmoid": -math.inf,
    "tanh": -math.inf,
    "relu": 0.0,
}
