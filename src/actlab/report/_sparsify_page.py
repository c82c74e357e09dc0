"""The HTML page of ``actlab sparsify --eval``: quality curves of sparsity methods and a table.

    from actlab.report import write_sparsify_report
    write_sparsify_report("report.html", rows, title="actlab sparsify smollm2", facts=[...])

``rows`` are the dicts of :func:`actlab.sparse.sparsity_curves` (one per method and target
sparsity; the ``"dense"`` row is the baseline), optionally with a ``"model"`` key. Per model,
one figure holds every method: perplexity against the realised sparsity over block
parameters (log scale, dense baseline dashed) and next-token agreement with the dense model
against the same axis. The table lists every row; the facts state the protocol and token
counts. The LM head and embeddings stay dense, which the page says next to the curves.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from actlab.report.page import Page

__all__ = ["sparsify_figure", "sparsify_table", "write_sparsify_report"]

Row = Mapping[str, Any]
DENSE_CAVEAT = (
    "Sparsity is counted over the 7 projections of every block (q, k, v, o, gate, up, down), "
    "weighted by their parameters; the embeddings and the LM head stay dense and are not "
    "counted. A dense LM head caps end-to-end decode speed-ups (it is ~21% of SmolLM2-135M's "
    "per-token weight bytes and ~63% of Gemma-3-270M's)."
)
_COLUMNS = (
    ("method", "method"),
    ("target", "target"),
    ("realised", "realised (block params)"),
    ("ppl", "perplexity"),
    ("delta_pct", "Δ ppl %"),
    ("delta_ci", "95% CI of Δ (windows)"),
    ("agreement", "agreement"),
    ("realised_q", "q"),
    ("realised_k", "k"),
    ("realised_v", "v"),
    ("realised_o", "o"),
    ("realised_gate", "gate"),
    ("realised_up", "up"),
    ("realised_down", "down"),
    ("calib_seconds", "calib s"),
    ("eval_seconds", "eval s"),
    ("params", "params"),
)


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _params(p: Any) -> str:
    if isinstance(p, Mapping):
        return ", ".join(f"{k}={v}" for k, v in sorted(p.items()) if v is not None)
    return "" if p is None else str(p)


def _interval(ci: Any) -> str:
    """``"+11.8 .. +14.0"`` (percent) from a ``delta_ci`` pair; "" where missing or not finite."""
    if not isinstance(ci, Sequence) or len(ci) != 2:
        return ""
    lo, hi = _num(ci[0]), _num(ci[1])
    return f"{lo:+.1f} .. {hi:+.1f}" if math.isfinite(lo) and math.isfinite(hi) else ""


def sparsify_table(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The table rows of the page (display names as keys)."""
    out = []
    for r in rows:
        row: dict[str, Any] = {}
        for key, name in _COLUMNS:
            v = r.get(key)
            if key == "params":
                v = _params(v)
            elif key == "delta_ci":
                v = _interval(v)
            row[name] = v
        out.append(row)
    return out


def sparsify_figure(rows: Sequence[Row], title: str = "") -> Any:
    """Perplexity and agreement vs realised sparsity, one line per method; None if empty."""
    from actlab.report.curves import new_figure

    dense = [r for r in rows if r.get("method") == "dense"]
    methods = list(dict.fromkeys(str(r["method"]) for r in rows if r.get("method") != "dense"))
    if not methods and not dense:
        return None
    fig = new_figure(11.0, 4.2)
    ax_p, ax_a = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    base = _num(dense[0].get("ppl")) if dense else math.nan
    for m in methods:
        pts = sorted(
            (_num(r.get("realised")), _num(r.get("ppl")), _num(r.get("agreement")))
            for r in rows
            if r.get("method") == m
        )
        if dense:  # every curve starts at the dense model
            pts = [(0.0, base, 1.0), *pts]
        xs = [100 * p[0] for p in pts]
        ax_p.plot(xs, [p[1] for p in pts], marker="o", label=m)
        ax_a.plot(xs, [p[2] for p in pts], marker="o", label=m)
    if math.isfinite(base):
        ax_p.axhline(base, color="grey", linestyle="--", linewidth=1, label="dense")
    ax_p.set_yscale("log")
    ax_p.set_xlabel("realised sparsity over block parameters (%)")
    ax_p.set_ylabel("perplexity (held-out text)")
    ax_a.set_xlabel("realised sparsity over block parameters (%)")
    ax_a.set_ylabel("greedy next-token agreement with dense")
    ax_a.set_ylim(0, 1.02)
    for ax in (ax_p, ax_a):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def write_sparsify_report(
    path: str | Path,
    rows: Sequence[Row],
    *,
    title: str = "actlab sparsify",
    facts: Sequence[tuple[str, Any]] | Mapping[str, Any] = (),
    notes: Sequence[str] = (),
) -> Path:
    """Write the page (atomically) to ``path``: facts, one figure per model, the table."""
    page = Page(title)
    if facts:
        page.facts(facts)
    for n in notes:
        page.note(n)
    page.note(DENSE_CAVEAT)
    models = list(dict.fromkeys(str(r.get("model", "")) for r in rows))
    for model in models:
        mine = [r for r in rows if str(r.get("model", "")) == model]
        s = page.section(f"Quality vs sparsity{': ' + model if model else ''}")
        s.plot(
            functools.partial(sparsify_figure, mine, model),
            alt=f"perplexity and agreement vs sparsity {model}".strip(),
            note="x: realised sparsity on the evaluation text; the dense model is at 0.",
        )
        s.table(sparsify_table(mine), digits=4)
    return page.write(path)
