"""Every rejection is recorded with its stage and reason; duplicates are never re-evaluated."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from search_helpers import CountingObjective

from actlab.search import (
    Candidate,
    CostFilter,
    CurveObjective,
    EvalResult,
    Pipeline,
    QualityFloor,
    Score,
    run_search,
)
from actlab.search._candidate import as_candidate
from actlab.search._pipeline import evaluate_candidate


class ListStrategy:
    """Proposes the given formulas in order, then repeats the last one."""

    def __init__(self, formulas: list[str]) -> None:
        self.formulas, self.i = formulas, 0
        self.told: list[tuple[str, str]] = []

    def ask(self) -> Candidate:
        f = self.formulas[min(self.i, len(self.formulas) - 1)]
        self.i += 1
        return as_candidate(f, "list")

    def tell(self, candidate: Candidate, result: EvalResult) -> None:
        self.told.append((candidate.formula, result.status))


class Exploding(CurveObjective):
    def evaluate(self, candidate: Candidate, budget: float, *, seed: int, floor: Any) -> Score:
        if "tanh" in candidate.formula:
            raise RuntimeError("CUDA out of memory (pretend)")
        return super().evaluate(candidate, budget, seed=seed, floor=floor)


def test_each_stage_records_its_reason() -> None:
    obj = Exploding("gelu")
    pipe = Pipeline(floor=QualityFloor(-0.05))
    cases = {
        "exp(exp(x))": ("rejected", "checks", "numerics: non-finite"),
        "beta": ("rejected", "checks", "constant"),
        "relu(x)": ("rejected", "quality", "misses the floor -0.05"),
        "tanh(x)": ("failed", "train", "RuntimeError: CUDA out of memory"),
        "gelu(x)": ("ok", "done", "ok"),
    }
    for formula, (status, stage, why) in cases.items():
        r = evaluate_candidate(as_candidate(formula), obj, pipe)
        assert (r.status, r.stage) == (status, stage), (formula, r)
        assert why in r.reason
    big = evaluate_candidate(
        as_candidate("gelu(x)" + "".join(f" + sin({k}*x)" for k in range(2, 12))), obj, pipe
    )
    assert (big.status, big.stage) == ("rejected", "checks") and "too complex" in big.reason
    slow = evaluate_candidate(
        as_candidate("gelu(x)"), obj, Pipeline(cost=CostFilter(max_ratio=1e-3))
    )
    assert (slow.status, slow.stage) == ("rejected", "cost") and "too slow" in slow.reason
    assert slow.cost > 1e-3 and slow.units == 0.0
    ok = evaluate_candidate(as_candidate("gelu(x)"), obj, pipe)
    assert math.isfinite(ok.cost) and set(ok.proxies) == {"entropy", "wafbc_distance"}


def test_funnel_levels_train_on_a_fresh_seed() -> None:
    seen: list[int] = []

    class Recording(CurveObjective):
        def evaluate(self, candidate: Candidate, budget: float, *, seed: int, floor: Any) -> Score:
            seen.append(seed)
            return super().evaluate(candidate, budget, seed=seed, floor=floor)

    obj, pipe = Recording("gelu"), Pipeline(budgets=(1.0, 2.0))
    cand = as_candidate("gelu(x)")
    evaluate_candidate(cand, obj, pipe, seed=7)
    evaluate_candidate(cand.promoted(1), obj, pipe, seed=7)
    assert seen == [7, 8]


def test_rejections_are_trials_with_stage_and_reason(tmp_path: Path) -> None:
    strat = ListStrategy(["exp(exp(x))", "relu(x)", "tanh(x)", "gelu(x)"])
    res = run_search(
        Exploding("gelu"),
        strat,
        budget=3,
        storage=tmp_path / "s.db",
        study="rej",
        pipeline=Pipeline(floor=QualityFloor(-0.05)),
    )
    import optuna

    study = optuna.load_study(study_name="rej", storage=f"sqlite:///{tmp_path / 's.db'}")
    by_formula = {t.user_attrs["formula"]: t for t in study.trials}
    assert by_formula["exp(exp(x))"].state.name == "PRUNED"
    assert by_formula["exp(exp(x))"].user_attrs["stage"] == "checks"
    assert by_formula["relu(x)"].user_attrs["stage"] == "quality"
    assert "floor" in by_formula["relu(x)"].user_attrs["reason"]
    assert by_formula["tanh(x)"].state.name == "FAIL"
    assert by_formula["gelu(x)"].state.name == "COMPLETE"
    assert by_formula["gelu(x)"].value == pytest.approx(0.0, abs=1e-6)
    assert all(
        {"formula", "hash", "candidate", "worker", "stage", "reason", "result"} <= set(t.user_attrs)
        for t in study.trials
    )
    assert by_formula["relu(x)"].user_attrs["candidate"]["origin"] == "list"
    assert res.rejections() == {"rejected:checks": 1, "rejected:quality": 1, "failed:train": 1}
    assert [s for _, s in strat.told] == ["rejected", "rejected", "failed", "ok"]


def test_duplicates_are_never_evaluated_twice(tmp_path: Path) -> None:
    log = tmp_path / "evals.log"
    obj = CountingObjective("gelu", str(log))
    pipe = Pipeline(checks=False, cost=None, proxies=False)
    same = ["x*sigmoid(x)", "sigmoid(x)*x", "x*sigmoid(1*x)", "gelu(x)"]
    strat = ListStrategy(same)
    res = run_search(obj, strat, budget=2, storage=tmp_path / "d.db", study="dup", pipeline=pipe)
    keys = log.read_text().split()
    assert len(keys) == len(set(keys)) == 2
    assert res.duplicates == 2 and len(strat.told) == 4  # duplicates get the stored result
    # a later session looks duplicates up in the study
    again = ListStrategy(["sigmoid(x) * x", "gelu(x)", "relu(x)"])
    res2 = run_search(obj, again, budget=3, storage=tmp_path / "d.db", study="dup", pipeline=pipe)
    keys = log.read_text().split()
    assert len(keys) == len(set(keys)) == 3
    assert res2.evaluated_now == 1 and len(res2.finished) == 3


def test_a_strategy_stuck_on_duplicates_stops(tmp_path: Path) -> None:
    res = run_search(
        CurveObjective("gelu"),
        ListStrategy(["gelu(x)"]),
        budget=10,
        storage="memory",
        pipeline=Pipeline(checks=False, cost=None),
        max_duplicates=20,
    )
    assert res.stopped == "duplicates" and len(res.finished) == 1


def test_train_objective_floor_and_density_on_real_digits() -> None:
    """The real trainer: 2 epochs of digits-mlp take well under a second."""
    from actlab.search import TrainObjective

    obj = TrainObjective("digits-mlp", record_density=True)
    assert obj.metric == "accuracy" and obj.higher_is_better and obj.default_budget == 20
    pipe = Pipeline(floor=QualityFloor(0.3, after=1), budgets=(2,), cost=None, proxies=False)
    ok = evaluate_candidate(as_candidate("gelu(x)"), obj, pipe)
    assert ok.ok and 0.5 < ok.quality <= 1 and len(ok.extra["val_curve"]) == 2
    assert ok.extra["budget"] == 2 and 0 < ok.extra["test"] <= 1
    dens = ok.extra["density"]
    assert len(dens["p"]) == 60 and abs(sum(dens["p"]) * 0.2 - 1) < 0.05  # pre-activations in range
    strict = Pipeline(floor=QualityFloor(0.999, after=1), budgets=(2,), cost=None, proxies=False)
    rej = evaluate_candidate(as_candidate("gelu(x)"), obj, strict)
    assert (rej.status, rej.stage) == ("rejected", "quality") and rej.units == 0.5
    assert "after 1 epoch(s) misses the floor 0.999" in rej.reason


def test_the_last_funnel_level_averages_top_seeds_runs() -> None:
    seen: list[int] = []

    class Recording(CurveObjective):
        def evaluate(self, candidate: Candidate, budget: float, *, seed: int, floor: Any) -> Score:
            seen.append(seed)
            return Score(float(seed), {"budget_seen": budget})

    obj, pipe = Recording("gelu"), Pipeline(budgets=(1.0, 2.0, 4.0), top_seeds=3)
    cand = as_candidate("gelu(x)")
    assert [pipe.seeds(lv, obj) for lv in range(3)] == [1, 1, 3]
    assert [pipe.units(lv, obj) for lv in range(3)] == [1.0, 2.0, 12.0]
    r1 = evaluate_candidate(cand.promoted(1), obj, pipe, seed=7)
    assert seen == [8] and r1.quality == 8.0 and "seed_values" not in r1.extra
    seen.clear()
    top = evaluate_candidate(cand.promoted(2), obj, pipe, seed=7)
    assert seen == [9, 1009, 2009]  # fresh seeds, distinct from every other level's
    assert top.quality == pytest.approx((9 + 1009 + 2009) / 3) and top.units == 12.0
    assert top.extra["seed_values"] == [9.0, 1009.0, 2009.0] and top.extra[
        "seed_std"
    ] == pytest.approx(1000.0)
    assert top.extra["budget"] == 4.0
    # one level only: nothing to average, whatever top_seeds says
    assert Pipeline(top_seeds=3).seeds(0, obj) == 1
    with pytest.raises(ValueError, match="top_seeds"):
        Pipeline(top_seeds=0)


def test_a_rejection_in_a_later_top_seed_run_counts_the_runs_spent() -> None:
    class Diverges(CurveObjective):
        def evaluate(self, candidate: Candidate, budget: float, *, seed: int, floor: Any) -> Score:
            if seed >= 1000:
                return Score(math.nan, {})
            return Score(1.0, {})

    pipe = Pipeline(budgets=(1.0, 2.0), top_seeds=3)
    r = evaluate_candidate(as_candidate("gelu(x)").promoted(1), Diverges("gelu"), pipe, seed=0)
    assert (r.status, r.stage) == ("rejected", "train") and "non-finite" in r.reason
    assert r.units == pytest.approx(4.0)  # two of the three 2-unit runs were trained


def test_top_seed_values_survive_the_study_and_a_resume(tmp_path: Path) -> None:
    from actlab.search import make_strategy

    pipe = Pipeline(budgets=(1.0, 2.0), top_seeds=2, cost=None)
    kw = dict(budget=14, storage=tmp_path / "t.db", study="top", pipeline=pipe)
    strat = make_strategy("random", levels=2, keep=0.5, seed=0)
    res = run_search(CurveObjective("gelu"), strat, **kw)  # type: ignore[arg-type]
    top = [
        r for r in res.finished if r.candidate.level == 1 and r.result is not None and r.result.ok
    ]
    assert top and all(len(r.result.extra["seed_values"]) == 2 for r in top)  # type: ignore[union-attr]
    again = run_search(
        CurveObjective("gelu"), make_strategy("random", levels=2, keep=0.5, seed=0), **kw
    )
    assert {r.candidate.hash for r in again.finished if r.candidate.level == 1} >= {
        r.candidate.hash for r in top
    }
    reloaded = next(
        r
        for r in again.finished
        if r.candidate.hash == top[0].candidate.hash and r.candidate.level == 1
    )
    assert (
        reloaded.result is not None
        and reloaded.result.extra["seed_values"] == top[0].result.extra["seed_values"]
    )  # type: ignore[union-attr]
