"""Summarise stored runs per arm: mean ± CI and paired tests against a baseline.

A row is an arm of the comparison: its label (:attr:`~actlab.bench.plan.RunSpec.arm_label`,
the activation when the arm has no label), so arms with one activation and different layers
are different rows. The baseline is the first arm. Each other arm is paired with it on the seeds
where both runs finished; the paired t-test and the Wilcoxon signed-rank test are computed on
``d = metric(activation) - metric(baseline)`` and each family of p-values is Holm-corrected
across the comparisons. Significance marks use the Holm-corrected paired t-test; the
Wilcoxon p-value is reported alongside as a distribution-free check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from actlab.bench import stats
from actlab.bench.store import RunRecord

__all__ = ["ActivationSummary", "CompareSummary", "summarize"]


@dataclass(frozen=True)
class ActivationSummary:
    """One arm's row of the comparison table."""

    activation: str  # the arm's label (its activation when it has none)
    seeds: tuple[int, ...]  # seeds with a finite final metric
    values: tuple[float, ...]  # their final metrics
    n_failed: int  # failed or diverged runs
    mean: float
    ci: float  # half-width of the confidence interval
    std: float
    is_baseline: bool = False
    n_pairs: int = 0
    delta: float = math.nan  # mean paired difference vs the baseline
    delta_ci: float = math.nan
    effect_dz: float = math.nan
    t_p: float = math.nan
    t_p_holm: float = math.nan
    w_p: float = math.nan
    w_p_holm: float = math.nan
    mark: str = ""
    verdict: str = ""  # "better", "worse", "no difference" or "" for the baseline

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class CompareSummary:
    """The comparison table plus what it was computed on."""

    metric_name: str
    higher_is_better: bool
    baseline: str
    rows: list[ActivationSummary] = field(default_factory=list)
    confidence: float = 0.95
    alpha: float = 0.05


def _metric_info(records: Sequence[RunRecord]) -> tuple[str, bool]:
    names = {(r.metric_name, r.higher_is_better) for r in records if r.ok}
    if len(names) > 1:
        raise ValueError(
            f"runs report different metrics {sorted(map(str, names))}; compare one task at a time"
        )
    if not names:
        return "metric", True
    name, higher = names.pop()
    return str(name), bool(True if higher is None else higher)


def summarize(
    records: Sequence[RunRecord],
    activations: Sequence[str],
    *,
    confidence: float = 0.95,
    alpha: float = 0.05,
) -> CompareSummary:
    """Build the comparison table of ``activations`` (first = baseline) from ``records``.

    ``activations`` are row labels: a record belongs to the row of its spec's ``arm_label``.
    """
    if not activations:
        raise ValueError("no activations to summarise")
    metric, higher = _metric_info(records)
    by_act: dict[str, dict[int, float]] = {a: {} for a in activations}
    failed = dict.fromkeys(activations, 0)
    for r in records:
        act = r.spec.arm_label
        if act not in by_act:
            continue
        if r.ok:
            by_act[act][r.spec.seed] = float(r.metric_value)  # type: ignore[arg-type]
        else:
            failed[act] += 1
    base = activations[0]

    rows = [_row(act, by_act, failed[act], base, confidence) for act in activations]
    others = [i for i, r in enumerate(rows) if not r.is_baseline]
    t_holm = stats.holm([rows[i].t_p for i in others])
    w_holm = stats.holm([rows[i].w_p for i in others])
    for i, tp, wp in zip(others, t_holm, w_holm, strict=True):
        rows[i] = replace(
            rows[i],
            t_p_holm=tp,
            w_p_holm=wp,
            mark=stats.significance_mark(tp, alpha),
            verdict=_verdict(rows[i].delta, tp, alpha, higher),
        )
    return CompareSummary(metric, higher, base, rows, confidence, alpha)


def _row(
    act: str, by_act: dict[str, dict[int, float]], n_failed: int, base: str, confidence: float
) -> ActivationSummary:
    seeds = tuple(sorted(by_act[act]))
    vals = tuple(by_act[act][s] for s in seeds)
    mean, ci = stats.mean_ci(vals, confidence)
    row = ActivationSummary(
        act, seeds, vals, n_failed, mean, ci, _std(vals), is_baseline=act == base
    )
    if act == base:
        return row
    common = sorted(set(seeds) & set(by_act[base]))
    a = [by_act[base][s] for s in common]
    b = [by_act[act][s] for s in common]
    delta, delta_ci = stats.mean_ci([y - x for x, y in zip(a, b, strict=True)], confidence)
    return replace(
        row,
        n_pairs=len(common),
        delta=delta,
        delta_ci=delta_ci,
        effect_dz=stats.cohens_dz(a, b),
        t_p=stats.paired_ttest(a, b).pvalue,
        w_p=stats.wilcoxon_signed_rank(a, b).pvalue if common else math.nan,
    )


def _std(vals: Sequence[float]) -> float:
    if len(vals) < 2:
        return math.nan
    mean = sum(vals) / len(vals)
    return math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def _verdict(delta: float, p: float, alpha: float, higher: bool) -> str:
    if math.isnan(p) or math.isnan(delta):
        return "too few pairs"
    if p >= alpha or delta == 0:
        return "no difference"
    return "better" if (delta > 0) == higher else "worse"
