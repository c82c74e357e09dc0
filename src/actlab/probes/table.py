"""A tidy, pandas-free table of probe rows, printable with rich, writable as JSONL / CSV.

Each row is a flat dict with at least ``probe`` and ``layer``; list / dict values (top dims,
expert loads) are kept in JSONL and skipped by the long-format CSV and TensorBoard writers,
which only take finite scalars: CSV columns are step, probe, layer, key, stat, value.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["ProbeTable", "scalar_items"]

Row = dict[str, Any]
_ID_COLS = ("step", "probe", "layer", "head", "key")


def scalar_items(row: Row) -> Iterator[tuple[str, float]]:
    """(stat, value) for every numeric, non-identifying entry of a row (bools as 0/1)."""
    for k, v in row.items():
        if k in _ID_COLS:
            continue
        if isinstance(v, bool):
            yield k, float(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield k, float(v)


class ProbeTable:
    """A list of row dicts with filtering, printing and writers."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> Row:
        return self.rows[i]

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for r in self.rows:
            cols.extend(k for k in r if k not in cols)
        return cols

    def where(self, **match: Any) -> ProbeTable:
        """Rows whose fields equal every given value, e.g. ``where(probe="sparsity")``."""
        return ProbeTable([r for r in self.rows if all(r.get(k) == v for k, v in match.items())])

    def column(self, name: str) -> list[Any]:
        return [r.get(name) for r in self.rows]

    def get(self, probe: str, layer: str) -> Row:
        """The single row of one probe and layer (first head for per-head probes)."""
        for r in self.rows:
            if r.get("probe") == probe and r.get("layer") == layer:
                return r
        raise KeyError(f"no row for probe={probe!r}, layer={layer!r}")

    def __rich__(self) -> Any:
        from rich.table import Table

        groups: dict[str, list[Row]] = {}
        for r in self.rows:
            groups.setdefault(str(r.get("probe", "")), []).append(r)
        outer = Table.grid(padding=(1, 0))
        for name, rows in groups.items():
            cols = ProbeTable(rows).columns
            t = Table(title=f"probe: {name}", title_justify="left")
            shown = [c for c in cols if c not in ("probe", "key")]
            for c in shown:
                t.add_column(c, overflow="fold", max_width=48)
            for r in rows:
                t.add_row(*[_fmt(r.get(c)) for c in shown])
            outer.add_row(t)
        return outer

    def print(self) -> None:
        """Print with rich (falls back to plain text without a terminal)."""
        from rich.console import Console

        Console().print(self)

    def __str__(self) -> str:
        lines = []
        for r in self.rows:
            lines.append("  ".join(f"{k}={_fmt(v)}" for k, v in r.items()))
        return "\n".join(lines)

    def to_jsonl(self, path: str | os.PathLike[str], step: int | None = None) -> None:
        """Append one JSON object per row (``step`` added when given)."""
        with open(path, "a", encoding="utf-8") as f:
            for r in self.rows:
                rr = r if step is None else {"step": step, **r}
                f.write(json.dumps(rr, default=_json_default, allow_nan=True) + "\n")

    def to_csv(self, path: str | os.PathLike[str], step: int | None = None) -> None:
        """Append long-format rows (step, probe, layer, key, stat, value); header if new."""
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        with open(path, "a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "probe", "layer", "key", "stat", "value"])
            for r in self.rows:
                for stat, v in scalar_items(r):
                    w.writerow(
                        [
                            step if step is not None else "",
                            r.get("probe", ""),
                            r.get("layer", ""),
                            r.get("key", ""),
                            stat,
                            repr(v),
                        ]
                    )


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, list):
        if v and all(isinstance(x, dict) for x in v):
            return f"[{len(v)} entries]"
        if v and all(isinstance(x, (list, tuple)) and len(x) == 2 for x in v):
            return " ".join(f"{x[0]}:{_fmt(x[1])}" for x in v[:3]) + (" ..." if len(v) > 3 else "")
        s = " ".join(_fmt(x) for x in v[:4])
        return s + (" ..." if len(v) > 4 else "")
    return str(v)


def _json_default(o: Any) -> Any:
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)
