"""A real PostgreSQL: 4 concurrent workers share the results store and the Optuna study; one
is SIGKILLed mid-run; no finished run or trial is lost or duplicated.

The server is a throwaway one (tests/_pg.py: initdb + pg_ctl from the Debian binaries);
without the binaries or the driver these tests skip with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _pg import PgServer, postgres_server, unavailable

HERE = Path(__file__).parent
BENCH = HERE.parent / "bench"

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with postgres_server() as server:
        yield server


def test_store_and_study_urls(pg: PgServer) -> None:
    """The results store and the Optuna study open on postgresql:// URLs (driver, schema)."""
    from actlab.bench.plan import plan_runs
    from actlab.bench.store import DatabaseError, ResultsStore, RunRecord, check_results_db
    from actlab.search import SearchStudy

    url = pg.new_database("urls")
    assert check_results_db(url) == url
    with ResultsStore(url) as store:
        spec = plan_runs(["relu"], 1, task="t", config={})[0]
        token = store.claim(spec)
        assert token is not None and store.claim(spec) is None  # a live owner holds it
        assert store.record(RunRecord(spec, "finished", "acc", 0.5), token)
        assert [r.metric_value for r in store.all_records()] == [0.5]
        assert store.active_claims() == []
    st = SearchStudy("s", url, higher_is_better=True)
    st.close()
    with pytest.raises(DatabaseError, match="postgresql://actlab@127.0.0.1:1/nope"):
        ResultsStore("postgresql://actlab@127.0.0.1:1/nope")


COMPARE = """
import sys
sys.path.insert(0, {bench!r})
from bench_helpers import fake_train
from actlab.bench.plan import plan_runs
from actlab.bench.runner import run_matrix
from actlab.bench.store import ResultsStore
specs = plan_runs({acts!r}, {seeds}, task="t", config={{}})
with ResultsStore({url!r}) as store:
    run_matrix(specs, store, train_fn=fake_train, wait_busy=True, poll_s=0.2,
               heartbeat_s=0.5, stale_after=5.0)
"""

SEARCH = """
import sys
sys.path.insert(0, {here!r})
from executor_helpers import logging_objective
from actlab.search import Pipeline, run_search
run_search(logging_objective("gelu", {log!r}, {sleep}), "random", budget={budget},
           study="pg", storage={url!r}, seed={seed}, refresh_seconds=0,
           pipeline=Pipeline(checks=False, cost=None, proxies=False))
"""


def _compare_worker(url: str, acts: list[str], seeds: int, env: dict[str, str]) -> None:
    os.environ.update(env)
    from bench_helpers import fake_train

    from actlab.bench.plan import plan_runs
    from actlab.bench.runner import run_matrix
    from actlab.bench.store import ResultsStore

    specs = plan_runs(acts, seeds, task="t", config={})
    with ResultsStore(url) as store:
        run_matrix(specs, store, train_fn=fake_train, wait_busy=True, poll_s=0.1,
                   heartbeat_s=0.2, stale_after=5.0)  # fmt: skip


def _search_worker(url: str, log: str, seed: int) -> None:
    from executor_helpers import logging_objective

    from actlab.search import Pipeline, run_search

    run_search(logging_objective("gelu", log, 0.2), "random", budget=10, study="pg",
               storage=url, seed=seed, refresh_seconds=0,
               pipeline=Pipeline(checks=False, cost=None, proxies=False))  # fmt: skip


class _Forked:
    """A forked worker process (no interpreter start, no imports: fast) with Popen's API."""

    def __init__(self, target: object, *args: object) -> None:
        import multiprocessing as mp

        self.proc = mp.get_context("fork").Process(target=target, args=args, daemon=True)
        self.proc.start()
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        self.proc.join(timeout)
        return self.proc.exitcode


def _start(code: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **env})


def _kill_when(procs: list[Any], log: Path, pid_field: int, n: int, first: str = "") -> int:
    """SIGKILL the first process once ``n`` lines of ``log`` carry its pid (field
    ``pid_field``; lines starting with ``first``): inside its n-th run. Waits for the others;
    returns its pid."""
    victim, pid = procs[0], str(procs[0].pid)
    deadline = time.time() + 120
    while time.time() < deadline:
        text = log.read_text() if log.exists() else ""
        lines = [ln.split() for ln in text.splitlines() if ln.startswith(first)]
        if sum(len(f) > pid_field and f[pid_field] == pid for f in lines) >= n:
            break
        assert victim.poll() is None, "the victim ended before it could be killed"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for p in procs[1:]:
        assert p.wait(timeout=180) == 0
    return victim.pid


def test_four_forked_compare_workers_one_killed(pg: PgServer, tmp_path: Path) -> None:
    """The fast version (forked workers) of the next test, for the default suite."""
    sys.path.insert(0, str(BENCH))
    from bench_helpers import fake_metric

    from actlab.bench.plan import plan_runs

    url, log = pg.new_database("fcompare"), tmp_path / "runs.log"
    acts, seeds = ["relu", "gelu", "tanh"], 3
    env = {"ACTLAB_FAKE_SLEEP": "0.15", "ACTLAB_FAKE_LOG": str(log)}
    procs = [_Forked(_compare_worker, url, acts, seeds, env) for _ in range(4)]
    victim = _kill_when(procs, log, 2, 1)  # inside its first run
    _check_compare(url, log, victim, plan_runs(acts, seeds, task="t", config={}), procs,
                   fake_metric)  # fmt: skip


def _check_compare(url: str, log: Path, victim: int, specs: list[Any], procs: list[Any],
                   fake_metric: Any) -> None:  # fmt: skip
    """Every run stored once with its own value, the killed one trained again by a survivor."""
    from actlab.bench.store import ResultsStore

    started = [ln.split() for ln in log.read_text().splitlines()]  # activation seed pid
    killed = [(a, int(s)) for a, s, pid in started if int(pid) == victim][-1]
    with ResultsStore(url) as store:
        recs = store.all_records()
        assert store.active_claims(stale_after=1e9) == []
    assert len(recs) == len(specs) and all(r.ok for r in recs)  # nothing lost
    assert {r.spec for r in recs} == set(specs)
    for r in recs:  # each finished once, with its own deterministic value
        assert r.metric_value == pytest.approx(fake_metric(r.spec.activation, r.spec.seed))
    trained = Counter((a, int(s)) for a, s, _ in started)
    assert trained[killed] == 2  # the killed run was taken over and trained again
    assert all(n == 1 for k, n in trained.items() if k != killed)  # nothing else twice
    (again,) = [r for r in recs if (r.spec.activation, r.spec.seed) == killed]
    assert again.pid in {p.pid for p in procs[1:]}  # by a survivor


@pytest.mark.slow  # ~30 s here: four processes importing torch on two busy cores
def test_four_compare_workers_one_killed(pg: PgServer, tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    from bench_helpers import fake_metric

    from actlab.bench.plan import plan_runs

    url, log = pg.new_database("compare"), tmp_path / "runs.log"
    acts, seeds = ["relu", "gelu", "silu", "tanh"], 3
    code = COMPARE.format(bench=str(BENCH), acts=acts, seeds=seeds, url=url)
    env = {"ACTLAB_FAKE_SLEEP": "0.3", "ACTLAB_FAKE_LOG": str(log), "OMP_NUM_THREADS": "1"}
    procs = [_start(code, env) for _ in range(4)]
    victim = _kill_when(procs, log, 2, 2)  # killed inside its second run
    _check_compare(url, log, victim, plan_runs(acts, seeds, task="t", config={}), procs,
                   fake_metric)  # fmt: skip


@pytest.mark.slow  # forked from the pytest process: hung once in a full busy run (see below)
def test_four_forked_search_workers_one_killed(pg: PgServer, tmp_path: Path) -> None:
    """The fast version (forked workers) of the next test. Slow-marked: forking the pytest
    process after torch, Ray and SQLAlchemy have started threads can leave a child blocked on a
    lock it inherited (one full-suite run on a loaded machine waited out its 180 s); and with
    its budget of 10 the killed trial is sometimes not re-evaluated before the budget is spent
    (1 run in ~10 failed `killed in keys`). `make test` runs the separate-interpreter
    versions instead (a fresh process each)."""
    url, log = pg.new_database("fsearch"), tmp_path / "evals.log"
    procs = [_Forked(_search_worker, url, str(log), i) for i in range(4)]
    victim = _kill_when(procs, log, 1, 1, "start")  # inside its first evaluation
    _check_search(url, log, victim, budget=10)


@pytest.mark.slow  # ~40 s here
def test_four_search_workers_one_killed(pg: PgServer, tmp_path: Path) -> None:
    url, log = pg.new_database("search"), tmp_path / "evals.log"
    budget = 16
    procs = [
        _start(
            SEARCH.format(here=str(HERE), log=str(log), sleep=0.4, budget=budget, url=url, seed=i),
            {"OMP_NUM_THREADS": "1"},
        )
        for i in range(4)
    ]
    victim = _kill_when(procs, log, 1, 2, "start")  # inside its second evaluation
    _check_search(url, log, victim, budget)


def _check_search(url: str, log: Path, victim: int, budget: int) -> None:
    """Finished trials unchanged by a late resume, none twice, the killed one re-queued and
    evaluated again; every evaluation that ended stored once."""
    import optuna
    from executor_helpers import logging_objective

    from actlab.search import Pipeline, run_search

    lines = [ln.split() for ln in log.read_text().splitlines()]
    killed = [k for w, pid, k in lines if w == "start" and int(pid) == victim][-1]
    assert ("done", str(victim), killed) not in {tuple(x) for x in lines}

    def finished() -> dict[int, tuple[str, float | None]]:
        st = optuna.load_study(study_name="pg", storage=url)
        return {
            t.number: (f"{t.user_attrs['hash']}:{t.user_attrs['candidate']['level']}", t.value)
            for t in st.trials
            if "result" in t.user_attrs
        }

    before = finished()
    # a late resume finds nothing left to do, or only what the survivors left re-queued
    run_search(
        logging_objective("gelu", str(log), 0.0), "random", budget=budget, study="pg",
        storage=url, pipeline=Pipeline(checks=False, cost=None, proxies=False),
    )  # fmt: skip
    after = finished()
    assert all(after[n] == v for n, v in before.items())  # nothing finished lost or changed
    keys = Counter(k for k, _ in after.values())
    assert max(keys.values()) == 1  # no candidate finished twice
    st = optuna.load_study(study_name="pg", storage=url)
    states = Counter(t.state.name for t in st.trials)
    assert states["RUNNING"] == 0 and states["FAIL"] >= 1  # the killed trial, re-queued
    assert killed in keys  # ... and evaluated again to the end
    done = Counter(k for w, _, k in (ln.split() for ln in log.read_text().splitlines())
                   if w == "done")  # fmt: skip
    assert all(n == 1 for n in done.values())  # every evaluation that ended was stored once
    assert set(done) == set(keys)
