"""Hostile results databases: every entry point (the store API, ``actlab compare --db``,
``actlab search --db``) x every bad database kind gives one line naming the database and the
fix, exit status 2 for the CLI, no traceback, and writes nothing (the bad file is unchanged
and nothing appears next to it). Read-only files and folders are checked as an unprivileged
user (root ignores permissions), and an old-schema store (before the ``actlab_`` prefix) is
read and resumed."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actlab.bench.plan import RunSpec, plan_runs
from actlab.bench.store import DatabaseError, ResultsStore, RunRecord, check_results_db
from actlab.cli import main

HERE = Path(__file__).resolve().parent
SECRET = "s3cretpw"

# -- bad databases: each builder makes one in a folder and returns the --db argument ---------


def _corrupt(d: Path) -> str:
    p = d / "corrupt.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE t (a)")
    con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(2000)])
    con.commit()
    con.close()
    data = bytearray(p.read_bytes())
    data[100:3000] = bytes((i * 37 + 11) % 251 for i in range(2900))  # page 1 after the header
    p.write_bytes(bytes(data))
    return str(p)


def _garbage(d: Path) -> str:
    p = d / "garbage.db"
    p.write_bytes(bytes((i * 131 + 7) % 256 for i in range(8192)))
    return str(p)


def _text(d: Path) -> str:
    p = d / "notes.db"
    p.write_text("this is a text file\n" * 50)
    return str(p)


def _folder(d: Path) -> str:
    (d / "folder.db").mkdir()
    return str(d / "folder.db")


def _url_missing_folder(d: Path) -> str:
    return f"sqlite:///{d}/nope/x.db"


def _path_missing_folder(d: Path) -> str:
    return str(d / "nope" / "x.db")


def _unknown_dialect(d: Path) -> str:
    return "foo://bar/x"


def _bad_url(d: Path) -> str:
    return "postgresql://alice@host:notaport/db"


def _missing_driver(d: Path) -> str:
    # pg8000: a PostgreSQL driver actlab does not install (psycopg comes with actlab[postgres])
    return f"postgresql+pg8000://alice:{SECRET}@localhost:1/db"


def _foreign_prefixed(d: Path) -> str:
    p = d / "foreign.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE actlab_runs (id INTEGER PRIMARY KEY, foo TEXT)")
    con.commit()
    con.close()
    return str(p)


def _foreign_legacy_name(d: Path) -> str:  # e.g. MLflow's tracking database has "runs"
    p = d / "mlflow.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE runs (run_uuid TEXT PRIMARY KEY, name TEXT)")
    con.commit()
    con.close()
    return str(p)


BAD: dict[str, tuple[Callable[[Path], str], str]] = {
    # kind: (builder, a word the message must contain)
    "corrupt": (_corrupt, "damaged"),
    "garbage": (_garbage, "not a SQLite database"),
    "text": (_text, "text file"),
    "folder": (_folder, "is a folder"),
    "url-missing-folder": (_url_missing_folder, "does not exist"),
    "path-missing-folder": (_path_missing_folder, "does not exist"),
    "unknown-dialect": (_unknown_dialect, "unknown database type"),
    "bad-url": (_bad_url, "not a database URL"),
    "missing-driver": (_missing_driver, "not installed"),
    "foreign-prefixed": (_foreign_prefixed, "not actlab's"),
    "foreign-legacy-name": (_foreign_legacy_name, "not actlab's"),
}


def _snapshot(d: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(d)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(d.rglob("*"))
    }


def _names_it(msg: str, arg: str) -> bool:
    arg = arg.removeprefix("sqlite:///")
    if "://" in arg:
        return arg.split("://")[0] + "://" in msg
    return Path(arg).name in msg or Path(arg).parent.name in msg


@pytest.fixture
def bad(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, str, Path]]:
    build, needle = BAD[request.param]
    d = tmp_path / "w"
    d.mkdir()
    arg = build(d)
    yield arg, needle, d


@pytest.mark.parametrize("bad", list(BAD), indirect=True)
def test_store_api_refuses_bad_databases(bad: tuple[str, str, Path]) -> None:
    arg, needle, d = bad
    before = _snapshot(d)
    for open_it in (
        lambda: ResultsStore(arg),
        lambda: ResultsStore(arg, read_only=True),
        lambda: check_results_db(arg),
    ):
        with pytest.raises((DatabaseError, FileNotFoundError)) as info:
            open_it()
        msg = str(info.value)
        assert len(msg.splitlines()) == 1 and SECRET not in msg
        assert _names_it(msg, arg), msg
        assert needle in msg or (needle == "damaged" and "not a SQLite" in msg), msg
    assert _snapshot(d) == before  # nothing written, nothing created beside it


def _compare(db: str) -> list[str]:
    return ["compare", "relu", "gelu", "--task", "digits-mlp", "--seeds", "1", "--no-report",
            "--no-progress", "--train-fn", "bench_helpers:fake_train", "--db", db]  # fmt: skip


def _search_db(d: Path, db: str) -> list[str]:
    return ["search", "--task", "digits-mlp", "--budget", "1", "--max-steps", "1", "--no-report",
            "--quiet", "--storage", str(d.parent / "study.db"), "--db", db]  # fmt: skip


@pytest.mark.parametrize("entry", ["compare --db", "search --db"])
@pytest.mark.parametrize("bad", list(BAD), indirect=True)
def test_cli_refuses_bad_results_databases(
    bad: tuple[str, str, Path],
    entry: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arg, needle, d = bad
    monkeypatch.chdir(d.parent)
    monkeypatch.setenv("ACTLAB_FAKE_LOG", str(d.parent / "trained.log"))
    monkeypatch.delenv("ACTLAB_DEBUG", raising=False)
    monkeypatch.syspath_prepend(str(HERE))
    before = _snapshot(d)
    argv = _compare(arg) if entry == "compare --db" else _search_db(d, arg)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"actlab {entry.split()[0]}: error: ")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and SECRET not in err
    assert needle in err or (needle == "damaged" and "not a SQLite" in err), err
    assert _names_it(err, arg), err
    assert _snapshot(d) == before
    # failed before any work: nothing trained, no study storage or report created
    assert sorted(p.name for p in d.parent.iterdir()) == ["w"]


def test_password_never_printed(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql://alice:{SECRET}@localhost:1/db"
    with pytest.raises(DatabaseError) as info:
        ResultsStore(url)
    assert SECRET not in str(info.value) and "alice:***@localhost" in str(info.value)
    # the CLI masks a password in any message that reaches its error boundary
    assert main(_compare(url)) == 2
    assert SECRET not in capsys.readouterr().err


# -- the previous schema (no table prefix) is read and resumed ------------------------------

OLD_DDL = """
CREATE TABLE studies (id INTEGER NOT NULL, name VARCHAR(200) NOT NULL, task VARCHAR(100) NOT NULL,
  model VARCHAR(100) NOT NULL, activations_json TEXT NOT NULL, seeds_json TEXT NOT NULL,
  epochs INTEGER NOT NULL, config_json TEXT NOT NULL, created_at VARCHAR(32) NOT NULL,
  updated_at VARCHAR(32) NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE runs (id INTEGER NOT NULL, study VARCHAR(200), task VARCHAR(100) NOT NULL,
  model VARCHAR(100) NOT NULL, activation VARCHAR(255) NOT NULL, seed INTEGER NOT NULL,
  epochs INTEGER NOT NULL, config_hash VARCHAR(16) NOT NULL, config_json TEXT NOT NULL,
  status VARCHAR(16) NOT NULL, metric_name VARCHAR(64), metric_value FLOAT,
  higher_is_better BOOLEAN, history_json TEXT, trajectories_json TEXT, run_config_json TEXT,
  seconds FLOAT, wall_seconds FLOAT, host VARCHAR(255), pid INTEGER, started_at VARCHAR(32),
  finished_at VARCHAR(32), error TEXT, versions_json TEXT, PRIMARY KEY (id),
  CONSTRAINT uq_runs_key UNIQUE (task, model, activation, seed, epochs, config_hash));
CREATE TABLE claims (run_key VARCHAR(32) NOT NULL, token VARCHAR(32) NOT NULL,
  study VARCHAR(200), label VARCHAR(300), host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL,
  claimed_at FLOAT NOT NULL, heartbeat FLOAT NOT NULL, PRIMARY KEY (run_key));
"""  # the tables actlab wrote before the prefix, as SQLAlchemy emitted them for SQLite


def _old_store(path: Path, specs: list[RunSpec]) -> None:
    """A results database as the previous version left it: WAL mode, old table names."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(OLD_DDL)
    con.execute(
        "INSERT INTO studies (name, task, model, activations_json, seeds_json, epochs, "
        "config_json, created_at, updated_at) VALUES ('old', 'digits-mlp', 'default', "
        "'[\"relu\"]', '[0]', 0, '{}', 'then', 'then')"
    )
    for i, s in enumerate(specs):
        con.execute(
            "INSERT INTO runs (study, task, model, activation, seed, epochs, config_hash, "
            "config_json, status, metric_name, metric_value, higher_is_better, history_json) "
            "VALUES ('old', ?, ?, ?, ?, ?, ?, ?, 'finished', 'accuracy', ?, 1, '[]')",
            (s.task, s.model, s.activation, s.seed, s.epochs, s.config_hash,
             json.dumps(s.config, sort_keys=True), 0.5 + i / 100),
        )  # fmt: skip
    con.commit()
    con.close()


def _tables(path: Path) -> set[str]:
    con = sqlite3.connect(path)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()


def _cli_specs() -> list[RunSpec]:  # what `actlab compare relu gelu --seeds 1 --train-fn` plans
    return plan_runs(["relu", "gelu"], 1, task="digits-mlp", model=None, epochs=None,
                     config={"device": "cpu", "dtype": "float32"})  # fmt: skip


def test_old_schema_is_read_as_is_and_migrated_on_write(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    specs = _cli_specs()
    _old_store(db, specs)
    before = db.read_bytes()
    with ResultsStore(db, read_only=True) as ro:  # reading changes nothing
        assert ro.finished(specs) == set(specs)
        assert [r.metric_value for r in ro.records(specs)] == [0.5, 0.51]
        assert ro.study("old") is not None
        with pytest.raises(DatabaseError, match="read-only"):
            ro.save_study("x", task="t", model="m", activations=[], seeds=[], epochs=1, config={})
    assert db.read_bytes() == before and _tables(db) == {"studies", "runs", "claims"}
    with ResultsStore(db) as store:  # writing migrates: the same rows under the new names
        assert store.finished(specs) == set(specs)
        new = RunRecord(RunSpec("digits-mlp", "default", "tanh", 0, 0, {}), "finished",
                        "accuracy", 0.7, True)  # fmt: skip
        assert store.record(new) and not store.record(new)  # the unique key still holds
        assert len(store.all_records()) == 3
    assert _tables(db) == {"actlab_studies", "actlab_runs", "actlab_claims"}


def test_compare_resumes_an_old_schema_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, log = tmp_path / "old.sqlite", tmp_path / "trained.log"
    _old_store(db, _cli_specs())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACTLAB_FAKE_LOG", str(log))
    monkeypatch.syspath_prepend(str(HERE))
    assert main(_compare(str(db))) == 0
    assert "resuming: 2 runs already finished" in capsys.readouterr().err
    assert not log.exists()  # nothing trained again


def test_optuna_and_results_tables_share_one_file(tmp_path: Path) -> None:
    import optuna

    db = tmp_path / "both.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="s", storage=f"sqlite:///{db}").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2
    )
    spec = RunSpec("digits-mlp", "default", "relu", 0, 0, {})
    with ResultsStore(db) as store:
        store.save_study("c", task="t", model="m", activations=["relu"], seeds=[0], epochs=1,
                         config={})  # fmt: skip
        assert store.record(RunRecord(spec, "finished", "accuracy", 0.9, True))
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{db}").trials) == 2
    with ResultsStore(db, read_only=True) as ro:
        assert ro.finished([spec]) == {spec}


# -- read-only files and folders, as an unprivileged user -----------------------------------

_RO_SCRIPT = r"""
import json, sys
from actlab.bench.store import ResultsStore, RunRecord, DatabaseError
from actlab.bench.plan import RunSpec
from actlab.cli import main
out = {}
spec = RunSpec("digits-mlp", "default", "relu", 0, 0, {})
for name in ("file", "folder"):
    db = sys.argv[1 if name == "file" else 2]
    with ResultsStore(db, read_only=True) as ro:
        out[name + ":read"] = [r.metric_value for r in ro.all_records()]
        try:
            ro.record(RunRecord(spec, "finished", "accuracy", 0.1, True))
            out[name + ":ro-write"] = "accepted"
        except DatabaseError as e:
            out[name + ":ro-write"] = str(e)
    try:
        ResultsStore(db)
        out[name + ":open-write"] = "accepted"
    except DatabaseError as e:
        out[name + ":open-write"] = str(e)
    sys.stderr = open(sys.argv[3], "w")
    out[name + ":cli"] = main(["compare", "relu", "--task", "digits-mlp", "--seeds", "1",
                               "--no-report", "--no-progress", "--db", db,
                               "--train-fn", "bench_helpers:fake_train"])
    sys.stderr.close()
    sys.stderr = sys.__stderr__
    out[name + ":cli-err"] = open(sys.argv[3]).read()
print(json.dumps(out))
"""


def _unprivileged() -> list[str] | None:
    """A command prefix that drops root (root ignores file permissions), [] when not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_read_only_file_and_folder_are_read_but_not_written() -> None:
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot make a file read-only")
    base = Path(tempfile.mkdtemp(prefix="actlab-ro-"))
    try:
        base.chmod(0o777)
        ro_file, folder = base / "ro.sqlite", base / "rofolder"
        folder.mkdir()
        in_folder = folder / "r.sqlite"
        for db in (ro_file, in_folder):  # written normally (WAL mode), then made read-only
            with ResultsStore(db) as store:
                store.record(RunRecord(RunSpec("t", "m", "gelu", 1, 1, {}), "finished",
                                       "accuracy", 0.93, True))  # fmt: skip
        ro_file.chmod(0o444)
        in_folder.chmod(0o666)
        folder.chmod(0o555)
        before = {p: p.read_bytes() for p in (ro_file, in_folder)}
        err = base / "err.txt"
        err.touch()
        err.chmod(0o666)
        listing = sorted(str(p) for p in base.rglob("*"))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", _RO_SCRIPT, str(ro_file), str(in_folder), str(err)],
            capture_output=True, text=True, env=env, cwd=str(base), timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        for name, path in (("file", ro_file), ("folder", in_folder)):
            assert out[f"{name}:read"] == [0.93]  # mode=ro (immutable in the folder): readable
            assert "opened read-only" in out[f"{name}:ro-write"]
            opened = out[f"{name}:open-write"]
            assert "read-only" in opened and path.name in opened
            assert out[f"{name}:cli"] == 2
            line = out[f"{name}:cli-err"].strip()
            assert line.startswith("actlab compare: error: results database")
            assert "read-only" in line
            assert len(line.splitlines()) == 1 and "Traceback" not in line
        assert {p: p.read_bytes() for p in before} == before
        assert sorted(str(p) for p in base.rglob("*")) == listing  # no -wal, -shm, journal
    finally:
        for p in (base, *base.rglob("*")):
            if p.is_dir():
                p.chmod(0o777)
        shutil.rmtree(base, ignore_errors=True)
