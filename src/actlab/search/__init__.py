"""actlab.search: find better activation functions on two CPU cores, scale out when you can.

    from actlab.search import run_search, Pipeline, QualityFloor, CostFilter
    res = run_search("digits-mlp", "eafo", budget="10m", study="demo",
                     pipeline=Pipeline(floor=QualityFloor(0.5, after=1), budgets=(3, 8, 20)))
    res.best().candidate.formula, res.pareto(), res.rejections()

Pieces (one concern per private module, re-exported here):

    Candidate, EvalResult, WARM_START         expressions to evaluate and their outcomes
    Pipeline, evaluate_candidate              checks -> cost filter -> quality floor -> train
    CostFilter                                EEEA-Net early exit: step time vs GELU
    Objective, TrainObjective, CurveObjective, QualityFloor, Rejected, make_objective
    Strategy (ask/tell), RandomSearch, RegularizedEvolution, EAFOGuided, ConstantsBO, Funnel
    eafo_correction                           the EAFO entropy-correction mutation
    dominates, pareto_front, pareto_ranks     multi-objective ranking of (quality, cost)
    SearchStudy, open_storage, check_storage  Optuna storage: SQLite, journal file, any RDB
    InlineExecutor, ProcessExecutor, RayExecutor   where evaluations run
    run_search, SearchResult, Budget          the resumable loop and what it returns
    simplify, finalize                        the end of a search (the page of it:
                                              actlab.report.write_search_report)

Methods: regularised evolution (Real et al. 2019), Lion's symbolic search with funnels and
hashing (Chen et al. 2023), EvoNorm's rejection protocols (Liu et al. 2020), EEEA-Net's
early exit (Termritthikun et al. 2021), Bayesian optimisation (Frazier 2018), and the
entropy correction of EAFO (arXiv 2405.12954). Nothing is computed at import time; Optuna
is imported when a study or BO sampler is created, Ray only by :class:`RayExecutor`.
"""

from __future__ import annotations

from actlab.search._bo import ConstantsBO, form_constants
from actlab.search._budget import Budget, parse_budget
from actlab.search._candidate import STAGES, WARM_START, Candidate, EvalResult, as_candidate
from actlab.search._cost import CostFilter, step_time_ratio
from actlab.search._eafo import eafo_correction, eafo_mutation, gaussian_density, measured_density
from actlab.search._evolution import MUTATIONS, EAFOGuided, RegularizedEvolution
from actlab.search._executors import InlineExecutor, ProcessExecutor, RayExecutor, make_executor
from actlab.search._factory import STRATEGIES, make_strategy
from actlab.search._final import BASELINES, FinalResult, finalize
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
from actlab.search._pareto import dominates, pareto_front, pareto_ranks
from actlab.search._pipeline import Pipeline, evaluate_candidate
from actlab.search._result import SearchResult
from actlab.search._simplify import equivalent, simplify
from actlab.search._strategy import RandomSearch, Strategy
from actlab.search._study import (
    DEFAULT_STORAGE,
    SearchStudy,
    TrialRecord,
    check_storage,
    open_storage,
    storage_url,
)

__all__ = [
    "BASELINES",
    "FinalResult",
    "equivalent",
    "finalize",
    "simplify",
    "DEFAULT_STORAGE",
    "MUTATIONS",
    "STAGES",
    "STRATEGIES",
    "WARM_START",
    "Budget",
    "Candidate",
    "ConstantsBO",
    "CostFilter",
    "CurveObjective",
    "EAFOGuided",
    "EvalResult",
    "Funnel",
    "InlineExecutor",
    "Objective",
    "Pipeline",
    "ProcessExecutor",
    "QualityFloor",
    "RandomSearch",
    "RayExecutor",
    "RegularizedEvolution",
    "Rejected",
    "Score",
    "SearchEvent",
    "SearchResult",
    "SearchStudy",
    "Strategy",
    "TrainObjective",
    "TrialRecord",
    "as_candidate",
    "check_storage",
    "dominates",
    "eafo_correction",
    "eafo_mutation",
    "evaluate_candidate",
    "form_constants",
    "gaussian_density",
    "make_executor",
    "make_objective",
    "make_strategy",
    "measured_density",
    "open_storage",
    "parse_budget",
    "pareto_front",
    "pareto_ranks",
    "run_search",
    "step_time_ratio",
    "storage_url",
]
