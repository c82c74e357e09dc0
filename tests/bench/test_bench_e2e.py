"""End to end with the real trainer: digits-mlp, 2 activations x 2 seeds x 1 epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from actlab.bench import compare
from actlab.report import render_report

pytest.importorskip("sklearn")


def test_compare_digits_mlp(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    res = compare(["relu", "crrelu"], task="digits-mlp", seeds=2, epochs=1, db=db)
    assert len(res.report.records) == 4 and all(r.ok for r in res.records), [
        r.error for r in res.records
    ]
    for r in res.records:
        assert r.spec.model == "mlp" and r.spec.epochs == 1  # task defaults resolved
        assert r.metric_name == "accuracy" and 0.5 < (r.metric_value or 0) <= 1.0
        assert r.history and r.history[-1]["epoch"] == 1
        assert r.run_config["task"] == "digits-mlp" and r.versions["torch"]
    crrelu = [r for r in res.records if r.spec.activation == "crrelu"]
    assert all(r.trajectories and all(len(v) == 2 for v in r.trajectories.values()) for r in crrelu)
    assert [row.n for row in res.summary.rows] == [2, 2] and res.summary.rows[1].n_pairs == 2

    again = compare(["relu", "crrelu"], task="digits-mlp", seeds=2, epochs=1, db=db)
    assert again.report.records == [] and len(again.report.skipped) == 4
    assert [r.metric_value for r in again.records] == [r.metric_value for r in res.records]
    # naming the default model explicitly is the same run
    named = compare(["relu"], task="digits-mlp", model="mlp", seeds=1, epochs=1, db=db)
    assert named.report.records == []
    html = render_report(res)
    assert html.count("data:image/png;base64,") == 4


def test_unknown_task_fails_before_running(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown task 'digits-mpl'"):
        compare(["relu"], task="digits-mpl", seeds=1, db=tmp_path / "r.sqlite")


@pytest.mark.slow
def test_parallel_equals_serial_real_trainer(tmp_path: Path) -> None:
    kw = dict(task="digits-mlp", seeds=2, epochs=1, max_steps=6)
    serial = compare(["relu", "crrelu"], db=tmp_path / "s.sqlite", **kw)  # type: ignore[arg-type]
    par = compare(["relu", "crrelu"], db=tmp_path / "p.sqlite", workers=2, **kw)  # type: ignore[arg-type]
    assert [r.metric_value for r in par.records] == [r.metric_value for r in serial.records]
