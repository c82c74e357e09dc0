"""The HTML page of a search: one self-contained file, plots embedded as PNG.

    from actlab.report import write_search_report
    write_search_report(search_result, "search.html", final)

Sections: the study and its budget; the final re-evaluation (mean ± CI, paired tests vs
the first baseline) when :func:`~actlab.search.finalize` ran; the best formulas (as found
and simplified, quality per funnel level, cost per step, zero-cost proxies, origin) with
their curves f and f' next to the baselines; the Pareto plot of (level-0 quality, cost per
step); the search-progress curve (every level-0 evaluation and the best so far against
spent units); and the rejection statistics (counts per stage, most common reasons).
Built with the report kit from the search's public result objects; the search package
does not import this (the CLI calls it after the search). matplotlib is imported only
when a figure is drawn.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actlab.report.page import Page, Section, fmt_num

if TYPE_CHECKING:
    from actlab.search import FinalResult, SearchResult

__all__ = ["build_search_report", "render_search_report", "write_search_report"]


def _pareto_fig(res: SearchResult) -> Any:
    from actlab.report.curves import new_figure

    front = {r.trial_id for r in res.pareto()}
    pts = [
        (r.result.cost, r.result.quality, r.trial_id in front)
        for r in res.level0()
        if r.result is not None and math.isfinite(r.result.cost)
    ]
    if not pts:
        return None
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot()
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    ax.scatter(xs, ys, s=14, color="0.6", label="level-0 evaluations")
    fr = sorted((c, q) for c, q, on_front in pts if on_front)
    if fr:
        ax.plot([p[0] for p in fr], [p[1] for p in fr], "o-", color="C3", label="Pareto front")
    ax.set_xlabel("cost per step (x GELU)")
    ax.set_ylabel(f"val {res.metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _progress_fig(res: SearchResult) -> Any:
    from actlab.report.curves import new_figure

    pts, used = [], 0.0
    for r in sorted(res.finished, key=lambda r: r.number):
        used += r.result.units  # type: ignore[union-attr]
        if r.candidate.level == 0 and r.result is not None and r.result.ok:
            pts.append((used, r.result.quality))
    prog = [(u, b) for u, b in res.progress() if math.isfinite(b)]
    if not pts:
        return None
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=10, color="0.6", label="evaluation")
    ax.step(
        [p[0] for p in prog], [p[1] for p in prog], where="post", color="C0", label="best so far"
    )
    ax.set_xlabel("evaluation units spent")
    ax.set_ylabel(f"val {res.metric} (level 0)")
    lo = sorted(p[1] for p in pts)[len(pts) // 10]
    ax.set_ylim(bottom=lo - 0.05 * (max(p[1] for p in pts) - lo + 1e-9))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _curves_fig(specs: list[tuple[str, str]]) -> Any:
    """f (solid) and f' (dashed) of (label, spec) pairs; short labels keep the legend small."""
    import numpy as np

    from actlab.report.curves import activation_curve, new_figure

    if not specs:
        return None
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot()
    lo, hi = 0.0, 0.0
    for i, (label, spec) in enumerate(specs):
        x, f, df = activation_curve(spec, (-4.0, 4.0), 401)
        ax.plot(x, f, color=f"C{i % 10}", lw=1.8, label=label)
        ax.plot(x, df, color=f"C{i % 10}", lw=1.0, ls="--")
        finite = np.concatenate([f[np.isfinite(f)], df[np.isfinite(df)]])
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    ax.set_ylim(max(lo, -4.0) - 0.2, min(hi, 6.0) + 0.2)
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_xlabel("x")
    ax.set_title("f(x) solid, f'(x) dashed (learnable scalars at their initial values)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return fig


def _best_rows(res: SearchResult, final: FinalResult | None, top: int) -> list[list[Any]]:
    simple = dict(final.formulas) if final else {}
    rows = []
    for r in res.ranked()[:top]:
        levels = {
            x.candidate.level: x.result.quality
            for x in res.finished
            if x.candidate.hash == r.candidate.hash and x.result is not None and x.result.ok
        }
        per = ", ".join(f"L{lv}: {fmt_num(q)}" for lv, q in sorted(levels.items()))
        rr = r.result
        assert rr is not None
        prox = ", ".join(f"{k}={v:.3g}" for k, v in rr.proxies.items() if math.isfinite(v))
        rows.append(
            [
                r.candidate.formula,
                simple.get(r.candidate.formula, r.candidate.formula),
                per,
                fmt_num(rr.cost, 2),
                prox,
                r.candidate.origin,
            ]
        )
    return rows


def _verdict_section(section: Section, final: FinalResult) -> None:
    """The plain-words verdicts (search task, then transfer task) at the top of the page."""
    parts = [
        ("search task", final.verdict),
        (f"transfer: {final.transfer_task}", final.transfer_verdict),
    ]
    shown = False
    for title, v in parts:
        if v is None:
            continue
        shown = True
        section.paragraph(f"{title} -- {v.headline}")
        section.pre("\n".join(v.lines[1:]))
    if not shown:
        section.note(final.note or "no verdict: the re-evaluation did not train anything")


def _final_section(section: Section, final: FinalResult) -> None:
    if final.comparison is not None:
        from actlab.report.table import summary_table, table_note

        s = final.comparison.summary
        headers, rows = summary_table(s)
        section.table(rows, headers)
        section.note(
            f"{table_note(s)} Candidates are re-trained with fresh seeds and the "
            "task's full training; test metric."
        )
        if final.transfer is not None:
            t = final.transfer.summary
            headers, rows = summary_table(t)
            section.paragraph(f"Transfer to {final.transfer_task} (same candidates and seeds):")
            section.table(rows, headers)
            section.note(
                f"{table_note(t)} The task's own default model and training recipe; test metric."
            )
    elif final.scores:
        rows = [[k, fmt_num(v, 6)] for k, v in sorted(final.scores.items(), key=lambda kv: -kv[1])]
        section.table(rows, ["activation", "objective"])
    else:
        section.note(final.note or "not run")


def build_search_report(
    res: SearchResult, final: FinalResult | None = None, *, top: int = 5
) -> Page:
    """The report as a :class:`~actlab.report.page.Page`."""
    c = res.counts()
    better = "higher" if res.higher_is_better else "lower"
    page = Page(f"actlab search: {res.study}")
    if final is not None:
        _verdict_section(page.section("Verdict"), final)
    page.facts(
        [
            ("study", res.study),
            ("storage", res.storage),
            ("task", res.task),
            ("metric", f"val {res.metric} ({better} is better)"),
            ("funnel budgets", ", ".join(f"{b:g}" for b in res.levels)),
            (
                "trials",
                f"{c['trials']} ({c['ok']} ok, {c['rejected']} rejected, {c['failed']} "
                f"failed, {c['promotions']} funnel promotions)",
            ),
            (
                "units spent",
                f"{res.units_spent():.1f} ({100 * res.wasted_fraction():.1f}% on "
                "candidates rejected after training started)",
            ),
            ("generated", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
        ]
    )
    specs = [(b, b) for b in (final.baselines if final else [])]
    specs += [
        (f"#{i + 1}", f'expr(formula="{row[1]}")')
        for i, row in enumerate(_best_rows(res, final, 3))
    ]
    if final is not None:
        _final_section(page.section("Re-evaluation of the best candidates"), final)
    best = [[f"#{i + 1}", *row] for i, row in enumerate(_best_rows(res, final, top))]
    headers = [
        "",
        "formula",
        "simplified",
        f"val {res.metric} per level",
        "cost (x GELU)",
        "proxies",
        "origin",
    ]
    page.section("Best formulas").table(best, headers).plot(
        lambda: _curves_fig(specs), "f and f' of the best formulas and the baselines"
    )
    page.section("Pareto front: quality vs cost per step").plot(
        lambda: _pareto_fig(res), "Pareto front"
    )
    page.section("Search progress").plot(lambda: _progress_fig(res), "search progress")
    rejections = page.section("Rejections")
    rejections.table(
        [[k, v] for k, v in res.rejections().items()] or [["none", 0]], ["outcome", "count"]
    )
    rejections.table([list(t) for t in res.reasons()], ["stage", "reason (numbers as #)", "count"])
    return page


def render_search_report(
    res: SearchResult, final: FinalResult | None = None, *, top: int = 5
) -> str:
    """The report as an HTML string."""
    return build_search_report(res, final, top=top).render()


def write_search_report(
    res: SearchResult, path: str | Path, final: FinalResult | None = None, *, top: int = 5
) -> Path:
    """Write the report (atomically) to ``path``; its folder must exist."""
    return build_search_report(res, final, top=top).write(path)
