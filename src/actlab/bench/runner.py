"""Run the activation x seed matrix: resume, claims, parallel workers, failures, progress.

:func:`run_matrix` takes the planned :class:`~actlab.bench.plan.RunSpec` list and a
:class:`~actlab.bench.store.ResultsStore`:

- runs that already finished are skipped, so rerunning a comparison resumes it;
- each run is claimed in the store before it starts (another process sharing the database
  skips it while the claim is alive) and written in one transaction when it ends;
- with ``workers > 1`` runs go to that many spawned worker processes, each limited to
  ``cores // workers`` torch threads so the machine is not oversubscribed. Workers only
  train; the parent alone writes to the database;
- an exception in a run is stored as a failed run with its traceback and the matrix goes
  on; a worker process that dies (killed, out of memory) fails only the run it held.

The train function is called as ``train_fn(task, activation, seed, model=..., epochs=...,
device=..., dtype=..., max_steps=..., progress=False)`` and defaults to
:func:`actlab.train.run_training`. For worker processes it must be importable: a top-level
function or a ``"module:function"`` string.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from actlab.bench._execute import TrainFn, TrainRef, execute_run, resolve_train_fn, run_settings
from actlab.bench.plan import RunSpec
from actlab.bench.store import FAILED, ResultsStore, RunRecord

__all__ = [
    "MatrixEvents",
    "MatrixReport",
    "TrainFn",
    "execute_run",
    "resolve_train_fn",
    "run_matrix",
    "run_settings",
]


class MatrixEvents:
    """Progress hooks of :func:`run_matrix`; subclass and override what you need."""

    def matrix_started(self, to_run: int, already_finished: int) -> None:
        """Called once, before the first run."""

    def run_started(self, spec: RunSpec) -> None:
        """Called when a run is claimed and handed to a trainer."""

    def run_finished(self, record: RunRecord, done: int, to_run: int) -> None:
        """Called after a run's record is stored (finished or failed)."""


@dataclass
class MatrixReport:
    """What one :func:`run_matrix` call did."""

    records: list[RunRecord] = field(default_factory=list)  # runs executed now
    skipped: list[RunSpec] = field(default_factory=list)  # already finished before
    busy: list[RunSpec] = field(default_factory=list)  # claimed by another live process

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if r.status == FAILED]


def _to_record(spec: RunSpec, payload: dict[str, Any], study: str | None) -> RunRecord:
    return RunRecord(spec=spec, study=study, **payload)


class _Heartbeat:
    """A daemon thread refreshing the claims this process holds."""

    def __init__(self, store: ResultsStore, interval: float) -> None:
        self.store, self.interval = store, interval
        self.tokens: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="actlab-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                tokens = list(self.tokens)
            try:
                self.store.heartbeat(tokens)
            except Exception:  # a transient database error must not kill the runner
                pass

    def add(self, token: str) -> None:
        with self._lock:
            self.tokens.add(token)

    def discard(self, token: str) -> None:
        with self._lock:
            self.tokens.discard(token)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_matrix(
    specs: Sequence[RunSpec],
    store: ResultsStore,
    *,
    train_fn: TrainRef = None,
    workers: int = 1,
    study: str | None = None,
    events: MatrixEvents | None = None,
    stale_after: float = 120.0,
    heartbeat_s: float = 20.0,
) -> MatrixReport:
    """Run every spec not yet finished; see the module docstring for the guarantees.

    ``events`` receives progress notifications (see :class:`MatrixEvents`).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    report = MatrixReport()
    finished = store.finished(specs)
    report.skipped = [s for s in specs if s in finished]
    todo = deque(s for s in specs if s not in finished)
    total = len(todo)
    ev = events or MatrixEvents()
    ev.matrix_started(total, len(report.skipped))
    beat = _Heartbeat(store, heartbeat_s)
    done = 0

    def claim(spec: RunSpec) -> str | None:
        token = store.claim(spec, study=study, stale_after=stale_after)
        if token is None:
            report.busy.append(spec)
        elif store.finished([spec]):  # finished elsewhere since we looked
            store.release(token)
            report.skipped.append(spec)
            token = None
        else:
            beat.add(token)
            ev.run_started(spec)
        return token

    def finish(spec: RunSpec, payload: dict[str, Any], token: str) -> None:
        nonlocal done
        done += 1
        rec = _to_record(spec, payload, study)
        if store.record(rec, token):
            report.records.append(rec)
        else:
            report.skipped.append(spec)
        beat.discard(token)
        ev.run_finished(rec, done, total)

    try:
        if workers == 1:
            fn = resolve_train_fn(train_fn)
            while todo:
                spec = todo.popleft()
                token = claim(spec)
                if token is not None:
                    try:
                        payload = execute_run(spec, fn)
                    except BaseException:
                        store.release(token)
                        raise
                    finish(spec, payload, token)
        else:
            from actlab.bench._workers import WorkerPool

            with WorkerPool(workers, train_fn) as pool:
                pool.drive(todo, claim, finish, store.release)
    finally:
        beat.stop()
    return report
