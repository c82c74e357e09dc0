"""The HTML report of a search: one self-contained file, plots embedded as PNG.

Sections: the study and its budget; the final re-evaluation (mean ± CI, paired tests vs
the first baseline) when :func:`~actlab.search.finalize` ran; the best formulas (as found
and simplified, quality per funnel level, cost per step, zero-cost proxies, origin) with
their curves f and f' next to the baselines; the Pareto plot of (level-0 quality, cost per
step); the search-progress curve (every level-0 evaluation and the best so far against
spent units); and the rejection statistics (counts per stage, most common reasons).
matplotlib is imported only here, through :mod:`actlab.report`.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from pathlib import Path
from typing import Any

from actlab.search._final import FinalResult
from actlab.search._result import SearchResult

__all__ = ["render_search_report", "write_search_report"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;margin-top:1.8em}table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left}th{background:#f3f3f3}
code{font-size:.92em}.note{color:#555;font-size:.9em;max-width:60em}img{max-width:100%}"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: float, d: int = 4) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{d}f}"


def _img(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(make: Any) -> str:
    try:
        fig = make()
    except Exception as e:  # noqa: BLE001 -- a missing plot must not lose the report
        return f'<p class="note">(figure unavailable: {_e(type(e).__name__)}: {_e(e)})</p>'
    return _img(fig) if fig is not None else '<p class="note">(nothing to plot)</p>'


def _pareto_fig(res: SearchResult) -> Any:
    from actlab.report.curves import new_figure

    recs = [r for r in res.level0() if r.result is not None and math.isfinite(r.result.cost)]
    if not recs:
        return None
    front = {r.trial_id for r in res.pareto()}
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot()
    xs = [r.result.cost for r in recs]  # type: ignore[union-attr]
    ys = [r.result.quality for r in recs]  # type: ignore[union-attr]
    ax.scatter(xs, ys, s=14, color="0.6", label="level-0 evaluations")
    fr = sorted((r.result.cost, r.result.quality) for r in recs if r.trial_id in front)  # type: ignore[union-attr]
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
    ax.step([p[0] for p in prog], [p[1] for p in prog], where="post", color="C0", label="best so far")
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
        levels = {x.candidate.level: x.result.quality for x in res.finished
                  if x.candidate.hash == r.candidate.hash and x.result is not None and x.result.ok}
        per = ", ".join(f"L{lv}: {_fmt(q)}" for lv, q in sorted(levels.items()))
        rr = r.result
        assert rr is not None
        prox = ", ".join(f"{k}={v:.3g}" for k, v in rr.proxies.items() if math.isfinite(v))
        rows.append([r.candidate.formula, simple.get(r.candidate.formula, r.candidate.formula), per,
                     _fmt(rr.cost, 2), prox, r.candidate.origin])
    return rows


def _final_section(final: FinalResult) -> str:
    if final.comparison is not None:
        from actlab.report.table import summary_table, table_note

        s = final.comparison.summary
        headers, rows = summary_table(s)
        return _table(headers, rows) + f'<p class="note">{_e(table_note(s))} Candidates are re-trained ' \
            f"with fresh seeds and the task's full training; test metric.</p>"
    if final.scores:
        rows = [[k, _fmt(v, 6)] for k, v in sorted(final.scores.items(), key=lambda kv: -kv[1])]
        return _table(["activation", "objective"], rows)
    return f'<p class="note">{_e(final.note or "not run")}</p>'


def render_search_report(res: SearchResult, final: FinalResult | None = None, *, top: int = 5) -> str:
    """The report as an HTML string."""
    c = res.counts()
    meta = [["study", res.study], ["storage", res.storage], ["task", res.task],
            ["metric", f"val {res.metric} ({'higher' if res.higher_is_better else 'lower'} is better)"],
            ["funnel budgets", ", ".join(f"{b:g}" for b in res.levels)],
            ["trials", f"{c['trials']} ({c['ok']} ok, {c['rejected']} rejected, {c['failed']} failed, "
                       f"{c['promotions']} funnel promotions)"],
            ["units spent", f"{res.units_spent():.1f} ({100 * res.wasted_fraction():.1f}% on candidates "
                            "rejected after training started)"],
            ["generated", time.strftime("%Y-%m-%d %H:%M:%S %Z")]]
    specs = [(b, b) for b in (final.baselines if final else [])]
    specs += [(f"#{i + 1}", f'expr(formula="{row[1]}")') for i, row in enumerate(_best_rows(res, final, 3))]
    parts = [f"<h1>actlab search: {_e(res.study)}</h1>", _table(["", ""], meta)]
    if final is not None:
        parts += ["<h2>Re-evaluation of the best candidates</h2>", _final_section(final)]
    best = [[f"#{i + 1}", *row] for i, row in enumerate(_best_rows(res, final, top))]
    parts += [
        "<h2>Best formulas</h2>",
        _table(["", "formula", "simplified", f"val {res.metric} per level", "cost (x GELU)", "proxies",
                "origin"], best),
        _figure(lambda: _curves_fig(specs) if specs else None),
        "<h2>Pareto front: quality vs cost per step</h2>", _figure(lambda: _pareto_fig(res)),
        "<h2>Search progress</h2>", _figure(lambda: _progress_fig(res)),
        "<h2>Rejections</h2>",
        _table(["outcome", "count"], [[k, v] for k, v in res.rejections().items()] or [["none", 0]]),
        _table(["stage", "reason (numbers as #)", "count"], [list(t) for t in res.reasons()]),
    ]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(res.study)}'
            f"</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def write_search_report(res: SearchResult, path: str | Path, final: FinalResult | None = None) -> Path:
    """Write the report (atomically) to ``path``; its folder must exist."""
    out = Path(path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"report folder {out.parent} does not exist; create it first")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_search_report(res, final), encoding="utf-8")
    tmp.replace(out)
    return out
