"""Search run settings and the carried program: the cost filter times the training's kernel
mode; a candidate's Expr is compiled once and never re-parsed per activation site."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import actlab.expr._activation as expr_act
import actlab.expr.torch_eval as torch_eval
from actlab.activations import get_kernel_mode, kernel_mode
from actlab.search import CostFilter, CurveObjective, Pipeline, TrainObjective, run_search
from actlab.search._candidate import as_candidate
from actlab.search._pipeline import evaluate_candidate

CRRELU = "relu(x) + eps*x*exp(-x**2/2)"


class _ModeProbe(nn.Module):
    """Identity that records the kernel mode in force at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: set[str] = set()

    def forward(self, x: Tensor) -> Tensor:
        self.modes.add(get_kernel_mode())
        return x * 1.0


@pytest.mark.parametrize("kernel", ["auto", "native", "reference"])
def test_cost_filter_times_the_given_mode(kernel: str) -> None:
    probe = _ModeProbe()
    CostFilter(shape=(4, 8), repeats=1).measure(probe, kernel)
    assert probe.modes == {kernel}


def test_cost_filter_default_is_the_mode_in_force_not_eager() -> None:
    probe = _ModeProbe()
    CostFilter(shape=(4, 8), repeats=1).measure(probe)
    assert probe.modes == {"auto"}
    with kernel_mode("reference"):
        CostFilter(shape=(4, 8), repeats=1).measure(probe)
    assert probe.modes == {"auto", "reference"}


class _RecordingCost(CostFilter):
    seen: list[Any] = []

    def check(self, module: nn.Module, kernel: str | None = None) -> tuple[bool, float, str]:
        _RecordingCost.seen.append(kernel)
        return super().check(module, kernel)


@pytest.mark.parametrize("kernel", ["reference", "eager", "auto"])
def test_pipeline_times_the_objective_kernel(kernel: str) -> None:
    _RecordingCost.seen = []
    obj = CurveObjective("gelu", kernel=kernel)
    # what is checked is the mode the cost filter is given, not the timing: one timed step
    # of a tiny shape on a busy machine measured 26x GELU once, over the default 8x limit
    cost = _RecordingCost(shape=(4, 8), repeats=1, max_ratio=1e9)
    pipe = Pipeline(cost=cost, proxies=False)
    res = evaluate_candidate(as_candidate("x*sigmoid(1.702*x)"), obj, pipe)
    assert res.ok, res
    assert _RecordingCost.seen == [kernel]


def test_objectives_resolve_and_check_the_kernel() -> None:
    assert CurveObjective("gelu").kernel == "auto"
    with kernel_mode("eager"):  # None: the mode in force when the objective is made
        assert CurveObjective("gelu").kernel == "eager"
    with pytest.raises(ValueError, match="--kernel 'fast' is not one of"):
        CurveObjective("gelu", kernel="fast")
    with pytest.raises(ValueError, match="--threads"):
        TrainObjective("digits-mlp", threads=0)


def test_a_study_keeps_its_kernel(tmp_path: Path) -> None:
    storage = str(tmp_path / "s.db")
    kw: dict[str, Any] = dict(budget=2, study="k", storage=storage,
                              pipeline=Pipeline(cost=None, proxies=False))  # fmt: skip
    run_search(CurveObjective("gelu"), "random", **kw)
    run_search(CurveObjective("gelu", kernel="auto"), "random", **kw)  # resumes
    with pytest.raises(ValueError, match="kernel='auto', not 'eager'"):
        run_search(CurveObjective("gelu", kernel="eager"), "random", **kw)


def test_candidate_module_is_compiled_once_and_copied() -> None:
    c = as_candidate(CRRELU)
    a, b = c.module(), c.module()
    assert a is not b and a.eps is not b.eps  # type: ignore[attr-defined]
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    ref = torch.relu(x) + 0.01 * x * torch.exp(-(x**2) / 2)
    torch.testing.assert_close(a.double()(x), ref)


def test_training_a_candidate_parses_nothing_per_site(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = {"parse": 0, "compile": 0}
    real_parse, real_init = expr_act.parse, torch_eval.Program.__init__

    def parse(*a: Any, **k: Any) -> Any:
        counts["parse"] += 1
        return real_parse(*a, **k)

    def init(self: Any, *a: Any, **k: Any) -> None:
        counts["compile"] += 1
        real_init(self, *a, **k)

    monkeypatch.setattr(expr_act, "parse", parse)
    monkeypatch.setattr(torch_eval.Program, "__init__", init)
    c = as_candidate(CRRELU)
    obj = TrainObjective("digits-mlp", overrides={"max_steps": 2})
    obj.evaluate(c, 1, seed=0, floor=None)
    assert counts == {"parse": 0, "compile": 1}  # one program for every site of the model


def test_same_losses_as_training_the_call_string() -> None:
    from actlab.train import run_training

    c = as_candidate(CRRELU)
    kw: dict[str, Any] = dict(epochs=1, max_steps=6, checkpoint="none",
                              eval_test_each_epoch=False)  # fmt: skip
    by_text = run_training("digits-mlp", c.spec, 3, **kw)
    by_program = run_training("digits-mlp", c.module(), 3, **kw)
    keys = ("train_loss", "val_loss", "val_accuracy", "act_params")
    assert [{k: h[k] for k in keys} for h in by_program.history] == [
        {k: h[k] for k in keys} for h in by_text.history
    ]
    assert by_program.trajectories == by_text.trajectories
    score = TrainObjective("digits-mlp", overrides={"max_steps": 6}).evaluate(
        c, 1, seed=3, floor=None
    )
    assert score.value == by_text.history[-1]["val_accuracy"]
