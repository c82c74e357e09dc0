"""Kill ``actlab compare`` mid-run with SIGKILL, rerun it: no duplicate and no lost runs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ACTS = ["relu", "gelu", "crrelu"]
SEEDS = 3


def _cmd(db: Path, workers: int) -> list[str]:
    argv = [*ACTS, "--task", "digits-mlp", "--seeds", str(SEEDS), "--epochs", "2",
            "--db", str(db), "--workers", str(workers), "--no-report",
            "--train-fn", "bench_helpers:fake_train"]  # fmt: skip
    code = f"import sys, bench_helpers; sys.exit(bench_helpers.compare_main({argv!r}))"
    return [sys.executable, "-c", code]


def _env(log: Path, sleep: float) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["ACTLAB_FAKE_LOG"] = str(log)
    env["ACTLAB_FAKE_SLEEP"] = str(sleep)
    env.pop("ACTLAB_FAKE_FAIL", None)
    env.pop("ACTLAB_FAKE_CRASH", None)
    return env


def _finished(db: Path) -> list[tuple[str, int]]:
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        q = "SELECT activation, seed FROM actlab_runs WHERE status='finished'"
        rows = con.execute(q).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        rows = []
    finally:
        con.close()
    return [(a, int(s)) for a, s in rows]


def _pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_then_rerun(tmp_path: Path, workers: int) -> None:
    db, log = tmp_path / "r.sqlite", tmp_path / "runs.log"
    proc = subprocess.Popen(_cmd(db, workers), env=_env(log, 0.6), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(_finished(db)) < 2:  # wait until some runs are stored
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "compare did not store any run in 60 s"
            time.sleep(0.05)
        time.sleep(0.2)  # land inside a later run
        proc.send_signal(signal.SIGKILL)  # only the parent: workers must notice and exit
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()  # type: ignore[union-attr]
    before = _finished(db)
    assert 2 <= len(before) < len(ACTS) * SEEDS, "the kill should land mid-matrix"
    started_pids = {int(line.split()[2]) for line in log.read_text().splitlines()}
    if workers > 1:  # orphaned workers exit by themselves
        assert all(_pid_gone(pid, 15) for pid in started_pids)

    # rerun to completion (serially, no sleep): it resumes instead of starting over
    done = subprocess.run(_cmd(db, 1), env=_env(log, 0.0), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming: {len(before)} runs already finished" in done.stderr
    after = _finished(db)
    assert sorted(after) == sorted((a, s) for s in range(SEEDS) for a in ACTS)  # none lost
    assert len(after) == len(set(after))  # none duplicated
    starts = Counter(tuple(line.split()[:2]) for line in log.read_text().splitlines())
    for act, seed in before:  # runs stored before the kill were never trained again
        assert starts[(act, str(seed))] == 1
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT COUNT(*) FROM actlab_runs").fetchone()[0] == len(ACTS) * SEEDS
        assert con.execute("SELECT COUNT(*) FROM actlab_claims").fetchone()[0] == 0
    finally:
        con.close()
