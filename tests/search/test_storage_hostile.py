"""Hostile study storages: the study API (``SearchStudy``, ``open_storage``,
``check_storage``) and ``actlab search --storage`` x every bad storage kind give one line
naming the storage and the fix, exit status 2, no traceback, and write nothing. One file can
hold both the Optuna study and the results store (``--storage x.db --db x.db``), and an actlab
results store of before the table prefix no longer blocks Optuna."""

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
from search_helpers import fake_train

from actlab.bench.store import DatabaseError, ResultsStore
from actlab.cli import main
from actlab.search import Pipeline, SearchStudy, check_storage, finalize, open_storage, run_search

SECRET = "s3cretpw"


def _sqlite(path: Path, *ddl: str) -> str:
    con = sqlite3.connect(path)
    for statement in ddl:
        con.execute(statement)
    con.commit()
    con.close()
    return str(path)


def _corrupt(d: Path) -> str:
    p = Path(_sqlite(d / "corrupt.db", "CREATE TABLE t (a)"))
    con = sqlite3.connect(p)
    con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(2000)])
    con.commit()
    con.close()
    data = bytearray(p.read_bytes())
    data[100:3000] = bytes((i * 37 + 11) % 251 for i in range(2900))
    p.write_bytes(bytes(data))
    return str(p)


def _file(name: str, content: bytes) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        (d / name).write_bytes(content)
        return str(d / name)

    return build


def _folder(name: str) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        (d / name).mkdir()
        return str(d / name)

    return build


BAD: dict[str, tuple[Callable[[Path], str], str]] = {
    "corrupt": (_corrupt, "damaged"),
    "garbage": (_file("garbage.db", bytes((i * 131 + 7) % 256 for i in range(8192))),
                "not a SQLite database"),
    "text": (_file("notes.db", b"this is a text file\n" * 50), "text file"),
    "folder": (_folder("folder.db"), "is a folder"),
    "url-missing-folder": (lambda d: f"sqlite:///{d}/nope/x.db", "does not exist"),
    "path-missing-folder": (lambda d: str(d / "nope" / "x.db"), "does not exist"),
    "unknown-dialect": (lambda d: "foo://bar/x", "unknown database type"),
    "bad-url": (lambda d: "postgresql://alice@host:notaport/db", "not a database URL"),
    # pg8000: a PostgreSQL driver actlab does not install (psycopg comes with actlab[postgres])
    "missing-driver": (
        lambda d: f"postgresql+pg8000://alice:{SECRET}@localhost:1/db",
        "not installed",
    ),
    "foreign-studies": (lambda d: _sqlite(d / "f.db", "CREATE TABLE studies (x TEXT)"),
                        "not Optuna's"),
    "foreign-trials": (lambda d: _sqlite(d / "t.db", "CREATE TABLE trials (id INTEGER)"),
                       "not Optuna's"),
    "journal-garbage": (_file("j.journal", b"not json\n{broken\n"), "not an Optuna journal"),
    "journal-binary": (_file("b.journal", bytes(range(256)) * 4), "not an Optuna journal"),
    "journal-folder": (_folder("d.journal"), "is a folder"),
    "journal-missing-folder": (lambda d: f"journal:{d}/nope/x.log", "does not exist"),
}  # fmt: skip


def _snapshot(d: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(d)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(d.rglob("*"))
    }


def _names_it(msg: str, arg: str) -> bool:
    arg = arg.removeprefix("sqlite:///").removeprefix("journal:")
    if "://" in arg:
        return arg.split("://")[0] + "://" in msg
    return Path(arg).name in msg or Path(arg).parent.name in msg


@pytest.fixture
def bad(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, str, Path]]:
    build, needle = BAD[request.param]
    d = tmp_path / "w"
    d.mkdir()
    yield build(d), needle, d


def _check(msg: str, arg: str, needle: str) -> None:
    assert len(msg.strip().splitlines()) == 1 and SECRET not in msg and "Traceback" not in msg
    assert needle in msg, msg
    assert _names_it(msg, arg), msg


@pytest.mark.parametrize("bad", list(BAD), indirect=True)
def test_study_api_refuses_bad_storages(bad: tuple[str, str, Path]) -> None:
    arg, needle, d = bad
    before = _snapshot(d)
    for open_it in (
        lambda: check_storage(arg),
        lambda: open_storage(arg),
        lambda: SearchStudy("s", arg),
    ):
        with pytest.raises((DatabaseError, FileNotFoundError)) as info:
            open_it()
        _check(str(info.value), arg, needle)
    assert _snapshot(d) == before


@pytest.mark.parametrize("bad", list(BAD), indirect=True)
def test_search_cli_refuses_bad_storages(
    bad: tuple[str, str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    arg, needle, d = bad
    monkeypatch.chdir(d.parent)
    monkeypatch.delenv("ACTLAB_DEBUG", raising=False)
    before = _snapshot(d)
    rc = main(["search", "--task", "curve:gelu", "--budget", "2", "--no-final", "--no-report",
               "--quiet", "--storage", arg])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith("actlab search: error: ")
    _check(err, arg, needle)
    assert "#" not in out  # no evaluation was printed: it failed before the search
    assert _snapshot(d) == before
    assert sorted(p.name for p in d.parent.iterdir()) == ["w"]


def test_password_never_printed() -> None:
    url = f"postgresql://alice:{SECRET}@localhost:1/db"
    for open_it in (lambda: open_storage(url), lambda: check_storage(url)):
        with pytest.raises(DatabaseError) as info:
            open_it()
        assert SECRET not in str(info.value) and "alice:***@localhost" in str(info.value)


def test_damaged_journal_line_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "s.journal"
    SearchStudy("ok", str(path)).close()
    with open(path, "ab") as f:
        f.write(b"{broken json\n")  # the first line is fine: found only when Optuna reads on
    with pytest.raises(DatabaseError, match=r"s\.journal.*--storage") as info:
        SearchStudy("ok", str(path))
    assert len(str(info.value).splitlines()) == 1


# -- one file for the study and the results; the previous results schema ------------------

FAST = Pipeline(checks=False, cost=None, proxies=False)


def test_study_and_results_share_one_file(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    res = run_search("curve:gelu", "evolution", budget=6, study="both", storage=db, pipeline=FAST)
    res.task = "digits-mlp"  # pretend it was trained: only the re-evaluation is faked
    final = finalize(res, top=1, seeds=2, db=db, train_fn=fake_train)
    assert final.comparison is not None and len(final.comparison.records) == 8
    again = run_search("curve:gelu", "evolution", budget=6, study="both", storage=db,
                       pipeline=FAST)  # fmt: skip
    assert len(again.records) == len(res.records)  # the study resumes from the same file
    with ResultsStore(db, read_only=True) as store:
        assert len(store.all_records()) == 8


OLD_DDL = [
    "CREATE TABLE studies (id INTEGER NOT NULL, name VARCHAR(200) NOT NULL, task VARCHAR(100) "
    "NOT NULL, model VARCHAR(100) NOT NULL, activations_json TEXT NOT NULL, seeds_json TEXT NOT "
    "NULL, epochs INTEGER NOT NULL, config_json TEXT NOT NULL, created_at VARCHAR(32) NOT NULL, "
    "updated_at VARCHAR(32) NOT NULL, PRIMARY KEY (id), UNIQUE (name))",
    "CREATE TABLE runs (id INTEGER NOT NULL, study VARCHAR(200), task VARCHAR(100) NOT NULL, "
    "model VARCHAR(100) NOT NULL, activation VARCHAR(255) NOT NULL, seed INTEGER NOT NULL, "
    "epochs INTEGER NOT NULL, config_hash VARCHAR(16) NOT NULL, config_json TEXT NOT NULL, "
    "status VARCHAR(16) NOT NULL, metric_name VARCHAR(64), metric_value FLOAT, higher_is_better "
    "BOOLEAN, history_json TEXT, trajectories_json TEXT, run_config_json TEXT, seconds FLOAT, "
    "wall_seconds FLOAT, host VARCHAR(255), pid INTEGER, started_at VARCHAR(32), finished_at "
    "VARCHAR(32), error TEXT, versions_json TEXT, PRIMARY KEY (id), CONSTRAINT uq_runs_key "
    "UNIQUE (task, model, activation, seed, epochs, config_hash))",
    "CREATE TABLE claims (run_key VARCHAR(32) NOT NULL, token VARCHAR(32) NOT NULL, study "
    "VARCHAR(200), label VARCHAR(300), host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL, "
    "claimed_at FLOAT NOT NULL, heartbeat FLOAT NOT NULL, PRIMARY KEY (run_key))",
    "INSERT INTO runs (task, model, activation, seed, epochs, config_hash, config_json, status, "
    "metric_value) VALUES ('digits-mlp', 'mlp', 'gelu', 0, 3, 'abc', '{}', 'finished', 0.97)",
]  # the results tables of actlab before the prefix, with one finished run


def test_old_results_store_as_storage_is_migrated_and_kept(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    _sqlite(db, *OLD_DDL)  # `studies` here is actlab's: it used to crash Optuna
    check_storage(str(db))  # checking writes nothing
    assert "runs" in {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    res = run_search("curve:gelu", "random", budget=3, study="s", storage=db, pipeline=FAST)
    assert len(res.records) >= 3
    with ResultsStore(db, read_only=True) as store:
        assert [r.metric_value for r in store.all_records()] == [0.97]  # the old run survived


def test_store_written_beside_a_crashed_shared_file_is_usable(tmp_path: Path) -> None:
    """The old version crashed after the search on ``--storage x.db --db x.db``, leaving
    Optuna's ``studies`` next to its own ``runs`` and ``claims``: both now open."""
    db = tmp_path / "x.db"
    run_search("curve:gelu", "random", budget=2, study="s", storage=db, pipeline=FAST)
    _sqlite(db, *OLD_DDL[1:])
    with ResultsStore(db) as store:
        assert [r.metric_value for r in store.all_records()] == [0.97]
    assert len(SearchStudy("s", str(db)).records()) >= 2


def test_search_cli_with_one_file_for_storage_and_db(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reported crash, end to end: a real (one-step) search then its re-evaluation."""
    monkeypatch.chdir(tmp_path)
    args = [
        "search",
        "--task",
        "digits-mlp",
        "--budget",
        "1",
        "--max-steps",
        "1",
        "--top",
        "1",
        "--final-seeds",
        "1",
        "--no-report",
        "--quiet",
        "--storage",
        "x.db",
        "--db",
        "x.db",
    ]
    assert main(args) == 0, capsys.readouterr().err
    assert "re-evaluation with fresh seeds" in capsys.readouterr().out
    with ResultsStore(tmp_path / "x.db", read_only=True) as store:
        assert len(store.all_records()) == 4


# -- read-only storages, as an unprivileged user --------------------------------------------

_RO_SCRIPT = r"""
import json, sys
from actlab.cli import main
out = {}
for i, storage in enumerate(sys.argv[1:-1]):
    sys.stderr = open(sys.argv[-1], "w")
    rc = main(["search", "--task", "curve:gelu", "--budget", "2", "--no-final", "--no-report",
               "--quiet", "--storage", storage])
    sys.stderr.close()
    sys.stderr = sys.__stderr__
    out[storage] = [rc, open(sys.argv[-1]).read()]
print(json.dumps(out))
"""


def test_read_only_storages_are_refused_without_writing() -> None:
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file read-only")
    prefix = (
        []
        if os.geteuid() != 0
        else [str(shutil.which("setpriv")), "--reuid=65534", "--regid=65534", "--clear-groups"]
    )
    base = Path(tempfile.mkdtemp(prefix="actlab-ro-"))
    try:
        base.chmod(0o777)
        folder = base / "rofolder"
        folder.mkdir()
        files = [base / "ro.db", base / "ro.journal", folder / "in.db", folder / "in.journal"]
        for f in files:
            SearchStudy("s", str(f)).close()
            f.chmod(0o444 if f.parent == base else 0o666)
        new_in_folder = folder / "new.db"
        folder.chmod(0o555)
        err = base / "err.txt"
        err.touch()
        err.chmod(0o666)

        def snapshot() -> dict[str, bytes]:
            return {str(p): p.read_bytes() if p.is_file() else b"" for p in base.rglob("*")
                    if p != err}  # fmt: skip

        before = snapshot()
        args = [str(f) for f in (*files, new_in_folder)]
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", _RO_SCRIPT, *args, str(err)],
            capture_output=True,
            text=True,
            cwd=str(base),
            timeout=300,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        for storage, (rc, text) in out.items():
            assert rc == 2, (storage, text)
            line = text.strip()
            assert line.startswith("actlab search: error: study storage") and "read-only" in line
            assert len(line.splitlines()) == 1 and Path(storage).name in line
        assert snapshot() == before  # nothing written, no journal lock or -wal file created
    finally:
        for p in (base, *base.rglob("*")):
            if p.is_dir():
                p.chmod(0o777)
        shutil.rmtree(base, ignore_errors=True)
