"""Cheap checks reject known-bad candidates with a reason and accept real activations."""

from __future__ import annotations

import math

import pytest
import torch

from actlab.expr import compile_expr, parse, run_checks
from actlab.expr.checks import (
    CheckResult,
    as_module,
    check_gradients,
    check_numerics,
    check_stability,
    output_entropy,
    proxies,
    wafbc_distance,
)

GOOD = [
    "gelu",
    "relu",
    "swish",
    "crrelu",
    "x*sigmoid(1.702*x)",
    "x*sigmoid(beta*x)",
    "max(x, sigmoid(x))",
    "relu(x)**2",
    "tanh(x)",
]


@pytest.mark.parametrize("candidate", GOOD)
def test_real_activations_pass(candidate: str) -> None:
    report = run_checks(candidate)
    assert report.ok, report.reason
    assert report.reason == "ok" and set(report.results) == {"numerics", "gradients", "stability"}
    assert set(report.proxies) == {"entropy", "wafbc_distance"}
    assert all(math.isfinite(v) for v in report.proxies.values())


@pytest.mark.parametrize(
    ("candidate", "stage", "why"),
    [
        ("beta", "numerics", "constant"),
        ("sigmoid(3) + 0*x", "numerics", "constant"),
        ("x", "numerics", "affine"),
        ("2*x + 1", "numerics", "affine"),
        ("beta*x + delta", "numerics", "affine"),
        ("exp(exp(x))", "numerics", "non-finite output"),
        ("exp(x)", "numerics", "non-finite output"),
        ("cosh(x)", "numerics", "non-finite output"),
        ("1/x", "numerics", "non-finite output"),
        ("x / 0", "numerics", "non-finite output"),
        ("log(x)", "stability", "exploding gradient"),
        ("atan(x)/(square(x) + 0.001)", "stability", "exploding gradient"),
    ],
)
def test_known_bad_candidates_rejected_with_reason(candidate: str, stage: str, why: str) -> None:
    report = run_checks(candidate)
    assert not report.ok
    assert report.reason.startswith(f"{stage}: ") and why in report.reason, report.reason
    assert not report.results[stage].ok and report.results[stage].reason
    assert report.proxies == {}


def test_build_failures_are_rejections_not_crashes() -> None:
    report = run_checks("x.__class__")
    assert (
        not report.ok
        and report.reason.startswith("build: ")
        and "attribute access" in report.reason
    )
    assert not run_checks("no_such_activation").ok


def test_individual_checks_return_ok_reason_pairs() -> None:
    for check in (check_numerics, check_gradients, check_stability):
        res = check("gelu")
        assert isinstance(res, CheckResult) and res.ok
        ok, reason = res
        assert ok and reason.startswith("ok")
    ok, reason = check_numerics("exp(exp(x))")
    assert not ok and "inf at x=" in reason


def test_gradient_check_catches_nan_gradients() -> None:
    class NanGrad(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # finite value, nan slope at 0
            return torch.sqrt(x.abs()) * 0 + torch.tanh(x)

    ok, reason = check_gradients(NanGrad())
    assert not ok and "non-finite df/dx" in reason
    ok, _ = check_gradients(compile_expr("sqrt(x) + x"))  # the safe sqrt has finite slopes
    assert ok


def test_stop_early_false_runs_every_check() -> None:
    report = run_checks("2*x + 1", stop_early=False)
    assert not report.ok and report.reason.startswith("numerics: ")
    assert set(report.results) == {"numerics", "gradients", "stability"}


def test_zero_cost_proxies() -> None:
    # the WAFBC (scaled normal CDF) is the worst case: distance 0, uniform output on [0, 1]
    phi = "0.5 + 0.5*erf(0.707106781*x)"
    assert wafbc_distance("wafbc") < 1e-4 and wafbc_distance(phi) < 1e-4
    assert abs(output_entropy("wafbc")) < 0.02
    two_phi = "1 + erf(0.707106781*x)"  # uniform on [0, 2]: entropy log 2
    assert output_entropy(two_phi) == pytest.approx(math.log(2), abs=0.02)
    for name in ("gelu", "relu", "swish"):
        d = wafbc_distance(name)
        assert 0.3 < d <= 1.0
    # entropy-lowering: relu has lower output entropy than the WAFBC at the same settings
    assert output_entropy("relu") < output_entropy("wafbc")
    assert math.isnan(wafbc_distance("exp(exp(x))"))
    assert output_entropy("beta") == -math.inf
    assert set(proxies("gelu")) == {"entropy", "wafbc_distance"}


def test_as_module_accepts_all_candidate_kinds() -> None:
    m = compile_expr("x*sigmoid(x)")
    assert as_module(m) is m
    assert as_module(parse("x*sigmoid(x)")).formula == "x * sigmoid(x)"
    assert type(as_module("gelu")).__name__ == "GELU"
