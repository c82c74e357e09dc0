"""The results store: every comparison run in a real database (SQLAlchemy 2 Core).

    store = ResultsStore("results.sqlite")          # a file path: SQLite
    store = ResultsStore("postgresql://u@h/db")     # or any SQLAlchemy URL
    store = ResultsStore("results.sqlite", read_only=True)   # read a store you cannot write

Tables (prefixed ``actlab_`` so that one file can also hold an Optuna study storage, whose
``studies`` table is a different one: ``actlab search --storage x.db --db x.db`` works)
    ``actlab_studies``  one row per named comparison (its task, model, activations, seeds,
                        config).
    ``actlab_runs``     one row per finished or failed run, unique on
                        ``(task, model, activation, seed, epochs, config_hash)``.
    ``actlab_claims``   one row per run in progress: owner host/pid, a random token, a
                        heartbeat.

A store written by actlab 0.x before the prefix (tables ``studies``, ``runs``, ``claims``
with these columns) is migrated when opened for writing (the tables are renamed in one
transaction; an older actlab still writing to the same file would then recreate empty
old tables, so stop it first) and read as it is when opened read-only. A table named like ours with
other columns is refused, and so is anything that is not a database: every problem found when the
database is opened -- a text file, a folder, a damaged file, a read-only file or folder, an
unknown URL scheme, a missing driver -- raises :class:`DatabaseError`, one line naming the
database (passwords masked) and the fix; nothing is written before the checks pass.

Crash safety: a run's row is written once, when the run ends, in a single transaction that
also drops its claim, so a killed process leaves at most a claim, never a half result. A
claim is stale -- and can be taken over -- when its heartbeat is older than ``stale_after``
seconds or its owner process (on this host) is gone. Failed runs are stored with their error
and are retried by the next comparison that asks for them; finished runs are never rerun.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError

from actlab._proc import pid_alive
from actlab.bench.plan import DEFAULT_DB, RunSpec

__all__ = [
    "DEFAULT_DB",
    "TABLE_PREFIX",
    "DatabaseError",
    "ResultsStore",
    "RunRecord",
    "check_results_db",
    "check_sqlite_file",
    "check_url",
    "database_error",
    "describe_bytes",
    "mask_url",
    "readonly_sqlite_creator",
    "schema_lock",
    "sqlite_file",
]

FINISHED, FAILED = "finished", "failed"
TABLE_PREFIX = "actlab_"
WHAT = "results database"


class DatabaseError(ValueError):
    """A database that cannot be opened or used; the message is one line naming it and the
    fix (the CLI prints it as ``actlab <cmd>: error: ...``, exit status 2)."""


def _tables(md: MetaData, prefix: str) -> tuple[Table, Table, Table]:
    studies = Table(
        f"{prefix}studies",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(200), nullable=False, unique=True),
        Column("task", String(100), nullable=False),
        Column("model", String(100), nullable=False),
        Column("activations_json", Text, nullable=False),
        Column("seeds_json", Text, nullable=False),
        Column("epochs", Integer, nullable=False),
        Column("config_json", Text, nullable=False),
        Column("created_at", String(32), nullable=False),
        Column("updated_at", String(32), nullable=False),
    )
    runs = Table(
        f"{prefix}runs",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("study", String(200)),
        Column("task", String(100), nullable=False),
        Column("model", String(100), nullable=False),
        Column("activation", String(255), nullable=False),
        Column("seed", Integer, nullable=False),
        Column("epochs", Integer, nullable=False),
        Column("config_hash", String(16), nullable=False),
        Column("config_json", Text, nullable=False),
        Column("status", String(16), nullable=False),
        Column("metric_name", String(64)),
        Column("metric_value", Float),
        Column("higher_is_better", Boolean),
        Column("history_json", Text),
        Column("trajectories_json", Text),
        Column("run_config_json", Text),
        Column("seconds", Float),
        Column("wall_seconds", Float),
        Column("host", String(255)),
        Column("pid", Integer),
        Column("started_at", String(32)),
        Column("finished_at", String(32)),
        Column("error", Text),
        Column("versions_json", Text),
        UniqueConstraint(
            "task",
            "model",
            "activation",
            "seed",
            "epochs",
            "config_hash",
            name=f"uq_{prefix}runs_key",
        ),
    )
    claims = Table(
        f"{prefix}claims",
        md,
        Column("run_key", String(32), primary_key=True),
        Column("token", String(32), nullable=False),
        Column("study", String(200)),
        Column("label", String(300)),
        Column("host", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("claimed_at", Float, nullable=False),
        Column("heartbeat", Float, nullable=False),
    )
    return studies, runs, claims


metadata = MetaData()
studies, runs, claims = _tables(metadata, TABLE_PREFIX)
_legacy_metadata = MetaData()
_LEGACY = dict(zip(("studies", "runs", "claims"), _tables(_legacy_metadata, ""), strict=True))
_CURRENT = {"studies": studies, "runs": runs, "claims": claims}


def utc_now() -> str:
    """Current UTC time as ISO-8601 text (seconds precision)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class RunRecord:
    """One stored run: its spec, outcome and everything needed for the report."""

    spec: RunSpec
    status: str
    metric_name: str | None = None
    metric_value: float | None = None
    higher_is_better: bool | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    trajectories: dict[str, list[Any]] = field(default_factory=dict)
    run_config: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    wall_seconds: float | None = None
    host: str | None = None
    pid: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    study: str | None = None

    @property
    def ok(self) -> bool:
        value = self.metric_value
        return self.status == FINISHED and value is not None and math.isfinite(value)


def _url(db: str | Path) -> str:
    text = str(db)
    if "://" in text:
        return text
    if text == ":memory:":
        raise ValueError(
            "an in-memory database cannot be shared with worker processes; give a file path"
        )
    path = Path(text).expanduser().resolve()
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"results database folder {path.parent} does not exist; create it or pass --db"
        )
    return f"sqlite:///{path}"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


# -- database checks and errors (shared with the Optuna storage of actlab.search) -----------
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*:)[^@\s]*@")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 -- not parseable: mask by pattern
        return _PASSWORD.sub(r"\1***@", url)


def _scrub(message: str, url: str | None = None) -> str:
    """The first line of ``message`` with passwords (of ``url`` or any URL in it) masked."""
    line = next((ln.strip() for ln in message.splitlines() if ln.strip()), "")
    if url:
        try:
            pw = make_url(url).password
        except Exception:  # noqa: BLE001
            pw = None
        if pw:
            line = line.replace(str(pw), "***")
    return _PASSWORD.sub(r"\1***@", line)


def describe_bytes(head: bytes) -> str:
    """What the first bytes of a file look like (for an error message)."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip data"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data"
    return "binary data" if b"\x00" in head else "a text file"


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL; None for other dialects, memory and ``file:`` URIs."""
    try:
        u = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return None
    db = u.database
    if not u.drivername.startswith("sqlite") or not db or db == ":memory:":
        return None
    if db.startswith("file:") or u.query.get("uri"):
        return None
    return Path(db).expanduser().resolve()


def readonly_sqlite_creator(path: Path) -> Any:
    """A ``creator`` for :func:`sqlalchemy.create_engine` opening ``path`` read-only."""
    with open(path, "rb") as f:
        uri = _ro_uri(path, f.read(100))
    return lambda: sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False)


def _ro_uri(path: Path, head: bytes) -> str:
    """A read-only SQLite URI for ``path`` that creates no file beside it.

    A reader of a WAL database normally creates ``-wal`` and ``-shm`` files (and cannot open
    it at all in a folder it may not write). When no ``-wal`` file exists the database file
    holds every committed row, so it is opened ``immutable`` (a snapshot: no locks, no side
    files); with a ``-wal`` file (a writer is active) it is opened ``mode=ro``.
    """
    uri = f"file:{quote(str(path))}?mode=ro"
    wal = len(head) > 18 and head[18] == 2
    side = path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")
    if wal and (
        not side[0].exists()
        or (not side[1].exists() and not os.access(path.parent, os.W_OK | os.X_OK))
    ):
        uri += "&immutable=1"
    return uri


def check_sqlite_file(path: Path, *, what: str, flag: str, write: bool) -> None:
    """Raise :class:`DatabaseError` unless ``path`` can be used as a SQLite database.

    Nothing is created or written: a missing file is fine when its folder exists (and is
    writable if ``write``); an existing one must be a readable, undamaged SQLite database,
    writable (file and folder: SQLite writes its journal beside it) if ``write``.
    """
    folder = path.parent
    if path.is_dir():
        raise DatabaseError(
            f"{what} {path} is a folder, not a database file; pass a file path with {flag}"
        )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{what} folder {folder} does not exist; create it or pass another {flag}"
        )
    if path.exists():
        try:
            with open(path, "rb") as f:
                head = f.read(100)
        except OSError as e:
            raise DatabaseError(
                f"{what} {path} cannot be read ({e.strerror or e}); fix its permissions or "
                f"pass another {flag}"
            ) from None
        if head and not head.startswith(_SQLITE_MAGIC):
            raise DatabaseError(
                f"{what} {path} is not a SQLite database (the file is {describe_bytes(head)}); "
                f"pass a new path with {flag}"
            )
        if head:
            try:
                con = sqlite3.connect(_ro_uri(path, head), uri=True, timeout=60)
                try:
                    con.execute("SELECT name, sql FROM sqlite_master").fetchall()
                finally:
                    con.close()
            except sqlite3.Error as e:
                raise DatabaseError(
                    f"{what} {path} is a damaged SQLite database ({_scrub(str(e))}); restore "
                    f"it from a backup or pass a new path with {flag}"
                ) from None
    if not write:
        if not path.exists():
            raise FileNotFoundError(f"{what} {path} does not exist; pass an existing {flag}")
        return
    if path.exists() and not os.access(path, os.W_OK):
        raise DatabaseError(
            f"{what} {path} is read-only (no write permission); make it writable "
            f"(chmod u+w) or pass another {flag}"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise DatabaseError(
            f"{what} {path} is in a read-only folder {folder} (SQLite writes its journal beside "
            f"the database); make the folder writable or pass another {flag}"
        )


def database_error(
    exc: BaseException, url: str | None, *, what: str = WHAT, flag: str = "--db"
) -> DatabaseError:
    """A one-line :class:`DatabaseError` for an error a database driver raised."""
    inner = getattr(exc, "orig", None) or exc.__cause__ or exc
    msg = _scrub(str(inner) or type(inner).__name__, url)
    low = msg.lower()
    if "readonly" in low or "read-only" in low or "permission denied" in low:
        hint = f"make it (and its folder) writable or pass another {flag}"
    elif "locked" in low:
        hint = "another process holds it locked; try again"
    elif "malformed" in low or "not a database" in low:
        hint = f"restore it from a backup or pass a new path with {flag}"
    elif "unable to open" in low:
        hint = f"check that its folder exists and is writable, or pass another {flag}"
    else:
        hint = f"check it, or pass another {flag}"
    where = mask_url(url) if url else "database"
    return DatabaseError(f"{what} {where}: {msg}; {hint}")


def check_url(url: str, *, what: str, flag: str) -> None:
    """Refuse URLs SQLAlchemy cannot parse, unknown dialects and missing drivers."""
    try:
        u = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise DatabaseError(
            f"{what} {mask_url(url)!r} is not a database URL; give a file path or a URL such "
            f"as sqlite:///results.db or postgresql://user@host/db with {flag}"
        ) from None
    try:
        u.get_dialect()
    except NoSuchModuleError:
        raise DatabaseError(
            f"{what} {mask_url(url)}: unknown database type {u.drivername!r}; use a file "
            f"path, sqlite:///PATH or another SQLAlchemy URL (postgresql://, mysql://) with {flag}"
        ) from None
    try:
        u.get_dialect().import_dbapi()
    except ImportError as e:
        raise DatabaseError(
            f"{what} {mask_url(url)}: the driver for {u.drivername} is not installed ({e}); "
            f"install it or pass another {flag}"
        ) from None


def _schema(engine: Engine, *, what: str, flag: str) -> dict[str, str]:
    """Which of our tables exist: ``{"runs": "current" | "legacy" | "absent", ...}``.

    Raises :class:`DatabaseError` for a table named like ours (``actlab_runs``, or ``runs``
    and ``claims`` of a store written before the prefix) whose columns are not ours; a
    ``studies`` table may also be Optuna's (a study storage in the same file).
    """
    insp = inspect(engine)
    names = set(insp.get_table_names())
    out: dict[str, str] = {}

    def refuse(name: str, missing: set[str]) -> DatabaseError:
        cols = ", ".join(sorted(missing)[:3])
        return DatabaseError(
            f"{what} {mask_url(str(engine.url))} has a table {name!r} that is not actlab's "
            f"(no column {cols}; another program's database?); pass another {flag}"
        )

    for key, table in _CURRENT.items():
        want = {c.name for c in table.columns}
        if table.name in names:
            have = {c["name"] for c in insp.get_columns(table.name)}
            if not want <= have:
                raise refuse(table.name, want - have)
            out[key] = "current"
            continue
        out[key] = "absent"
        if key in names:
            have = {c["name"] for c in insp.get_columns(key)}
            if want <= have:
                out[key] = "legacy"  # written before the table prefix
            elif not (key == "studies" and {"study_id", "study_name"} <= have):  # not Optuna's
                raise refuse(key, want - have)
    return out


_SCHEMA_LOCK = 0x6163746C  # "actl": the advisory lock key of schema creation


@contextlib.contextmanager
def schema_lock(engine: Engine) -> Iterator[None]:
    """Serialise schema creation between processes opening one PostgreSQL database at once.

    ``CREATE TABLE`` of several processes racing on an empty PostgreSQL database fails with a
    unique violation (``pg_type_typname_nsp_index``); a session-level advisory lock held
    around it makes them take turns. Other databases need none (SQLite serialises writers).
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text(f"SELECT pg_advisory_lock({_SCHEMA_LOCK})"))
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text(f"SELECT pg_advisory_unlock({_SCHEMA_LOCK})"))
            conn.commit()


def check_results_db(db: str | Path, *, write: bool = True) -> str:
    """Check ``db`` as :class:`ResultsStore` would, creating and writing nothing; returns its
    display URL (password masked). Raises :class:`DatabaseError` / ``FileNotFoundError``."""
    url = _url(db)
    path = sqlite_file(url)
    if path is not None:
        check_sqlite_file(path, what=WHAT, flag="--db", write=write)
        if not path.exists() or path.stat().st_size == 0:
            return mask_url(url)
    else:
        check_url(url, what=WHAT, flag="--db")
    store = ResultsStore(db, read_only=True, _probe=True)
    store.close()
    return mask_url(url)


class ResultsStore:
    """Runs, studies and claims in one database; safe to share between processes.

    ``read_only=True`` opens an existing store without writing anything (SQLite: a
    ``mode=ro`` connection, ``immutable`` when no writer is active, and no WAL switch), so
    a store you cannot write can still be read; its writing methods raise
    :class:`DatabaseError`.
    """

    def __init__(
        self,
        db: str | Path = DEFAULT_DB,
        *,
        echo: bool = False,
        read_only: bool = False,
        _probe: bool = False,
    ) -> None:
        self.url = _url(db)
        self.read_only = read_only
        path = sqlite_file(self.url)
        if path is not None:
            if not _probe:
                check_sqlite_file(path, what=WHAT, flag="--db", write=not read_only)
        else:
            check_url(self.url, what=WHAT, flag="--db")
        kwargs: dict[str, Any] = {"echo": echo}
        if path is not None and read_only:
            kwargs["creator"] = readonly_sqlite_creator(path)
        elif self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60}
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except (SQLAlchemyError, ImportError) as e:
            raise database_error(e, self.url) from None
        lock = contextlib.nullcontext() if read_only or _probe else schema_lock(self.engine)
        try:
            with lock:
                self._open(path, probe=_probe)
        except SQLAlchemyError as e:  # taking the lock: the server is down, auth failed, ...
            self.engine.dispose()
            raise database_error(e, self.url) from None
        except BaseException:
            self.engine.dispose()
            raise
        self.host = socket.gethostname()

    def _open(self, path: Path | None, *, probe: bool) -> None:
        try:
            found = _schema(self.engine, what=WHAT, flag="--db")
            self._studies, self._runs, self._claims = (
                _LEGACY[k] if found[k] == "legacy" else _CURRENT[k]
                for k in ("studies", "runs", "claims")
            )
            if probe:
                return
            if self.read_only:
                if found["runs"] == "absent":
                    raise DatabaseError(
                        f"{WHAT} {self.display_url()} holds no actlab results (no table "
                        f"{runs.name!r}); pass the database that actlab compare wrote with --db"
                    )
                return
            legacy = [k for k, v in found.items() if v == "legacy"]
            with self.engine.begin() as conn:
                for key in legacy:  # written before the prefix: migrate (one transaction)
                    conn.execute(text(f"ALTER TABLE {key} RENAME TO {TABLE_PREFIX}{key}"))
            self._studies, self._runs, self._claims = studies, runs, claims
            metadata.create_all(self.engine)
        except DatabaseError:
            raise
        except (SQLAlchemyError, sqlite3.Error) as e:
            raise database_error(e, self.url) from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            self.engine.dispose()  # connections opened so far lack the pragmas

    def _writable(self) -> None:
        if self.read_only:
            raise DatabaseError(
                f"{WHAT} {self.display_url()} is opened read-only; open it with "
                "ResultsStore(db) (read_only=False) to write"
            )

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def display_url(self) -> str:
        """The URL with any password masked (safe to print or put in a report)."""
        return self.engine.url.render_as_string(hide_password=True)

    # -- studies -----------------------------------------------------------------------------
    def save_study(
        self,
        name: str,
        *,
        task: str,
        model: str,
        activations: Sequence[str],
        seeds: Sequence[int],
        epochs: int,
        config: dict[str, Any],
    ) -> None:
        """Create or update the study ``name``."""
        self._writable()
        values = {
            "task": task,
            "model": model,
            "activations_json": _dumps(list(activations)),
            "seeds_json": _dumps(list(seeds)),
            "epochs": epochs,
            "config_json": _dumps(config),
            "updated_at": utc_now(),
        }
        with self.engine.begin() as conn:
            found = conn.execute(
                select(self._studies.c.id).where(self._studies.c.name == name)
            ).first()
            if found is None:
                conn.execute(
                    insert(self._studies).values(name=name, created_at=utc_now(), **values)
                )
            else:
                conn.execute(
                    update(self._studies).where(self._studies.c.name == name).values(**values)
                )

    def study(self, name: str) -> dict[str, Any] | None:
        """The study row as a dict (json columns decoded), or None."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(self._studies).where(self._studies.c.name == name))
                .mappings()
                .first()
            )
        if row is None:
            return None
        out = dict(row)
        for col in ("activations_json", "seeds_json", "config_json"):
            out[col.removesuffix("_json")] = json.loads(out.pop(col))
        return out

    # -- runs --------------------------------------------------------------------------------
    def _key_filter(self, spec: RunSpec) -> Any:
        c = self._runs.c
        task, model, act, seed, epochs, chash = spec.key
        return and_(
            c.task == task,
            c.model == model,
            c.activation == act,
            c.seed == seed,
            c.epochs == epochs,
            c.config_hash == chash,
        )

    def _rows_for(self, specs: Sequence[RunSpec]) -> dict[tuple[Any, ...], Any]:
        if not specs:
            return {}
        c = self._runs.c
        out: dict[tuple[Any, ...], Any] = {}
        with self.engine.connect() as conn:
            # one query per (task, model, epochs, config) group, then match keys in Python
            groups = {(s.task, s.model, s.epochs, s.config_hash) for s in specs}
            for task, model, epochs, chash in groups:
                q = select(self._runs).where(
                    c.task == task, c.model == model, c.epochs == epochs, c.config_hash == chash
                )
                for row in conn.execute(q).mappings():
                    key = (row["task"], row["model"], row["activation"], row["seed"])
                    out[key + (row["epochs"], row["config_hash"])] = row
        return out

    def get(self, spec: RunSpec) -> RunRecord | None:
        """The stored record of one run (finished or failed), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(self._runs).where(self._key_filter(spec))).mappings().first()
        return None if row is None else _record(row, spec)

    def records(self, specs: Sequence[RunSpec]) -> list[RunRecord]:
        """Stored records of ``specs`` in the same order; runs never stored are left out."""
        rows = self._rows_for(specs)
        return [_record(rows[s.key], s) for s in specs if s.key in rows]

    def finished(self, specs: Sequence[RunSpec]) -> set[RunSpec]:
        """The subset of ``specs`` that already finished."""
        rows = self._rows_for(specs)
        return {s for s in specs if s.key in rows and rows[s.key]["status"] == FINISHED}

    def all_records(self) -> list[RunRecord]:
        """Every stored run (for exports and tests)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(self._runs).order_by(self._runs.c.id)).mappings().all()
        return [_record(r) for r in rows]

    def record(self, rec: RunRecord, token: str | None = None) -> bool:
        """Store a run result atomically and drop its claim; False if it had already finished.

        A previous *failed* row of the same run is replaced; a *finished* one is kept.
        """
        self._writable()
        spec = rec.spec
        values = {
            "study": rec.study,
            "task": spec.task,
            "model": spec.model,
            "activation": spec.activation,
            "seed": spec.seed,
            "epochs": spec.epochs,
            "config_hash": spec.config_hash,
            "config_json": _dumps(spec.config),
            "status": rec.status,
            "metric_name": rec.metric_name,
            "metric_value": rec.metric_value,
            "higher_is_better": rec.higher_is_better,
            "history_json": _dumps(rec.history),
            "trajectories_json": _dumps(rec.trajectories),
            "run_config_json": _dumps(rec.run_config),
            "seconds": rec.seconds,
            "wall_seconds": rec.wall_seconds,
            "host": rec.host or self.host,
            "pid": rec.pid,
            "started_at": rec.started_at,
            "finished_at": rec.finished_at or utc_now(),
            "error": rec.error,
            "versions_json": _dumps(rec.versions),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(self._runs).where(
                        self._key_filter(spec), self._runs.c.status != FINISHED
                    )
                )
                conn.execute(insert(self._runs).values(**values))
                if token is not None:
                    conn.execute(delete(self._claims).where(self._claims.c.token == token))
        except IntegrityError:
            self.release(token)
            return False
        return True

    # -- claims ------------------------------------------------------------------------------
    def claim(
        self, spec: RunSpec, *, study: str | None = None, stale_after: float = 120.0
    ) -> str | None:
        """Claim a run for this process; returns a token, or None if a live owner holds it."""
        self._writable()
        token, now = uuid.uuid4().hex, time.time()
        row = {
            "run_key": spec.key_hash,
            "token": token,
            "study": study,
            "label": spec.label()[:300],
            "host": self.host,
            "pid": os.getpid(),
            "claimed_at": now,
            "heartbeat": now,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(self._claims).values(**row))
            return token
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            old = (
                conn.execute(select(self._claims).where(self._claims.c.run_key == spec.key_hash))
                .mappings()
                .first()
            )
            if old is None:  # released in between: try once more
                conn.execute(insert(self._claims).values(**row))
                return token
            dead = old["host"] == self.host and not pid_alive(old["pid"])
            if not dead and now - old["heartbeat"] <= stale_after:
                return None
            took = conn.execute(
                update(self._claims)
                .where(
                    self._claims.c.run_key == spec.key_hash, self._claims.c.token == old["token"]
                )
                .values(**row)
            )
            return token if took.rowcount == 1 else None

    def heartbeat(self, tokens: Iterable[str]) -> None:
        """Refresh the heartbeat of the claims held under ``tokens``."""
        self._writable()
        toks = list(tokens)
        if toks:
            with self.engine.begin() as conn:
                conn.execute(
                    update(self._claims)
                    .where(self._claims.c.token.in_(toks))
                    .values(heartbeat=time.time())
                )

    def release(self, token: str | None) -> None:
        """Drop a claim (no-op for None or a claim already taken over)."""
        self._writable()
        if token is not None:
            with self.engine.begin() as conn:
                conn.execute(delete(self._claims).where(self._claims.c.token == token))

    def active_claims(self, stale_after: float = 120.0) -> list[dict[str, Any]]:
        """Claims whose heartbeat is younger than ``stale_after`` seconds."""
        limit = time.time() - stale_after
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(self._claims).where(self._claims.c.heartbeat >= limit))
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def _record(row: Any, spec: RunSpec | None = None) -> RunRecord:
    if spec is None:
        spec = RunSpec(
            row["task"],
            row["model"],
            row["activation"],
            row["seed"],
            row["epochs"],
            json.loads(row["config_json"]),
        )
    return RunRecord(
        spec=spec,
        status=row["status"],
        metric_name=row["metric_name"],
        metric_value=row["metric_value"],
        higher_is_better=row["higher_is_better"],
        history=json.loads(row["history_json"] or "[]"),
        trajectories=json.loads(row["trajectories_json"] or "{}"),
        run_config=json.loads(row["run_config_json"] or "{}"),
        seconds=row["seconds"],
        wall_seconds=row["wall_seconds"],
        host=row["host"],
        pid=row["pid"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        versions=json.loads(row["versions_json"] or "{}"),
        study=row["study"],
    )
