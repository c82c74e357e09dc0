"""Evaluations as Ray tasks on a local Ray instance; the study stays the source of truth."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from actlab.search import Candidate, CurveObjective, Pipeline, RayExecutor, Score, run_search

ray = pytest.importorskip("ray")


class PidObjective(CurveObjective):
    """Records the evaluating process in the score."""

    def evaluate(self, candidate: Candidate, budget: float, *, seed: int, floor: Any) -> Score:
        s = super().evaluate(candidate, budget, seed=seed, floor=floor)
        s.extra["pid"] = os.getpid()
        return s


def test_local_ray_run(tmp_path: Path) -> None:
    here = str(Path(__file__).parent)  # workers must import this module to unpickle PidObjective
    path = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        ex = RayExecutor("auto")
        assert ex.slots == 2
        res = run_search(
            PidObjective("gelu"),
            "evolution",
            budget=8,
            study="ray",
            storage=tmp_path / "r.db",
            executor=ex,
            pipeline=Pipeline(cost=None, proxies=False),
        )
    finally:
        ray.shutdown()
    ok = [r for r in res.finished if r.result is not None and r.result.ok]
    assert res.units_spent() == 8 and len(ok) >= 6
    pids = {r.result.extra["pid"] for r in ok if r.result is not None}
    assert os.getpid() not in pids  # evaluated in Ray workers, recorded here
    again = run_search(
        PidObjective("gelu"),
        "evolution",
        budget=8,
        study="ray",
        storage=tmp_path / "r.db",
        pipeline=Pipeline(cost=None, proxies=False),
    )
    assert again.evaluated_now == 0 and len(again.finished) == len(res.finished)
