"""Shape checks from EAFO's boundary conditions: cheap, before any training.

EAFO ("A Method on Searching Better Activation Functions", arXiv 2405.12954; ICLR 2025 as
"Entropy-based Activation Function Optimization") works on the inverse y = f^{-1} of an
activation and the output entropy H[y] = ∫ G(y, y') dx, G = -p(y) y' log(p(y) y'), of
pre-activations X ~ p. Its worst case, WAFBC, is the entropy maximiser *with boundary
conditions* f(-inf) = C2, f(+inf) = C1 + C2 (a scaled CDF of p); its better functions move
away from WAFBC by corrections η with EL = p'(y) y' + p(y) y''/y' (see
``shared/methods/eafo.md``). Each check below keeps a candidate inside the class of
functions on which that argument is made:

- ``growth`` -- at most linear growth as x -> +inf [derived]. The EAFO step is a
  variation with the boundary conditions held fixed: integrating ∫ (∂G/∂y') η' dx by parts
  leaves the boundary term [∂G/∂y' · η], and H[y + η] - H[y] = ∫ EL·η dx only for
  corrections η that vanish at the ends -- corrections that keep the asymptotics of the
  base function (CRReLU = ReLU + ε x e^{-x²/2}: the correction decays, f ~ x as x -> +inf).
  The base the paper corrects is ReLU, whose unbounded side is linear (the paper's reason
  why ReLU beats the bounded, WAFBC-like sigmoid/tanh); a faster growth (x³, e^x) is outside
  that class and, in a deep net, blows the forward signal up for inputs a few standard
  deviations out -- a failure a small proxy task with small inputs cannot show.
  Measured as the exponent k of |f| ~ x^k between the windows [R1/2, R1] and [R2/2, R2]
  (R1 = 1e2, R2 = 1e6, float64): k = log((M2 + 1) / (M1 + 1)) / log(R2 / R1), M = max |f|
  on the window; reject when k > 1 + ``growth_tol`` or f is not finite there.
- ``negative`` -- bounded as x -> -inf (default ``"bounded"``; ``"linear"`` allows at most
  linear growth, e.g. leaky ReLU / PReLU; ``"any"`` no condition) [paper: WAFBC's boundary
  value f(-inf) = C2, and CRReLU(x) -> 0 as x -> -inf, keeping ReLU's sparsity; derived:
  by the argument above, a correction of ReLU keeps f bounded there]. Same exponent on
  [-R1, -R1/2] and [-R2, -R2/2];
  bounded means k <= ``bounded_tol``.
- ``range`` -- no pole, non-finite value or flat gradient on the input range [-r, r] seen
  in training (pre-activations are standardised by the model's init and norms; EAFO
  assumes X ~ N(0, 1)) [derived]. The functional needs y' = 1/f' finite and positive
  where p has mass: a pole or jump (|f'| > ``max_slope`` on a fine grid) breaks the
  density transform q = p(y) y', and a flat f (f' = 0) where most of p lies makes y'
  infinite -- the output collapses to a point mass, no gradient flows. Flat means |f'| <
  1e-6 · max |f'|; reject when the N(0, 1) mass of the flat part exceeds ``max_flat``
  (0.75: ReLU, flat on half the mass, passes; relu(x - 1), flat on 84%, does not).
- ``monotone`` (option, off by default) -- f' >= 0 on [-r, r] (up to 1e-6 · max |f'|):
  EAFO's derivation inverts f, which needs a monotone f (the note's GELU/SiLU extension
  is valid only on their monotone branch). Off by default since GELU, SiLU and CRReLU
  with ε > 0 all dip below zero.
- ``f0`` (option) -- the sign of f(0): ``"zero"`` (|f(0)| <= 1e-6, like ReLU, GELU,
  CRReLU), ``"positive"``, ``"negative"``, ``"nonnegative"``, ``"nonpositive"``.

Every rejection is a :class:`ShapeResult` with ``ok=False`` and a one-line reason that
starts with the condition's name; the pipeline records it at stage ``shape``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

__all__ = ["NEGATIVE_MODES", "SIGNS", "ShapeChecks", "ShapeResult", "check_shape"]

NEGATIVE_MODES: tuple[str, ...] = ("bounded", "linear", "any")
SIGNS: tuple[str, ...] = ("zero", "positive", "negative", "nonnegative", "nonpositive")
R1, R2 = 1e2, 1e6  # the two windows of the growth exponent (float64)
FLAT_REL = 1e-6  # |f'| below this fraction of max |f'| on the range counts as flat
ZERO_TOL = 1e-6  # |f(0)| at most this is "zero"


class ShapeResult(NamedTuple):
    ok: bool
    reason: str


@dataclass(frozen=True)
class ShapeChecks:
    """Which shape conditions a candidate must meet (see the module docstring)."""

    growth: bool = True
    growth_tol: float = 0.1
    negative: str = "bounded"
    bounded_tol: float = 0.1
    input_range: float = 8.0
    max_slope: float = 1e3
    max_flat: float = 0.75
    monotone: bool = False
    f0: str | None = None

    def __post_init__(self) -> None:
        if self.negative not in NEGATIVE_MODES:
            raise ValueError(
                f"negative must be one of {', '.join(NEGATIVE_MODES)}, got {self.negative!r}"
            )
        if self.f0 is not None and self.f0 not in SIGNS:
            raise ValueError(f"f0 must be one of {', '.join(SIGNS)} (or None), got {self.f0!r}")
        for name, lo, hi in (
            ("growth_tol", 0.0, 10.0),
            ("bounded_tol", 0.0, 1.0),
            ("input_range", 1e-3, 1e4),
            ("max_slope", 1e-3, 1e12),
            ("max_flat", 0.0, 1.0),
        ):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and lo <= v <= hi):
                raise ValueError(f"shape check {name} must be in [{lo:g}, {hi:g}], got {v}")

    def check(self, module: nn.Module) -> ShapeResult:
        """Run the configured conditions on ``module`` (cheapest first)."""
        return check_shape(module, self)


def _eval(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m(x.clone()).double()


def _exponent(m: nn.Module, sign: float) -> tuple[float, float]:
    """``(k, x)``: the growth exponent of |f| towards ``sign * inf`` (nan: non-finite at x)."""
    maxes = []
    for r in (R1, R2):
        x = sign * torch.linspace(r / 2, r, 257, dtype=torch.float64)
        y = _eval(m, x)
        bad = ~torch.isfinite(y)
        if bool(bad.any()):
            return math.nan, float(x[int(torch.nonzero(bad)[0])])
        maxes.append(float(y.abs().max()))
    return math.log((maxes[1] + 1.0) / (maxes[0] + 1.0)) / math.log(R2 / R1), 0.0


def _double(module: nn.Module) -> nn.Module:
    m = copy.deepcopy(module)
    try:
        return m.double()
    except (RuntimeError, TypeError):  # a module that cannot be cast: float64 inputs only
        return m


def check_shape(module: nn.Module, checks: ShapeChecks | None = None) -> ShapeResult:
    """Check the shape conditions of ``checks`` (default: :class:`ShapeChecks`()) on ``module``."""
    from actlab.activations import kernel_mode

    c = checks or ShapeChecks()
    m = _double(module)
    with kernel_mode("eager"):
        if c.f0 is not None:
            r = _f0(m, c.f0)
            if not r.ok:
                return r
        if c.growth:
            k, at = _exponent(m, 1.0)
            if math.isnan(k):
                return ShapeResult(
                    False, f"growth: f not finite at x={at:g} (faster than any power as x -> +inf)"
                )
            if k > 1.0 + c.growth_tol:
                return ShapeResult(
                    False,
                    f"growth: |f| grows like x^{k:.2f} as x -> +inf; at most linear allowed "
                    f"(x^{1 + c.growth_tol:g})",
                )
        if c.negative != "any":
            k, at = _exponent(m, -1.0)
            limit = c.bounded_tol if c.negative == "bounded" else 1.0 + c.growth_tol
            want = "bounded" if c.negative == "bounded" else "at most linear"
            if math.isnan(k):
                return ShapeResult(False, f"negative: f not finite at x={at:g}; {want} needed")
            if k > limit:
                return ShapeResult(
                    False,
                    f"negative: |f| grows like |x|^{k:.2f} as x -> -inf; {want} needed "
                    f"(|x|^{limit:g})",
                )
        return _range(m, c)


def _f0(m: nn.Module, sign: str) -> ShapeResult:
    v = float(_eval(m, torch.zeros(1, dtype=torch.float64))[0])
    ok = {
        "zero": abs(v) <= ZERO_TOL,
        "positive": v > ZERO_TOL,
        "negative": v < -ZERO_TOL,
        "nonnegative": v >= -ZERO_TOL,
        "nonpositive": v <= ZERO_TOL,
    }[sign]
    return ShapeResult(True, "ok") if ok else ShapeResult(False, f"f0: f(0) = {v:.4g}, not {sign}")


def _range(m: nn.Module, c: ShapeChecks) -> ShapeResult:
    """Poles, non-finite values, flat or decreasing stretches on [-r, r]."""
    r = float(c.input_range)
    x = torch.linspace(-r, r, 8001, dtype=torch.float64).requires_grad_(True)
    with torch.enable_grad():
        y = m(x)
        (g,) = torch.autograd.grad(y.sum(), [x], allow_unused=True)
    y, xs = y.detach().double(), x.detach()
    g = torch.zeros_like(xs) if g is None else g.double()
    for name, t in (("f", y), ("df/dx", g)):
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            at = float(xs[int(torch.nonzero(bad)[0])])
            return ShapeResult(False, f"range: pole, {name} not finite at x={at:.4g} in ±{r:g}")
    steep = float(g.abs().max())
    if steep > c.max_slope:
        at = float(xs[int(g.abs().argmax())])
        return ShapeResult(
            False, f"range: pole or jump, |df/dx| = {steep:.3g} > {c.max_slope:g} at x={at:.4g}"
        )
    if steep == 0.0:
        return ShapeResult(False, f"range: flat, df/dx = 0 everywhere on ±{r:g}")
    w = torch.exp(-0.5 * xs * xs)  # N(0, 1) weights of the grid points
    w = w / w.sum()
    flat = float(w[g.abs() < FLAT_REL * steep].sum())
    if flat > c.max_flat:
        return ShapeResult(
            False, f"range: flat gradient on {100 * flat:.0f}% of N(0,1) mass (max {c.max_flat:g})"
        )
    if c.monotone:
        dec = g < -FLAT_REL * steep
        if bool(dec.any()):
            at = float(xs[int(torch.nonzero(dec)[0])])
            return ShapeResult(False, f"monotone: f decreases at x={at:.4g}")
    return ShapeResult(True, "ok")
