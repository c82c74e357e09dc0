"""Function-fitting tasks: deterministic data, formulas, the regression trainer, compare."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import scipy.special
import torch

from actlab.data import RegressionLoader
from actlab.models import FitConfig, FitNet, build_model, match_hidden
from actlab.models.fit import block_params
from actlab.train import TASKS, get_task, run_training
from actlab.train.tasks.function_fit import FUNCTIONS, SPLIT_SIZES
from actlab.train.trainer import evaluate

# independent scalar formulas (math / scipy on raw inputs)
SCALAR = {
    "bessel": lambda v: scipy.special.j0(20 * v[0]),
    "exp-sin": lambda v: math.exp(math.sin(math.pi * v[0]) + v[1] ** 2),
    "xy": lambda v: v[0] * v[1],
    "exp-sin-4d": lambda v: math.exp(
        (math.sin(math.pi * (v[0] ** 2 + v[1] ** 2)) + math.sin(math.pi * (v[2] ** 2 + v[3] ** 2)))
        / 2
    ),
    "feynman-i-6-2": lambda v: math.exp(-((v[0] / v[1]) ** 2) / 2) / math.sqrt(2 * math.pi) / v[1],
    "feynman-i-29-16": lambda v: math.sqrt(
        v[0] ** 2 + v[1] ** 2 - 2 * v[0] * v[1] * math.cos(v[2] - v[3])
    ),
    "feynman-i-37-4": lambda v: v[0] + v[1] + 2 * math.sqrt(v[0] * v[1]) * math.cos(v[2]),
}


def test_every_function_is_a_registered_regression_task_with_an_independent_formula() -> None:
    assert sorted(SCALAR) == sorted(FUNCTIONS)
    assert set(TASKS.names(kind="regression")) == {f"fit-{n}" for n in FUNCTIONS}
    for name, f in FUNCTIONS.items():
        task = get_task(f"fit-{name}")
        assert task.metric == "rmse" and not task.higher_is_better
        x, y = f.sample(50, seed=3)
        assert x.shape == (50, f.dim) and y.shape == (50, 1) and x.dtype == torch.float64
        assert x.min() >= -1 and x.max() <= 1  # model inputs: the KAN range contract
        lo = torch.tensor([d[0] for d in f.domain], dtype=torch.float64)
        hi = torch.tensor([d[1] for d in f.domain], dtype=torch.float64)
        raw = lo + (x + 1) / 2 * (hi - lo)  # undo the affine map
        want = torch.tensor([SCALAR[name](row.tolist()) for row in raw], dtype=torch.float64)
        torch.testing.assert_close(y[:, 0], want, rtol=1e-9, atol=1e-9)


def test_splits_are_deterministic_disjoint_and_follow_split_seed() -> None:
    f = FUNCTIONS["exp-sin"]
    a, b = f.splits(0), f.splits(0)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert [len(x) for x, _ in a] == list(SPLIT_SIZES)
    train, val, test = (x for x, _ in a)
    rows = {tuple(r.tolist()) for r in train}
    assert not rows & {tuple(r.tolist()) for r in test}
    assert not torch.equal(f.splits(1)[0][0], train)
    assert not torch.equal(FUNCTIONS["xy"].splits(0)[0][0], train)  # per-function stream


def test_regression_loader_batches_shuffles_by_seed_and_epoch() -> None:
    x, y = torch.arange(10.0).unsqueeze(-1), torch.arange(10.0).unsqueeze(-1) * 2
    loader = RegressionLoader(x, y, batch_size=4, shuffle=True, seed=1, drop_last=True)
    assert len(loader) == 2
    e0 = torch.cat([b for b, _ in loader])
    e1 = torch.cat([b for b, _ in loader])
    loader.set_epoch(0)
    assert torch.equal(torch.cat([b for b, _ in loader]), e0) and not torch.equal(e0, e1)
    for xb, yb in RegressionLoader(x, y, batch_size=3):
        assert torch.equal(yb, 2 * xb)
    assert len(RegressionLoader(x, y, batch_size=3)) == 4
    with pytest.raises(ValueError, match="x \\(N, d_in\\) and y \\(N, d_out\\)"):
        RegressionLoader(x, y[:5])


def test_evaluate_reports_rmse_over_every_target() -> None:
    x = torch.randn(7, 2)
    y = torch.randn(7, 2)
    model = torch.nn.Linear(2, 2)
    out = evaluate(model, RegressionLoader(x, y, batch_size=3), "regression",
                   device=torch.device("cpu"), dtype=torch.float32)  # fmt: skip
    with torch.no_grad():
        mse = float((model(x) - y).double().square().mean())
    assert out["loss"] == pytest.approx(mse, rel=1e-6)
    assert out["rmse"] == pytest.approx(math.sqrt(mse), rel=1e-6)


@pytest.mark.parametrize("spec", ["mlp", "af_kan", "relu_kan", "s_kan"])
def test_match_hidden_gives_equal_parameter_counts(spec: str) -> None:
    for d_in, target in ((1, 600), (2, 600), (4, 2000)):
        h = match_hidden(spec, d_in, 1, target)
        got = block_params(spec, d_in, h, 1)
        step = block_params(spec, d_in, h + 1, 1) - got
        assert abs(got - target) <= step / 2 + 1e-9  # the closest width
        net = FitNet(FitConfig(in_features=d_in, params=target), "silu", mlp_layer=spec)
        assert net.hidden == h and net.num_params == got
    with pytest.raises(ValueError, match="params must be >= 0"):
        FitConfig(params=-1)


def test_fit_net_through_build_model_and_bad_input() -> None:
    m = build_model("fit_net", "silu", in_features=3, out_features=2, mlp_layer="relu_kan")
    assert m(torch.rand(5, 3) * 2 - 1).shape == (5, 2)
    with pytest.raises(ValueError, match=r"fit_net expects inputs of shape \(B, 3\)"):
        m(torch.rand(5, 4))


def test_run_training_fits_and_is_reproducible() -> None:
    kw = dict(epochs=3, model_kwargs={"mlp_layer": "relu_kan", "params": 300}, checkpoint="none")
    a = run_training("fit-xy", "silu", 0, **kw)  # type: ignore[arg-type]
    b = run_training("fit-xy", "silu", 0, **kw)  # type: ignore[arg-type]
    assert a.metric == "rmse" and not a.higher_is_better and a.value == b.value
    assert math.isfinite(a.value) and a.value < 0.58  # the std of x*y on [-1, 1]^2 is 1/3
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]
    assert "samples_per_s" in a.history[-1]


def test_the_task_runs_through_compare(tmp_path: Path) -> None:
    from actlab.bench import compare

    res = compare(
        ["silu", "relu"], task="fit-bessel", seeds=2, epochs=1, max_steps=3,
        db=tmp_path / "r.sqlite", model_overrides={"mlp_layer": "s_kan", "params": 200},
    )  # fmt: skip
    assert len(res.records) == 4 and all(r.ok for r in res.records), [r.error for r in res.records]
    assert {r.metric_name for r in res.records} == {"rmse"}
    assert not res.records[0].higher_is_better
    assert res.specs[0].config["model_kwargs"] == {"mlp_layer": "s_kan", "params": 200}
