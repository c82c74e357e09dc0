"""Runner: resume, failures, claims held elsewhere, parallel workers equal to serial."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import fake_metric, fake_train

from actlab.bench import compare
from actlab.bench.plan import (
    MAX_RUNS,
    MAX_SEEDS,
    canonical_activation,
    formula_spec,
    parse_seeds,
    plan_runs,
)
from actlab.bench.runner import MatrixEvents, run_matrix
from actlab.bench.store import ResultsStore, RunRecord
from actlab.bench.summary import summarize
from actlab.executors import threads_per_worker

ACTS = ["relu", "gelu", "crrelu", "tanh"]


class _Events(MatrixEvents):
    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []

    def matrix_started(self, to_run: int, already_finished: int) -> None:
        self.log.append(("start", (to_run, already_finished)))

    def run_started(self, spec: object) -> None:
        self.log.append(("run", spec))

    def run_finished(self, record: RunRecord, done: int, to_run: int) -> None:
        self.log.append(("done", (done, to_run)))


def _values(records: list[RunRecord]) -> dict[tuple[str, int], float | None]:
    return {(r.spec.activation, r.spec.seed): r.metric_value for r in records}


def test_serial_failures_then_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "r.sqlite"
    monkeypatch.setenv("ACTLAB_FAKE_FAIL", "tanh")
    ev = _Events()
    res = compare(ACTS, task="digits-mlp", seeds=3, epochs=2, db=db, train_fn=fake_train, events=ev)
    assert len(res.report.records) == 12 and len(res.report.failed) == 3
    assert all("RuntimeError: fake failure for tanh" in (r.error or "") for r in res.report.failed)
    assert ev.log[0] == ("start", (12, 0)) and ev.log[-1] == ("done", (12, 12))
    tanh = res.summary.rows[-1]
    assert tanh.n == 0 and tanh.n_failed == 3 and tanh.verdict == "too few pairs"
    gelu = res.summary.rows[1]
    assert gelu.values == tuple(fake_metric("gelu", s) for s in range(3))

    # rerun: the 9 finished runs are reused, only the failed ones run again
    monkeypatch.delenv("ACTLAB_FAKE_FAIL")
    again = compare(ACTS, task="digits-mlp", seeds=3, epochs=2, db=db, train_fn=fake_train)
    assert len(again.report.skipped) == 9
    assert sorted(r.spec.activation for r in again.report.records) == ["tanh"] * 3
    assert all(r.ok for r in again.records) and len(again.records) == 12
    with ResultsStore(db) as store:
        assert len(store.all_records()) == 12  # failed rows were replaced, not duplicated
    # more seeds later: only the new seed runs
    more = compare(ACTS, task="digits-mlp", seeds=4, epochs=2, db=db, train_fn=fake_train)
    assert {r.spec.seed for r in more.report.records} == {3} and len(more.records) == 16


def test_summary_uses_pairs_and_direction(tmp_path: Path) -> None:
    res = compare(["relu", "crrelu"], task="digits-mlp", seeds=6, db=tmp_path / "r.sqlite",
                  train_fn=fake_train)  # fmt: skip
    base, other = res.summary.rows
    assert base.is_baseline and base.mark == "" and other.n_pairs == 6
    assert other.delta == pytest.approx(other.mean - base.mean)
    assert other.verdict == "better" and other.mark in ("*", "**", "***")
    flipped = summarize(
        [_as_lower_better(r) for r in res.records], ["relu", "crrelu"]
    )  # same data, lower is better: crrelu is now worse
    assert flipped.rows[1].verdict == "worse" and not flipped.higher_is_better


def _as_lower_better(r: RunRecord) -> RunRecord:
    from dataclasses import replace

    return replace(r, higher_is_better=False)


def test_runs_claimed_elsewhere_are_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    specs = plan_runs(["relu", "gelu"], 2, task="digits-mlp", config={"device": "cpu"})
    with ResultsStore(db) as store:
        token = store.claim(specs[1])  # a live owner (this process) holds gelu seed 0
        rep = run_matrix(specs, store, train_fn=fake_train)
        assert rep.busy == [specs[1]] and len(rep.records) == 3
        assert store.active_claims() and store.get(specs[1]) is None
        store.release(token)
        rep2 = run_matrix(specs, store, train_fn=fake_train)
        assert [r.spec for r in rep2.records] == [specs[1]] and len(rep2.skipped) == 3


def test_parallel_workers_match_serial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kw = dict(task="digits-mlp", seeds=2, epochs=2)
    serial = compare(ACTS, db=tmp_path / "s.sqlite", train_fn=fake_train, **kw)  # type: ignore[arg-type]
    # in the parallel run, tanh seed 0 kills its worker process: only that run fails
    monkeypatch.setenv("ACTLAB_FAKE_CRASH", "tanh:0")
    par = compare(ACTS, db=tmp_path / "p.sqlite", train_fn="bench_helpers:fake_train", workers=2,
                  **kw)  # type: ignore[arg-type]  # fmt: skip
    ok = {k: v for k, v in _values(par.records).items() if k != ("tanh", 0)}
    assert ok == {k: v for k, v in _values(serial.records).items() if k != ("tanh", 0)}
    (dead,) = [r for r in par.records if not r.ok]
    assert dead.spec.activation == "tanh" and dead.spec.seed == 0 and dead.status == "failed"
    assert "worker process died" in (dead.error or "")
    assert len({r.pid for r in par.records if r.ok}) >= 2  # really ran in several processes
    with ResultsStore(tmp_path / "p.sqlite") as store:
        assert store.active_claims() == []


def test_worker_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match="No module named 'nope'"):  # before any worker
        compare(["relu"], task="t", seeds=2, db=tmp_path / "r.sqlite", train_fn="nope:f",
                workers=2)  # fmt: skip
    with pytest.raises(ValueError, match="importable"):
        compare(["relu"], task="t", seeds=2, db=tmp_path / "r.sqlite",
                train_fn=lambda *a, **k: None, workers=2)  # fmt: skip
    with pytest.raises(ValueError, match="module:function"):
        compare(["relu"], task="t", seeds=1, db=tmp_path / "r.sqlite", train_fn="nocolon")
    assert threads_per_worker(1) >= 1 and threads_per_worker(10_000) == 1


def test_bare_formula_is_one_run_with_its_expr_spec(tmp_path: Path) -> None:
    """``x*sigmoid(1.702*x)`` means ``expr(formula=...)``, keyed by the canonical formula."""
    db = tmp_path / "r.sqlite"
    res = compare(["x*sigmoid(1.702*x)"], task="t", seeds=1, db=db, train_fn=fake_train)
    act = res.specs[0].activation
    assert act == canonical_activation('expr(formula="x * sigmoid(1.702 * x)")')
    again = compare(['expr(formula="x*sigmoid(1.702*x)")'], task="t", seeds=1, db=db,
                    train_fn=fake_train)  # fmt: skip
    assert again.report.records == [] and len(again.report.skipped) == 1
    with pytest.raises(ValueError, match="listed twice"):
        plan_runs(["x*sigmoid(1.702*x)", 'expr(formula="x*sigmoid(1.702*x)")'], 1, task="t")
    assert formula_spec("relu") == "relu" and formula_spec("x*sigmoid(beta*x)").startswith("expr(")
    with pytest.raises(ValueError, match=r"formula in x \(unknown name 'y'\).*expr\(formula="):
        plan_runs(["x*y"], 1, task="t")
    with pytest.raises(ValueError, match="must use the input x"):
        plan_runs(["2*pi"], 1, task="t")


@pytest.mark.parametrize(
    ("seeds", "needle"),
    [
        ("100000000", "at most 10000 seeds"),
        (10**20, "at most 10000 seeds"),
        (",".join(map(str, range(10_001))), "at most 10000 seeds"),
        ([0, 2**40], "seeds must be in"),
        ([0, 1.5], "whole numbers"),
        ("3,3", "duplicate seeds"),
    ],
)
def test_seed_and_run_caps_refuse_before_building(seeds: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_seeds(seeds)  # type: ignore[arg-type]


def test_run_cap_and_epochs(tmp_path: Path) -> None:
    acts = [f"x*sigmoid({k}*x)" for k in range(1, 12)]
    with pytest.raises(ValueError, match=f"at most {MAX_RUNS}"):
        plan_runs(acts, MAX_SEEDS, task="t")
    for bad in (0, -1, 10**20):
        with pytest.raises(ValueError, match="epochs"):
            compare(["relu"], task="t", seeds=1, epochs=bad, db=tmp_path / "r.sqlite",
                    train_fn=fake_train)  # fmt: skip
    with pytest.raises(ValueError, match="max_steps"):
        compare(["relu"], task="t", seeds=1, max_steps=0, db=tmp_path / "r.sqlite",
                train_fn=fake_train)  # fmt: skip
    assert not (tmp_path / "r.sqlite").exists()
