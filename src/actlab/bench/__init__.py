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

from typing import TYPE_CHECKING

from actlab._lazy import lazy_exports

if TYPE_CHECKING:
    from actlab.bench import stats
    from actlab.bench.comparison import CompareResult, compare
    from actlab.bench.plan import RunSpec, plan_runs
    from actlab.bench.runner import MatrixReport, run_matrix
    from actlab.bench.store import ResultsStore, RunRecord
    from actlab.bench.summary import ActivationSummary, CompareSummary, summarize

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

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
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
        "stats": None,  # the submodule actlab.bench.stats
    },
)
