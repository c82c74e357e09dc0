"""Reports: one page kit and its clients (compare, search and probe pages), plus plots.

The kit (:mod:`actlab.report.page`): ``Page(title)``, ``page.section(title)``, then
``.paragraph``, ``.note``, ``.table`` (lists or dicts, numbers formatted), ``.facts``,
``.figure`` (matplotlib Figure, PNG or SVG, embedded), ``.plot`` and ``.pre`` on either;
``page.write(path)`` writes one self-contained HTML file atomically. All text is escaped by
:func:`escape`, in one place.

    render_report(compare_result) -> str;  write_report(compare_result, path) -> Path
    render_search_report(search_result, final) -> str;  write_search_report(res, path, final)
    write_probe_report(path, title, probe_rows, plane=None, tokens=None) -> Path
    write_sparsify_report(path, curve_rows, title=, facts=, notes=) -> Path
    plot_activations(specs, out=None, *, xlim=(-4, 4), n=801, ax=None) -> Figure
    activation_curve(spec, xlim, n) -> (x, f, f')

Lower packages (bench, search, probes) never import this; the CLI calls the pages after
the work is done. matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actlab._lazy import lazy_exports

if TYPE_CHECKING:
    from actlab.report._probe_page import short_name, write_probe_report
    from actlab.report._search_page import render_search_report, write_search_report
    from actlab.report._sparsify_page import write_sparsify_report
    from actlab.report.curves import activation_curve, plot_activations
    from actlab.report.html import render_report, write_report
    from actlab.report.page import Page, Section, escape, write_atomic

__all__ = [
    "Page",
    "Section",
    "activation_curve",
    "escape",
    "plot_activations",
    "render_report",
    "render_search_report",
    "short_name",
    "write_atomic",
    "write_probe_report",
    "write_report",
    "write_search_report",
    "write_sparsify_report",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Page": "actlab.report.page",
        "Section": "actlab.report.page",
        "escape": "actlab.report.page",
        "write_atomic": "actlab.report.page",
        "activation_curve": "actlab.report.curves",
        "plot_activations": "actlab.report.curves",
        "render_report": "actlab.report.html",
        "write_report": "actlab.report.html",
        "render_search_report": "actlab.report._search_page",
        "write_search_report": "actlab.report._search_page",
        "short_name": "actlab.report._probe_page",
        "write_probe_report": "actlab.report._probe_page",
        "write_sparsify_report": "actlab.report._sparsify_page",
    },
)
