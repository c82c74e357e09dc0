"""Claimed work on any executor: claim, submit, heartbeat, collect, take over dead claims.

:func:`drive` runs a list of items through an executor with at most ``ex.slots`` in flight.
Before an item is submitted it is *claimed* in the shared SQL store (``claim(item) ->
token | None``; None: a live owner elsewhere holds it); while it runs a :class:`Heartbeat`
thread refreshes the tokens this process holds; when it ends ``finish(item, token,
outcome)`` writes its result (and drops the claim) in one transaction. So a killed process
leaves at most a claim, never a half result: its claim goes stale when its heartbeat stops
(or at once, on its own host, when its process is gone) and is then taken over.

With ``wait_busy=True`` items held by another owner are tried again every ``poll_s``
seconds until they finished there (``finished(item)``) or their claim went stale and this
process took them over, so every cooperating process ends with the whole list done. The
item's outcome is the future's result or exception; :func:`lost_errors` tells a dead worker
(re-run the call) from a failing call.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Generic, Protocol, TypeVar

from actlab.executors._local import WorkerLost

__all__ = ["Executor", "Heartbeat", "drive", "lost_errors"]

T = TypeVar("T")
K = TypeVar("K")


class Executor(Protocol):
    """Where calls run: ``submit(fn, *args) -> Future``, ``slots`` in flight, ``close()``."""

    slots: int

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]: ...

    def close(self) -> None: ...


def lost_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning the evaluating process or node died (not that the call failed)."""
    from concurrent.futures.process import BrokenProcessPool

    kinds: list[type[BaseException]] = [WorkerLost, BrokenProcessPool]
    try:
        from ray.exceptions import NodeDiedError, WorkerCrashedError

        kinds += [WorkerCrashedError, NodeDiedError]
    except ImportError:
        pass
    return tuple(kinds)


class Heartbeat(Generic[K]):
    """The claims this process holds, and a daemon thread calling ``beat(tokens)`` every
    ``interval`` seconds for them once :meth:`start` ran (the results store's claim tokens
    for compare, the Optuna trial ids for search).

    A failing beat (a transient database error) is ignored: the next one retries.
    """

    def __init__(self, beat: Callable[[list[K]], None], interval: float | None = None) -> None:
        self.beat = beat
        self.tokens: set[K] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if interval is not None:
            self.start(interval)

    def start(self, interval: float) -> None:
        """Start beating every ``interval`` seconds (a no-op when already started)."""
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be > 0 seconds, got {interval}")
        if self._thread is None:
            self.interval = interval
            self._thread = threading.Thread(target=self._loop, name="actlab-heartbeat", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                tokens = list(self.tokens)
            if tokens:
                try:
                    self.beat(tokens)
                except Exception:  # noqa: BLE001 -- must not kill the runner
                    pass

    def add(self, token: K) -> None:
        with self._lock:
            self.tokens.add(token)

    def discard(self, token: K) -> None:
        with self._lock:
            self.tokens.discard(token)

    def __contains__(self, token: object) -> bool:
        with self._lock:
            return token in self.tokens

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Heartbeat[K]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def drive(
    items: Iterable[T],
    ex: Executor,
    *,
    claim: Callable[[T], str | None],
    call: Callable[[T], tuple[Callable[..., Any], tuple[Any, ...]]],
    finish: Callable[[T, str, Future[Any]], None],
    release: Callable[[str], None],
    heartbeat: Callable[[list[str]], None],
    heartbeat_s: float = 20.0,
    wait_busy: bool = False,
    finished: Callable[[T], bool] | None = None,
    poll_s: float = 5.0,
) -> list[T]:
    """Run every item (see the module docstring); returns the items left busy elsewhere.

    ``call(item) -> (fn, args)`` is what the executor runs. ``finish`` gets the item's done
    future (result or exception). If interrupted, the claims in flight are released before
    re-raising.
    """
    todo: deque[T] = deque(items)
    busy: deque[tuple[float, T]] = deque()  # (when to try again, item)
    pending: dict[Future[Any], tuple[T, str]] = {}
    beat: Heartbeat[str] = Heartbeat(heartbeat, heartbeat_s)
    try:
        while todo or pending or (wait_busy and busy):
            now = time.monotonic()
            while busy and busy[0][0] <= now and len(todo) < ex.slots:
                _, item = busy.popleft()
                if finished is None or not finished(item):
                    todo.append(item)
            while todo and len(pending) < ex.slots:
                item = todo.popleft()
                token = claim(item)
                if token is None:
                    busy.append((time.monotonic() + poll_s, item))
                    continue
                beat.add(token)
                fn, args = call(item)
                try:
                    fut = ex.submit(fn, *args)
                except BaseException:
                    beat.discard(token)
                    release(token)
                    raise
                pending[fut] = (item, token)
            if not pending:
                if wait_busy and busy and not todo:
                    time.sleep(max(0.0, min(poll_s, busy[0][0] - time.monotonic())))
                continue
            done, _ = wait(list(pending), timeout=poll_s, return_when=FIRST_COMPLETED)
            for fut in done:
                item, token = pending.pop(fut)
                beat.discard(token)
                try:
                    finish(item, token, fut)
                except BaseException:
                    release(token)  # a no-op when finish stored it (that drops the claim)
                    raise
    except BaseException:
        for _item, token in pending.values():
            release(token)
        raise
    finally:
        beat.stop()
    return [item for _, item in busy]
