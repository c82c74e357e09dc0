"""Figures of a comparison: learning curves, final-metric distributions, parameter trajectories.

Each function takes stored :class:`~actlab.bench.store.RunRecord` objects and returns a
matplotlib Figure (Agg canvas, no pyplot), or None when there is nothing to draw.
Bands are mean ± one standard deviation across seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from actlab.bench.store import RunRecord
from actlab.report.curves import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["curve_keys", "distribution_figure", "learning_curves_figure", "trajectory_figure"]

_NOT_CURVES = ("epoch", "lr", "seconds", "elapsed", "time", "images", "tokens", "per_s", "step")
_FIRST = ("train_loss", "val_loss", "val_{m}", "test_{m}")
_MAX_PANELS = 4


def _by_activation(records: Sequence[RunRecord], acts: Sequence[str]) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {a: [] for a in acts}
    for r in records:
        if r.status == "finished" and r.spec.arm_label in out:
            out[r.spec.arm_label].append(r)
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return None


def curve_keys(records: Sequence[RunRecord], metric: str = "") -> list[str]:
    """Per-epoch history keys worth plotting: losses and metrics, mostly finite.

    Order: train_loss, val_loss, val_<metric>, test_<metric>, then the rest by name.
    """
    finite: dict[str, list[bool]] = {}
    for r in records:
        for row in r.history:
            for k, v in row.items():
                x = _number(v)
                if x is not None and not any(tag in k.lower() for tag in _NOT_CURVES):
                    finite.setdefault(k, []).append(math.isfinite(x))
    keys = [k for k, f in finite.items() if sum(f) * 2 >= len(f)]
    first = [p.format(m=metric) for p in _FIRST]
    return sorted(keys, key=lambda k: (first.index(k) if k in first else len(first), k))


def _series(runs: Sequence[RunRecord], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(epochs, values[seed, epoch])`` truncated to the shortest run; None if absent."""
    seqs = []
    for r in runs:
        pts = []
        for i, row in enumerate(r.history):
            y = _number(row.get(key))
            if y is not None:
                pts.append((_number(row.get("epoch")) or float(i + 1), y))
        if pts:
            seqs.append(pts)
    if not seqs:
        return None
    m = min(len(s) for s in seqs)
    epochs = np.array([p[0] for p in seqs[0][:m]])
    return epochs, np.array([[p[1] for p in s[:m]] for s in seqs])


def _band(ax: Axes, x: np.ndarray, ys: np.ndarray, color: str, label: str) -> None:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns: gaps in the line
        mean = np.nanmean(ys, axis=0)
        sd = np.nanstd(ys, axis=0, ddof=1) if ys.shape[0] > 1 else None
    text = f"{label} (n={ys.shape[0]})"
    if len(x) == 1:  # a single epoch: a point with an error bar, and a readable x axis
        ax.errorbar(x, mean, yerr=sd, color=color, marker="o", capsize=4, label=text)
        ax.set_xticks(x)
        return
    ax.plot(x, mean, color=color, lw=1.6, label=text, marker=".")
    if sd is not None:
        ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.18, lw=0)


def learning_curves_figure(
    records: Sequence[RunRecord], acts: Sequence[str], metric: str = ""
) -> Figure | None:
    """Up to four panels (losses and metrics per epoch), mean ± sd band per activation."""
    keys = curve_keys(records, metric)[:_MAX_PANELS]
    if not keys:
        return None
    from matplotlib.ticker import MaxNLocator

    groups = _by_activation(records, acts)
    fig = new_figure(4.2 * len(keys), 3.6)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys, strict=True):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for i, act in enumerate(acts):
            s = _series(groups[act], key)
            if s is not None:
                _band(ax, s[0], s[1], f"C{i % 10}", act)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return fig


def distribution_figure(
    records: Sequence[RunRecord], acts: Sequence[str], metric_name: str
) -> Figure | None:
    """Box plot plus jittered points of the final metric per activation."""
    groups = _by_activation(records, acts)
    data = [[float(r.metric_value or 0.0) for r in groups[a] if r.ok] for a in acts]
    if not any(data):
        return None
    fig = new_figure(max(4.0, 1.3 * len(acts) + 2.0), 3.8)
    ax = fig.add_subplot()
    pos = np.arange(1, len(acts) + 1)
    filled = [(p, d) for p, d in zip(pos, data, strict=True) if d]
    ax.boxplot(
        [d for _, d in filled],
        positions=[p for p, _ in filled],
        widths=0.5,
        showfliers=False,
        medianprops={"color": "0.2"},
    )
    rng = np.random.default_rng(0)  # fixed jitter: the same report twice is byte-identical
    for i, (p, d) in enumerate(zip(pos, data, strict=True)):
        if d:
            ax.scatter(p + rng.uniform(-0.12, 0.12, len(d)), d, color=f"C{i % 10}", s=22, zorder=3)
    if data[0]:
        ax.axhline(float(np.mean(data[0])), color="0.5", ls=":", lw=1, label=f"{acts[0]} mean")
        ax.legend(fontsize="small")
    ax.set_xticks(pos, list(acts), rotation=20 if len(acts) > 4 else 0)
    ax.set_ylabel(metric_name)
    ax.set_title(f"final {metric_name} per seed")
    ax.grid(axis="y", alpha=0.3)
    return fig


def _flat_trajectories(r: RunRecord) -> dict[str, list[float]]:
    """Scalar series per parameter; vector parameters become ``path[i]``."""
    out: dict[str, list[float]] = {}
    for path, values in r.trajectories.items():
        for v in values:
            arr = np.atleast_1d(np.asarray(v, dtype=np.float64)).reshape(-1)
            for j, x in enumerate(arr):
                name = path if arr.size == 1 else f"{path}[{j}]"
                out.setdefault(name, []).append(float(x))
    return out


def trajectory_figure(records: Sequence[RunRecord], acts: Sequence[str]) -> Figure | None:
    """One panel per activation with learnable parameters: mean ± sd across seeds per path."""
    groups = _by_activation(records, acts)
    panels: list[tuple[str, dict[str, list[list[float]]]]] = []
    for act in acts:
        paths: dict[str, list[list[float]]] = {}
        for r in groups[act]:
            for name, series in _flat_trajectories(r).items():
                paths.setdefault(name, []).append(series)
        if paths:
            panels.append((act, paths))
    if not panels:
        return None
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(4.6 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    for ax, (act, paths) in zip(axes, panels, strict=False):
        for i, (name, runs) in enumerate(sorted(paths.items())):
            m = min(len(s) for s in runs)
            ys = np.array([s[:m] for s in runs])
            _band(ax, np.arange(m, dtype=np.float64), ys, f"C{i % 10}", name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{act}: learnable parameters")
        ax.set_xlabel("epoch (0 = initial value)")
        ax.grid(alpha=0.3)
        if len(paths) <= 8:
            ax.legend(fontsize="x-small")
        else:
            ax.text(0.02, 0.02, f"{len(paths)} parameters", transform=ax.transAxes)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig
