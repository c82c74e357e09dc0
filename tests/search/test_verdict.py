"""The plain-words verdict on synthetic comparisons: win, loss, underpowered; the MDE."""

from __future__ import annotations

import math

import numpy as np
import pytest

from actlab.bench.stats import paired_ttest
from actlab.search import minimum_detectable_effect, verdict

BASES = ["gelu", "relu", "crrelu"]


def _values(effects: dict[str, float], n: int, noise: float = 0.003, seed: int = 0) -> dict:
    """A shared per-seed level (seed luck) plus each activation's effect and its own noise."""
    rng = np.random.default_rng(seed)
    level = 0.9 + rng.normal(0.0, 0.01, n)
    return {
        a: {1000 + i: float(level[i] + e + rng.normal(0.0, noise)) for i in range(n)}
        for a, e in effects.items()
    }


def test_win_names_the_candidate_the_baseline_the_gain_and_its_ci() -> None:
    vals = _values({"gelu": 0.0, "relu": -0.02, "crrelu": 0.0, "cand": 0.012}, n=10)
    v = verdict(vals, ["cand"], BASES, labels={"cand": "x*tanh(softplus(x))"})
    assert v.headline.startswith(
        "Verdict: significant wins over gelu (1 candidate), relu (1 candidate), crrelu "
        "(1 candidate). Best over gelu: x*tanh(softplus(x)), gain +0.0"
    )
    assert {c.other for c in v.winners} == set(BASES)
    line = next(ln for ln in v.lines if ln.startswith("- x*tanh(softplus(x)) beat gelu by +"))
    c = next(c for c in v.winners if c.other == "gelu")
    # the CI and p are those of the paired differences (independent computation)
    d = np.array([vals["cand"][s] - vals["gelu"][s] for s in sorted(vals["gelu"])])
    assert c.diff == pytest.approx(d.mean())
    assert c.p == pytest.approx(
        paired_ttest(list(vals["gelu"].values()), list(vals["cand"].values())).pvalue
    )
    assert c.ci[0] < c.diff < c.ci[1] and c.ci[0] > 0
    assert f"{c.diff:+.4f}" in line and f"{c.ci[0]:+.4f}" in line
    assert not v.losers


def test_loss_is_reported_and_is_not_a_win() -> None:
    vals = _values({"gelu": 0.0, "relu": -0.02, "crrelu": 0.0, "bad": -0.03}, n=8)
    v = verdict(vals, ["bad"], BASES)
    assert not v.winners and {c.other for c in v.losers} >= {"gelu", "crrelu"}
    assert v.headline.startswith("Verdict: no candidate beat gelu, relu, crrelu significantly")
    assert any(ln.startswith("- bad was significantly worse than gelu: -0.0") for ln in v.lines)


def test_underpowered_states_the_minimum_detectable_effect() -> None:
    vals = _values({"gelu": 0.0, "relu": 0.0, "crrelu": 0.0, "cand": 0.0}, n=5, noise=0.006, seed=3)
    v = verdict(vals, ["cand"], BASES)
    assert not v.winners
    assert "could have detected differences of about" in v.headline and "5 seeds" in v.headline
    for b in BASES:
        assert math.isfinite(v.mde[b]) and v.mde[b] > 0.002
        line = next(ln for ln in v.lines if ln.startswith(f"- nothing beat {b} significantly"))
        assert f"{v.mde[b]:.4f}" in line and "80% power" in line and "alpha 0.05/3" in line
    assert "no pair separated" in v.lines[-1]


def test_lower_is_better_and_too_few_seeds() -> None:
    vals = _values({"gelu": 0.0, "relu": 0.05, "crrelu": 0.0, "cand": -0.02}, n=6)
    v = verdict(vals, ["cand"], BASES, higher_is_better=False, metric="rmse")
    assert {c.other for c in v.winners} == set(BASES)  # lower rmse wins
    assert next(c for c in v.winners if c.other == "gelu").diff == pytest.approx(0.02, abs=0.01)
    one = verdict(_values({"gelu": 0.0, "cand": 0.1}, n=1), ["cand"], ["gelu"])
    assert one.headline.startswith("Verdict: not testable with 1 seed")
    empty = verdict({"gelu": {1: 0.9}}, ["cand"], ["gelu"])
    assert empty.headline.startswith("Verdict: nothing to compare")


def test_baseline_pairs_get_their_own_family() -> None:
    vals = _values({"gelu": 0.0, "relu": -0.02, "crrelu": 0.0, "cand": 0.0}, n=8)
    v = verdict(vals, ["cand"], BASES)
    assert len(v.baseline_pairs) == 3
    sep = {(c.better, c.other) for c in v.baseline_pairs if c.significant(0.05)}
    assert sep == {("gelu", "relu"), ("relu", "crrelu")}
    assert "2 pair(s) separated" in v.lines[-1]


@pytest.mark.parametrize(("n", "dz"), [(5, 1.682), (10, 0.996)])
def test_mde_matches_the_noncentral_t_power_of_a_paired_test(n: int, dz: float) -> None:
    # standardised effects at 80% power, alpha 0.05 two-sided (G*Power's paired t-test values)
    assert minimum_detectable_effect(n, 1.0) == pytest.approx(dz, abs=2e-3)
    assert minimum_detectable_effect(n, 0.01) == pytest.approx(dz * 0.01, rel=2e-3)
    assert math.isnan(minimum_detectable_effect(1, 1.0))
    assert math.isnan(minimum_detectable_effect(5, 0.0))


def test_mde_by_simulation() -> None:
    """At the MDE a simulated paired t-test rejects about 80% of the time."""
    n, sd = 6, 1.0
    mde = minimum_detectable_effect(n, sd)
    rng = np.random.default_rng(1)
    hits = sum(paired_ttest(np.zeros(n), rng.normal(mde, sd, n)).pvalue < 0.05 for _ in range(4000))
    assert hits / 4000 == pytest.approx(0.8, abs=0.025)


def test_mixed_outcome_names_the_unbeaten_baselines() -> None:
    vals = _values({"gelu": 0.0, "relu": -0.03, "crrelu": 0.0}, n=8)
    vals["cand"] = {s: g + 0.002 * (-1) ** i for i, (s, g) in enumerate(vals["gelu"].items())}
    v = verdict(vals, ["cand"], BASES)
    assert v.headline.startswith(
        "Verdict: significant wins over relu (1 candidate); nothing beat gelu, crrelu. "
        "Best over relu: cand, gain +0.0"
    )
    assert any(ln.startswith("- nothing beat gelu significantly") for ln in v.lines)
