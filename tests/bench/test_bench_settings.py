"""Kernel mode and thread count are run settings: in the config, in the key, applied by workers.

The default (``auto``, no thread count) adds nothing to a run's config, so the keys of runs
planned before these settings existed are unchanged and their databases still resume.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bench_helpers import settings_train

from actlab.activations import kernel_mode, set_kernel_mode
from actlab.bench.comparison import compare, kernel_config, plan_compare
from actlab.bench.plan import plan_runs
from actlab.bench.store import ResultsStore

FAKE = "bench_helpers:settings_train"
PLAN = dict(task="digits-mlp", seeds=2, epochs=2, task_defaults=False)

# the key of `compare(["relu"], task="digits-mlp", seeds=1, epochs=2, train_fn=...)` as
# planned before --kernel/--threads existed (config {"device": "cpu", "dtype": "float32"})
LEGACY_CONFIG_HASH = "d6fcc701d669d731"


def test_default_settings_keep_the_legacy_key() -> None:
    plan = plan_compare(["relu"], task="digits-mlp", seeds=1, epochs=2, task_defaults=False)
    assert plan.config == {"device": "cpu", "dtype": "float32"}
    legacy = plan_runs(["relu"], 1, task="digits-mlp", epochs=2,
                       config={"device": "cpu", "dtype": "float32"})  # fmt: skip
    assert [s.key for s in plan.specs] == [s.key for s in legacy]
    assert plan.specs[0].config_hash == LEGACY_CONFIG_HASH
    auto = plan_compare(["relu"], task="digits-mlp", seeds=1, epochs=2, task_defaults=False,
                        kernel="auto")  # fmt: skip
    assert auto.specs == plan.specs


def test_kernel_and_threads_are_part_of_the_key() -> None:
    base = plan_compare(["relu", "crrelu"], **PLAN)  # type: ignore[arg-type]
    eager = plan_compare(["relu", "crrelu"], kernel="eager", **PLAN)  # type: ignore[arg-type]
    two = plan_compare(["relu", "crrelu"], threads=2, **PLAN)  # type: ignore[arg-type]
    assert eager.config["kernel_mode"] == "eager" and two.config["num_threads"] == 2
    keys = [{s.key for s in p.specs} for p in (base, eager, two)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])


def test_the_mode_in_force_is_the_default() -> None:
    set_kernel_mode("reference")
    try:
        assert kernel_config(None, None) == {"kernel_mode": "reference"}
    finally:
        set_kernel_mode(None)
    with kernel_mode("eager"):
        assert kernel_config(None, 3) == {"kernel_mode": "eager", "num_threads": 3}
    assert kernel_config(None, None) == {}


@pytest.mark.parametrize(
    ("kernel", "threads", "needle"),
    [("fast", None, "--kernel 'fast' is not one of auto"), (None, 0, "--threads"),
     (None, True, "--threads"), (None, 1.5, "--threads"), ("", None, "is not one of")],
)  # fmt: skip
def test_bad_settings_are_one_line_errors(kernel: object, threads: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as e:
        kernel_config(kernel, threads)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


def test_a_mode_that_cannot_run_is_refused_before_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from actlab.activations import _fused

    monkeypatch.setitem(_fused._UNAVAILABLE, "cpu", "no vector ISA (test)")
    with pytest.raises(ValueError, match=r"--kernel compiled cannot run on cpu: no vector ISA"):
        plan_compare(["relu"], kernel="compiled", **PLAN)  # type: ignore[arg-type]


def test_existing_database_resumes_and_another_mode_is_another_run(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    kw = dict(task="digits-mlp", seeds=2, epochs=2, db=db, train_fn=FAKE)
    first = compare(["relu", "gelu"], **kw)  # type: ignore[arg-type]
    assert len(first.report.records) == 4
    again = compare(["relu", "gelu"], kernel="auto", **kw)  # type: ignore[arg-type]
    assert not again.report.records and len(again.report.skipped) == 4
    eager = compare(["relu", "gelu"], kernel="eager", threads=1, **kw)  # type: ignore[arg-type]
    assert len(eager.report.records) == 4 and not eager.report.skipped
    with ResultsStore(db) as store:
        assert len(store.records(first.specs)) == 4 and len(store.records(eager.specs)) == 4
    for rec in eager.records:
        assert rec.spec.config["kernel_mode"] == "eager"
        assert rec.run_config["seen_kernel"] == "eager" and rec.run_config["seen_threads"] == 1
    for rec in first.records:  # legacy runs train in auto, whatever the caller's context
        assert rec.run_config["seen_kernel"] == "auto"


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_apply_the_settings(tmp_path: Path, workers: int) -> None:
    threads = torch.get_num_threads()
    with kernel_mode("eager"):  # the run's own mode wins over the caller's
        res = compare(["relu", "gelu"], task="digits-mlp", seeds=1, epochs=1, db=tmp_path / "w.db",
                      train_fn=FAKE, workers=workers, kernel="reference", threads=1)  # fmt: skip
    assert [r.run_config["seen_kernel"] for r in res.records] == ["reference"] * 2
    assert [r.run_config["seen_threads"] for r in res.records] == [1] * 2
    assert torch.get_num_threads() == threads  # restored after the runs


def test_settings_train_is_importable() -> None:  # the workers import it by name
    assert callable(settings_train)


@pytest.mark.parametrize(
    ("var", "attr", "value", "needle"),
    [("ACTLAB_KERNEL", "env", "bogus", "ACTLAB_KERNEL='bogus' is not one of"),
     ("ACTLAB_FUSE_MIN_NUMEL", "env_numel", "many", "ACTLAB_FUSE_MIN_NUMEL='many'")],
)  # fmt: skip
def test_a_bad_environment_is_refused_before_work(
    monkeypatch: pytest.MonkeyPatch, var: str, attr: str, value: str, needle: str
) -> None:
    from actlab.activations import _fused

    monkeypatch.setenv(var, value)
    monkeypatch.setattr(_fused._Resolver, attr, None)  # as in a fresh process
    with pytest.raises(ValueError, match=needle):
        plan_compare(["relu"], **PLAN)  # type: ignore[arg-type]
