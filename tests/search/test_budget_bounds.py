"""Every search budget bounds the work: units, trials and time, also when nothing trains.

``x/(x-0.5)`` under BO is a search space whose every candidate is rejected by the cheap
checks (the pole makes the deep-MLP stability check explode), at no unit cost: before the
trial cap and the shorter rejection run, ``--budget 10`` on it ran 3,525 trials.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from actlab.cli import main
from actlab.search import (
    Budget,
    CostFilter,
    CurveObjective,
    Pipeline,
    QualityFloor,
    parse_budget,
    run_search,
)
from actlab.search._budget import TRIALS_PER_UNIT

POLE = "x/(x-0.5)"
CHEAP = Pipeline(cost=None)  # checks only: the rejections under test happen there


def _bo(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    return run_search(CurveObjective("gelu"), "bo", form=POLE, storage=tmp_path / "s.db",
                      study="pole", pipeline=CHEAP, **kw)  # type: ignore[arg-type]  # fmt: skip


def test_a_space_that_yields_nothing_trainable_stops_with_its_reasons(tmp_path: Path) -> None:
    res = _bo(tmp_path, budget=10, max_cheap_rejections=12)
    assert res.stopped == "rejections" and len(res.records) == 12
    assert res.units_spent() == 0 and not res.ranked()
    assert "the last 12 candidates were all rejected before training" in res.message
    assert "12x checks:" in res.message and "nothing trainable" in res.message


def test_units_budget_caps_trials_although_rejections_cost_no_units(tmp_path: Path) -> None:
    res = _bo(tmp_path, budget=1, max_cheap_rejections=10_000)
    assert res.stopped == "trials" and len(res.records) == TRIALS_PER_UNIT
    assert f"stopped after {TRIALS_PER_UNIT} trials" in res.message
    again = _bo(tmp_path, budget=1, max_cheap_rejections=10_000)  # resume: the cap holds
    assert again.evaluated_now == 0 and again.stopped == "trials"
    assert len(again.records) == TRIALS_PER_UNIT
    more = _bo(tmp_path, budget=1.5, max_cheap_rejections=10_000)  # a larger budget continues
    assert len(more.records) == math.ceil(1.5 * TRIALS_PER_UNIT)


def test_time_budget_bounds_an_all_rejected_search(tmp_path: Path) -> None:
    res = _bo(tmp_path, budget="1s", max_cheap_rejections=10_000)
    assert res.stopped == "budget" and len(res.records) >= 1 and not res.ranked()


def test_cli_exits_1_with_the_reason_when_nothing_trained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["search", "--task", "curve:gelu", "--strategy", "bo", "--form", POLE,
               "--budget", "1", "--storage", str(tmp_path / "s.db"), "--no-final",
               "--no-report", "--quiet", "--max-cost", "1000"])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 1 and "stopped: trials" in out.out
    assert out.err.strip().splitlines() == [out.err.strip()]
    assert f"stopped after {TRIALS_PER_UNIT} trials" in out.err


def test_sampler_reaches_bo(tmp_path: Path) -> None:
    res = run_search(CurveObjective("gelu"), "bo", form="x*sigmoid(2*x)", budget=2,
                     storage=tmp_path / "s.db", pipeline=CHEAP, sampler="gp")  # fmt: skip
    assert {r.candidate.origin for r in res.records} == {"bo:gp"}


@pytest.mark.parametrize("budgets", [(1.0, math.inf), (math.nan,), (0.0,), (3.0, 1.0), ()])
def test_funnel_budgets_must_be_finite_positive_non_decreasing(budgets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="funnel budgets"):
        Pipeline(budgets=budgets)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "1e999", "0s", "1e300", "1000000h"])
def test_budgets_are_finite_positive_and_bounded(text: str) -> None:
    with pytest.raises(ValueError, match="budget"):
        parse_budget(text)


def test_trial_cap_follows_units() -> None:
    assert Budget(units=10).max_trials() == 10 * TRIALS_PER_UNIT
    assert Budget(units=1e-9).max_trials() == 1
    assert Budget(seconds=60).max_trials() is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: QualityFloor(math.nan, 1.0),
        lambda: QualityFloor(0.3, 0.0),
        lambda: QualityFloor(0.3, math.inf),
        lambda: CostFilter(math.inf),
        lambda: CostFilter(math.nan),
        lambda: Pipeline(max_nodes=0),
        lambda: Pipeline(top_seeds=10_000),
        lambda: CurveObjective("nosuch"),
        lambda: CurveObjective(POLE),
        lambda: CurveObjective("gelu", noise=math.nan),
    ],
)
def test_search_parts_refuse_non_finite_or_out_of_range_settings(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        build()
