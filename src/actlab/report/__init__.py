"""Plots and the HTML report of a comparison (matplotlib is imported only when drawing).

plot_activations(specs, out=None, *, xlim=(-4, 4), n=801, ax=None) -> Figure
activation_curve(spec, xlim, n) -> (x, f, f')
render_report(compare_result) -> str;  write_report(compare_result, path) -> Path
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["activation_curve", "plot_activations", "render_report", "write_report"]

_LAZY = {
    "activation_curve": "actlab.report.curves",
    "plot_activations": "actlab.report.curves",
    "render_report": "actlab.report.html",
    "write_report": "actlab.report.html",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'actlab.report' has no attribute {name!r}")
