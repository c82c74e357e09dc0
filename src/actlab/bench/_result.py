"""Turn whatever a train function returns into a plain, JSON-safe payload for the store.

The trainer's ``RunResult`` is a dataclass; a plain dict with the same fields works too (handy
for tests and custom train functions). Recognised fields:

    metric_name / metric        name of the final test metric ("accuracy", "bpc", ...)
    metric_value / value        its value
    higher_is_better            direction of the metric
    history                     list of per-epoch dicts
    trajectories                {parameter path: [value per epoch]}
    seconds                     training time
    config                      the resolved run configuration
    diverged                    True if the loss became non-finite (training stopped early)
"""

from __future__ import annotations

import dataclasses
import math
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["jsonable", "result_payload", "error_text"]


def jsonable(obj: Any) -> Any:
    """A JSON-safe copy of ``obj``: tensors and arrays become lists, dtypes and paths strings."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    tolist = getattr(obj, "tolist", None)  # torch tensors, numpy arrays and scalars
    if callable(tolist):
        return jsonable(tolist())
    return str(obj)


def _field(res: Any, *names: str) -> Any:
    for name in names:
        if isinstance(res, Mapping):
            if name in res:
                return res[name]
        elif hasattr(res, name):
            return getattr(res, name)
    return None


def result_payload(res: Any) -> dict[str, Any]:
    """Extract the stored fields from a train function's result; raises TypeError if unusable."""
    metric = _field(res, "metric")
    if dataclasses.is_dataclass(metric) or isinstance(metric, Mapping):
        # a nested metric object: (name, value, higher_is_better)
        name = _field(metric, "name")
        value = _field(metric, "value")
        higher = _field(metric, "higher_is_better")
    else:
        name = _field(res, "metric_name") or (metric if isinstance(metric, str) else None)
        value = _field(res, "metric_value", "value", "test_metric")
        if value is None and isinstance(metric, (int, float)):
            value = metric
        higher = _field(res, "higher_is_better")
    if value is None:
        raise TypeError(
            f"train function returned {type(res).__name__} without a metric value; "
            "return a RunResult (or a dict with metric_name, metric_value, higher_is_better)"
        )
    value = float(value)
    seconds = _field(res, "seconds")
    return {
        "metric_name": str(name or "metric"),
        "metric_value": value if math.isfinite(value) else None,
        "higher_is_better": True if higher is None else bool(higher),
        "history": jsonable(_field(res, "history") or []),
        "trajectories": jsonable(_field(res, "trajectories") or {}),
        "seconds": None if seconds is None else float(seconds),
        "run_config": jsonable(_field(res, "config") or {}),
        "diverged": bool(_field(res, "diverged")),
    }


def error_text(exc: BaseException) -> str:
    """``Type: message`` on the first line, the traceback after a blank line."""
    head = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{head}\n\n{tb}"
