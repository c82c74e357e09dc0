"""Where evaluations run: inline, in local worker processes, or as Ray tasks.

An executor has one main method, ``submit(fn, *args) -> concurrent.futures.Future``, plus
``slots`` (evaluations worth keeping in flight) and ``close()``. Only the search loop's
process writes to the study; executors only compute :class:`~actlab.search.EvalResult`
objects (Ray's restore once silently lost searcher state, ray#30861, so the Optuna study
is the single source of truth and Ray merely places evaluations on machines).

- :class:`InlineExecutor`: runs the call at once in this process (``--workers 1``).
- :class:`ProcessExecutor`: ``workers`` spawned processes, each limited to
  ``cores // workers`` torch threads (at least 1) so the machine is not oversubscribed.
  When a worker dies the pool is replaced; the loop re-queues the evaluations it lost.
- :class:`RayExecutor`: ``ray.init(address)`` (``"auto"``, ``"ray://host:port"``, or
  ``"local"`` for a fresh local instance) and one ``ray.remote`` task per evaluation;
  ``slots`` defaults to the cluster's CPU count. ``ray`` is imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

__all__ = ["InlineExecutor", "ProcessExecutor", "RayExecutor", "make_executor"]


class InlineExecutor:
    """Evaluate in the calling process, one at a time."""

    slots = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 -- delivered through the future
            fut.set_exception(e)
        return fut

    def close(self) -> None:
        pass


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


class ProcessExecutor:
    """A pool of ``workers`` spawned processes."""

    def __init__(self, workers: int, *, threads: int | None = None) -> None:
        import multiprocessing as mp

        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        per = threads or max(1, (os.cpu_count() or 1) // workers)
        self.slots = workers
        self._make = lambda: ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(per,)
        )
        self.pool = self._make()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self.pool.submit(fn, *args)
        except BrokenProcessPool:  # a worker died (killed, out of memory): start a new pool
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._make()
            return self.pool.submit(fn, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Evaluations as Ray tasks (see the module docstring)."""

    def __init__(
        self,
        address: str = "auto",
        *,
        slots: int | None = None,
        num_cpus_per_task: float = 1.0,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError(
                "--ray needs Ray: pip install 'actlab[ray]' (or pip install ray)"
            ) from None
        self.ray = ray
        self._owns = False
        if not ray.is_initialized():
            kw = dict(init_kwargs or {})
            kw.setdefault("include_dashboard", False)
            kw.setdefault("log_to_driver", False)
            if address in ("local", ""):
                ray.init(**kw)
            else:
                ray.init(address=address, **kw)
            self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = slots or max(1, int(cpus // max(num_cpus_per_task, 1e-9)))
        self._remote = ray.remote(num_cpus=num_cpus_per_task)(_call)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._remote.remote(fn, *args).future()  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._owns:
            self.ray.shutdown()


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def make_executor(
    workers: int = 1, ray: str | None = None
) -> InlineExecutor | ProcessExecutor | RayExecutor:
    """``ray`` given: a :class:`RayExecutor`; ``workers > 1``: processes; else inline."""
    if ray:
        return RayExecutor(ray)
    if workers > 1:
        return ProcessExecutor(workers)
    return InlineExecutor()
