"""A local two-node Ray cluster (``ray start --head`` + ``ray start --address``): compare
and search complete on it, a worker node killed mid-run loses nothing, and the runs equal
those of a local executor (executor parity).

Slow (the two nodes take ~15-20 s to start on two busy cores); torn down in the fixture's
finally (tests/executors/ray_cluster.py).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_cluster import Cluster, local_cluster, unavailable

HERE = Path(__file__).parent
BENCH = HERE.parent / "bench"
ACTS = ["relu", "gelu", "silu", "tanh"]

sys.path.insert(0, str(BENCH))  # bench_helpers: the fake train function

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    paths = os.pathsep.join([str(BENCH), str(HERE), os.environ.get("PYTHONPATH", "")])
    with local_cluster(env={"PYTHONPATH": paths, "OMP_NUM_THREADS": "1"}) as c:
        yield c


@pytest.fixture
def driver(cluster: Cluster) -> Iterator[str]:
    """This process as a driver of the cluster (``"auto"`` then finds it initialised)."""
    import ray

    ray.init(
        address=cluster.address,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield "auto"
    finally:
        ray.shutdown()


def _values(records: list) -> dict[tuple[str, int], float | None]:  # type: ignore[type-arg]
    return {(r.spec.activation, r.spec.seed): r.metric_value for r in records}


def test_compare_and_search_on_two_nodes_equal_local(
    cluster: Cluster, driver: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actlab.bench import compare
    from actlab.bench.store import ResultsStore
    from actlab.search import CurveObjective, Pipeline, RayExecutor, run_search

    monkeypatch.setenv("ACTLAB_FAKE_SLEEP", "0.2")  # Ray workers inherit the nodes' env
    kw = dict(task="t", seeds=3, epochs=2, train_fn="bench_helpers:fake_train")
    t0 = time.perf_counter()
    on_ray = compare(ACTS, db=tmp_path / "ray.db", ray=driver, **kw)  # type: ignore[arg-type]
    ray_s = time.perf_counter() - t0
    local = compare(ACTS, db=tmp_path / "local.db", **kw)  # type: ignore[arg-type]
    assert len(on_ray.records) == 12 and all(r.ok for r in on_ray.records)
    assert _values(on_ray.records) == _values(local.records)  # same keys, same results
    assert os.getpid() not in {r.pid for r in on_ray.records}
    assert len({r.pid for r in on_ray.records}) >= 2  # several Ray workers (two nodes)
    with ResultsStore(tmp_path / "ray.db") as store:
        assert store.active_claims() == []

    # search: the same random proposals evaluated on the cluster and inline
    pipe = Pipeline(checks=False, cost=None, proxies=False)
    ex = RayExecutor(driver)
    assert ex.slots == 2  # one CPU per node
    res_ray = run_search(CurveObjective("gelu"), "random", budget=6, study="p",
                         storage=tmp_path / "ray-s.db", pipeline=pipe, executor=ex)  # fmt: skip
    res_local = run_search(CurveObjective("gelu"), "random", budget=6, study="p",
                           storage=tmp_path / "local-s.db", pipeline=pipe)  # fmt: skip

    def results(res: object) -> dict[tuple[str, int], float]:
        out = {}
        for r in res.finished:  # type: ignore[attr-defined]
            assert r.result is not None
            out[r.candidate.key] = r.result.quality
        return out

    assert results(res_ray) == results(res_local) and len(results(res_ray)) >= 6
    print(f"\ncompare on the 2-node cluster: 12 runs in {ray_s:.1f} s; "
          f"cluster start {cluster.started_s:.1f} s")  # type: ignore[attr-defined]  # fmt: skip


def _kill_worker_node_when_busy(
    cluster: Cluster, log: Path, done: threading.Event, pid_field: int = -1
) -> list[str]:
    """Kill the worker node as soon as a line of ``log`` (its pid in ``pid_field``) shows
    that a run started in one of its processes; returns [that line] once it happened."""
    killed: list[str] = []

    def watch() -> None:
        while not done.is_set():
            pids = cluster.worker_pids()
            for line in log.read_text().splitlines() if log.exists() else []:
                if int(line.split()[pid_field]) in pids:
                    cluster.kill_worker()
                    killed.append(line)
                    return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return killed


def test_a_worker_node_killed_mid_run_loses_nothing(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compare on the cluster; the worker node dies while training a run: Ray re-runs it on
    the head node, every run is stored exactly once."""
    import ray

    from actlab.bench import compare
    from actlab.bench.store import ResultsStore

    if len([n for n in cluster.nodes if n.poll() is None]) < 2:
        cluster.add_worker()
    log = tmp_path / "runs.log"
    monkeypatch.setenv("ACTLAB_FAKE_SLEEP", "1.0")
    monkeypatch.setenv("ACTLAB_FAKE_LOG", str(log))
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"ACTLAB_FAKE_SLEEP": "1.0",
                                       "ACTLAB_FAKE_LOG": str(log)}})  # fmt: skip
    done = threading.Event()
    try:
        killed = _kill_worker_node_when_busy(cluster, log, done)
        t0 = time.perf_counter()
        res = compare(ACTS[:3], task="t", seeds=2, epochs=2, db=tmp_path / "k.db",
                      ray="auto", train_fn="bench_helpers:fake_train")  # fmt: skip
        took = time.perf_counter() - t0
    finally:
        done.set()
        ray.shutdown()
    assert killed, "no run started on the worker node"
    started = Counter(tuple(ln.split()[:2]) for ln in log.read_text().splitlines())
    act, seed, _ = killed[0].split()
    assert started[(act, seed)] == 2  # trained again after its node died
    assert len(res.records) == 6 and all(r.ok for r in res.records)  # nothing lost
    with ResultsStore(tmp_path / "k.db") as store:
        assert len(store.all_records()) == 6 and store.active_claims() == []  # nothing twice
    print(f"\nworker node killed during {act} seed {seed}; 6 runs done in {took:.1f} s")


def test_a_worker_node_killed_mid_search_loses_nothing(cluster: Cluster, tmp_path: Path) -> None:
    """Search on the cluster; the worker node dies during an evaluation: the evaluation is
    re-run (by Ray, or re-queued by the loop), every trial ends with one result."""
    import optuna
    import ray
    from executor_helpers import logging_objective

    from actlab.search import Pipeline, RayExecutor, run_search

    if len([n for n in cluster.nodes if n.poll() is None]) < 2:
        cluster.add_worker()
    log = tmp_path / "evals.log"
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")  # fmt: skip
    done = threading.Event()
    try:
        killed = _kill_worker_node_when_busy(cluster, log, done, pid_field=1)
        res = run_search(
            logging_objective("gelu", str(log), 1.0), "random", budget=6, study="k",
            storage=tmp_path / "k.db", pipeline=Pipeline(checks=False, cost=None, proxies=False),
            executor=RayExecutor("auto"),
        )  # fmt: skip
    finally:
        done.set()
        ray.shutdown()
    assert killed, "no evaluation started on the worker node"
    key = killed[0].split()[2]
    lines = [ln.split() for ln in log.read_text().splitlines()]
    assert sum(w == "start" and k == key for w, _, k in lines) >= 2  # evaluated again
    finished = [r for r in res.finished if r.result is not None]
    keys = Counter(r.candidate.key for r in finished)
    assert len(finished) >= 6 and max(keys.values()) == 1  # nothing lost, nothing twice
    assert key in {f"{h}:{lvl}" for h, lvl in keys}
    st = optuna.load_study(study_name="k", storage=f"sqlite:///{tmp_path / 'k.db'}")
    assert all(t.state.name != "RUNNING" for t in st.trials)


def test_compare_cli_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    """``actlab compare --ray ADDRESS`` as a user runs it: exit 0, every run stored."""
    import subprocess

    from actlab.bench.store import ResultsStore

    if len([n for n in cluster.nodes if n.poll() is None]) < 2:
        cluster.add_worker()
    db = tmp_path / "cli.db"
    argv = ["relu", "gelu", "--task", "digits-mlp", "--seeds", "2", "--db", str(db), "--no-report",
            "--train-fn", "bench_helpers:fake_train", "--ray", cluster.address]  # fmt: skip
    code = f"import sys, bench_helpers; sys.exit(bench_helpers.compare_main({argv!r}))"
    out = subprocess.run([sys.executable, "-c", code], env=cluster.env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    with ResultsStore(db) as store:
        recs = store.all_records()
    assert len(recs) == 4 and all(r.ok for r in recs)
    assert os.getpid() not in {r.pid for r in recs}
