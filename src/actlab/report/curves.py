"""Activation curves: f(x) and f'(x) on a grid, and a plot of several activations overlaid.

    from actlab.report.curves import plot_activations
    fig = plot_activations(["relu", "gelu", "crrelu(eps=0.1)"], "acts.png")

f' is computed by autograd through the activation module itself (the same code path as
training), in float64 when the module supports it. Learnable activations are drawn at their
initial parameter values. Figures are built on matplotlib's Agg canvas without pyplot, so
nothing here needs a display or touches global pyplot state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["activation_curve", "new_figure", "plot_activations"]


def new_figure(width: float = 7.0, height: float = 4.5) -> Figure:
    """A matplotlib Figure on an Agg canvas (no pyplot, no display needed)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plots need matplotlib: pip install 'actlab[plot]' (or pip install matplotlib)"
        ) from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def activation_curve(
    spec: Any, xlim: tuple[float, float] = (-4.0, 4.0), n: int = 801
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, f(x), f'(x))`` as float64 arrays for an activation spec on ``n`` grid points."""
    import torch

    from actlab.registry import create_activation, get_activation_info, parse_spec

    lo, hi = float(xlim[0]), float(xlim[1])
    if not lo < hi:
        raise ValueError(f"xlim must be increasing, got {xlim}")
    if n < 2:
        raise ValueError(f"need at least 2 grid points, got n={n}")
    if isinstance(spec, str) and not get_activation_info(parse_spec(spec)[0]).elementwise:
        raise ValueError(f"{spec!r} is not elementwise, so it has no curve f(x) to plot")
    module = create_activation(spec)
    module.eval()
    for dtype in (torch.float64, torch.float32):
        try:
            mod = module.to(dtype)
            x = torch.linspace(lo, hi, n, dtype=dtype, requires_grad=True)
            y = mod(x)
            (dy,) = torch.autograd.grad(y.sum(), x)
            break
        except (RuntimeError, TypeError):
            if dtype is torch.float32:
                raise
    return (
        x.detach().double().numpy(),
        y.detach().double().numpy(),
        dy.detach().double().numpy(),
    )


def _ylim(series: list[np.ndarray], xlim: tuple[float, float]) -> tuple[float, float]:
    """Fit every curve, but keep fast-growing ones (x^3, exp) from flattening the rest."""
    span = float(xlim[1]) - float(xlim[0])
    finite = np.concatenate([s[np.isfinite(s)] for s in series] + [np.zeros(1)])
    lo = max(float(finite.min()), -0.5 * span)
    hi = min(float(finite.max()), 0.75 * span)
    pad = 0.05 * (hi - lo) or 0.5
    return lo - pad, hi + pad


def plot_activations(
    specs: list[str],
    out: str | Path | None = None,
    *,
    xlim: tuple[float, float] = (-4.0, 4.0),
    n: int = 801,
    ax: Axes | None = None,
) -> Figure:
    """Plot f (solid) and f' (dashed) of each activation on one axes; save to ``out`` if given.

    Pass ``ax`` to draw into an existing axes (its figure is returned). The y-range fits all
    curves but is capped near the x-range so one fast-growing curve cannot flatten the
    others. The output format follows the file suffix (``.png``, ``.svg``, ``.pdf``).
    """
    if not specs:
        raise ValueError("name at least one activation to plot, e.g. ['relu', 'gelu']")
    curves = [(str(s), *activation_curve(s, xlim, n)) for s in specs]  # validate before drawing
    if ax is None:
        fig = new_figure()
        ax = fig.add_subplot()
    for i, (label, x, y, dy) in enumerate(curves):
        color = f"C{i % 10}"
        ax.plot(x, y, color=color, lw=1.8, label=label)
        ax.plot(x, dy, color=color, lw=1.2, ls="--")
    ax.axhline(0.0, color="0.6", lw=0.6)
    ax.axvline(0.0, color="0.6", lw=0.6)
    ax.set_xlim(float(xlim[0]), float(xlim[1]))
    ax.set_ylim(*_ylim([c[2] for c in curves] + [c[3] for c in curves], xlim))
    ax.set_xlabel("x")
    ax.set_title("activations: f(x) solid, f'(x) dashed")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    # the top-level Figure, also when ax lives in a SubFigure
    figure = cast("Figure", getattr(ax.figure, "figure", None) or ax.figure)
    if out is not None:
        path = Path(out)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"folder {path.parent} does not exist; create it first")
        figure.savefig(path, dpi=120)
    return figure
