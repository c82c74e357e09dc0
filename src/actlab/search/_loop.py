"""The search loop: ask, deduplicate, record, evaluate (anywhere), tell; resumable.

    from actlab.search import run_search
    res = run_search("digits-mlp", "evolution", budget="10m", study="demo")
    res.best().candidate.formula

One process (this one) owns the strategy and writes the study; evaluations run through an
executor (inline, local processes, Ray). On start the loop

1. re-queues the trials of dead workers (:meth:`SearchStudy.reclaim`),
2. replays every stored result, in trial order, into the strategy (``tell``): a resumed
   search continues from the same population / sampler state and never redoes a finished
   trial; spent units and search time count toward the budget,

then repeats: claim a re-queued trial or ``ask`` the strategy; if the (hash, level) key
was evaluated before, the stored result is told again instead of evaluating (a duplicate);
if it is in flight, the strategy is told when that evaluation ends; otherwise a RUNNING
trial is created *before* the evaluation starts, and closed with the result. Every
``refresh_seconds`` the trials written by other processes sharing the study are read and
told too (and dead workers' trials re-queued), so several ``actlab search --study NAME``
processes cooperate on one study; two of them may evaluate the same new candidate within
that window, unless ``refresh_seconds=0``, which re-reads the study before every new trial
(on PostgreSQL under an advisory lock, so the check and the trial's creation are one step).
An evaluation whose worker process died (killed, out of memory) is re-queued, not failed.

The loop stops (``SearchResult.stopped``, with a one-line ``message`` for the last three)

- ``budget``: the units or the time are spent (in-flight evaluations are counted ahead);
- ``trials``: a units budget allows :data:`~actlab.search._budget.TRIALS_PER_UNIT` trials
  per unit, rejected ones included (they cost no units but do cost time);
- ``rejections``: ``max_cheap_rejections`` candidates in a row were rejected before any
  training (the search space yields nothing trainable, or the setup is broken); the
  message counts their reasons;
- ``duplicates``: the strategy proposed ``max_duplicates`` duplicates in a row (the space
  is exhausted).

Every trial counts toward the trial cap, also on resume, so a resumed search that hit it
stops at once, like one whose units are spent.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any

from actlab.executors import lost_errors, make_executor
from actlab.search._budget import TRIALS_PER_UNIT, Budget, parse_budget
from actlab.search._candidate import Candidate, EvalResult
from actlab.search._factory import make_strategy
from actlab.search._objectives import Objective, make_objective
from actlab.search._pipeline import Pipeline, evaluate_candidate
from actlab.search._result import SearchResult, reason_pattern
from actlab.search._strategy import Strategy
from actlab.search._study import SearchStudy, TrialRecord, display_storage

__all__ = ["SearchEvent", "run_search"]

_ELAPSED = "actlab_elapsed"


@dataclass
class SearchEvent:
    """Passed to ``on_result`` after each stored result."""

    number: int
    candidate: Candidate
    result: EvalResult
    units: float  # spent so far (whole study)
    best: float  # best level-0 quality so far
    evaluated_now: int
    elapsed: float = math.nan  # search time of the study so far (seconds, all sessions)


def _default_study(objective: Objective, strategy: str, seed: int) -> str:
    return f"{objective.task}-{strategy}-s{seed}"


def run_search(
    objective: Objective | str = "digits-mlp",
    strategy: Strategy | str = "evolution",
    *,
    budget: Budget | str | int | float = 100,
    study: str | None = None,
    storage: Any = None,
    pipeline: Pipeline | None = None,
    workers: int = 1,
    ray: str | None = None,
    executor: Any = None,
    seed: int = 0,
    form: str | None = None,
    keep: float | tuple[float, ...] = 0.2,
    on_result: Callable[[SearchEvent], None] | None = None,
    max_duplicates: int = 500,
    max_cheap_rejections: int = 200,
    refresh_seconds: float = 10.0,
    sampler: str = "tpe",
) -> SearchResult:
    """Run or resume a search (see the module docstring); returns the study's results.

    ``strategy`` given by name is built by :func:`make_strategy` (funnel-wrapped when the
    pipeline has several budgets) and seeded with ``seed`` plus the number of stored trials,
    so a resumed search does not replay the random choices it already made. ``sampler``
    is the Optuna sampler of the ``bo`` strategy (``tpe`` or ``gp``).
    """
    if int(max_duplicates) < 1 or int(max_cheap_rejections) < 1:
        raise ValueError("max_duplicates and max_cheap_rejections must be >= 1")
    obj = make_objective(objective) if isinstance(objective, str) else objective
    pipe = pipeline or Pipeline()
    levels = pipe.levels(obj)
    bud = parse_budget(budget)
    name = study or _default_study(obj, strategy if isinstance(strategy, str) else "custom", seed)
    st = SearchStudy(
        name,
        storage,
        higher_is_better=obj.higher_is_better,
        attrs={
            "task": obj.task,
            "metric": obj.metric,
            "levels": list(levels),
            "strategy": strategy if isinstance(strategy, str) else type(strategy).__name__,
            "kernel": getattr(obj, "kernel", None) or "auto",
        },
    )
    try:
        st.reclaim()
        records = st.records()
        strat = strategy
        if isinstance(strategy, str):
            extra: dict[str, Any] = (
                {"max_nodes": pipe.max_nodes}
                if strategy.strip().lower() in ("evolution", "eafo")
                else {}
            )
            strat = make_strategy(
                strategy,
                seed=seed + len(records),
                higher_is_better=obj.higher_is_better,
                levels=len(levels),
                keep=keep,
                form=form,
                sampler=sampler,
                **extra,
            )
        assert not isinstance(strat, str)
        loop = _Loop(
            st,
            strat,
            obj,
            pipe,
            bud,
            seed,
            on_result,
            max_duplicates,
            max_cheap_rejections,
            refresh_seconds,
        )
        loop.replay(records)
        ex = executor if executor is not None else make_executor(workers, ray)
        try:
            loop.run(ex)
        finally:
            if executor is None:
                ex.close()
        where = display_storage(storage)  # password masked: printed and reported
        return SearchResult(
            name,
            where,
            obj.task,
            obj.metric,
            obj.higher_is_better,
            levels,
            st.records(),
            loop.stopped,
            loop.evaluated,
            loop.duplicates,
            time.perf_counter() - loop.t0,
            message=loop.message,
        )
    finally:
        st.close()


class _Loop:
    """State of one session of the search loop."""

    def __init__(
        self,
        st: SearchStudy,
        strategy: Strategy,
        obj: Objective,
        pipe: Pipeline,
        budget: Budget,
        seed: int,
        on_result: Callable[[SearchEvent], None] | None,
        max_dups: int,
        max_cheap: int,
        refresh: float,
    ) -> None:
        self.st, self.strategy, self.obj, self.pipe, self.budget = st, strategy, obj, pipe, budget
        self.seed, self.on_result, self.max_dups, self.max_cheap = (
            seed,
            on_result,
            max_dups,
            max_cheap,
        )
        self.refresh = refresh
        self.done: dict[tuple[str, int], EvalResult] = {}
        self.known_trials: set[int] = set()
        self.used = 0.0
        self.best = math.nan
        self.evaluated = self.duplicates = self._dups_in_row = self._cheap_in_row = self.lost = 0
        self.max_lost = 20
        self.stopped = "budget"
        self.message = ""
        self.max_trials = budget.max_trials()
        self.n_trials = 0  # trials of the study (all sessions and processes) known here
        self._streak: Counter[tuple[str, str]] = Counter()  # reasons of the cheap-rejection run
        self.t0 = time.perf_counter()
        self.elapsed0 = float(st.get_attr(_ELAPSED, 0.0) or 0.0)
        self.pending: dict[Future[Any], tuple[int, Candidate]] = {}
        self.waiters: dict[tuple[str, int], list[Candidate]] = {}
        self.foreign: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ bookkeeping
    def _absorb(self, cand: Candidate, res: EvalResult) -> None:
        self.done[cand.key] = res
        self.used += res.units
        if cand.level == 0 and res.ok:
            q = res.quality if self.obj.higher_is_better else -res.quality
            b = self.best if self.obj.higher_is_better else -self.best
            if math.isnan(self.best) or q > b:
                self.best = res.quality
        self.strategy.tell(cand, res)
        for w in self.waiters.pop(cand.key, []):
            self.strategy.tell(w, res)

    def replay(self, records: list[TrialRecord]) -> None:
        """Tell the strategy every stored result not seen yet (trial order)."""
        self.foreign = set()
        self.n_trials = max(self.n_trials, len(records))
        for r in sorted(records, key=lambda r: r.number):
            if r.trial_id in self.known_trials:
                continue
            if r.result is None:
                if r.state == "RUNNING":
                    self.foreign.add(r.candidate.key)
                continue
            self.known_trials.add(r.trial_id)
            if r.candidate.key not in self.done:
                self._absorb(r.candidate, r.result)

    def _elapsed(self) -> float:
        return self.elapsed0 + time.perf_counter() - self.t0

    def _inflight_units(self) -> float:
        return sum(self.pipe.units(c.level, self.obj) for _, c in self.pending.values())

    # ------------------------------------------------------------------ the loop
    def _next(self) -> tuple[int, Candidate] | None:
        """A trial to evaluate now, or None (stop filling for now)."""
        while True:
            claimed = self.st.claim_waiting()
            if claimed is not None:
                tid, cand = claimed
                if cand.key in self.done:  # finished elsewhere meanwhile
                    self.st.finish(tid, self.done[cand.key])
                    continue
                return claimed
            if self.max_trials is not None and self.n_trials >= self.max_trials:
                self._stop_trials()  # re-queued trials above still run; no new ones
                return None
            cand = self.strategy.ask()
            if cand.level >= len(self.pipe.levels(self.obj)):
                raise ValueError(
                    f"strategy proposed funnel level {cand.level}, but the pipeline has "
                    f"{len(self.pipe.levels(self.obj))} level(s)"
                )
            inflight = {c.key for _, c in self.pending.values()} | self.foreign
            if cand.key in self.done or cand.key in inflight:
                self.duplicates += 1
                self._dups_in_row += 1
                if cand.key in self.done:
                    self.strategy.tell(cand, self.done[cand.key])
                else:
                    self.waiters.setdefault(cand.key, []).append(cand)
                if self._dups_in_row >= self.max_dups:
                    self.stopped = "duplicates"
                    self.message = (
                        f"the strategy proposed {self.max_dups} known candidates in a "
                        "row: the search space looks exhausted"
                    )
                    return None
                if cand.key not in self.done and self.pending:
                    return None  # wait for the evaluation it duplicates
                continue
            if self.refresh <= 0:  # check and create as one step across processes
                with self.st.creating():
                    if self._sync_says_done(cand):
                        continue
                    self._dups_in_row = 0
                    self.n_trials += 1
                    return self.st.create(cand), cand
            self._dups_in_row = 0
            self.n_trials += 1
            return self.st.create(cand), cand

    def _sync_says_done(self, cand: Candidate) -> bool:
        """Read the study again (shared studies with ``refresh_seconds=0``): known already?"""
        self.replay(self.st.records())
        if cand.key in self.done or cand.key in self.foreign:
            self.duplicates += 1
            if cand.key in self.done:
                self.strategy.tell(cand, self.done[cand.key])
            else:
                self.waiters.setdefault(cand.key, []).append(cand)
            return True
        return False

    def _fill(self, ex: Any) -> None:
        while self.stopped == "budget" and len(self.pending) < ex.slots:
            if self.budget.exhausted(self.used + self._inflight_units(), self._elapsed()):
                return
            nxt = self._next()
            if nxt is None:
                return
            tid, cand = nxt
            fut = ex.submit(evaluate_candidate, cand, self.obj, self.pipe, self.seed)
            self.pending[fut] = (tid, cand)

    def _collect(self, fut: Future[Any]) -> None:
        tid, cand = self.pending.pop(fut)
        try:
            res = fut.result()
        except lost_errors() as e:  # the process died under it: re-queue, like a stale trial
            self.st.requeue(tid)
            self.lost += 1
            if self.lost > self.max_lost:
                raise RuntimeError(
                    f"{self.lost} evaluations lost to dying workers; last: {e!r}"
                ) from e
            return
        except Exception as e:  # noqa: BLE001 -- an error in an evaluation fails only its trial
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            msg = " ... ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else ""
            res = EvalResult.failed(
                "worker",
                f"{type(e).__name__}: {msg}"[:500],
                units=self.pipe.units(cand.level, self.obj),
            )
        self.st.finish(tid, res)
        self.known_trials.add(tid)
        self.evaluated += 1
        self._absorb(cand, res)
        if res.units == 0 and not res.ok:  # refused before any training
            self._cheap_in_row += 1
            self._streak[(res.stage, reason_pattern(res.reason))] += 1
        else:
            self._cheap_in_row = 0
            self._streak.clear()
        if self._cheap_in_row >= self.max_cheap and self.stopped == "budget":
            self._stop_rejections()
        self.st.set_attr(_ELAPSED, self._elapsed())
        if self.on_result is not None:
            number = self.st.storage.get_trial_number_from_id(tid)
            self.on_result(
                SearchEvent(
                    number, cand, res, self.used, self.best, self.evaluated, self._elapsed()
                )
            )

    def _stop_trials(self) -> None:
        self.stopped = "trials"
        self.message = (
            f"stopped after {self.n_trials} trials: a budget of {self.budget.units or 0:g} "
            f"evaluation units allows at most {self.max_trials} trials "
            f"({TRIALS_PER_UNIT} per unit), rejected candidates included; give a larger "
            "budget or a time"
        )

    def _stop_rejections(self) -> None:
        self.stopped = "rejections"
        top = "; ".join(
            f"{n}x {stage}: {why[:80]}" for (stage, why), n in self._streak.most_common(3)
        )
        self.message = (
            f"the last {self._cheap_in_row} candidates were all rejected before "
            f"training ({top}): this search space yields nothing trainable; change "
            "--form / --strategy or relax --max-nodes / --max-cost / the shape checks "
            "(--shape-negative, --shape-range, --no-shape)"
        )

    def run(self, ex: Any) -> None:
        self.st.start_heartbeat()
        last_sync = time.perf_counter()
        while True:
            self._fill(ex)
            if not self.pending:
                break
            finished, _ = wait(
                list(self.pending), timeout=max(self.refresh, 1.0), return_when=FIRST_COMPLETED
            )
            for fut in finished:
                self._collect(fut)
            if time.perf_counter() - last_sync >= max(self.refresh, 1.0):
                self.st.reclaim()
                self.replay(self.st.records())
                last_sync = time.perf_counter()
