"""Cheap checks before training, and zero-cost proxies for ranking candidates.

Each check returns a :class:`CheckResult` ``(ok, reason)``; a rejection always carries a
reason. :func:`run_checks` runs them cheapest first and stops at the first rejection.

- numerics: f finite for every finite float32 input in [-1e3, 1e3] (a linear grid plus a
  log-spaced one near 0); not constant and not affine on the core range [-6, 6]
  (relative least-squares residual of the best a*x + b below 1e-4 counts as affine).
- gradients: df/dx and the gradients of learnable scalars finite on the same wide grid;
  df/dx not identically zero on [-6, 6].
- stability: a small deep MLP at init (8 LeCun-normal layers of width 32, the candidate
  between layers, fixed seed) on Gaussian inputs, loss <out, r> with a fixed Gaussian r so
  that the loss scale does not depend on the output; every layer's weight-gradient norm
  must be finite and within [1e-8, 1e3]. (EvoNorm's protocol uses adversarial weights;
  this is the cheaper at-init variant.)

Zero-cost proxies (not pass/fail), on X ~ N(0, 1):

- :func:`output_entropy`: differential entropy of f(X) by a histogram estimator (equal-width
  bins between the 0.1% and 99.9% quantiles, samples outside dropped); point masses make it
  bin-dependent, so compare values at the same settings only. EAFO (arXiv 2405.12954): the
  entropy-maximising WAFBC is the worst case; lower is better.
- :func:`wafbc_distance`: sqrt(1 - R²) of the best fit C1·Φ(X) + C2 to f(X) (Φ from the
  registry's ``wafbc``), in [0, 1]; 0 means f is the worst case WAFBC itself.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actlab.expr.ir import Expr, ExprError

__all__ = [
    "CheckReport",
    "CheckResult",
    "as_module",
    "check_gradients",
    "check_numerics",
    "check_stability",
    "layer_grad_norms",
    "output_entropy",
    "proxies",
    "run_checks",
    "wafbc_distance",
]

Candidate = str | Expr | nn.Module
WIDE = 1e3
CORE = 6.0
AFFINE_TOL = 1e-4
GRAD_BOUNDS = (1e-8, 1e3)


class CheckResult(NamedTuple):
    ok: bool
    reason: str


@dataclass
class CheckReport:
    """Outcome of :func:`run_checks`: ``reason`` is ``"ok"`` or the first rejection."""

    ok: bool
    reason: str
    results: dict[str, CheckResult] = field(default_factory=dict)
    proxies: dict[str, float] = field(default_factory=dict)


def as_module(candidate: Candidate) -> nn.Module:
    """A module for a formula, an IR tree, a registry spec ("gelu") or a module."""
    if isinstance(candidate, nn.Module):
        return candidate
    from actlab.expr.compiler import compile_expr

    if not isinstance(candidate, str):
        return compile_expr(candidate)
    try:
        return compile_expr(candidate)
    except ExprError as parse_error:
        from actlab.registry import ActivationSpecError, create_activation

        try:
            return create_activation(candidate)
        except ActivationSpecError:
            raise parse_error from None


@contextlib.contextmanager
def _eager() -> Iterator[None]:
    """Run zoo kernels eagerly: a check must not pay for torch.compile."""
    from actlab.activations import kernel_mode

    with kernel_mode("eager"):
        yield


def _wide_grid() -> Tensor:
    lin = torch.linspace(-WIDE, WIDE, 4001, dtype=torch.float64)
    log = torch.logspace(-6, 3, 200, dtype=torch.float64)
    return torch.cat([lin, log, -log, torch.zeros(1, dtype=torch.float64)]).float()


def _core_grid() -> Tensor:
    return torch.linspace(-CORE, CORE, 1201)


def _first_bad(x: Tensor, y: Tensor) -> str:
    bad = ~torch.isfinite(y)
    i = int(torch.nonzero(bad)[0])
    return f"{float(y[i])} at x={float(x[i]):g}"


def check_numerics(candidate: Candidate) -> CheckResult:
    """Finite on [-1e3, 1e3]; neither constant nor affine on [-6, 6]."""
    m = as_module(candidate)
    x = _wide_grid()
    with torch.no_grad(), _eager():
        y = m(x.clone())
        if not bool(torch.isfinite(y).all()):
            return CheckResult(False, f"non-finite output for a finite input: {_first_bad(x, y)}")
        xc = _core_grid()
        yc = m(xc.clone()).double()
    lo, hi = float(yc.min()), float(yc.max())
    if hi - lo <= 1e-6 * max(1.0, abs(lo), abs(hi)):
        return CheckResult(False, f"constant on [-{CORE:g}, {CORE:g}] (f ~ {lo:.6g})")
    a = torch.stack([xc.double(), torch.ones_like(yc)], dim=1)
    coef = torch.linalg.lstsq(a, yc.unsqueeze(1)).solution.squeeze(1)
    resid = yc - a @ coef
    rel = float(resid.norm() / (yc - yc.mean()).norm())
    if rel < AFFINE_TOL:
        slope, icpt = float(coef[0]), float(coef[1])
        sign = "-" if icpt < 0 else "+"
        return CheckResult(
            False,
            f"affine on [-{CORE:g}, {CORE:g}]: f ~ {slope:.6g}*x {sign} {abs(icpt):.3g}"
            f" (relative residual {rel:.2g} < {AFFINE_TOL:g})",
        )
    return CheckResult(True, "ok")


def check_gradients(candidate: Candidate) -> CheckResult:
    """df/dx and parameter gradients finite on [-1e3, 1e3]; df/dx not zero on [-6, 6]."""
    m = as_module(candidate)
    x = torch.cat([_wide_grid(), _core_grid()]).requires_grad_(True)
    named = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    with torch.enable_grad(), _eager():
        y = m(x)
        grads = torch.autograd.grad(y.sum(), [x] + [p for _, p in named], allow_unused=True)
    gx = grads[0]
    if gx is None or not bool(torch.isfinite(gx).all()):
        detail = _first_bad(x.detach(), gx) if gx is not None else "no gradient"
        return CheckResult(False, f"non-finite df/dx: {detail}")
    for (n, _), g in zip(named, grads[1:], strict=True):
        if g is not None and not bool(torch.isfinite(g).all()):
            return CheckResult(False, f"non-finite gradient of parameter {n!r}")
    core = gx[-_core_grid().numel() :]
    if float(core.abs().max()) <= 1e-8:
        return CheckResult(False, f"df/dx is zero everywhere on [-{CORE:g}, {CORE:g}]")
    return CheckResult(True, "ok")


def layer_grad_norms(
    candidate: Candidate, *, layers: int = 8, width: int = 32, batch: int = 128, seed: int = 0
) -> list[float]:
    """Weight-gradient norms of each layer of the at-init MLP used by :func:`check_stability`."""
    m = as_module(candidate)
    g = torch.Generator().manual_seed(seed)
    weights = [
        (torch.randn(width, width, generator=g) / math.sqrt(width)).requires_grad_(True)
        for _ in range(layers)
    ]
    h = torch.randn(batch, width, generator=g)
    r = torch.randn(batch, width, generator=g)
    with torch.enable_grad(), _eager():
        for i, w in enumerate(weights):
            h = h @ w.T
            if i < layers - 1:
                h = m(F.layer_norm(h, (width,)))
        loss = (h * r).mean()
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return [0.0 if gr is None else float(gr.norm()) for gr in grads]


def check_stability(candidate: Candidate, *, seed: int = 0) -> CheckResult:
    """Layer gradient norms of a small deep MLP at init finite and within GRAD_BOUNDS."""
    norms = layer_grad_norms(candidate, seed=seed)
    lo, hi = GRAD_BOUNDS
    for i, n in enumerate(norms):
        if not math.isfinite(n):
            return CheckResult(False, f"unstable: non-finite weight gradient in layer {i} at init")
        if n > hi:
            return CheckResult(False, f"unstable: exploding gradient {n:.3g} > {hi:g} in layer {i}")
        if n < lo:
            return CheckResult(False, f"unstable: vanishing gradient {n:.3g} < {lo:g} in layer {i}")
    return CheckResult(True, f"ok (layer gradient norms {min(norms):.3g} .. {max(norms):.3g})")


def _gaussian_outputs(candidate: Candidate, n: int, seed: int) -> tuple[Tensor, Tensor]:
    m = as_module(candidate)
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad(), _eager():
        y = m(x.clone())
    return x.double(), y.double()


def output_entropy(
    candidate: Candidate, *, n: int = 65536, bins: int = 256, seed: int = 0
) -> float:
    """Histogram estimate of the differential entropy of f(X), X ~ N(0, 1) (nats)."""
    _, y = _gaussian_outputs(candidate, n, seed)
    if not bool(torch.isfinite(y).all()):
        return math.nan
    lo, hi = (float(q) for q in torch.quantile(y, torch.tensor([0.001, 0.999], dtype=y.dtype)))
    if not hi > lo:
        return -math.inf
    counts = torch.histc(y[(y >= lo) & (y <= hi)], bins=bins, min=lo, max=hi)
    p = counts / counts.sum()
    p = p[p > 0]
    width = (hi - lo) / bins
    return float(-(p * torch.log(p / width)).sum())


def wafbc_distance(candidate: Candidate, *, n: int = 65536, seed: int = 0) -> float:
    """sqrt(1 - R²) of f(X) regressed on the WAFBC Φ(X), X ~ N(0, 1); 0 = worst case."""
    from actlab.registry import create_activation

    x, y = _gaussian_outputs(candidate, n, seed)
    if not bool(torch.isfinite(y).all()):
        return math.nan
    with torch.no_grad(), _eager():
        phi = create_activation("wafbc").double()(x)
    yc, pc = y - y.mean(), phi - phi.mean()
    var = float((yc * yc).sum())
    if var <= 0.0:
        return math.nan
    r2 = float((yc * pc).sum()) ** 2 / (var * float((pc * pc).sum()))
    return math.sqrt(max(0.0, 1.0 - r2))


def proxies(candidate: Candidate) -> dict[str, float]:
    """The zero-cost proxies of a candidate: output entropy and WAFBC distance."""
    m = as_module(candidate)
    return {"entropy": output_entropy(m), "wafbc_distance": wafbc_distance(m)}


_CHECKS = {
    "numerics": check_numerics,
    "gradients": check_gradients,
    "stability": check_stability,
}


def run_checks(candidate: Candidate, *, stop_early: bool = True) -> CheckReport:
    """Run numerics, gradients and stability (cheapest first); proxies if all pass.

    A candidate that cannot be parsed or built, or whose module raises, is rejected with
    the error as reason.
    """
    report = CheckReport(ok=True, reason="ok")
    try:
        m = as_module(candidate)
    except (ExprError, ValueError, TypeError) as e:
        return CheckReport(False, f"build: {e}", {"build": CheckResult(False, str(e))})
    for name, check in _CHECKS.items():
        try:
            res = check(m)
        except (RuntimeError, ValueError, ArithmeticError) as e:
            res = CheckResult(False, f"error while checking: {type(e).__name__}: {e}")
        report.results[name] = res
        if not res.ok and report.ok:
            report.ok, report.reason = False, f"{name}: {res.reason}"
        if not report.ok and stop_early:
            return report
    if report.ok:
        report.proxies = proxies(m)
    return report
