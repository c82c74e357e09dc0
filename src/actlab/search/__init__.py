"""actlab.search: find better activation functions on two CPU cores, scale out when you can.

    from actlab.search import run_search, Pipeline, QualityFloor, CostFilter
    res = run_search("digits-mlp", "eafo", budget="10m", study="demo",
                     pipeline=Pipeline(floor=QualityFloor(0.5, after=1), budgets=(3, 8, 20)))
    res.best().candidate.formula, res.pareto(), res.rejections()

Public API (everything else lives in private modules and may change):

    run_search, SearchResult, SearchEvent, Budget, parse_budget   the resumable loop
    Candidate, EvalResult, WARM_START         expressions to evaluate and their outcomes
    Pipeline                                  checks -> cost filter -> quality floor -> train
    CostFilter                                EEEA-Net early exit: step time vs GELU
    ShapeChecks, check_shape, ShapeResult     EAFO's boundary conditions before training
    QualityFloor, Rejected                    rejection protocols
    Objective, TrainObjective, CurveObjective, Score, make_objective   what is maximised
    Strategy (ask/tell), STRATEGIES, make_strategy, Funnel   strategies by name (registry:
                                              random, evolution, eafo, bo), funnel wrapper
    form_constants                            the constants ``bo`` optimises in a formula
    eafo_correction                           the EAFO entropy-correction mutation
    pareto_front                              multi-objective ranking of (quality, cost)
    SearchStudy, open_storage, check_storage  Optuna storage: SQLite, journal file, any RDB
    InlineExecutor, ProcessExecutor, RayExecutor   where evaluations run (``executor=``;
                                              from actlab.executors, shared with compare)
    SearchProgress                            progress display (bar on a TTY, plain lines else)
    verdict, Verdict, Contrast, minimum_detectable_effect   plain-words verdict (paired, power)
    simplify, finalize, FinalResult           the end of a search (the page of it:
                                              actlab.report.write_search_report)
    MAX_TOP_SEEDS                             the bound on ``Pipeline(top_seeds=...)``

Methods: regularised evolution (Real et al. 2019), Lion's symbolic search with funnels and
hashing (Chen et al. 2023), EvoNorm's rejection protocols (Liu et al. 2020), EEEA-Net's
early exit (Termritthikun et al. 2021), Bayesian optimisation (Frazier 2018), and the
entropy correction of EAFO (arXiv 2405.12954). Nothing is computed at import time; Optuna
is imported when a study or BO sampler is created, Ray only by :class:`RayExecutor`.
"""

from __future__ import annotations

from actlab.executors import InlineExecutor, ProcessExecutor, RayExecutor
from actlab.search._bo import form_constants
from actlab.search._budget import Budget, parse_budget
from actlab.search._candidate import WARM_START, Candidate, EvalResult
from actlab.search._cost import CostFilter
from actlab.search._eafo import eafo_correction
from actlab.search._factory import STRATEGIES, make_strategy
from actlab.search._final import FinalResult, finalize
from actlab.search._funnel import Funnel
from actlab.search._loop import SearchEvent, run_search
from actlab.search._objectives import (
    CurveObjective,
    Objective,
    QualityFloor,
    Rejected,
    Score,
    TrainObjective,
    make_objective,
)
from actlab.search._pareto import pareto_front
from actlab.search._pipeline import MAX_TOP_SEEDS, Pipeline
from actlab.search._progress import SearchProgress
from actlab.search._result import SearchResult
from actlab.search._shape import ShapeChecks, ShapeResult, check_shape
from actlab.search._simplify import simplify
from actlab.search._strategy import Strategy
from actlab.search._study import SearchStudy, check_storage, open_storage
from actlab.search._verdict import Contrast, Verdict, minimum_detectable_effect, verdict

__all__ = [
    "MAX_TOP_SEEDS",
    "STRATEGIES",
    "WARM_START",
    "Budget",
    "Candidate",
    "Contrast",
    "CostFilter",
    "CurveObjective",
    "EvalResult",
    "FinalResult",
    "Funnel",
    "InlineExecutor",
    "Objective",
    "Pipeline",
    "ProcessExecutor",
    "QualityFloor",
    "RayExecutor",
    "Rejected",
    "Score",
    "SearchEvent",
    "SearchProgress",
    "SearchResult",
    "SearchStudy",
    "ShapeChecks",
    "ShapeResult",
    "Strategy",
    "TrainObjective",
    "Verdict",
    "check_shape",
    "check_storage",
    "eafo_correction",
    "finalize",
    "form_constants",
    "make_objective",
    "make_strategy",
    "minimum_detectable_effect",
    "open_storage",
    "parse_budget",
    "pareto_front",
    "run_search",
    "simplify",
    "verdict",
]
