"""Fair multi-seed comparisons of activations: run matrix, results store, statistics.

    from actlab.bench import compare
    res = compare(["gelu", "crrelu"], task="fashion-mnist", seeds=5)

Public API:

    compare, CompareResult            plan + run (resumable) + summarise
    ResultsStore, RunRecord           the SQLAlchemy results database
    RunSpec, plan_runs                the activation x seed matrix
    run_matrix, MatrixReport          execute a matrix (workers, claims, failures)
    summarize, CompareSummary, ActivationSummary
    stats                             mean_ci, paired_ttest, wilcoxon_signed_rank, holm, ...

Submodules are imported lazily: ``import actlab.bench`` loads neither SQLAlchemy nor scipy.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ActivationSummary",
    "CompareResult",
    "CompareSummary",
    "MatrixReport",
    "ResultsStore",
    "RunRecord",
    "RunSpec",
    "compare",
    "plan_runs",
    "run_matrix",
    "stats",
    "summarize",
]

_LAZY = {
    "ActivationSummary": "actlab.bench.summary",
    "CompareSummary": "actlab.bench.summary",
    "summarize": "actlab.bench.summary",
    "CompareResult": "actlab.bench.comparison",
    "compare": "actlab.bench.comparison",
    "MatrixReport": "actlab.bench.runner",
    "run_matrix": "actlab.bench.runner",
    "ResultsStore": "actlab.bench.store",
    "RunRecord": "actlab.bench.store",
    "RunSpec": "actlab.bench.plan",
    "plan_runs": "actlab.bench.plan",
}


def __getattr__(name: str) -> Any:
    if name == "stats":
        return importlib.import_module("actlab.bench.stats")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'actlab.bench' has no attribute {name!r}")
