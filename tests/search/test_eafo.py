"""The EAFO correction: derivation checked numerically, CRReLU recovered, measured variant."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from actlab.expr import parse, to_string
from actlab.expr.ir import param_names
from actlab.search import eafo_correction
from actlab.search._eafo import gaussian_density, measured_density

SQ2PI = math.sqrt(2 * math.pi)


def _softplus() -> tuple:
    f = lambda x: np.log1p(np.exp(x))  # noqa: E731
    fp = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    fpp = lambda x: fp(x) * (1 - fp(x))  # noqa: E731
    return f, fp, fpp


def test_first_order_formula_matches_correcting_the_inverse() -> None:
    """f_new = (y - eps*EL)^-1 equals f - eps*(p f''/f' - p') to first order (eafo.md)."""
    f, fp, fpp = _softplus()
    p = lambda x: np.exp(-x * x / 2) / SQ2PI  # noqa: E731
    dp = lambda x: -x * p(x)  # noqa: E731
    y = lambda u: np.log(np.expm1(u))  # noqa: E731  inverse of softplus

    def el(u: float) -> float:  # Euler-Lagrange term of H[y] = p'(y) y' + p(y) y''/y'
        yy = y(u)
        y1, y2 = 1 / fp(yy), -fpp(yy) / fp(yy) ** 3
        return float(dp(yy) * y1 + p(yy) * y2 / y1)

    eps = 1e-4
    xs = np.linspace(-3, 3, 13)
    q = p(xs) * fpp(xs) / fp(xs) - dp(xs)
    new = [brentq(lambda u, x=x: y(u) - eps * el(u) - x, 0.5 * f(x), 1.5 * f(x) + 1e-3) for x in xs]
    assert np.max(np.abs((np.array(new) - f(xs)) / eps + q)) < 1e-4


def test_positive_eps_lowers_the_output_entropy() -> None:
    """H[f(X)] = H[X] + E log f'(X) for monotone f; d/d eps at 0 of f - eps*Q is negative."""
    f, fp, fpp = _softplus()
    x = np.linspace(-8, 8, 20001)
    p = np.exp(-x * x / 2) / SQ2PI
    q = p * fpp(x) / fp(x) + x * p
    dq = np.gradient(q, x)
    h = [np.trapezoid(p * np.log(fp(x) - e * dq), x) for e in (-0.05, 0.0, 0.05)]
    assert h[0] > h[1] > h[2]


def test_relu_gives_crrelu_form_with_a_fresh_eps() -> None:
    for degree in (1, 2, 3):
        child = eafo_correction(parse("relu(x)"), degree=degree)
        assert to_string(child) == "relu(x) - eps * x * exp(-0.5 * square(x))"
    child = eafo_correction(parse("relu(x) + eps*x*exp(-x**2/2)"), degree=1)
    assert param_names(child) == ("eps", "eps2")


def test_gelu_correction_fits_q_on_the_monotone_branch() -> None:
    """The fitted term P(x) exp(-x^2/2) approximates Q = phi (f''/f' + x) for GELU."""
    from actlab.expr import evaluate

    child = eafo_correction(parse("gelu(x)"), degree=3)
    x = np.linspace(-0.4, 4, 200)
    fitted = evaluate(parse("gelu(x)"), x) - evaluate(child, x, {"eps": 1.0})
    phi = np.exp(-x * x / 2) / SQ2PI
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    fp, fpp = cdf + x * phi, phi * (2 - x * x)
    q = phi * (fpp / fp + x)
    scale = np.dot(fitted, q) / np.dot(fitted, fitted)  # eps absorbs the normalisation
    assert scale > 0
    assert np.max(np.abs(scale * fitted - q)) < 0.1 * np.max(np.abs(q))


def test_measured_gaussian_histogram_matches_the_gaussian_variant() -> None:
    edges = np.linspace(-6, 6, 61)
    centres = 0.5 * (edges[:-1] + edges[1:])
    p = np.exp(-(centres**2) / 2) / SQ2PI
    grid, dens, ddens = measured_density({"lo": -6.0, "hi": 6.0, "p": list(p)}, smooth_bins=0)
    assert np.allclose(grid, centres) and np.allclose(
        ddens[5:-5], -centres[5:-5] * p[5:-5], atol=0.02
    )
    from actlab.expr import evaluate

    measured = eafo_correction(parse("softplus(x)"), (grid, dens, ddens), degree=1)
    gauss = eafo_correction(parse("softplus(x)"), gaussian_density(), degree=1)
    xs = np.linspace(-4, 4, 101)
    diff = evaluate(measured, xs, {"eps": 1.0}) - evaluate(gauss, xs, {"eps": 1.0})
    assert np.max(np.abs(diff)) < 0.02, (to_string(measured), to_string(gauss))


def test_no_monotone_branch_falls_back_to_the_crrelu_term() -> None:
    child = eafo_correction(parse("-x"), degree=1)
    assert to_string(child) == "-x - eps * x * exp(-0.5 * square(x))"
