"""Results store: round trip, uniqueness, failed-run replacement, claims and staleness."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from actlab.bench.plan import RunSpec, canonical_activation, parse_seeds, plan_runs
from actlab.bench.store import ResultsStore, RunRecord


def _spec(act: str = "gelu", seed: int = 0, **cfg: object) -> RunSpec:
    return RunSpec("digits-mlp", "mlp", act, seed, 2, {"device": "cpu", **cfg})


def _rec(spec: RunSpec, value: float | None = 0.9, status: str = "finished") -> RunRecord:
    return RunRecord(
        spec=spec,
        status=status,
        metric_name="accuracy",
        metric_value=value,
        higher_is_better=True,
        history=[{"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.8}],
        trajectories={"body.1.eps": [0.01, 0.02]},
        run_config={"lr": 0.001},
        seconds=1.5,
        error=None if status == "finished" else "RuntimeError: boom",
        study="s",
    )


def test_round_trip(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.sqlite") as store:
        spec = _spec()
        assert store.get(spec) is None
        assert store.record(_rec(spec))
        got = store.get(spec)
    assert got is not None
    assert got.spec == spec and got.spec.config == spec.config
    assert (got.metric_name, got.metric_value, got.higher_is_better) == ("accuracy", 0.9, True)
    assert got.history == [{"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.8}]
    assert got.trajectories == {"body.1.eps": [0.01, 0.02]}
    assert got.run_config == {"lr": 0.001} and got.seconds == 1.5 and got.ok
    # reopening the file sees the same data
    with ResultsStore(tmp_path / "r.sqlite") as again:
        assert [r.metric_value for r in again.all_records()] == [0.9]


def test_unique_key_and_failed_replacement(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.sqlite") as store:
        spec = _spec()
        assert store.record(_rec(spec, None, status="failed"))
        assert store.finished([spec]) == set()
        assert store.record(_rec(spec, 0.91))  # a failed run is replaced
        assert not store.record(_rec(spec, 0.5))  # a finished one is never overwritten
        assert not store.record(_rec(spec, None, status="failed"))
        assert [r.metric_value for r in store.all_records()] == [0.91]
        # any change of the key is a different run
        others = [_spec(seed=1), _spec("relu"), _spec(dtype="float64")]
        for s in others:
            assert store.record(_rec(s))
        assert len(store.all_records()) == 4
        assert store.finished([spec, *others, _spec(seed=9)]) == {spec, *others}
        assert [r.spec for r in store.records([_spec(seed=9), others[0], spec])] == [
            others[0],
            spec,
        ]
        with store.engine.begin() as conn, pytest.raises(Exception, match="UNIQUE"):
            conn.execute(
                text(
                    "INSERT INTO actlab_runs (task, model, activation, seed, epochs, config_hash, "
                    "config_json, status) VALUES (:t, :m, :a, :s, :e, :h, '{}', 'finished')"
                ),
                dict(t="digits-mlp", m="mlp", a="gelu", s=0, e=2, h=spec.config_hash),
            )


def test_nan_metric_is_kept_as_missing(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.record(_rec(_spec(), float("nan")))
        (got,) = store.all_records()
    assert got.metric_value is None or math.isnan(got.metric_value)
    assert not got.ok


def test_claims_live_dead_and_stale(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    spec = _spec()
    with ResultsStore(db) as store:
        token = store.claim(spec)
        assert token is not None
        assert store.claim(spec) is None  # held by a live process (us)
        store.heartbeat([token])
        assert store.claim(spec, stale_after=-1.0) is not None  # heartbeat too old: taken over
        assert store.record(_rec(spec), token) is True  # our record still lands once
        assert store.active_claims(stale_after=60) != []  # the take-over claim remains
    # a claim of a process that died is re-claimable at once
    other = _spec(seed=5)
    code = (
        "import sys; from actlab.bench.store import ResultsStore; "
        "from actlab.bench.plan import RunSpec;"
        f"s = ResultsStore({str(db)!r}); print(s.claim(RunSpec('digits-mlp', 'mlp', 'gelu', 5, 2, "
        "{'device': 'cpu'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert len(out.stdout.strip()) == 32
    with ResultsStore(db) as store:
        assert store.claim(other) is not None


def test_study_round_trip(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.sqlite") as store:
        kw = dict(task="t", model="m", activations=["relu", "gelu"], seeds=[0, 1], epochs=2)
        store.save_study("s1", config={"device": "cpu"}, **kw)  # type: ignore[arg-type]
        store.save_study("s1", config={"device": "cuda"}, **kw)  # type: ignore[arg-type]
        st = store.study("s1")
        assert st is not None and st["activations"] == ["relu", "gelu"]
        assert st["config"] == {"device": "cuda"}
        assert store.study("nope") is None


def test_db_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ResultsStore(tmp_path / "missing" / "r.sqlite")
    with pytest.raises(ValueError, match="in-memory"):
        ResultsStore(":memory:")
    store = ResultsStore(f"sqlite:///{tmp_path / 'url.sqlite'}")  # a SQLAlchemy URL
    assert store.display_url().startswith("sqlite:///")
    store.close()


def test_plan_and_canonical_specs() -> None:
    assert canonical_activation("GELU") == "gelu"
    assert canonical_activation("crrelu( eps=0.02 )") == "crrelu(eps=0.02)"
    with pytest.raises(ValueError, match="unknown activation 'gleu'.*gelu"):
        canonical_activation("gleu")
    with pytest.raises(ValueError, match="no parameter"):
        canonical_activation("crrelu(nope=1)")
    specs = plan_runs(["relu", "gelu"], 2, task="digits-mlp", epochs=1)
    assert [(s.activation, s.seed) for s in specs] == [
        ("relu", 0), ("gelu", 0), ("relu", 1), ("gelu", 1),
    ]  # fmt: skip
    assert specs[0].model == "default" and len({s.key_hash for s in specs}) == 4
    with pytest.raises(ValueError, match="listed twice"):
        plan_runs(["gelu", "GELU"], 2, task="t")
    assert parse_seeds("0,3,7") == [0, 3, 7] and parse_seeds(2) == [0, 1]
    for bad in ("x", "0,0", 0, "-1,2"):
        with pytest.raises(ValueError):
            parse_seeds(bad)


def test_store_ages_heartbeat(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.sqlite") as store:
        token = store.claim(_spec())
        (before,) = store.active_claims()
        time.sleep(0.01)
        store.heartbeat([token or ""])
        (after,) = store.active_claims()
        assert after["heartbeat"] > before["heartbeat"] and after["pid"] == os.getpid()
        store.release(token)
        assert store.active_claims() == []


def test_checks_and_read_only_opens_create_nothing(tmp_path: Path) -> None:
    from actlab.bench.store import DatabaseError, check_results_db

    new = tmp_path / "new.sqlite"
    assert check_results_db(new) == f"sqlite:///{new}" and not new.exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ResultsStore(new, read_only=True)
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty.sqlite"
    empty.touch()  # an empty file is a new SQLite database
    with pytest.raises(DatabaseError, match="holds no actlab results"):
        ResultsStore(empty, read_only=True)
    assert empty.read_bytes() == b""
    with ResultsStore(empty) as store:
        assert store.record(_rec(_spec()))
    with ResultsStore(empty, read_only=True) as ro:
        assert [r.metric_value for r in ro.all_records()] == [0.9]
        with pytest.raises(DatabaseError, match="read-only"):
            ro.claim(_spec())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]  # no -wal, -shm
