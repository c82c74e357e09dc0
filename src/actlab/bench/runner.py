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

import contextlib
import importlib
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from actlab.bench._result import error_text, result_payload
from actlab.bench.plan import DEFAULT_MODEL, RunSpec
from actlab.bench.store import FAILED, FINISHED, ResultsStore, RunRecord, utc_now

__all__ = [
    "MatrixEvents",
    "MatrixReport",
    "TrainFn",
    "execute_run",
    "resolve_train_fn",
    "run_matrix",
    "run_settings",
]

TrainFn = Callable[..., Any]
TrainRef = TrainFn | str | None


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


def resolve_train_fn(ref: TrainRef) -> TrainFn:
    """``None`` -> :func:`actlab.train.run_training`; ``"pkg.mod:func"`` -> that function."""
    if callable(ref):
        return ref
    if ref is None:
        try:
            from actlab.train import run_training
        except ImportError as e:
            raise ImportError(f"actlab.train.run_training is unavailable ({e})") from None
        return run_training  # type: ignore[no-any-return]
    modname, sep, attr = str(ref).partition(":")
    if not sep or not modname or not attr:
        raise ValueError(f"train function {ref!r} must look like 'package.module:function'")
    fn = getattr(importlib.import_module(modname), attr, None)
    if not callable(fn):
        raise ValueError(f"{ref!r}: {modname} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return]


def _versions() -> dict[str, str]:
    import sys

    from actlab import __version__

    out = {"actlab": __version__, "python": sys.version.split()[0]}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = str(torch.__version__)
    return out


def _train_kwargs(spec: RunSpec) -> dict[str, Any]:
    # keys starting with "_" only identify the run (e.g. the task's resolved defaults)
    kwargs: dict[str, Any] = {k: v for k, v in spec.config.items() if not k.startswith("_")}
    kwargs["model"] = None if spec.model == DEFAULT_MODEL else spec.model
    kwargs["epochs"] = spec.epochs or None
    dtype = kwargs.get("dtype")
    if isinstance(dtype, str):
        import torch

        kwargs["dtype"] = getattr(torch, dtype)
    kwargs["progress"] = False
    return kwargs


@contextlib.contextmanager
def run_settings(spec: RunSpec) -> Iterator[None]:
    """Apply the run's kernel mode (``auto`` unless its config names another) and CPU threads
    (``num_threads``, if given) around its training, whatever the train function: a run is
    trained the same way inline, in a worker process or elsewhere."""
    import torch

    from actlab.activations import kernel_mode

    threads = spec.config.get("num_threads")
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with kernel_mode(str(spec.config.get("kernel_mode") or "auto")):
            yield
    finally:
        if threads is not None:
            torch.set_num_threads(old)


def execute_run(spec: RunSpec, fn: TrainFn) -> dict[str, Any]:
    """Train one run; never raises for a failing run (the error goes into the payload)."""
    started, t0 = utc_now(), time.perf_counter()
    try:
        with run_settings(spec):
            result = fn(spec.task, spec.activation, spec.seed, **_train_kwargs(spec))
        payload = result_payload(result)
        payload["status"] = FINISHED
        if payload.pop("diverged"):
            payload["error"] = "training diverged (non-finite loss); stopped early"
        if payload["metric_value"] is None:
            payload["error"] = "final metric is nan or inf (training diverged?)"
    except Exception as e:  # a failed run is a result, not a crash of the matrix
        payload = {"status": FAILED, "error": error_text(e)}
    payload.update(
        started_at=started,
        finished_at=utc_now(),
        wall_seconds=time.perf_counter() - t0,
        host=socket.gethostname(),
        pid=os.getpid(),
        versions=_versions(),
    )
    return payload


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
