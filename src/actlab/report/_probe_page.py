"""The HTML page of ``actlab probe`` and its figures: heatmaps, attention heads, massive sites.

    from actlab.report import write_probe_report
    write_probe_report("probe-minilm/report.html", "actlab probe minilm", table.rows)

Every figure function takes probe rows (dicts from :meth:`ProbeManager.summary`) and
returns a matplotlib Figure on an Agg canvas (no pyplot), or None when there is nothing to
draw. The page is built with the report kit; each figure is also saved as a PNG file next
to the page (``fig00.png``, ...). The probes package does not import this: the CLI calls it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actlab.report.page import Page, figure_png, write_atomic

__all__ = [
    "attention_heatmap",
    "infoplane_figure",
    "layer_heatmap",
    "massive_figure",
    "probe_figures",
    "short_name",
    "write_probe_report",
]

Row = dict[str, Any]


def _figure(width: float, height: float) -> Any:
    from actlab.report.curves import new_figure

    return new_figure(width, height)


def short_name(name: str) -> str:
    """A compact layer label: container names dropped ("model.layers.3.mlp.act_fn" ->
    "3.mlp.act_fn")."""
    return _short(name)


def _short(name: str) -> str:
    parts = name.split(".")
    return ".".join(p for p in parts if p not in ("model", "encoder", "layer", "layers", "blocks"))[
        :28
    ]


def layer_heatmap(rows: Sequence[Row], stats: Sequence[str], title: str) -> Any:
    """Layers (y) x statistics (x), each cell annotated with its value; colour per column."""
    rows = [r for r in rows if any(isinstance(r.get(s), (int, float)) for s in stats)]
    if not rows:
        return None
    vals = np.array([[float(r.get(s, math.nan)) for s in stats] for r in rows], dtype=float)
    finite = np.isfinite(vals)
    # columns with no value at all (cls_8 of layers without a sequence axis) stay blank
    lo = np.where(finite, vals, np.inf).min(axis=0)
    hi = np.where(finite, vals, -np.inf).max(axis=0)
    norm = (vals - lo) / np.where(hi > lo, hi - lo, 1.0)
    fig = _figure(1.6 + 1.3 * len(stats), 0.9 + 0.32 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(norm, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            if not math.isnan(vals[i, j]):
                ax.text(
                    j,
                    i,
                    f"{vals[i, j]:.3g}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] < 0.6 else "black",
                )
    ax.set_xticks(range(len(stats)), list(stats), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [_short(str(r["layer"])) for r in rows], fontsize=7)
    ax.set_title(title + " (colour: column-wise min..max)", fontsize=9)
    return fig


def attention_heatmap(rows: Sequence[Row], key: str = "entropy") -> Any:
    """Layers x heads of attention entropy, with the collapse / overload band of each head."""
    rows = [r for r in rows if "head" in r]
    if not rows:
        return None
    layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
    heads = 1 + max(int(r["head"]) for r in rows)
    grid = np.full((len(layers), heads), np.nan)
    band = [["" for _ in range(heads)] for _ in layers]
    for r in rows:
        i, j = layers.index(str(r["layer"])), int(r["head"])
        grid[i, j] = float(r[key])
        band[i][j] = {"collapse": "c", "overload": "o"}.get(str(r.get("band", "")), "")
    fig = _figure(1.8 + 0.45 * heads, 1.0 + 0.4 * len(layers))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(grid, aspect="auto", cmap="magma")
    for i in range(len(layers)):
        for j in range(heads):
            if band[i][j]:
                ax.text(j, i, band[i][j], ha="center", va="center", fontsize=8, color="cyan")
    ax.set_xticks(range(heads), [str(h) for h in range(heads)], fontsize=7)
    ax.set_yticks(range(len(layers)), [_short(n) for n in layers], fontsize=7)
    ax.set_xlabel("head")
    ax.set_title(f"attention {key} per head (c: collapse band, o: overload band)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def massive_figure(rows: Sequence[Row], tokens: Sequence[str] | None = None) -> Any:
    """Ratio max|h| / median|h| per block (log scale) and where the top activation sits."""
    rows = [r for r in rows if "ratio" in r]
    if not rows:
        return None
    fig = _figure(9.0, 4.2)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    x = np.arange(len(rows))
    ratio = [float(r["ratio"]) for r in rows]
    ax1.bar(x, ratio, color=["tab:red" if r["massive"] else "tab:blue" for r in rows])
    ax1.axhline(1000, color="k", lw=0.8, ls="--")
    ax1.set_yscale("log")
    ax1.set_xlabel("block")
    ax1.set_ylabel("max|h| / median|h|")
    ax1.set_title("massive-activation ratio (red: >100 and >=1000x)", fontsize=9)
    for i, r in enumerate(rows):
        for t in r.get("top_tokens", [])[:3]:
            if t["dim"] < 0:
                continue  # the token holds no dim's maximum: no single dim to show
            ax2.scatter(
                i,
                t["dim"],
                s=8 + 60 * t["value"] / max(rows[i]["max_abs"], 1e-9),
                c="tab:red" if r["massive"] else "tab:gray",
                alpha=0.7,
            )
    ax2.set_xlabel("block")
    ax2.set_ylabel("hidden dim of the top tokens")
    top = max(rows, key=lambda r: float(r["max_abs"]))
    if top.get("top_tokens"):
        t = top["top_tokens"][0]
        label = (
            tokens[t["position"]]
            if tokens and t["position"] < len(tokens)
            else f"pos {t['position']}"
        )
        ax2.set_title(f"largest: {t['value']:.4g} at dim {t['dim']}, token {label!r}", fontsize=9)
    return fig


def infoplane_figure(history: Sequence[Row]) -> Any:
    """I(X;T) vs I(T;Y) (EBAB) per layer across epochs; rows without input ids plot H(T),
    the upper bound on I(X;T), and the axis says so."""
    rows = [r for r in history if "I_TY_ebab" in r and ("I_XT_ebab" in r or "H_T_ebab" in r)]
    if not rows:
        return None
    exact = all("I_XT_ebab" in r for r in rows)
    key = "I_XT_ebab" if exact else "H_T_ebab"
    fig = _figure(6.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for layer in dict.fromkeys(str(r["layer"]) for r in rows):
        pts = sorted((r for r in rows if r["layer"] == layer), key=lambda r: r.get("epoch", 0))
        xs, ys = [p[key] for p in pts], [p["I_TY_ebab"] for p in pts]
        ax.plot(xs, ys, "-o", ms=3, label=_short(layer))
    ax.set_xlabel("I(X;T) bits (EBAB)" if exact else "H(T) bits (EBAB), an upper bound on I(X;T)")
    ax.set_ylabel("I(T;Y) bits (EBAB)")
    ax.set_title("information plane across epochs", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _probe(rows: Sequence[Row], name: str) -> list[Row]:
    return [r for r in rows if r.get("probe") == name]


def probe_figures(
    rows: Sequence[Row],
    *,
    plane: Sequence[Row] | None = None,
    tokens: Sequence[str] | None = None,
) -> list[tuple[str, Any]]:
    """(heading, figure or None) of every section of the probe page, in page order.

    ``rows`` are the probe rows of the model; ``plane`` the per-epoch rows of a task run
    (information plane and sparsity on a fixed validation batch), None for a pretrained model.
    """
    out: list[tuple[str, Any]] = []
    if plane is not None:
        last = plane[-1]["epoch"] if plane else None
        dead = [r for r in _probe(plane, "sparsity") if r.get("epoch") == last]
        out.append(("information plane (fixed validation batch)", infoplane_figure(plane)))
        out.append(
            (
                "dead units per epoch (fixed validation batch)",
                layer_heatmap(
                    dead, ["dead_rate", "zero_frac", "tls", "cls_8"], "sparsity, last epoch"
                ),
            )
        )
    sparsity = ["zero_frac", "near_zero_frac", "tls", "cls_8", "dead_rate"]
    moments = ["mean", "std", "skew", "kurtosis", "min", "max"]
    out += [
        ("sparsity per layer", layer_heatmap(_probe(rows, "sparsity"), sparsity, "sparsity")),
        (
            "pre-activation moments",
            layer_heatmap(_probe(rows, "distribution"), moments, "pre-activation distribution"),
        ),
        ("attention entropy per head", attention_heatmap(_probe(rows, "attention"))),
        ("massive activations", massive_figure(_probe(rows, "massive"), tokens)),
    ]
    return out


def write_probe_report(
    path: str | Path,
    title: str,
    rows: Sequence[Row],
    *,
    plane: Sequence[Row] | None = None,
    tokens: Sequence[str] | None = None,
) -> Path:
    """Write the probe page (atomically) to ``path``, one section per figure that has
    something to draw; each figure is also saved as ``figNN.png`` next to the page."""
    out = Path(path)
    page = Page(title)
    figures = [(h, f) for h, f in probe_figures(rows, plane=plane, tokens=tokens) if f is not None]
    for i, (heading, fig) in enumerate(figures):
        png = figure_png(fig)
        write_atomic(out.parent / f"fig{i:02d}.png", png)
        page.section(heading).figure(png, heading)
    return page.write(out)
