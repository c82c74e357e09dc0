"""actlab.executors: one way to run many trainings, here or on a Ray cluster.

    from actlab.executors import make_executor, drive
    ex = make_executor(workers=4)                 # 4 local worker processes
    ex = make_executor(ray="auto")                # tasks on the Ray cluster of this machine
    fut = ex.submit(fn, *args)                    # a concurrent.futures.Future

Both ``actlab compare`` (:func:`actlab.bench.run_matrix`) and ``actlab search``
(:func:`actlab.search.run_search`) run their trainings through these executors. Claims and
heartbeats live in the SQL store of the caller (the results store for compare, the Optuna
study for search), never in the executor, so any process on any machine can take over the
work of a dead one and a finished result is written exactly once.

Public API:

    InlineExecutor, ProcessExecutor, RayExecutor, make_executor   where calls run
    Executor                      the protocol: submit(fn, *args) -> Future, slots, close()
    WorkerLost, lost_errors       a worker or node died under a call (re-run, not a failure)
    drive, Heartbeat              claimed work with heartbeats on any executor
    available_cores, threads_per_worker   CPU split between local workers
"""

from __future__ import annotations

from actlab.executors._drive import Executor, Heartbeat, drive, lost_errors
from actlab.executors._local import (
    InlineExecutor,
    ProcessExecutor,
    WorkerLost,
    available_cores,
    threads_per_worker,
)
from actlab.executors._ray import RayExecutor

__all__ = [
    "Executor",
    "Heartbeat",
    "InlineExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "WorkerLost",
    "available_cores",
    "drive",
    "lost_errors",
    "make_executor",
    "threads_per_worker",
]


def make_executor(
    workers: int = 1, ray: str | None = None, *, threads: int | None = None
) -> InlineExecutor | ProcessExecutor | RayExecutor:
    """``ray`` given: a :class:`RayExecutor` at that address; ``workers > 1``: local
    processes (``threads`` torch threads each; default ``cores // workers``); else inline."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if ray:
        return RayExecutor(ray)
    if workers > 1:
        return ProcessExecutor(workers, threads=threads)
    return InlineExecutor()
