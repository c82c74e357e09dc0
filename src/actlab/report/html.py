"""A self-contained HTML report of a comparison: one file, plots embedded as base64 PNG.

    from actlab.report import write_report
    write_report(compare_result, "report.html")

Sections: summary table with the paired tests, final-metric distributions, learning curves
(mean ± sd across seeds), the activation curves f and f', learnable-parameter trajectories,
every run, and the environment. When arms carry labels or model overrides of their own
(``relu_kan=silu@model.mlp_layer=relu_kan``), rows are named by arm and an "Arms" section
lists each arm's activation and model overrides. The page is built with the report kit
(:mod:`actlab.report.page`) and loads nothing from the network.
"""

from __future__ import annotations

import time
from pathlib import Path

from actlab.bench.comparison import CompareResult, arm_table
from actlab.report.page import Page, Section
from actlab.report.table import fmt_num, summary_table, table_note

__all__ = ["build_report", "render_report", "write_report"]

_EMPTY = "nothing recorded for this section."


def _arms_table(section: Section, result: CompareResult) -> None:
    rows = [
        [
            label,
            arm["activation"],
            ", ".join(f"model.{k}={v}" for k, v in arm["model_kwargs"].items()),
        ]
        for label, arm in arm_table(result.specs).items()
    ]
    section.table(rows, ["arm", "activation", "model overrides"])
    section.note(
        "Model overrides: the run's --set values merged with the arm's own (the arm wins)."
    )


def _runs_table(section: Section, result: CompareResult) -> None:
    head = ["arm"] if result.labelled else ["activation"]
    headers = [*head, "seed", "status", "metric", "train s", "finished", "host", "error"]
    rows, classes = [], []
    stored = {r.spec: r for r in result.records}
    for spec in result.specs:
        r = stored.get(spec)
        if r is None:
            rows.append([spec.arm_label, str(spec.seed), "missing", "", "", "", "", ""])
            classes.append("failed")
            continue
        err = (r.error or "").strip().splitlines()[0] if r.error else ""
        rows.append(
            [
                spec.arm_label,
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
    section.table(rows, headers, row_classes=classes)


def _shared_config(result: CompareResult) -> dict[str, object]:
    """The first run's config, less the model overrides when arms have their own."""
    cfg = result.specs[0].config
    return {k: v for k, v in cfg.items() if not (result.labelled and k == "model_kwargs")}


def build_report(result: CompareResult, *, title: str | None = None) -> Page:
    """The report as a :class:`~actlab.report.page.Page` (add sections, then write it)."""
    from actlab.report.curves import plot_activations
    from actlab.report.plots import (
        distribution_figure,
        learning_curves_figure,
        trajectory_figure,
    )

    s, acts, records = result.summary, result.arms, result.records
    first = result.specs[0]
    page = Page(title or f"actlab compare: {', '.join(acts)} on {first.task}")
    headers, rows = summary_table(
        s, raw=True, row_header="arm" if result.labelled else "activation"
    )
    verdicts = [r.verdict if r.verdict in ("better", "worse") else "" for r in s.rows]
    seeds = sorted({sp.seed for sp in result.specs})
    meta = [
        ("task", first.task),
        ("model", first.model),
        ("epochs", str(first.epochs or "task default")),
        ("seeds", ", ".join(map(str, seeds))),
        ("config", ", ".join(f"{k}={v}" for k, v in sorted(_shared_config(result).items()))),
        ("study", result.study),
        ("database", result.db_url),
        ("generated", time.strftime("%Y-%m-%d %H:%M:%S %Z")),
    ]
    versions = next((r.versions for r in records if r.versions), {})
    if versions:
        meta.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))))
    page.facts(meta)
    page.section("Summary").table(rows, headers, row_classes=verdicts).note(table_note(s))
    if result.labelled:
        _arms_table(page.section("Arms"), result)
    page.section("Final metric per seed").plot(
        lambda: distribution_figure(records, acts, s.metric_name),
        "Final metric per seed",
        empty=_EMPTY,
    )
    page.section("Learning curves").plot(
        lambda: learning_curves_figure(records, acts, s.metric_name),
        "Learning curves",
        note="Lines: mean across seeds; bands: ± one standard deviation.",
        empty=_EMPTY,
    )
    page.section("Activation functions").plot(
        lambda: plot_activations(result.activations),
        "Activation functions",
        note="Learnable activations are drawn at their initial parameters.",
        empty=_EMPTY,
    )
    page.section("Learnable-parameter trajectories").plot(
        lambda: trajectory_figure(records, acts),
        "Learnable-parameter trajectories",
        note="Mean across seeds ± one standard deviation, per parameter path.",
        empty=_EMPTY,
    )
    _runs_table(page.section("Runs"), result)
    return page


def render_report(result: CompareResult, *, title: str | None = None) -> str:
    """The report as one HTML string."""
    return build_report(result, title=title).render()


def write_report(result: CompareResult, path: str | Path, *, title: str | None = None) -> Path:
    """Write the HTML report atomically to ``path`` (its folder must exist); returns the path."""
    return build_report(result, title=title).write(path)
