"""The evaluation pipeline: cheap rejection first, expensive training last.

For a candidate at funnel level 0 the stages run in order, and the first that refuses it
ends the evaluation with a recorded stage and reason:

1. ``checks``: a size limit (``max_nodes``: long formulas are slow, hard to read and, in
   practice, accretions of near-dead terms), then :func:`actlab.expr.run_checks`
   (numerics on a wide grid, gradients, stability of a deep MLP at init); the zero-cost
   proxies (output entropy on Gaussian inputs, distance from the WAFBC worst case of EAFO)
   are kept for ranking.
2. ``shape``: EAFO's boundary conditions (:class:`~actlab.search.ShapeChecks`, on by
   default: at most linear growth as x -> +inf, bounded as x -> -inf, no pole or flat
   gradient on the input range; optionally monotone and a sign of f(0)); float64 on a few
   thousand points, milliseconds. The general checks run first, so a formula that is not
   finite or constant keeps that reason; ``checks=False`` turns both off.
3. ``cost``: the EEEA-Net early-exit filter (:class:`~actlab.search.CostFilter`): forward +
   backward time relative to GELU in the same process.
4. ``quality``: EvoNorm's quality floor after a short training prefix
   (:class:`~actlab.search.QualityFloor`), enforced inside the objective.
5. ``train``: the rest of the training budget of the level; a diverged run is rejected.

A promoted candidate (level > 0) passed the cheap stages already and is only trained, on
the larger budget of its level, with training seed ``seed + level``: a fresh draw of the
training noise, so a candidate promoted on a lucky level-0 run is judged afresh (the
funnel then counters the winner's curse instead of re-confirming it). With
``top_seeds=k > 1`` an evaluation at the last level of a funnel trains ``k`` times (seeds
``seed + level + 1000 j``, j < k) and its quality is the mean: that level decides the final
ranking, and one training run of a small proxy can differ from the next by more than the
candidates differ from each other. It costs ``k`` times the level's units.
:func:`evaluate_candidate` never raises for a bad candidate: errors become ``failed`` results with
the exception as reason. It is a plain function of picklable arguments, so executors can run it in
other processes or on Ray.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actlab.search._candidate import Candidate, EvalResult
from actlab.search._cost import CostFilter
from actlab.search._objectives import Objective, QualityFloor, Rejected
from actlab.search._shape import ShapeChecks

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Pipeline", "evaluate_candidate", "stage_counts"]

SEED_STRIDE = 1000  # training seeds of the extra runs at the top level: seed + level + 1000 j
MAX_TOP_SEEDS = 100
MAX_LEVELS = 16


@dataclass(frozen=True)
class Pipeline:
    """Which stages run, and the training budget of each funnel level (objective units).

    ``budgets=None`` uses the objective's ``default_budget`` for a single level.
    """

    checks: bool = True
    cost: CostFilter | None = CostFilter()
    floor: QualityFloor | None = None
    budgets: tuple[float, ...] | None = None
    proxies: bool = True
    max_nodes: int | None = 40
    top_seeds: int = 1
    shape: ShapeChecks | None = ShapeChecks()

    def __post_init__(self) -> None:
        if int(self.top_seeds) != self.top_seeds or self.top_seeds < 1:
            raise ValueError(f"top_seeds must be a whole number >= 1, got {self.top_seeds}")
        if self.top_seeds > MAX_TOP_SEEDS:
            raise ValueError(f"top_seeds must be at most {MAX_TOP_SEEDS}, got {self.top_seeds}")
        if self.max_nodes is not None and (
            int(self.max_nodes) != self.max_nodes or self.max_nodes < 1
        ):
            raise ValueError(
                f"max_nodes must be a whole number >= 1 (or None), got {self.max_nodes}"
            )
        if self.budgets is not None:
            b = tuple(float(x) for x in self.budgets)
            if (
                not b
                or any(not (math.isfinite(x) and x > 0) for x in b)
                or any(y < x for x, y in zip(b, b[1:]))
            ):
                raise ValueError(
                    f"funnel budgets must be finite, positive and non-decreasing, got {b}"
                )
            if len(b) > MAX_LEVELS:
                raise ValueError(f"a funnel has at most {MAX_LEVELS} levels, got {len(b)}")
            object.__setattr__(self, "budgets", b)

    def levels(self, objective: Objective) -> tuple[float, ...]:
        """The budget of every funnel level."""
        return self.budgets if self.budgets is not None else (float(objective.default_budget),)

    def budget(self, level: int, objective: Objective) -> float:
        lv = self.levels(objective)
        if not 0 <= level < len(lv):
            raise ValueError(
                f"funnel level {level} out of range: the pipeline has {len(lv)} level(s)"
            )
        return lv[level]

    def seeds(self, level: int, objective: Objective) -> int:
        """Training runs averaged by one evaluation at ``level`` (``top_seeds`` at the last
        level of a funnel of two or more levels, else 1)."""
        lv = self.levels(objective)
        return int(self.top_seeds) if len(lv) > 1 and level == len(lv) - 1 else 1

    def units(self, level: int, objective: Objective) -> float:
        """Evaluation units of one evaluation at ``level`` (one level-0 training costs 1)."""
        lv = self.levels(objective)
        return self.budget(level, objective) / lv[0] * self.seeds(level, objective)


def _error(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def evaluate_candidate(
    candidate: Candidate, objective: Objective, pipeline: Pipeline, seed: int = 0
) -> EvalResult:
    """Run the pipeline on one candidate (see the module docstring)."""
    t0 = time.perf_counter()
    units = pipeline.units(candidate.level, objective)
    budget = pipeline.budget(candidate.level, objective)
    proxies: dict[str, float] = {}
    cost = float(candidate.meta.get("cost", math.nan)) if candidate.level else math.nan

    def done(res: EvalResult) -> EvalResult:
        res.seconds = time.perf_counter() - t0
        res.proxies = proxies
        if math.isnan(res.cost):
            res.cost = cost
        return res

    if candidate.level == 0:
        try:
            with _one_thread():
                module = _cheap_stages(candidate, pipeline, proxies)
        except Rejected as r:
            return done(EvalResult.rejected(r.stage, r.reason))
        except Exception as e:  # noqa: BLE001 -- any error of a candidate is its rejection
            return done(EvalResult.rejected("checks", f"error: {_error(e)}"))
        if pipeline.cost is not None:
            try:
                ok, cost, reason = pipeline.cost.check(module, getattr(objective, "kernel", None))
            except Exception as e:  # noqa: BLE001
                return done(EvalResult.rejected("cost", f"error while timing: {_error(e)}"))
            if not ok:
                return done(EvalResult.rejected("cost", reason, cost=cost))
    floor = pipeline.floor if candidate.level == 0 else None
    runs = pipeline.seeds(candidate.level, objective)
    per_run = units / runs
    values: list[float] = []
    extra: dict = {}
    for j in range(runs):
        spent = per_run * j  # units of the runs that finished before this one
        try:
            score = objective.evaluate(
                candidate, budget, seed=seed + candidate.level + SEED_STRIDE * j, floor=floor
            )
        except Rejected as r:
            return done(
                EvalResult.rejected(
                    r.stage,
                    r.reason,
                    extra=r.extra,
                    units=spent + per_run * min(max(r.fraction, 0.0), 1.0),
                )
            )
        except Exception as e:  # noqa: BLE001
            return done(EvalResult.failed("train", f"error: {_error(e)}", units=spent + per_run))
        if not math.isfinite(score.value):
            return done(
                EvalResult.rejected(
                    "train", "non-finite objective value", units=spent + per_run, extra=score.extra
                )
            )
        values.append(float(score.value))
        if j == 0:  # the first run's details (curves, densities) stand for the evaluation
            extra = dict(score.extra)
    extra["budget"] = budget
    if runs > 1:
        extra.update(seed_values=values, seed_std=float(statistics.stdev(values)))
    return done(
        EvalResult("ok", "done", "ok", quality=statistics.fmean(values), units=units, extra=extra)
    )


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread: the cheap stages work on small tensors, where extra threads on a
    busy machine cost far more (10-40x measured) than they give."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _cheap_stages(candidate: Candidate, pipeline: Pipeline, proxies: dict[str, float]) -> nn.Module:
    """Checks and proxies; returns the compiled module (raises Rejected at ``checks``).

    With proxies wanted this is exactly :func:`actlab.expr.run_checks`; without, the same
    checks in the same order, minus the proxies.
    """
    from actlab.expr import run_checks, size
    from actlab.expr.checks import check_gradients, check_numerics, check_stability
    from actlab.expr.checks import proxies as zero_cost

    n = size(candidate.expr)
    if pipeline.max_nodes is not None and n > pipeline.max_nodes:
        raise Rejected("checks", f"too complex: {n} nodes > {pipeline.max_nodes}")
    module = candidate.module()  # the candidate's compiled program (a copy of it)
    if pipeline.checks and pipeline.proxies:
        report = run_checks(module)
        if not report.ok:
            raise Rejected("checks", report.reason)
        proxies.update(report.proxies)
    elif pipeline.checks:
        for name, check in (
            ("numerics", check_numerics),
            ("gradients", check_gradients),
            ("stability", check_stability),
        ):
            res = check(module)
            if not res.ok:
                raise Rejected("checks", f"{name}: {res.reason}")
    elif pipeline.proxies:
        proxies.update(zero_cost(module))
    if pipeline.checks and pipeline.shape is not None:
        shape = pipeline.shape.check(module)
        if not shape.ok:
            raise Rejected("shape", shape.reason)
    return module


def stage_counts(results: Sequence[EvalResult]) -> dict[str, int]:
    """How many results ended at each stage (rejections and failures) or finished."""
    out: dict[str, int] = {}
    for r in results:
        key = "ok" if r.ok else f"{r.status}:{r.stage}"
        out[key] = out.get(key, 0) + 1
    return out
