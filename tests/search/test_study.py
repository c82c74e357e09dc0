"""Studies never lose work: resume after SIGKILL, re-queue dead workers' trials, storages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from search_helpers import CountingObjective, SuicidalObjective

from actlab.search import Pipeline, ProcessExecutor, SearchStudy, run_search
from actlab.search._candidate import as_candidate
from actlab.search._study import storage_url

HERE = Path(__file__).parent
FAST = Pipeline(checks=False, cost=None, proxies=False)

SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from search_helpers import CountingObjective
from actlab.search import Pipeline, run_search
run_search(CountingObjective("gelu", {log!r}, sleep={sleep}), "evolution", budget={budget},
           study="killme", storage={db!r}, seed=3,
           pipeline=Pipeline(checks=False, cost=None, proxies=False))
"""


def _finished(db: Path, name: str) -> dict[int, tuple[str, float | None]]:
    st = optuna.load_study(study_name=name, storage=storage_url(db))
    return {
        t.number: (f"{t.user_attrs['hash']}:{t.user_attrs['candidate']['level']}", t.value)
        for t in st.trials
        if "result" in t.user_attrs
    }


def test_resume_after_sigkill_loses_and_repeats_nothing(tmp_path: Path) -> None:
    db, log = tmp_path / "s.db", tmp_path / "evals.log"
    code = SCRIPT.format(here=str(HERE), log=str(log), sleep=0.5, budget=14, db=str(db))
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while time.time() < deadline:  # kill inside an evaluation, its trial fully written
        if log.exists() and len(log.read_text().split()) >= 4:
            st = optuna.load_study(study_name="killme", storage=storage_url(db))
            if any(t.state.name == "RUNNING" and "candidate" in t.user_attrs for t in st.trials):
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _finished(db, "killme")
    assert 4 <= len(before) < 14
    st = optuna.load_study(study_name="killme", storage=storage_url(db))
    assert [t.state.name for t in st.trials].count("RUNNING") == 1

    res = run_search(
        CountingObjective("gelu", str(log)),
        "evolution",
        budget=14,
        study="killme",
        storage=db,
        seed=3,
        pipeline=FAST,
    )
    after = _finished(db, "killme")
    assert all(after[n] == v for n, v in before.items())  # nothing finished was lost or changed
    keys = Counter(k for k, _ in after.values())
    assert max(keys.values()) == 1  # no candidate evaluated twice
    assert len(after) == 14 and res.units_spent() == 14
    st = optuna.load_study(study_name="killme", storage=storage_url(db))
    states = Counter(t.state.name for t in st.trials)
    assert states["RUNNING"] == 0 and states["FAIL"] == 1  # the killed trial, re-queued
    retried = [t for t in st.trials if "failed_trial" in t.system_attrs]
    assert len(retried) == 1 and "result" in retried[0].user_attrs
    evaluated = Counter(log.read_text().split())
    assert all(evaluated[k] == 1 for k in Counter(k for k, _ in before.values()))


def test_heartbeat_requeues_a_trial_of_a_dead_remote_worker(tmp_path: Path) -> None:
    """A RUNNING trial on another host whose heartbeat stopped is failed and re-run."""
    from actlab.search import open_storage

    storage = open_storage(tmp_path / "h.db", heartbeat_interval=1, grace_period=1)
    st = SearchStudy("hb", storage)
    cand = as_candidate("x*sigmoid(beta*x)")
    tid = st.create(cand)
    storage.set_trial_user_attr(tid, "worker", {"host": "some-other-machine", "pid": 1})
    st._held.discard(tid)  # as if that process were gone
    time.sleep(2.2)
    log = tmp_path / "evals.log"
    run_search(
        CountingObjective("gelu", str(log)),
        "random",
        budget=2,
        study="hb",
        storage=storage,
        pipeline=FAST,
    )
    assert f"{cand.hash}:0" in log.read_text().split()
    trials = optuna.load_study(study_name="hb", storage=storage).trials
    assert trials[0].state.name == "FAIL" and "result" not in trials[0].user_attrs
    assert any(
        t.system_attrs.get("failed_trial") == 0 and t.state.name == "COMPLETE" for t in trials
    )


def test_journal_storage_resumes_and_reclaims_dead_local_pids(tmp_path: Path) -> None:
    path = tmp_path / "s.journal"
    assert storage_url(path).startswith("journal:")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    st = SearchStudy("j", str(path))
    cand = as_candidate("softplus(x)")
    tid = st.create(cand)
    st.storage.set_trial_user_attr(tid, "worker", {"host": st.host, "pid": dead.pid})  # gone
    st._held.discard(tid)
    st.close()
    log = tmp_path / "evals.log"
    res = run_search(
        CountingObjective("gelu", str(log)),
        "random",
        budget=3,
        study="j",
        storage=path,
        pipeline=FAST,
    )
    assert f"{cand.hash}:0" in log.read_text().split()
    res2 = run_search(
        CountingObjective("gelu", str(log)),
        "random",
        budget=5,
        study="j",
        storage=path,
        pipeline=FAST,
    )
    assert res2.evaluated_now == 2 and len(res2.finished) == 5 == len(res.finished) + 2


def test_a_dying_worker_process_is_requeued(tmp_path: Path) -> None:
    ex = ProcessExecutor(2, threads=1)
    try:
        res = run_search(
            SuicidalObjective("gelu", str(tmp_path / "killed")),
            "random",
            budget=6,
            storage=tmp_path / "w.db",
            study="w",
            pipeline=FAST,
            executor=ex,
        )
    finally:
        ex.close()
    assert len(res.finished) == 6 and all(r.result is not None for r in res.finished)
    trials = optuna.load_study(study_name="w", storage=storage_url(tmp_path / "w.db")).trials
    assert any(t.state.name == "FAIL" and "result" not in t.user_attrs for t in trials)
    assert {r.result.status for r in res.finished if r.result is not None} == {"ok"}


def test_study_refuses_another_task(tmp_path: Path) -> None:
    run_search(
        "curve:gelu", "random", budget=1, study="t", storage=tmp_path / "t.db", pipeline=FAST
    )
    with pytest.raises(ValueError, match="task"):
        run_search(
            "curve:relu", "random", budget=1, study="t", storage=tmp_path / "t.db", pipeline=FAST
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_search("curve:gelu", "random", budget=1, storage=tmp_path / "no" / "t.db")
    assert os.path.exists(tmp_path / "t.db")


def test_check_storage_creates_nothing_and_shares_a_results_file(tmp_path: Path) -> None:
    from actlab.bench.store import ResultsStore
    from actlab.search import check_storage

    for arg in ("s.db", "s.journal", "journal:s.log"):
        path = tmp_path / arg.removeprefix("journal:")
        check_storage(str(tmp_path / arg) if ":" not in arg else f"journal:{path}")
    assert list(tmp_path.iterdir()) == []
    shared = tmp_path / "shared.db"
    ResultsStore(shared).close()  # a results store first, then a study in the same file
    st = SearchStudy("s", str(shared))
    st.close()
    assert optuna.load_study(study_name="s", storage=storage_url(shared)).study_name == "s"
