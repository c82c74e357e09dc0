"""EAFO-guided mutation: add a learnable first-order entropy correction to a parent.

EAFO ("A Method on Searching Better Activation Functions", arXiv 2405.12954; see
``shared/methods/eafo.md``). For an invertible activation f and a pre-activation density p,
correcting the inverse of f against the Euler-Lagrange term of the output entropy and
inverting again gives, to first order [derived; checked in tests/search/test_eafo.py]:

    f_ε(x) = f(x) - ε · Q(x),     Q(x) = p(x) · f''(x) / f'(x) - p'(x)

and for Gaussian pre-activations (p = φ, p' = -x φ) this is eafo.md's
``f - ε φ (f''/f' + x)``; for ReLU's positive branch Q = x φ(x), i.e. CRReLU's term. ε > 0
lowers the output entropy to first order (moves f away from the WAFBC worst case).

What :func:`eafo_correction` implements, precisely:

1. f, f', f'' of the parent (learnable scalars at their initial values) by central
   differences (step h = 1e-3) of the float64 reference interpreter on a grid: 801 points
   on [-4, 4] (Gaussian variant) or the bin centres of the measured histogram.
2. The valid branch: f' > 0.1 (the first-order step degenerates as f' -> 0, where f''/f'
   blows up) and f twice differentiable (points where the second differences at steps h
   and 2h disagree, i.e. kinks such as ReLU's at 0, are excluded). Outside it Q is
   undefined (eafo.md) and plays no part in the fit.
3. Q on the valid branch from p and p': the standard normal (``"gaussian"``), or the
   measured pre-activation density of the parent's training (``"measured"``: the pooled
   histogram of all activation inputs, smoothed by a Gaussian of one bin, p' by finite
   differences); with fewer than 8 valid points Q falls back to -p' (the f''/f' term
   needs f' > 0), which is CRReLU's term for Gaussian p.
4. Q is projected by weighted least squares (weights p + 1e-3·max p) onto
   ``P(z) · exp(-z²/2)`` with P a polynomial of degree ``degree`` (1..3) and z = (x-μ)/σ;
   μ = 0, σ = 1 for the Gaussian variant, the measured mean and standard deviation
   otherwise. The fitted term is applied on the whole real line (as CRReLU applies its term),
   coefficients are scaled so the largest is ±1 (ε absorbs the scale), rounded to 3
   significant digits, and terms below 2% of the largest are dropped. For readability z is
   written ``a·x - b`` with a = 1/σ rounded to 2 significant digits and b = μ·a to 2
   decimals.
5. The child is ``parent - eps_k * P(z) * exp(-z²/2)`` with a fresh learnable scalar
   ``eps_k`` (init 0.01, CRReLU's published init) trained with the network.

For ReLU, with either variant on Gaussian data, this yields ``relu(x) - eps*x*exp(-x²/2)``:
CRReLU with the sign of ε flipped (eafo.md's sign note; ε is learned either way).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np

from actlab.expr import Binary, Const, Expr, ExprError, Param, Unary, Var, canonical, evaluate
from actlab.expr.ir import param_default, param_names

__all__ = ["eafo_correction", "eafo_mutation", "gaussian_density", "measured_density"]

Density = tuple[np.ndarray, np.ndarray, np.ndarray]  # grid, p, p'
_H = 1e-3
MIN_SLOPE = 0.1  # the first-order step is unreliable where f' -> 0 (f''/f' blows up)


def gaussian_density(lo: float = -4.0, hi: float = 4.0, n: int = 801) -> Density:
    """The standard normal density and its derivative on a grid."""
    x = np.linspace(lo, hi, n)
    p = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x, p, -x * p


def measured_density(d: Mapping[str, Any], smooth_bins: float = 1.0) -> Density:
    """(grid, p, p') from a recorded histogram ``{"lo", "hi", "p"}`` (bin-centre densities)."""
    p = np.asarray(d["p"], dtype=np.float64)
    lo, hi = float(d["lo"]), float(d["hi"])
    if p.ndim != 1 or p.size < 8 or not hi > lo or not np.all(np.isfinite(p)) or p.sum() <= 0:
        raise ValueError("a measured density needs >= 8 finite bins with positive mass")
    width = (hi - lo) / p.size
    x = lo + width * (np.arange(p.size) + 0.5)
    if smooth_bins > 0:
        half = int(math.ceil(4 * smooth_bins))
        k = np.exp(-0.5 * (np.arange(-half, half + 1) / smooth_bins) ** 2)
        p = np.convolve(p, k / k.sum(), mode="same")
    return x, p, np.gradient(p, x)


def _derivatives(expr: Expr, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f', f'' (step h) and a mask of points where f is smooth (steps h and 2h agree)."""
    params = {n: param_default(n) for n in param_names(expr)}

    def f(t: np.ndarray) -> np.ndarray:
        return np.asarray(evaluate(expr, t, params), dtype=np.float64)

    with np.errstate(all="ignore"):
        f0, fp, fm = f(x), f(x + _H), f(x - _H)
        fp2, fm2 = f(x + 2 * _H), f(x - 2 * _H)
        d1 = (fp - fm) / (2 * _H)
        d2 = (fp - 2 * f0 + fm) / _H**2
        d2b = (fp2 - 2 * f0 + fm2) / (4 * _H**2)
        smooth = np.abs(d2 - d2b) <= 1e-2 * (1.0 + np.abs(d2))
    return d1, d2, smooth & np.isfinite(d1) & np.isfinite(d2)


def _fresh_eps(expr: Expr) -> str:
    used = set(param_names(expr))
    for name in ["eps", *(f"eps{i}" for i in range(2, 100))]:
        if name not in used:
            return name
    raise ExprError("no free name for a new learnable eps")


def eafo_correction(
    expr: Expr,
    density: Density | None = None,
    *,
    degree: int = 3,
    mu: float | None = None,
    sigma: float | None = None,
) -> Expr:
    """The EAFO child ``expr - eps_k * P(z) * exp(-z²/2)`` (see the module docstring)."""
    if not 1 <= degree <= 3:
        raise ValueError(f"degree must be 1, 2 or 3, got {degree}")
    x, p, dp = density if density is not None else gaussian_density()
    if mu is None or sigma is None:
        mass = float(np.trapezoid(p, x))
        m = float(np.trapezoid(x * p, x)) / mass
        s = math.sqrt(max(float(np.trapezoid((x - m) ** 2 * p, x)) / mass, 1e-6))
        mu = m if mu is None else mu
        sigma = s if sigma is None else sigma
    inv = float(f"{1.0 / max(sigma, 0.05):.2g}")  # z = inv * x - off, short constants
    off = round(mu * inv, 2) + 0.0
    d1, d2, smooth = _derivatives(expr, x)
    valid = smooth & (d1 > MIN_SLOPE)
    with np.errstate(all="ignore"):
        q = np.where(valid, p * d2 / np.where(valid, d1, 1.0) - dp, 0.0)
    if int(valid.sum()) < 8:
        valid, q = np.ones_like(valid), -dp  # no usable monotone branch: CRReLU's term
    z = inv * x - off
    basis = np.stack([z**k * np.exp(-0.5 * z * z) for k in range(degree + 1)], axis=1)
    w = np.sqrt(p + 1e-3 * float(p.max()))[valid]
    coef, *_ = np.linalg.lstsq(basis[valid] * w[:, None], q[valid] * w, rcond=None)
    top = float(np.max(np.abs(coef)))
    if not math.isfinite(top) or top <= 0:
        raise ExprError("the EAFO correction of this expression vanishes on its monotone branch")
    coef = coef / top
    terms = [(k, _sig3(c)) for k, c in enumerate(coef) if abs(c) >= 0.02]
    zexpr: Expr = (
        Var()
        if off == 0 and inv == 1
        else Binary("sub", Binary("mul", Const(inv), Var()), Const(off))
    )
    poly: Expr | None = None
    for k, c in terms:
        t: Expr = Const(c) if k == 0 else Binary("mul", Const(c), _power(zexpr, k))
        poly = t if poly is None else Binary("add", poly, t)
    assert poly is not None
    bump = Unary("exp", Binary("mul", Const(-0.5), Unary("square", zexpr)))
    term = Binary("mul", Param(_fresh_eps(expr)), Binary("mul", poly, bump))
    return canonical(Binary("sub", expr, term))


def _power(z: Expr, k: int) -> Expr:
    return z if k == 1 else Unary("square", z) if k == 2 else Unary("cube", z)


def _sig3(v: float) -> float:
    return float(f"{v:.3g}")


def eafo_mutation(expr: Expr, rng: random.Random, parent_result: Any) -> Expr | None:
    """Evolution mutation: the EAFO child of ``expr``; the measured variant when the parent's
    result carries a recorded density (``result.extra["density"]``), else the Gaussian one.
    The polynomial degree is drawn from 1..3."""
    extra = getattr(parent_result, "extra", None) or {}
    density = None
    if "density" in extra:
        try:
            density = measured_density(extra["density"])
        except (ValueError, KeyError, TypeError):
            density = None
    try:
        return eafo_correction(expr, density, degree=rng.randint(1, 3))
    except (ExprError, ValueError, np.linalg.LinAlgError, RecursionError):
        return None
