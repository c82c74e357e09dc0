"""Local executors: inline, or a pool of spawned worker processes with one pipe each.

An executor has one main method, ``submit(fn, *args) -> concurrent.futures.Future``, plus
``slots`` (calls worth keeping in flight) and ``close()``. ``fn`` and its arguments travel by
pickle, so ``fn`` must be importable (a top-level function).

:class:`ProcessExecutor` keeps one pipe per worker, so it always knows which call a worker
holds: when a worker dies (killed, out of memory) exactly that call's future gets
:class:`WorkerLost` and a fresh worker takes the next call; the other calls go on. Each
worker limits torch to ``cores // workers`` threads (at least 1) so the machine is not
oversubscribed, ignores Ctrl-C (the parent stops it) and exits by itself when its parent
disappears (its claims are then taken over by another process; see :mod:`actlab.executors`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = [
    "InlineExecutor",
    "ProcessExecutor",
    "WorkerLost",
    "available_cores",
    "threads_per_worker",
]


class WorkerLost(RuntimeError):
    """The process evaluating a call died before answering (killed, out of memory)."""


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Torch threads per worker so that ``workers * threads <= cores`` (at least 1)."""
    return max(1, available_cores() // max(1, workers))


class InlineExecutor:
    """Run each call at once in the calling process (one at a time)."""

    slots = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args))
        except Exception as e:  # noqa: BLE001 -- delivered through the future
            fut.set_exception(e)
        return fut

    def close(self) -> None:
        pass


# -- worker side -------------------------------------------------------------------------------
def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)  # orphaned: the parent was killed


def _answer(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        out: tuple[str, Any] = ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 -- sent back to the caller's future
        out = ("error", e)
    try:
        pickle.dumps(out)
    except Exception as e:  # noqa: BLE001 -- an unpicklable result or exception
        what = "result" if out[0] == "ok" else f"exception {out[1]!r}"
        out = ("error", RuntimeError(f"the {what} cannot be sent back from the worker: {e}"))
    return out


def _limit_torch(threads: int) -> None:
    """Torch's intra-op threads, once torch is imported (by the worker's first call or its
    arguments: a worker that never uses torch never pays for importing it)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _worker_main(conn: Connection, threads: int, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    # read by torch (and OpenMP / MKL) when first imported: the first call is limited too
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        _limit_torch(threads)
        try:
            conn.send(_answer(*msg))
        except (BrokenPipeError, OSError):
            return


# -- parent side -------------------------------------------------------------------------------
class _Worker:
    def __init__(self, ctx: Any, threads: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker_main,
            args=(child, threads, os.getpid()),
            name="actlab-worker",
            daemon=True,
        )
        self.proc.start()
        child.close()
        self.fut: Future[Any] | None = None

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()


class ProcessExecutor:
    """``workers`` spawned processes, started on demand, fed one call at a time."""

    def __init__(self, workers: int, *, threads: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.slots = workers
        self.threads = threads or threads_per_worker(workers)
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self._queue: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = mp.Pipe(duplex=False)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="actlab-executor", daemon=True)
        self._thread.start()

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [w.proc.pid for w in self._workers if w.proc.pid is not None]

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        if self._closed:
            raise RuntimeError("this executor is closed")
        try:
            pickle.dumps((fn, args))
        except Exception as e:
            raise ValueError(
                f"{getattr(fn, '__qualname__', fn)!r} and its arguments must be picklable for "
                f"worker processes (a top-level function, no lambda or closure): {e}"
            ) from None
        fut: Future[Any] = Future()
        with self._lock:
            self._queue.append((fut, fn, args))
        self._wake_w.send(None)
        return fut

    def _dispatch(self) -> None:
        with self._lock:
            for w in [w for w in self._workers if w.fut is None and not w.proc.is_alive()]:
                self._workers.remove(w)  # died while idle (killed, out of memory): replace it
                w.kill()
            while self._queue:
                idle = [w for w in self._workers if w.fut is None]
                if not idle and len(self._workers) >= self.slots:
                    return
                fut, fn, args = self._queue.popleft()
                if not fut.set_running_or_notify_cancel():
                    continue
                if idle:
                    w = idle[0]
                else:
                    w = _Worker(self._ctx, self.threads)
                    self._workers.append(w)
                w.fut = fut
                try:
                    w.conn.send((fn, args))
                except OSError:  # died before it got the call
                    self._lost(w)

    def _lost(self, w: _Worker) -> None:
        fut, w.fut = w.fut, None
        self._workers.remove(w)
        w.kill()
        if fut is not None and not fut.done():
            fut.set_exception(
                WorkerLost(
                    f"worker process {w.proc.pid} died with exit code {w.proc.exitcode} "
                    "(killed, or out of memory?)"
                )
            )

    def _run(self) -> None:
        while not self._closed:
            self._dispatch()
            busy = [w for w in self._workers if w.fut is not None]
            handles: list[Any] = [self._wake_r]
            for w in busy:
                handles += [w.conn, w.proc.sentinel]
            ready = wait(handles)
            if self._wake_r in ready:
                while self._wake_r.poll():
                    self._wake_r.recv()
            for w in busy:
                if w.conn not in ready and w.proc.sentinel not in ready:
                    continue
                try:
                    kind, value = w.conn.recv()
                except (EOFError, OSError):
                    self._lost(w)
                    continue
                fut, w.fut = w.fut, None
                assert fut is not None
                if kind == "ok":
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def close(self) -> None:
        """Stop every worker now; calls still queued or in flight are cancelled."""
        if self._closed:
            return
        self._closed = True
        self._wake_w.send(None)
        self._thread.join(timeout=10)
        with self._lock:
            for fut, _, _ in self._queue:
                fut.cancel()
            self._queue.clear()
        for w in self._workers:
            if w.fut is None and w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        deadline = time.monotonic() + 5.0
        for w in self._workers:
            if w.fut is None:
                w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            elif not w.fut.done():
                w.fut.set_exception(WorkerLost("the executor was closed during this call"))
            w.kill()
        self._workers.clear()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
