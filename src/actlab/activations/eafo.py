"""EAFO activations: CRReLU, the general entropy correction ``eafo`` and the WAFBC baseline.

Seed paper: "A Method on Searching Better Activation Functions" (arXiv 2405.12954; ICLR 2025
as "Entropy-based Activation Function Optimization"). Notes: shared/methods/eafo.md.

CRReLU [paper]:  crrelu(x) = max(0, x) + ε · x · exp(-x²/2)
    one learnable scalar ε per instance, init +0.01, on the whole real line, no 1/√(2π).
    ∂/∂x = 1[x>0] + ε(1 - x²)e^{-x²/2}      ∂/∂ε = x e^{-x²/2}
    (The first-order entropy-lowering direction for N(0,1) inputs is ε < 0; the paper's +0.01
    init is kept and ε is learned — see eafo.md.)

eafo(base, ε) [derived extension, not in the paper]: first-order entropy correction of a
smooth invertible base f for Gaussian pre-activations,

    f_ε(x) = f(x) - ε · c(x),     c(x) = φ(x) · (f''(x) + x f'(x)) · w(f'(x))

where w(u) = 1/u is the inverse slope that the inversion step introduces. The formula holds
on the monotone branch only, and 1/f' blows up at its edge, so the documented rule is:

    w(u) = 1/u for u >= τ,   u/τ² for 0 < u < τ,   0 for u <= 0          (τ = 0.1 default)

i.e. the paper's formula exactly wherever f' >= τ, a linear ramp of the inverse slope to zero
as f' -> 0, and no correction outside the monotone branch; c is continuous everywhere.
For base=relu this gives relu(x) - ε·x·φ(x)·1[x>0]: CRReLU's positive branch up to the sign
and scale of ε.  c'(x) = φ·[-x·A·w + A'·w + A·w'(f')·f''] with A = f'' + x f',
A' = f''' + f' + x f''.

WAFBC [paper]: the worst activation with boundary conditions for Gaussian inputs is a scaled
normal CDF (it makes the output uniform, maximising entropy):
    wafbc(x) = scale · Φ((x - loc) / width) + shift
a baseline every real activation should beat.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from actlab.activations._base import Activation, scalar
from actlab.activations._eafo_bases import BASES, REFUSED, normal_pdf
from actlab.activations._fused import ElementwiseKernel, acc_sum
from actlab.registry import ParamRule, register_activation

_CLAMP = 40.0  # x·e^{-x²/2} and φ(x) are exactly 0 in float32/float64 beyond |x| = 40


# ---------------------------------------------------------------- CRReLU
# For |x| >= 40, e^{-x²/2}, x·e^{-x²/2} and (1 - x²)·e^{-x²/2} are exactly 0 in float32 and
# float64 (e^{-800} underflows). Mapping such x (and ±inf, and nan) to 40 before the bump keeps
# every bump term at its limit 0 instead of inf·0 = nan, and the derivative at 1[x>0]. (Mapping
# to 0 instead made the bump's derivative e^0 = 1, i.e. a gradient of 1[x>0] + ε for |x| >= 40.)
# A `where` is used, not a clamp: Inductor's vectorised NaN-propagating min/max made the whole
# CPU kernel ~3x slower.
def _bump_arg(x: Tensor) -> Tensor:
    return torch.where(x.abs() < _CLAMP, x, _CLAMP)


def _crrelu_fwd(x: Tensor, eps: Tensor) -> Tensor:
    xc = _bump_arg(x)
    return torch.relu(x) + eps * xc * torch.exp(-0.5 * xc * xc)


def _crrelu_bwd(x: Tensor, g: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    xc = _bump_arg(x)
    e = torch.exp(-0.5 * xc * xc)
    gx = g * ((x > 0).to(g.dtype) + eps * (1 - xc * xc) * e)
    return gx, acc_sum(g * xc * e)


CRRELU = ElementwiseKernel("crrelu", _crrelu_fwd, _crrelu_bwd, native="crrelu")


@register_activation(
    "crrelu",
    formula="max(0, x) + eps * x * exp(-x^2/2)   (eps learnable scalar, init 0.01)",
    paper="EAFO: A Method on Searching Better Activation Functions, arXiv 2405.12954 (ICLR 2025)",
    reference=lambda x, m: (
        torch.where(x > 0, x, torch.zeros_like(x))
        + float(m.eps.detach()) * x * torch.exp(-(x**2) / 2)
    ),
    limits=(0.0, math.inf),
    family="eafo",
    smooth=False,
    fused=True,
    notes="Minimum -eps*e^(-1/2) at x = -1 for eps > 0; f'(0-) = eps, f'(0+) = 1 + eps.",
)
class CRReLU(Activation):
    """Correction Regularized ReLU. ``weight_decay`` says whether ε takes weight decay
    (default True: the authors' pipeline applied AdamW weight decay to every parameter)."""

    eps: Tensor

    def __init__(
        self,
        *,
        eps: float = 0.01,
        learnable: bool = True,
        weight_decay: bool = True,
        inplace: bool = False,
    ) -> None:
        super().__init__(inplace=inplace)
        scalar(self, "eps", eps, learnable)
        self.weight_decay = bool(weight_decay)
        self._set_hparams(eps=float(eps), learnable=bool(learnable), weight_decay=self.weight_decay)

    def forward(self, x: Tensor) -> Tensor:
        return CRRELU(x, self.eps)


# ---------------------------------------------------------------- eafo(base)
def _correction(base: str, x: Tensor, tau: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """f(x), f'(x), the correction c(x) and its derivative c'(x) for one base."""
    f, f1, f2, a, da = BASES[base](x)
    p = normal_pdf(x)
    # w(u) = u₊ / max(u, τ)²  ==  1/u (u >= τ), u/τ² (0 < u < τ), 0 (u <= 0)
    big, pos = f1 > tau, f1 > 0
    m = torch.where(big, f1, tau)
    inv_m2 = 1 / (m * m)
    w = torch.where(pos, f1, 0.0) * inv_m2
    # w'(u) = -1/u² (u >= τ), 1/τ² (0 < u < τ), 0 (u <= 0)
    dw = torch.where(big, -inv_m2, torch.where(pos, inv_m2, 0.0))
    c = p * a * w
    dc = p * ((da - x * a) * w + a * dw * f2)
    # finite x: every factor is finite and p underflows to 0 well before |x| = 40;
    # x = ±inf (or x² overflowing) gives inf·0 = nan, which the mask replaces by the limit 0
    small = x.abs() < _CLAMP
    return f, f1, torch.where(small, c, 0.0), torch.where(small, dc, 0.0)


def _eafo_fwd(base: str, x: Tensor, eps: Tensor, tau: Tensor) -> Tensor:
    f, _, c, _ = _correction(base, x, tau)
    return f - eps * c


def _eafo_bwd(base: str, x: Tensor, g: Tensor, eps: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
    _, f1, c, dc = _correction(base, x, tau)
    return g * (f1 - eps * dc), -acc_sum(g * c)


_EAFO_KERNELS: dict[str, ElementwiseKernel] = {}


def eafo_kernel(base: str) -> ElementwiseKernel:
    """The (lazily built) fused kernel of eafo for one base."""
    if base not in _EAFO_KERNELS:

        def fwd(x: Tensor, eps: Tensor, tau: Tensor) -> Tensor:
            return _eafo_fwd(base, x, eps, tau)

        def bwd(x: Tensor, g: Tensor, eps: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
            return _eafo_bwd(base, x, g, eps, tau)

        _EAFO_KERNELS[base] = ElementwiseKernel(
            f"eafo_{base}", fwd, bwd, native="eafo_gelu" if base == "gelu" else None
        )
    return _EAFO_KERNELS[base]


def eafo_reference(x: Tensor, m: Any) -> Tensor:
    """Float64 oracle for eafo: derivatives by nested autograd, not by the closed forms."""
    from actlab.registry import create_activation

    base = create_activation(m.base).double()
    xs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        f = base(xs)
        (f1,) = torch.autograd.grad(f.sum(), xs, create_graph=True)
        (f2,) = torch.autograd.grad(f1.sum(), xs, allow_unused=True)
    f2 = torch.zeros_like(x) if f2 is None else f2
    f, f1 = f.detach(), f1.detach()
    tau = float(m.tau.detach())
    w = torch.where(f1 >= tau, 1 / f1.clamp_min(tau), torch.where(f1 > 0, f1 / tau**2, 0 * f1))
    phi = torch.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
    c = torch.where(w != 0, phi * (f2 + x * f1) * w, torch.zeros_like(x))
    return f - float(m.eps.detach()) * c


@register_activation(
    "eafo",
    formula=(
        "f(x) - eps * phi(x) * (f''(x) + x f'(x)) * w(f'(x)),  "
        "w(u)=1/u (u>=tau), u/tau^2 (0<u<tau), 0"
    ),
    paper="derived from EAFO (arXiv 2405.12954) for any smooth base; extension, not in the paper",
    reference=eafo_reference,
    limits=(math.nan, math.inf),
    family="eafo",
    fused=True,
    notes="Bases: " + ", ".join(BASES) + " (elu is refused: its f'' jumps at 0, so the "
    "correction would too). Correction is 0 outside the base's monotone branch.",
    rules={
        "base": ParamRule("str", choices=tuple(BASES), refused=tuple(REFUSED.items())),
        "tau": ParamRule("float", gt=0),
    },
)
class EAFO(Activation):
    """First-order entropy correction of a smooth ``base`` with one learnable ε."""

    eps: Tensor
    tau: Tensor

    def __init__(
        self,
        *,
        base: str = "gelu",
        eps: float = 0.01,
        tau: float = 0.1,
        learnable: bool = True,
        weight_decay: bool = True,
        inplace: bool = False,
    ) -> None:
        super().__init__(inplace=inplace)
        base = str(base).lower()  # validated by the registry's rules (ParamRule)
        self.base = base
        scalar(self, "eps", eps, learnable)
        self.register_buffer("tau", torch.tensor(float(tau)))
        self.weight_decay = bool(weight_decay)
        self._set_hparams(
            base=base,
            eps=float(eps),
            tau=float(tau),
            learnable=bool(learnable),
            weight_decay=self.weight_decay,
        )
        self._kernel = eafo_kernel(base)

    def forward(self, x: Tensor) -> Tensor:
        return self._kernel(x, self.eps, self.tau.to(x.dtype))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_kernel", None)  # rebuilt from `base`: kernels hold compiled functions
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._kernel = eafo_kernel(self.base)


# ---------------------------------------------------------------- WAFBC
_SQRT1_2 = 1 / math.sqrt(2.0)


def _wafbc_fwd(x: Tensor, scale: Tensor, shift: Tensor, loc: Tensor, width: Tensor) -> Tensor:
    return scale * 0.5 * (1 + torch.erf((x - loc) / width * _SQRT1_2)) + shift


def _wafbc_bwd(
    x: Tensor, g: Tensor, scale: Tensor, shift: Tensor, loc: Tensor, width: Tensor
) -> tuple[Tensor]:
    z = (x - loc) / width
    return (g * scale * normal_pdf(z) / width,)


WAFBC_KERNEL = ElementwiseKernel("wafbc", _wafbc_fwd, _wafbc_bwd)


@register_activation(
    "wafbc",
    formula="scale * Phi((x - loc)/width) + shift   (worst activation for N(loc, width^2) inputs)",
    paper="EAFO: A Method on Searching Better Activation Functions, arXiv 2405.12954 (WAFBC)",
    reference=lambda x, m: (
        float(m.scale.detach())
        * 0.5
        * (
            1
            + torch.special.erf(
                (x - float(m.loc.detach())) / (float(m.width.detach()) * math.sqrt(2))
            )
        )
        + float(m.shift.detach())
    ),
    limits=(0.0, 1.0),
    family="eafo",
    fused=True,
    rules={"width": ParamRule("float", gt=0)},
    notes=(
        "A baseline: maximises output entropy for Gaussian inputs; "
        "every real activation should beat it."
    ),
)
class WAFBC(Activation):
    scale: Tensor
    shift: Tensor
    loc: Tensor
    width: Tensor

    def __init__(
        self,
        *,
        scale: float = 1.0,
        shift: float = 0.0,
        loc: float = 0.0,
        width: float = 1.0,
        inplace: bool = False,
    ) -> None:
        super().__init__(inplace=inplace)
        for n, v in (("scale", scale), ("shift", shift), ("loc", loc), ("width", width)):
            scalar(self, n, v, learnable=False)
        self._set_hparams(
            scale=float(scale), shift=float(shift), loc=float(loc), width=float(width)
        )

    def forward(self, x: Tensor) -> Tensor:
        d = x.dtype
        return WAFBC_KERNEL(x, self.scale.to(d), self.shift.to(d), self.loc.to(d), self.width.to(d))
