"""A self-contained HTML report of a comparison: one file, plots embedded as base64 PNG.

    from actlab.report import write_report
    write_report(compare_result, "report.html")

Sections: summary table with the paired tests, final-metric distributions, learning curves
(mean ± sd across seeds), the activation curves f and f', learnable-parameter trajectories,
every run, and the environment. The page loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

from actlab.bench.comparison import CompareResult
from actlab.report.table import fmt_num, summary_table, table_note

__all__ = ["render_report", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.better{color:#1a7f37;font-weight:600}.worse{color:#c62828;font-weight:600}
.note{color:#555;font-size:.9em;max-width:60em}.failed{color:#c62828}
img{max-width:100%;height:auto;border:1px solid #eee}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _img(fig: Any, alt: str) -> str:
    from actlab.report.plots import figure_png

    data = base64.b64encode(figure_png(fig)).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_esc(title)}</h2>\n{body}\n</section>"


def _figure_section(title: str, make: Any, note: str = "") -> str:
    try:
        fig = make()
    except (ValueError, ImportError) as e:
        return _section(title, f'<p class="note">not drawn: {_esc(e)}</p>')
    if fig is None:
        return _section(title, '<p class="note">nothing recorded for this section.</p>')
    extra = f'<p class="note">{_esc(note)}</p>' if note else ""
    return _section(title, _img(fig, title) + extra)


def _runs_table(result: CompareResult) -> str:
    headers = ["activation", "seed", "status", "metric", "train s", "finished", "host", "error"]
    rows, classes = [], []
    stored = {r.spec: r for r in result.records}
    for spec in result.specs:
        r = stored.get(spec)
        if r is None:
            rows.append([spec.activation, str(spec.seed), "missing", "", "", "", "", ""])
            classes.append("failed")
            continue
        err = (r.error or "").strip().splitlines()[0] if r.error else ""
        rows.append(
            [
                spec.activation,
                str(spec.seed),
                r.status,
                fmt_num(r.metric_value),
                fmt_num(r.seconds, 1),
                r.finished_at or "",
                r.host or "",
                err,
            ]
        )
        classes.append("" if r.ok else "failed")
    return _table(headers, rows, classes)


def render_report(result: CompareResult, *, title: str | None = None) -> str:
    """The report as one HTML string."""
    from actlab.report.curves import plot_activations
    from actlab.report.plots import (
        distribution_figure,
        learning_curves_figure,
        trajectory_figure,
    )

    s, acts, records = result.summary, result.activations, result.records
    first = result.specs[0]
    title = title or f"actlab compare: {', '.join(acts)} on {first.task}"
    headers, rows = summary_table(s, raw=True)
    verdicts = [r.verdict if r.verdict in ("better", "worse") else "" for r in s.rows]
    seeds = sorted({sp.seed for sp in result.specs})
    meta = [
        ["task", first.task],
        ["model", first.model],
        ["epochs", str(first.epochs or "task default")],
        ["seeds", ", ".join(map(str, seeds))],
        ["config", ", ".join(f"{k}={v}" for k, v in sorted(first.config.items()))],
        ["study", result.study],
        ["database", result.db_url],
        ["generated", time.strftime("%Y-%m-%d %H:%M:%S %Z")],
    ]
    versions = next((r.versions for r in records if r.versions), {})
    if versions:
        meta.append(["versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))])
    parts = [
        f"<h1>{_esc(title)}</h1>",
        _table(["", ""], meta),
        _section(
            "Summary",
            _table(headers, rows, verdicts) + f'<p class="note">{_esc(table_note(s))}</p>',
        ),
        _figure_section(
            "Final metric per seed",
            lambda: distribution_figure(records, acts, s.metric_name),
        ),
        _figure_section(
            "Learning curves",
            lambda: learning_curves_figure(records, acts, s.metric_name),
            "Lines: mean across seeds; bands: ± one standard deviation.",
        ),
        _figure_section(
            "Activation functions",
            lambda: plot_activations(acts),
            "Learnable activations are drawn at their initial parameters.",
        ),
        _figure_section(
            "Learnable-parameter trajectories",
            lambda: trajectory_figure(records, acts),
            "Mean across seeds ± one standard deviation, per parameter path.",
        ),
        _section("Runs", _runs_table(result)),
    ]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n"
        "</body></html>\n"
    )


def write_report(result: CompareResult, path: str | Path, *, title: str | None = None) -> Path:
    """Write the HTML report to ``path`` (its folder must exist); returns the path."""
    out = Path(path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"report folder {out.parent} does not exist; create it first")
    text = render_report(result, title=title)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
