"""The comparison table as text cells, shared by the CLI (rich) and the HTML report."""

from __future__ import annotations

import math

from actlab.bench.summary import ActivationSummary, CompareSummary
from actlab.report.page import fmt_num

__all__ = ["fmt_num", "fmt_p", "summary_table", "table_note"]


def fmt_p(p: float | None) -> str:
    """A p-value with 2 significant digits; ``<0.0001`` below that."""
    if p is None or math.isnan(p):
        return "–"
    if p < 1e-4:
        return "<0.0001"
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}"


def _mean_ci(row: ActivationSummary) -> str:
    if row.n == 0:
        return "–"
    if math.isnan(row.ci):
        return fmt_num(row.mean)
    return f"{fmt_num(row.mean)} ± {fmt_num(row.ci)}"


def _delta(row: ActivationSummary) -> str:
    if row.is_baseline:
        return "baseline"
    if row.n_pairs == 0:
        return "–"
    text = fmt_num(row.delta, signed=True)
    return text if math.isnan(row.delta_ci) else f"{text} ± {fmt_num(row.delta_ci)}"


def summary_table(
    summary: CompareSummary, *, raw: bool = False, row_header: str = "activation"
) -> tuple[list[str], list[list[str]]]:
    """``(headers, rows)`` of the comparison table, every cell a string.

    ``p (t)`` is the paired t-test and ``p (W)`` the Wilcoxon signed-rank test, both
    Holm-corrected; ``raw=True`` adds the uncorrected p-values as two more columns.
    ``row_header`` heads the first column (``"arm"`` when rows are labelled arms).
    """
    conf = f"{summary.confidence * 100:g}%"
    headers = [row_header, "n", f"mean ± {conf} CI", f"Δ vs {summary.baseline}", "d_z"]
    headers += ["p (t)", "p (W)"] + (["raw p (t)", "raw p (W)"] if raw else [])
    headers += ["sig", "verdict"]
    rows = []
    for r in summary.rows:
        n = str(r.n) + (f" (+{r.n_failed} failed)" if r.n_failed else "")
        base = r.is_baseline
        cells = [r.activation, n, _mean_ci(r), _delta(r), "" if base else fmt_num(r.effect_dz, 2)]
        ps = [r.t_p_holm, r.w_p_holm] + ([r.t_p, r.w_p] if raw else [])
        cells += ["" if base else fmt_p(p) for p in ps]
        rows.append(cells + [r.mark, r.verdict])
    return headers, rows


def table_note(summary: CompareSummary) -> str:
    """One paragraph explaining the columns and marks."""
    direction = "higher" if summary.higher_is_better else "lower"
    min_n = min((r.n_pairs for r in summary.rows if not r.is_baseline), default=0)
    k = max(0, len(summary.rows) - 1)
    note = (
        f"{summary.metric_name}: {direction} is better. Δ: paired difference to "
        f"{summary.baseline} on the seeds both finished, ± its CI; d_z = mean(Δ)/sd(Δ). "
        f"p (t): paired t-test, p (W): Wilcoxon signed-rank, both Holm-corrected across the "
        f"{k} comparison{'s' if k != 1 else ''}. sig (from p (t)): *** p<0.001, "
        f"** p<0.01, * p<{summary.alpha:g}, n.s. not significant."
    )
    if 0 < min_n < 6:
        note += f" With {min_n} pairs the Wilcoxon test cannot reach p<0.05; use more seeds."
    return note
