"""A plain-words verdict on a re-evaluation: did any candidate beat the baselines?

Input: the test metric of every activation per fresh seed (the same seeds for all, so runs
pair by seed). For every candidate c and baseline b the paired differences
d_i = c_i - b_i (sign flipped when lower is better, so d > 0 always means "c is better")
give

    mean d,  95% CI  mean d ± t_{0.975, n-1} · s_d / sqrt(n),  paired t-test p-value,

and the p-values of all candidate x baseline contrasts are Holm-corrected as one family
(:func:`actlab.bench.stats.holm`). A candidate *beat* b when its Holm p < alpha and d > 0;
it *lost* to b when Holm p < alpha and d < 0. When no candidate beat b, the verdict states
the minimum detectable effect (MDE) of the re-evaluation against b: the smallest true mean
difference the paired t-test finds with probability ``power`` at level alpha / m (m
contrasts: the level Holm's first step needs, so the figure holds for any of them), with the
paired SD s observed against b (root mean square over the candidates):

    power = P(|T'| > t_{1 - alpha/(2m), n-1}),  T' ~ noncentral t(n - 1, ncp = MDE·sqrt(n)/s),

solved for MDE (scipy's ``nct``). The three pairs of baselines get the same treatment in
their own Holm family: they show whether the task separates known activations at all.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actlab.bench.stats import holm, paired_ttest, t_quantile

__all__ = [
    "Contrast",
    "Verdict",
    "minimum_detectable_effect",
    "record_values",
    "verdict",
    "verdict_from_records",
]


@dataclass(frozen=True)
class Contrast:
    """``better`` minus ``other`` on paired seeds; ``diff > 0`` means ``better`` did better."""

    better: str
    other: str
    diff: float
    ci: tuple[float, float]
    p: float
    p_holm: float
    n: int
    sd: float

    def significant(self, alpha: float) -> bool:
        return math.isfinite(self.p_holm) and self.p_holm < alpha


@dataclass
class Verdict:
    """The contrasts and the verdict text (``lines``; ``str()`` joins them)."""

    metric: str
    seeds: int
    alpha: float
    power: float
    contrasts: list[Contrast] = field(default_factory=list)
    baseline_pairs: list[Contrast] = field(default_factory=list)
    mde: dict[str, float] = field(default_factory=dict)
    winners: list[Contrast] = field(default_factory=list)
    losers: list[Contrast] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def headline(self) -> str:
        return self.lines[0] if self.lines else ""

    def __str__(self) -> str:
        return "\n".join(self.lines)


def minimum_detectable_effect(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean paired difference a two-sided paired t-test at level ``alpha`` detects
    with probability ``power`` from ``n`` pairs of SD ``sd`` (nan when n < 2 or sd not > 0)."""
    from scipy.optimize import brentq
    from scipy.stats import nct

    if n < 2 or not (math.isfinite(sd) and sd > 0):
        return math.nan
    df = n - 1
    crit = t_quantile(1.0 - alpha, df)

    def gap(d: float) -> float:
        ncp = d * math.sqrt(n) / sd
        if ncp > crit + 40.0:  # scipy's nct loses precision far out; the power is 1 there
            return 1.0 - power
        p = float(nct.sf(crit, df, ncp) + nct.cdf(-crit, df, ncp))
        return (1.0 if math.isnan(p) else p) - power

    hi = sd
    while gap(hi) < 0:
        hi *= 2.0
        if hi > 1e12 * sd:
            return math.inf
    return float(brentq(gap, 0.0, hi, xtol=1e-10 * sd))


def _contrast(a: str, b: str, va: np.ndarray, vb: np.ndarray, sign: float) -> Contrast:
    d = sign * (va - vb)
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    half = t_quantile(0.95, n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
    p = paired_ttest(sign * vb, sign * va).pvalue if n > 1 else math.nan
    return Contrast(a, b, mean, (mean - half, mean + half), p, math.nan, n, sd)


def _holm(cs: list[Contrast]) -> list[Contrast]:
    adj = holm([c.p for c in cs]) if cs else []
    return [Contrast(c.better, c.other, c.diff, c.ci, c.p, a, c.n, c.sd) for c, a in zip(cs, adj)]


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:+.4f}"


def _p(c: Contrast) -> str:
    if not math.isfinite(c.p):
        return "not testable"
    return f"p {c.p:.3g}, Holm {c.p_holm:.3g}"


def _says(c: Contrast) -> str:
    return f"{_fmt(c.diff)} (95% CI {_fmt(c.ci[0])} .. {_fmt(c.ci[1])}; {_p(c)})"


def verdict(
    values: Mapping[str, Mapping[int, float]],
    candidates: Sequence[str],
    baselines: Sequence[str],
    *,
    higher_is_better: bool = True,
    metric: str = "accuracy",
    alpha: float = 0.05,
    power: float = 0.8,
    labels: Mapping[str, str] | None = None,
) -> Verdict:
    """The verdict on ``values[activation][seed]`` (see the module docstring).

    ``labels`` maps activation specs to what the text calls them (e.g. the formula).
    Seeds missing for either side of a contrast are left out of it.
    """
    label = dict(labels or {})

    def name(spec: str) -> str:
        return label.get(spec, spec)

    sign = 1.0 if higher_is_better else -1.0

    def paired(a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        seeds = sorted(set(values.get(a, {})) & set(values.get(b, {})))
        return (
            np.array([values[a][s] for s in seeds], dtype=np.float64),
            np.array([values[b][s] for s in seeds], dtype=np.float64),
        )

    cands = [c for c in candidates if values.get(c)]
    bases = [b for b in baselines if values.get(b)]
    contrasts = _holm([_contrast(c, b, *paired(c, b), sign) for c in cands for b in bases])
    pairs = _holm(
        [_contrast(a, b, *paired(a, b), sign) for a, b in itertools.combinations(bases, 2)]
    )
    n_seeds = max((c.n for c in contrasts + pairs), default=0)
    v = Verdict(metric, n_seeds, alpha, power, contrasts, pairs)
    if not cands or not bases:
        v.lines.append("Verdict: nothing to compare (no finished candidate or baseline runs).")
        return v
    v.winners = sorted(
        (c for c in contrasts if c.significant(alpha) and c.diff > 0), key=lambda c: -c.diff
    )
    v.losers = [c for c in contrasts if c.significant(alpha) and c.diff < 0]
    m = max(1, len(contrasts))
    for b in bases:
        sds = [c.sd for c in contrasts if c.other == b and math.isfinite(c.sd)]
        rms = math.sqrt(sum(s * s for s in sds) / len(sds)) if sds else math.nan
        n = min((c.n for c in contrasts if c.other == b), default=0)
        v.mde[b] = minimum_detectable_effect(n, rms, alpha / m, power)
    # ---------------------------------------------------------------- the words
    direction = "higher" if higher_is_better else "lower"
    v.lines.append(_headline(v, cands, bases, name))
    v.lines.append(
        f"({metric}, {direction} is better; gains are signed so that + means better"
        f"{'' if higher_is_better else f' ({metric} reduced)'}; {n_seeds} fresh seeds paired "
        f"by seed; paired t-tests, Holm over {len(contrasts)} candidate-baseline contrasts)"
    )
    for b in bases:
        wins = [c for c in v.winners if c.other == b]
        if wins:
            for c in wins:
                v.lines.append(f"- {name(c.better)} beat {name(b)} by {_says(c)}.")
            continue
        vs_b = [c for c in contrasts if c.other == b and math.isfinite(c.diff)]
        best = max(vs_b, key=lambda c: c.diff, default=None)
        mde = v.mde.get(b, math.nan)
        tail = (
            f"with {n_seeds} seeds the re-evaluation had {100 * power:.0f}% power to detect "
            f"only a difference of {mde:.4f} or more (alpha {alpha:g}/{m}, paired SD "
            f"{_rms_sd(contrasts, b):.4f})"
            if math.isfinite(mde)
            else (
                f"with {n_seeds} seed(s) no difference can be tested (at least 2 needed)"
                if n_seeds < 2
                else "the paired differences have SD 0, so no power figure"
            )
        )
        best_txt = f"best {name(best.better)}: {_says(best)}; " if best else ""
        v.lines.append(f"- nothing beat {name(b)} significantly ({best_txt}{tail}).")
    for c in v.losers:
        v.lines.append(
            f"- {name(c.better)} was significantly worse than {name(c.other)}: {_says(c)}."
        )
    if pairs:
        sep = [c for c in pairs if c.significant(alpha)]
        words = "; ".join(
            f"{name(c.better)} vs {name(c.other)} {_fmt(c.diff)} ({_p(c)})" for c in pairs
        )
        v.lines.append(
            f"Baselines among themselves (Holm over {len(pairs)}): {words} -- "
            + (
                f"{len(sep)} pair(s) separated at alpha {alpha:g}."
                if sep
                else "no pair separated: the task may be too easy to rank activations."
            )
        )
    return v


def _rms_sd(contrasts: Sequence[Contrast], b: str) -> float:
    sds = [c.sd for c in contrasts if c.other == b and math.isfinite(c.sd)]
    return math.sqrt(sum(s * s for s in sds) / len(sds)) if sds else math.nan


def _headline(
    v: Verdict, cands: Sequence[str], bases: Sequence[str], nm: Callable[[str], str]
) -> str:
    if v.winners:
        counts = {b: sum(1 for c in v.winners if c.other == b) for b in bases}
        won = ", ".join(f"{nm(b)} ({n} candidate{'s' if n > 1 else ''})" for b, n in
                        counts.items() if n)  # fmt: skip
        unbeaten = [nm(b) for b, n in counts.items() if not n]
        rest = f"; nothing beat {', '.join(unbeaten)}" if unbeaten else ""
        first = next(b for b in bases if counts[b])  # the first baseline beaten (gelu first)
        best = max((c for c in v.winners if c.other == first), key=lambda c: c.diff)
        return (
            f"Verdict: significant wins over {won}{rest}. Best over {nm(first)}: "
            f"{nm(best.better)}, gain {_fmt(best.diff)} {v.metric} "
            f"(95% CI {_fmt(best.ci[0])} .. {_fmt(best.ci[1])})."
        )
    if v.seeds < 2:
        return f"Verdict: not testable with {v.seeds} seed(s); use at least 2 (5-10 advised)."
    finite = [m for m in v.mde.values() if math.isfinite(m)]
    if not finite:
        return (
            f"Verdict: no candidate beat {', '.join(nm(b) for b in bases)} significantly "
            "(no power figure: the paired differences have SD 0)."
        )
    worst = max(finite)
    return (
        f"Verdict: no candidate beat {', '.join(nm(b) for b in bases)} significantly; the "
        f"re-evaluation could have detected differences of about {worst:.4f} {v.metric} "
        f"({100 * v.power:.0f}% power, {v.seeds} seeds)."
    )


def record_values(records: Sequence[Any]) -> tuple[dict[str, dict[int, float]], str, bool]:
    """``(values[activation][seed], metric, higher_is_better)`` of the finished runs of a
    comparison (``CompareResult.records``)."""
    values: dict[str, dict[int, float]] = {}
    higher, metric = True, "metric"
    for r in records:
        if not r.ok:
            continue
        values.setdefault(r.spec.activation, {})[int(r.spec.seed)] = float(r.metric_value)
        if r.higher_is_better is not None:
            higher = bool(r.higher_is_better)
        metric = str(r.metric_name or metric)
    return values, metric, higher


def verdict_from_records(
    records: Sequence[Any],
    candidates: Sequence[str],
    baselines: Sequence[str],
    *,
    labels: Mapping[str, str] | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> Verdict:
    """:func:`verdict` on the stored runs of a comparison (``CompareResult.records``)."""
    values, metric, higher = record_values(records)
    return verdict(
        values, candidates, baselines, higher_is_better=higher, metric=metric, alpha=alpha,
        power=power, labels=labels,
    )  # fmt: skip
