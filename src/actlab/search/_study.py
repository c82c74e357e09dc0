"""Studies that never lose work: every candidate is a trial in an Optuna storage.

    open_storage(None)                      -> SQLite file actlab-search.db (heartbeats on)
    open_storage("runs/s.db")               -> SQLite file runs/s.db
    open_storage("postgresql://h/db")       -> any SQLAlchemy URL (RDBStorage)
    open_storage("runs/s.journal")          -> Optuna JournalStorage file (many local writers)
    open_storage("memory")                  -> in memory (tests)

A trial's user attributes hold the candidate (``formula``, ``hash``, and ``candidate``:
origin, parents, funnel level, meta), the process that holds it (``worker``: host, pid)
and, once evaluated, the result (``result``: status, stage, reason, quality, cost, units,
proxies, extra; plus ``stage`` and ``reason`` on their own). Few attributes = few
transactions: each is one commit. States: ``COMPLETE`` (value = quality), ``PRUNED`` (rejected by a
stage), ``FAIL`` with a result (the evaluation raised), ``FAIL`` without one (its process died),
``RUNNING`` (in flight) and ``WAITING`` (re-queued).

Dead workers: RDB storages get Optuna's heartbeat (``heartbeat_interval``, ``grace_period``)
with :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`, so a stale trial is failed
and re-created as ``WAITING`` with the same candidate; other storages get the same through
a heartbeat system attribute. In addition a ``RUNNING`` trial whose holder process ran on
this host and no longer exists is reclaimed at once (no need to wait out the grace period
after a crash), and a RUNNING trial left without holder or candidate (its process was
killed while creating it) is failed after the grace period; one without a candidate is not
re-queued. The search loop claims ``WAITING`` trials before asking for new candidates.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from actlab._proc import pid_alive
from actlab.executors import Heartbeat
from actlab.search._candidate import Candidate, EvalResult

__all__ = [
    "DEFAULT_STORAGE",
    "SearchStudy",
    "TrialRecord",
    "check_storage",
    "open_storage",
    "storage_url",
]

DEFAULT_STORAGE = "actlab-search.db"
_HB_ATTR = "actlab_heartbeat"


def storage_url(storage: str | os.PathLike[str] | None) -> str:
    """The URL (or ``journal:PATH`` / ``memory``) a storage argument stands for."""
    s = str(storage) if storage is not None else DEFAULT_STORAGE
    if s in ("memory", ":memory:"):
        return "memory"
    if "://" in s:
        return s
    if s.startswith("journal:"):
        return "journal:" + str(Path(s[len("journal:") :]).expanduser().resolve())
    path = Path(s).expanduser()
    if path.suffix in (".journal", ".log", ".jsonl"):
        return "journal:" + str(path.resolve())
    return "sqlite:///" + str(path.resolve())


def display_storage(storage: Any) -> str:
    """What to print for a storage argument: its URL with any password masked, or the type
    of a storage object."""
    if storage is not None and not isinstance(storage, (str, os.PathLike)):
        return type(storage).__name__
    from actlab.bench.store import mask_url

    url = storage_url(storage)
    return mask_url(url) if "://" in url else url


def open_storage(
    storage: str | os.PathLike[str] | None = None,
    *,
    heartbeat_interval: int = 10,
    grace_period: int | None = None,
    max_retry: int = 3,
) -> Any:
    """An Optuna storage for ``storage`` (see the module docstring).

    The storage is checked before Optuna touches it: a folder, a text or damaged file, a
    read-only file or folder, a URL of an unknown database type or without its driver, a
    file whose tables are not Optuna's raise a one-line :class:`~actlab.bench.store.DatabaseError`
    (``FileNotFoundError`` for a missing folder) naming it (password masked) and the fix,
    and nothing is written. A results database of actlab before the ``actlab_`` table prefix
    (whose ``studies`` table clashed with Optuna's) is migrated first.
    """
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    url = storage_url(storage)
    if url == "memory":
        return optuna.storages.InMemoryStorage()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal:") :])
        _check_journal(path)
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except (OSError, ValueError) as e:
            raise _storage_error(e, str(path)) from None
    _check_rdb(url)
    try:
        with warnings.catch_warnings(), _schema_lock(url):
            warnings.simplefilter("ignore")  # heartbeat arguments are flagged experimental
            rdb = optuna.storages.RDBStorage(
                url,
                engine_kwargs={"connect_args": {"timeout": 60}}
                if url.startswith("sqlite")
                else None,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=retry,
            )
    except Exception as e:  # a missing driver, an old schema, any SQLAlchemy error
        storage_kinds = (ImportError, RuntimeError, optuna.exceptions.OptunaError)
        if isinstance(e, storage_kinds) or type(e).__module__.startswith("sqlalchemy"):
            raise _storage_error(e, url) from None
        raise
    if url.startswith("sqlite:"):
        _fast_sqlite(rdb.engine)
    return rdb


_WHAT, _FLAG = "study storage", "--storage"


@contextlib.contextmanager
def _schema_lock(url: str) -> Iterator[None]:
    """Optuna creates its tables when the storage opens: on PostgreSQL, processes starting
    together on an empty database take turns (see :func:`actlab.bench.store.schema_lock`)."""
    if not url.startswith("postgresql"):
        yield
        return
    from sqlalchemy import create_engine

    from actlab.bench.store import schema_lock

    engine = create_engine(url)
    try:
        with schema_lock(engine):
            yield
    finally:
        engine.dispose()


def _storage_error(exc: BaseException, where: str) -> Exception:
    from actlab.bench.store import database_error

    return database_error(exc, where, what=_WHAT, flag=_FLAG)


def _check_journal(path: Path) -> None:
    """Refuse a folder, a file that is no Optuna journal, a read-only file or folder."""
    import json

    from actlab.bench.store import DatabaseError, describe_bytes

    if path.is_dir():
        raise DatabaseError(
            f"{_WHAT} {path} is a folder, not a journal file; pass a file path with {_FLAG}"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} of the journal file does not exist")
    if path.exists():
        try:
            with open(path, "rb") as f:
                head = f.read(65536)
        except OSError as e:
            raise DatabaseError(
                f"{_WHAT} {path} cannot be read ({e.strerror or e}); fix its "
                f"permissions or pass another {_FLAG}"
            ) from None
        first = head.split(b"\n", 1)[0]
        try:
            ok = head == b"" or "op_code" in json.loads(first)
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise DatabaseError(
                f"{_WHAT} {path} is not an Optuna journal file (the file is "
                f"{describe_bytes(head)}); pass a new path with {_FLAG}"
            )
        if not os.access(path, os.W_OK):
            raise DatabaseError(
                f"{_WHAT} {path} is read-only (no write permission); make it "
                f"writable (chmod u+w) or pass another {_FLAG}"
            )
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise DatabaseError(
            f"{_WHAT} {path} is in a read-only folder {path.parent} "
            f"(the journal takes a lock file beside it); make it writable or "
            f"pass another {_FLAG}"
        )


def check_storage(storage: str | os.PathLike[str] | None) -> str:
    """Check ``storage`` as :func:`open_storage` would, creating and writing nothing; returns
    its URL with any password masked. Raises ``DatabaseError`` / ``FileNotFoundError``."""
    from actlab.bench.store import mask_url

    url = storage_url(storage)
    if url.startswith("journal:"):
        _check_journal(Path(url[len("journal:") :]))
    elif url != "memory":
        _check_rdb(url, migrate=False)
    return mask_url(url) if "://" in url else url


def _check_rdb(url: str, *, migrate: bool = True) -> None:
    """Check an RDB storage URL before Optuna opens it (nothing is written unless an old
    actlab results store must be migrated out of the way of Optuna's ``studies`` table)."""
    from sqlalchemy import create_engine, inspect

    from actlab.bench.store import (
        DatabaseError,
        ResultsStore,
        check_sqlite_file,
        check_url,
        mask_url,
        readonly_sqlite_creator,
        sqlite_file,
    )

    path = sqlite_file(url)
    if path is not None:
        if not path.parent.is_dir():
            raise FileNotFoundError(f"folder {path.parent} of the study database does not exist")
        check_sqlite_file(path, what=_WHAT, flag=_FLAG, write=True)
        if not path.exists() or path.stat().st_size == 0:
            return
        engine = create_engine(f"sqlite:///{path}", creator=readonly_sqlite_creator(path))
    else:
        check_url(url, what=_WHAT, flag=_FLAG)
        engine = create_engine(url)
    try:
        insp = inspect(engine)
        tables = set(insp.get_table_names())
        cols = {t: {c["name"] for c in insp.get_columns(t)} for t in tables & _optuna_keys().keys()}
    except Exception as e:  # noqa: BLE001 -- driver errors: one line naming the storage
        raise _storage_error(e, url) from None
    finally:
        engine.dispose()
    legacy = {"name", "activations_json", "seeds_json"} <= cols.get("studies", set())
    if legacy:  # an actlab results store of before the table prefix: move its tables aside
        if migrate:
            ResultsStore(url).close()
        cols.pop("studies")
    for table, have in cols.items():
        if not _optuna_keys()[table] <= have:
            raise DatabaseError(
                f"{_WHAT} {mask_url(url)} has a table {table!r} that is not "
                f"Optuna's (it belongs to another program); pass another {_FLAG}"
            )


def _optuna_keys() -> dict[str, set[str]]:
    """Optuna's RDB tables and their primary-key columns (stable across schema versions)."""
    try:
        from optuna.storages._rdb.models import BaseModel
    except ImportError:  # pragma: no cover - a future Optuna layout
        return {"studies": {"study_id"}, "trials": {"trial_id"}}
    tables = BaseModel.metadata.sorted_tables
    return {t.name: {c.name for c in t.primary_key.columns} for t in tables}


def _fast_sqlite(engine: Any) -> None:
    """WAL journal + synchronous=NORMAL: a commit no longer waits for an fsync (13 ms each
    here), and a killed process still loses no committed trial (only an OS crash could)."""
    from sqlalchemy import event

    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened while creating the tables lack the pragmas


@dataclass
class TrialRecord:
    """One stored trial with a candidate; ``result`` is None while unfinished."""

    number: int
    trial_id: int
    state: str
    candidate: Candidate
    result: EvalResult | None
    start: float  # unix time the trial was created


def _candidate(attrs: dict[str, Any]) -> Candidate:
    return Candidate.from_attrs({**(attrs.get("candidate") or {}), "formula": attrs["formula"]})


class SearchStudy:
    """The Optuna study of one search: create/load, record, heartbeat, reclaim dead trials."""

    def __init__(
        self,
        name: str,
        storage: Any,
        *,
        higher_is_better: bool = True,
        attrs: dict[str, Any] | None = None,
        grace_period: float | None = None,
        max_retry: int = 3,
    ) -> None:
        import optuna

        self.storage = (
            storage
            if not isinstance(storage, (str, os.PathLike)) and storage is not None
            else open_storage(storage)
        )
        direction: Literal["maximize", "minimize"] = "maximize" if higher_is_better else "minimize"
        try:
            self.study = optuna.create_study(
                study_name=name, storage=self.storage, direction=direction, load_if_exists=True
            )
        except Exception as e:  # a damaged database or journal: one line naming it
            storage_kinds = (OSError, ValueError, optuna.exceptions.StorageInternalError)
            if not isinstance(e, storage_kinds) and not type(e).__module__.startswith("sqlalchemy"):
                raise
            named = isinstance(storage, (str, os.PathLike)) or storage is None
            where = storage_url(storage) if named else type(self.storage).__name__
            raise _storage_error(e, where.removeprefix("journal:")) from None
        if self.study.direction.name.lower() != direction:
            raise ValueError(
                f"study {name!r} exists with direction {self.study.direction.name.lower()}"
                f" but this search needs {direction}; use another --study name"
            )
        self.name = name
        self.study_id = self.storage.get_study_id_from_name(name)
        old = self.study.user_attrs
        for key, value in (attrs or {}).items():
            if key in old and old[key] != value and key in ("task", "metric", "levels", "kernel"):
                raise ValueError(
                    f"study {name!r} was created with {key}={old[key]!r}, not "
                    f"{value!r}; use another --study name or the same {key}"
                )
            if key not in old:
                self.study.set_user_attr(key, value)
        interval = self._hb_interval()
        self.grace = (
            grace_period if grace_period is not None else (2 * interval if interval else 60.0)
        )
        self.max_retry = max_retry
        self.host, self.pid = socket.gethostname(), os.getpid()
        self._held: Heartbeat[int] = Heartbeat(self._beat_all)  # in-flight trial ids

    # ------------------------------------------------------------------ reading
    def _hb_interval(self) -> float | None:
        get = getattr(self.storage, "get_heartbeat_interval", None)
        return float(get()) if callable(get) and get() else None

    @contextlib.contextmanager
    def creating(self) -> Iterator[None]:
        """Make "is this candidate known? if not, create its trial" atomic between processes
        sharing a PostgreSQL study: a session-level advisory lock keyed by the study name is
        held around it, so two workers never both start the same new candidate. SQLite and
        journal storages get nothing here (two processes may then evaluate one candidate
        twice within the refresh window, as the loop's docstring says)."""
        engine = getattr(self.storage, "engine", None)
        if engine is None or engine.dialect.name != "postgresql":
            yield
            return
        import hashlib

        from sqlalchemy import text

        digest = hashlib.sha256(f"actlab-search:{self.study.study_name}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()

    def records(self) -> list[TrialRecord]:
        """Every trial that holds a candidate, in trial-number order."""
        out = []
        for t in self.storage.get_all_trials(self.study_id, deepcopy=False):
            if "formula" not in t.user_attrs:
                continue
            res = t.user_attrs.get("result")
            out.append(
                TrialRecord(
                    t.number,
                    t._trial_id,
                    t.state.name,
                    _candidate(t.user_attrs),
                    EvalResult.from_attrs(res) if isinstance(res, dict) else None,
                    t.datetime_start.timestamp() if t.datetime_start else 0.0,
                )
            )
        return out

    def get_attr(self, key: str, default: Any = None) -> Any:
        return self.storage.get_study_user_attrs(self.study_id).get(key, default)

    def set_attr(self, key: str, value: Any) -> None:
        self.storage.set_study_user_attr(self.study_id, key, value)

    # ------------------------------------------------------------------ writing
    def _own(self, trial_id: int, attrs: dict[str, Any]) -> None:
        # holder and heartbeat first: a process killed while writing the candidate still
        # leaves a trial that reclaim() recognises as dead. The first beat (which inserts the
        # trial's heartbeat row) comes before the heartbeat thread may beat it: two inserts at
        # once fail on PostgreSQL (unique trial_id), where SQLite would serialise them
        self._beat(trial_id)
        self._held.add(trial_id)
        for k, v in {"worker": {"host": self.host, "pid": self.pid}, **attrs}.items():
            self.storage.set_trial_user_attr(trial_id, k, v)

    def create(self, candidate: Candidate) -> int:
        """A new RUNNING trial holding ``candidate``; returns its trial id."""
        trial_id = self.storage.create_new_trial(self.study_id)
        a = candidate.to_attrs()
        packed = {"formula": a.pop("formula"), "hash": a.pop("hash"), "candidate": a}
        self._own(trial_id, packed)
        return int(trial_id)

    def claim_waiting(self) -> tuple[int, Candidate] | None:
        """Claim one re-queued (WAITING) trial, if any: ``(trial id, its candidate)``."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        for t in self.storage.get_all_trials(
            self.study_id, deepcopy=False, states=(TrialState.WAITING,)
        ):
            if "formula" not in t.user_attrs:
                continue
            try:
                if not self.storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                    continue
            except UpdateFinishedTrialError:
                continue
            self._own(t._trial_id, {})
            return int(t._trial_id), _candidate(t.user_attrs)
        return None

    def finish(self, trial_id: int, result: EvalResult) -> None:
        """Store ``result`` and close the trial (COMPLETE / PRUNED / FAIL)."""
        from optuna.trial import TrialState

        a = result.to_attrs()
        for k, v in {"stage": a["stage"], "reason": a["reason"], "result": a}.items():
            self.storage.set_trial_user_attr(trial_id, k, v)
        if result.ok:
            self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [result.quality])
        elif result.status == "rejected":
            self.storage.set_trial_state_values(trial_id, TrialState.PRUNED)
        else:
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        self._held.discard(trial_id)

    def requeue(self, trial_id: int) -> None:
        """Fail a trial whose worker died and re-queue its candidate (as a stale trial is)."""
        import optuna
        from optuna.storages import RetryHeartbeatStaleTrialCallback
        from optuna.trial import TrialState

        self._held.discard(trial_id)
        try:
            if self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    retry = RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)
                retry(self.study, self.storage.get_trial(trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    # ------------------------------------------------------------------ heartbeats
    def _beat(self, trial_id: int) -> None:
        if self._hb_interval():
            self.storage.record_heartbeat(trial_id)
        else:
            self.storage.set_trial_system_attr(trial_id, _HB_ATTR, time.time())

    def _beat_all(self, trial_ids: list[int]) -> None:
        for tid in trial_ids:
            try:
                self._beat(tid)
            except Exception:  # noqa: BLE001 -- a missed beat is retried next time
                pass

    def start_heartbeat(self, interval: float | None = None) -> None:
        """Beat for every in-flight trial every ``interval`` s (default: the storage's or 10),
        with the heartbeat of :mod:`actlab.executors` (compare's claims use the same)."""
        self._held.start(interval or self._hb_interval() or 10.0)

    def close(self) -> None:
        self._held.stop()

    # ------------------------------------------------------------------ dead workers
    def reclaim(self) -> list[int]:
        """Fail the RUNNING trials of dead processes and re-queue them; returns their numbers."""
        import optuna
        from optuna.storages import RetryHeartbeatStaleTrialCallback
        from optuna.trial import TrialState

        before = {t.number for t in self._running()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna flags these helpers as experimental
            optuna.storages.fail_stale_trials(self.study)  # RDB heartbeats (+ re-queue callback)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=self.max_retry)
        now = time.time()
        for t in self._running():
            if t._trial_id in self._held:
                continue
            worker = t.user_attrs.get("worker") or {}
            host, pid = worker.get("host"), worker.get("pid")
            dead = host == self.host and isinstance(pid, int) and not pid_alive(pid)
            beat = t.system_attrs.get(_HB_ATTR)
            stale = (
                not self._hb_interval()
                and isinstance(beat, (int, float))
                and now - beat > self.grace
            )
            started = t.datetime_start.timestamp() if t.datetime_start else now
            orphan = (pid is None or "formula" not in t.user_attrs) and now - started > self.grace
            if dead or stale or orphan:
                try:
                    if not self.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                        continue
                    if "formula" in t.user_attrs:  # a trial killed before its candidate was
                        retry(self.study, self.storage.get_trial(t._trial_id))  # written is dropped
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass
        after = {t.number for t in self._running()}
        return sorted(before - after)

    def _running(self) -> Iterable[Any]:
        from optuna.trial import TrialState

        return list(
            self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.RUNNING,))
        )
