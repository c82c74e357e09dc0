"""The results store: every comparison run in a real database (SQLAlchemy 2 Core).

    store = ResultsStore("results.sqlite")          # a file path: SQLite
    store = ResultsStore("postgresql://u@h/db")     # or any SQLAlchemy URL

Tables
    ``studies``  one row per named comparison (its task, model, activations, seeds, config).
    ``runs``     one row per finished or failed run, unique on
                 ``(task, model, activation, seed, epochs, config_hash)``.
    ``claims``   one row per run in progress: owner host/pid, a random token, a heartbeat.

Crash safety: a run's row is written once, when the run ends, in a single transaction that
also drops its claim, so a killed process leaves at most a claim, never a half result. A
claim is stale -- and can be taken over -- when its heartbeat is older than ``stale_after``
seconds or its owner process (on this host) is gone. Failed runs are stored with their error
and are retried by the next comparison that asks for them; finished runs are never rerun.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from actlab._proc import pid_alive
from actlab.bench.plan import DEFAULT_DB, RunSpec

__all__ = ["ResultsStore", "RunRecord", "DEFAULT_DB"]

FINISHED, FAILED = "finished", "failed"

metadata = MetaData()

studies = Table(
    "studies",
    metadata,
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
    "runs",
    metadata,
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
        "task", "model", "activation", "seed", "epochs", "config_hash", name="uq_runs_key"
    ),
)

claims = Table(
    "claims",
    metadata,
    Column("run_key", String(32), primary_key=True),
    Column("token", String(32), nullable=False),
    Column("study", String(200)),
    Column("label", String(300)),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("claimed_at", Float, nullable=False),
    Column("heartbeat", Float, nullable=False),
)


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


    return True


class ResultsStore:
    """Runs, studies and claims in one database; safe to share between processes."""

    def __init__(self, db: str | Path = DEFAULT_DB, *, echo: bool = False) -> None:
        self.url = _url(db)
        kwargs: dict[str, Any] = {"echo": echo}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60}
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        self.host = socket.gethostname()

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
            found = conn.execute(select(studies.c.id).where(studies.c.name == name)).first()
            if found is None:
                conn.execute(insert(studies).values(name=name, created_at=utc_now(), **values))
            else:
                conn.execute(update(studies).where(studies.c.name == name).values(**values))

    def study(self, name: str) -> dict[str, Any] | None:
        """The study row as a dict (json columns decoded), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(studies).where(studies.c.name == name)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        for col in ("activations_json", "seeds_json", "config_json"):
            out[col.removesuffix("_json")] = json.loads(out.pop(col))
        return out

    # -- runs --------------------------------------------------------------------------------
    def _key_filter(self, spec: RunSpec) -> Any:
        c = runs.c
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
        c = runs.c
        out: dict[tuple[Any, ...], Any] = {}
        with self.engine.connect() as conn:
            # one query per (task, model, epochs, config) group, then match keys in Python
            groups = {(s.task, s.model, s.epochs, s.config_hash) for s in specs}
            for task, model, epochs, chash in groups:
                q = select(runs).where(
                    c.task == task, c.model == model, c.epochs == epochs, c.config_hash == chash
                )
                for row in conn.execute(q).mappings():
                    key = (row["task"], row["model"], row["activation"], row["seed"])
                    out[key + (row["epochs"], row["config_hash"])] = row
        return out

    def get(self, spec: RunSpec) -> RunRecord | None:
        """The stored record of one run (finished or failed), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(self._key_filter(spec))).mappings().first()
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
            rows = conn.execute(select(runs).order_by(runs.c.id)).mappings().all()
        return [_record(r) for r in rows]

    def record(self, rec: RunRecord, token: str | None = None) -> bool:
        """Store a run result atomically and drop its claim; False if it had already finished.

        A previous *failed* row of the same run is replaced; a *finished* one is kept.
        """
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
                conn.execute(delete(runs).where(self._key_filter(spec), runs.c.status != FINISHED))
                conn.execute(insert(runs).values(**values))
                if token is not None:
                    conn.execute(delete(claims).where(claims.c.token == token))
        except IntegrityError:
            self.release(token)
            return False
        return True

    # -- claims ------------------------------------------------------------------------------
    def claim(
        self, spec: RunSpec, *, study: str | None = None, stale_after: float = 120.0
    ) -> str | None:
        """Claim a run for this process; returns a token, or None if a live owner holds it."""
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
                conn.execute(insert(claims).values(**row))
            return token
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            old = (
                conn.execute(select(claims).where(claims.c.run_key == spec.key_hash))
                .mappings()
                .first()
            )
            if old is None:  # released in between: try once more
                conn.execute(insert(claims).values(**row))
                return token
            dead = old["host"] == self.host and not pid_alive(old["pid"])
            if not dead and now - old["heartbeat"] <= stale_after:
                return None
            took = conn.execute(
                update(claims)
                .where(claims.c.run_key == spec.key_hash, claims.c.token == old["token"])
                .values(**row)
            )
            return token if took.rowcount == 1 else None

    def heartbeat(self, tokens: Iterable[str]) -> None:
        """Refresh the heartbeat of the claims held under ``tokens``."""
        toks = list(tokens)
        if toks:
            with self.engine.begin() as conn:
                conn.execute(
                    update(claims).where(claims.c.token.in_(toks)).values(heartbeat=time.time())
                )

    def release(self, token: str | None) -> None:
        """Drop a claim (no-op for None or a claim already taken over)."""
        if token is not None:
            with self.engine.begin() as conn:
                conn.execute(delete(claims).where(claims.c.token == token))

    def active_claims(self, stale_after: float = 120.0) -> list[dict[str, Any]]:
        """Claims whose heartbeat is younger than ``stale_after`` seconds."""
        limit = time.time() - stale_after
        with self.engine.connect() as conn:
            rows = conn.execute(select(claims).where(claims.c.heartbeat >= limit)).mappings().all()
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
