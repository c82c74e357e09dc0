"""The executor layer: inline and process executors, lost workers, heartbeats, claimed work."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, wait
from pathlib import Path

import pytest
from executor_helpers import die_if, fail, pid_after, square, torch_threads

from actlab.bench.plan import plan_runs
from actlab.bench.store import ResultsStore
from actlab.executors import (
    Heartbeat,
    InlineExecutor,
    ProcessExecutor,
    WorkerLost,
    drive,
    lost_errors,
    make_executor,
    threads_per_worker,
)


def test_inline_runs_now_and_delivers_errors() -> None:
    ex = InlineExecutor()
    assert ex.submit(square, 7).result() == 49
    with pytest.raises(ValueError, match="boom"):
        ex.submit(fail, "boom").result()
    assert isinstance(make_executor(1), InlineExecutor)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        make_executor(0)


@pytest.mark.slow  # ~18 s here: three spawned workers import torch (bench/search cover it too)
def test_process_pool_results_errors_and_a_dying_worker() -> None:
    """A killed worker fails exactly its call (WorkerLost); the others finish; it is replaced."""
    with ProcessExecutor(2, threads=1) as ex:
        assert ex.slots == 2
        futs = [ex.submit(die_if, i, 3, 0.05) for i in range(6)]
        err = ex.submit(fail, "no good")
        wait(futs + [err], timeout=60)
        for i, f in enumerate(futs):
            if i == 3:
                with pytest.raises(WorkerLost, match="died"):
                    f.result()
            else:
                assert f.result() == i
        with pytest.raises(ValueError, match="no good"):
            err.result()
        assert isinstance(futs[3].exception(), lost_errors())
        pids = {ex.submit(pid_after, 0.2).result(timeout=60) for _ in range(2)}
        assert os.getpid() not in pids
        assert ex.submit(torch_threads).result(timeout=60) == 1
        with pytest.raises(ValueError, match="picklable"):
            ex.submit(lambda: 1)
    with pytest.raises(RuntimeError, match="closed"):
        ex.submit(square, 2)
    assert threads_per_worker(1) >= 1 and threads_per_worker(10_000) == 1


def test_heartbeat_beats_only_held_tokens() -> None:
    seen: list[list[str]] = []
    with Heartbeat(lambda toks: seen.append(sorted(toks)), 0.02) as beat:
        beat.add("a")
        beat.add("b")
        time.sleep(0.15)
        beat.discard("a")
        n = len(seen)
        time.sleep(0.1)
    assert ["a", "b"] in seen and all(s == ["b"] for s in seen[n + 1 :])
    with pytest.raises(ValueError, match="interval"):
        Heartbeat(lambda t: None, 0)


def _claimed_drive(
    store: ResultsStore, items: list[int], **kw: object
) -> tuple[dict[int, int], list[int]]:
    specs = plan_runs(["relu"], items, task="t", config={})
    by_spec = {s: s.seed for s in specs}
    out: dict[int, int] = {}

    def finish(spec: object, token: str, fut: Future[int]) -> None:
        out[by_spec[spec]] = fut.result()  # type: ignore[index]
        store.release(token)

    left = drive(
        specs,
        InlineExecutor(),
        claim=lambda s: store.claim(s, stale_after=0.3),
        call=lambda s: (square, (s.seed,)),
        finish=finish,
        release=store.release,
        heartbeat=store.heartbeat,
        heartbeat_s=0.05,
        **kw,  # type: ignore[arg-type]
    )
    return out, [by_spec[s] for s in left]


def test_drive_leaves_live_claims_then_takes_over_stale_ones(tmp_path: Path) -> None:
    """A claim whose heartbeat stopped (another host) is taken over with ``wait_busy``."""
    with ResultsStore(tmp_path / "r.db") as store:
        specs = plan_runs(["relu"], [0, 1, 2], task="t", config={})
        other = ResultsStore(tmp_path / "r.db")
        other.host = "elsewhere"  # its pid cannot be checked from here: only the heartbeat counts
        tok = other.claim(specs[1])
        assert tok is not None
        out, left = _claimed_drive(store, [0, 1, 2])
        assert out == {0: 0, 2: 4} and left == [1]  # a live claim is left alone
        # the other owner keeps beating for a while, then stops (killed): taken over after 0.3 s
        beats = threading.Event()

        def keep_beating() -> None:
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                other.heartbeat([tok])
                time.sleep(0.05)
            beats.set()

        threading.Thread(target=keep_beating, daemon=True).start()
        t0 = time.monotonic()
        out, left = _claimed_drive(store, [1], wait_busy=True, poll_s=0.1)
        assert out == {1: 1} and left == [] and beats.is_set()
        assert time.monotonic() - t0 >= 0.5 + 0.3 - 0.05  # not before its heartbeat expired
        other.close()


class _Threads:
    """Two calls in flight at once, in threads (an executor of the protocol)."""

    slots = 2

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(2)

    def submit(self, fn: object, *args: object) -> Future[object]:
        return self.pool.submit(fn, *args)  # type: ignore[arg-type]

    def close(self) -> None:
        self.pool.shutdown()


def test_drive_releases_claims_when_interrupted(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:

        def finish(spec: object, token: str, fut: Future[int]) -> None:
            raise KeyboardInterrupt

        specs = plan_runs(["relu"], [0, 1], task="t", config={})
        ex = _Threads()
        with pytest.raises(KeyboardInterrupt):
            drive(
                specs,
                ex,
                claim=store.claim,
                call=lambda s: (square, (s.seed,)),
                finish=finish,
                release=store.release,
                heartbeat=store.heartbeat,
            )
        assert store.active_claims() == []
