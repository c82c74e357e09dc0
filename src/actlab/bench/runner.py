"""Run the activation x seed matrix: resume, claims, parallel workers, failures, progress.

:func:`run_matrix` takes the planned :class:`~actlab.bench.plan.RunSpec` list and a
:class:`~actlab.bench.store.ResultsStore`, and runs it through :func:`actlab.executors.drive`
(the executor layer that ``actlab search`` uses too):

- runs that already finished are skipped, so rerunning a comparison resumes it;
- each run is claimed in the store before it starts (another process sharing the database
  skips it while the claim's heartbeat is alive; with ``wait_busy`` it comes back to it and
  takes it over once that heartbeat has expired) and written in one transaction when it ends;
- runs execute inline (``workers=1``), in ``workers`` spawned processes (each limited to
  ``cores // workers`` torch threads so the machine is not oversubscribed), as tasks on a
  Ray cluster (``ray="auto"``, ``"local"`` or ``"ray://host:port"``) or on any
  ``executor``. Executors only train; this process alone writes to the database;
- an exception in a run is stored as a failed run with its traceback and the matrix goes
  on; a worker process that dies (killed, out of memory) fails only the run it held, and a
  run whose Ray node died is re-run by Ray (``max_retries``) before it counts as failed.

The train function is called as ``train_fn(task, activation, seed, model=..., epochs=...,
device=..., dtype=..., max_steps=..., progress=False)`` and defaults to
:func:`actlab.train.run_training`. Outside this process it must be importable: a top-level
function or a ``"module:function"`` string.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from actlab.bench._execute import TrainFn, TrainRef, execute_run, resolve_train_fn, run_settings
from actlab.bench._result import error_text
from actlab.bench.plan import RunSpec
from actlab.bench.store import FAILED, ResultsStore, RunRecord, utc_now
from actlab.executors import Executor, drive, lost_errors, make_executor

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


def _outcome(fut: Future[Any]) -> dict[str, Any]:
    """The store payload of a run's future: its payload, or a failure saying what happened."""
    try:
        return fut.result()  # type: ignore[no-any-return]
    except lost_errors() as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        error = (
            f"worker process died while training this run ({why}); rerun the comparison to retry it"
        )
    except Exception as e:  # noqa: BLE001 -- a run that could not even be sent is a failure
        error = error_text(e)
    return {"status": FAILED, "error": error, "finished_at": utc_now()}


def _check_ref(train_fn: TrainRef) -> None:
    """Outside this process the train function must resolve and travel by pickle."""
    if train_fn is not None and not isinstance(train_fn, str):
        try:
            pickle.dumps(train_fn)
        except Exception:
            raise ValueError(
                "with workers > 1 or Ray the train function must be importable: a top-level "
                "function or a 'module:function' string (not a lambda or closure)"
            ) from None
    resolve_train_fn(train_fn)  # a bad reference fails here, as inline, not in each worker


def run_matrix(
    specs: Sequence[RunSpec],
    store: ResultsStore,
    *,
    train_fn: TrainRef = None,
    workers: int = 1,
    ray: str | None = None,
    executor: Executor | None = None,
    study: str | None = None,
    events: MatrixEvents | None = None,
    stale_after: float = 120.0,
    heartbeat_s: float = 20.0,
    wait_busy: bool = False,
    poll_s: float = 5.0,
) -> MatrixReport:
    """Run every spec not yet finished; see the module docstring for the guarantees.

    ``events`` receives progress notifications (see :class:`MatrixEvents`). ``executor``
    (any :class:`actlab.executors.Executor`) overrides ``workers`` and ``ray`` and is not
    closed here. ``wait_busy``: come back every ``poll_s`` seconds to runs claimed
    elsewhere until they finished or their claim went stale (``stale_after`` seconds
    without a heartbeat) and this process took them over.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    report = MatrixReport()
    finished = store.finished(specs)
    report.skipped = [s for s in specs if s in finished]
    todo = [s for s in specs if s not in finished]
    total = len(todo)
    ev = events or MatrixEvents()
    inline = executor is None and not ray and workers == 1
    if inline:
        ref: TrainRef = resolve_train_fn(train_fn)  # any callable: it never leaves
    else:
        _check_ref(train_fn)
        ref = train_fn
    ev.matrix_started(total, len(report.skipped))
    done = 0

    def claim(spec: RunSpec) -> str | None:
        token = store.claim(spec, study=study, stale_after=stale_after)
        if token is not None and store.finished([spec]):  # finished elsewhere since we looked
            store.release(token)
            report.skipped.append(spec)
            return None
        if token is not None:
            ev.run_started(spec)
        return token

    def finish(spec: RunSpec, token: str, fut: Future[Any]) -> None:
        nonlocal done
        done += 1
        rec = _to_record(spec, _outcome(fut), study)
        if store.record(rec, token):
            report.records.append(rec)
        else:
            report.skipped.append(spec)
        ev.run_finished(rec, done, total)

    def finished_elsewhere(spec: RunSpec) -> bool:
        if spec in report.skipped:  # seen finished when claimed
            return True
        if store.finished([spec]):
            report.skipped.append(spec)
            return True
        return False

    ex = executor if executor is not None else make_executor(workers, ray)
    try:
        busy = drive(
            todo,
            ex,
            claim=claim,
            call=lambda spec: (execute_run, (spec, ref)),
            finish=finish,
            release=store.release,
            heartbeat=store.heartbeat,
            heartbeat_s=heartbeat_s,
            wait_busy=wait_busy,
            finished=finished_elsewhere,
            poll_s=poll_s,
        )
    finally:
        if executor is None:
            ex.close()
    skipped = set(report.skipped)
    report.busy = [s for s in busy if s not in skipped]
    return report
