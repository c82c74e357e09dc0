"""Spawned worker processes for :func:`actlab.bench.runner.run_matrix`.

Each worker is one ``spawn`` process with its own pipe, so the parent always knows which run
a worker holds: if the worker dies, exactly that run is recorded as failed and a fresh
worker takes its place. Workers limit torch to ``cores // workers`` threads, ignore Ctrl-C
(the parent stops them) and exit by themselves if the parent disappears.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

from actlab.bench.plan import RunSpec
from actlab.bench.store import FAILED, utc_now

__all__ = ["WorkerPool", "available_cores", "threads_per_worker"]

Claim = Callable[[RunSpec], str | None]
Finish = Callable[[RunSpec, dict[str, Any], str], None]
Release = Callable[[str | None], None]


def available_cores() -> int:
    """CPU cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Torch threads per worker so that ``workers * threads <= cores`` (at least 1)."""
    return max(1, available_cores() // max(1, workers))


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)  # orphaned: the parent was killed, its claims will be taken over


def _worker_main(conn: Connection, threads: int, train_ref: Any, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from actlab.bench._execute import execute_run, resolve_train_fn
    from actlab.bench._result import error_text

    try:
        fn = resolve_train_fn(train_ref)
    except Exception as e:
        conn.send(("error", error_text(e)))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        try:
            conn.send(execute_run(msg, fn))
        except (BrokenPipeError, OSError):
            return


class _Worker:
    def __init__(self, ctx: Any, threads: int, train_ref: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker_main,
            args=(child, threads, train_ref, os.getpid()),
            name="actlab-bench-worker",
            daemon=True,
        )
        self.proc.start()
        child.close()
        self.job: tuple[RunSpec, str] | None = None
        self._await_ready()

    def _await_ready(self) -> None:
        """Block until the worker imported the train function; raise if it could not."""
        try:
            kind, detail = self.conn.recv()
        except (EOFError, OSError):
            self.kill()
            raise RuntimeError(
                f"a bench worker process exited during start-up (exit code "
                f"{self.proc.exitcode}); run with --workers 1 to see the error"
            ) from None
        if kind != "ready":
            self.kill()
            raise RuntimeError(f"bench worker could not start: {str(detail).splitlines()[0]}")

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()


class WorkerPool:
    """``n`` spawned workers fed one run at a time by :meth:`drive`."""

    def __init__(self, n: int, train_ref: Any) -> None:
        if train_ref is not None and not isinstance(train_ref, str):
            try:
                pickle.dumps(train_ref)
            except Exception:
                raise ValueError(
                    "with workers > 1 the train function must be importable: a top-level "
                    "function or a 'module:function' string (not a lambda or closure)"
                ) from None
        self.ctx = mp.get_context("spawn")
        self.n, self.train_ref = n, train_ref
        self.threads = threads_per_worker(n)
        self.workers: list[_Worker] = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self) -> _Worker:
        w = _Worker(self.ctx, self.threads, self.train_ref)
        self.workers.append(w)
        return w

    def drive(self, todo: deque[RunSpec], claim: Claim, finish: Finish, release: Release) -> None:
        """Run ``todo`` to completion: claim, dispatch, collect, replace dead workers.

        If interrupted, the claims of the runs in flight are released before re-raising.
        """
        try:
            self._drive(todo, claim, finish)
        except BaseException:
            for w in self.workers:
                if w.job is not None:
                    release(w.job[1])
            raise

    def _drive(self, todo: deque[RunSpec], claim: Claim, finish: Finish) -> None:
        while todo or any(w.job for w in self.workers):
            idle = [w for w in self.workers if w.job is None]
            while todo and (idle or len(self.workers) < self.n):
                spec = todo.popleft()
                token = claim(spec)
                if token is None:
                    continue
                w = idle.pop() if idle else self._spawn()
                w.job = (spec, token)
                w.conn.send(spec)
            busy = [w for w in self.workers if w.job is not None]
            if not busy:
                continue
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy])
            for w in busy:
                if w.conn not in ready and w.proc.sentinel not in ready:
                    continue
                assert w.job is not None
                spec, token = w.job
                try:
                    payload = w.conn.recv()
                except (EOFError, OSError):
                    payload = _died(w)
                    self.workers.remove(w)
                    w.kill()
                w.job = None
                finish(spec, payload, token)

    def close(self) -> None:
        """Stop every worker now; runs still in flight leave only a stale claim."""
        for w in self.workers:
            if w.job is None and w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        deadline = time.monotonic() + 5.0
        for w in self.workers:
            if w.job is None:
                w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            w.kill()
        self.workers.clear()


def _died(w: _Worker) -> dict[str, Any]:
    w.proc.join(timeout=5)
    code = w.proc.exitcode
    return {
        "status": FAILED,
        "error": (
            f"worker process died with exit code {code} while training this run "
            "(killed, or out of memory?); rerun the comparison to retry it"
        ),
        "finished_at": utc_now(),
        "pid": w.proc.pid,
    }
