"""Learned sparsity levels (``TuneConfig(levels=True)``, actlab.sparse._levels)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sparse_helpers import VOCAB, randomise_norms

from actlab.sparse import (
    SparseError,
    TuneConfig,
    apply_state,
    load_state,
    make_method,
    realised_sparsity,
    tune_gains,
)
from actlab.sparse._levels import BETA, SiteLevels
from actlab.sparse._modules import SparseLinear


def _windows(n: int = 8, length: int = 24, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (2, length), generator=g) for _ in range(n // 2)]


def _kl(dense: torch.nn.Module, state: object, ids: torch.Tensor) -> float:
    """Mean KL(dense || sparse) over the second half, the sparse model in "last-half"."""
    sparse = copy.deepcopy(dense)
    apply_state(sparse, state).set_mode("last-half")
    half = ids.shape[1] // 2
    with torch.no_grad():
        p = F.log_softmax(dense(ids).logits[:, half:-1].double(), -1)
        q = F.log_softmax(sparse(ids).logits[:, half:-1].double(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def _site(channels: bool) -> SparseLinear:
    g = torch.Generator().manual_seed(2)
    lin = torch.nn.Linear(12, 5).double()
    t = torch.rand(12, generator=g, dtype=torch.float64) + 0.2 if channels else 0.6
    return SparseLinear.wrap(lin, t)


@pytest.mark.parametrize("channels", [False, True])
@pytest.mark.parametrize("mode", ["all", "last-half"])
def test_the_surrogate_is_the_hard_mask_with_a_threshold_gradient(
    channels: bool, mode: str
) -> None:
    """Forward: the hard mask's output exactly. Backward: the input's gradient is the hard
    mask's, and d/dtheta is sum (dL/dused * x) * ds/dtheta with s = sigmoid((log|x| -
    log t - theta) / beta) over the sparsified positions (a float64 oracle)."""
    site = _site(channels)
    site.mode = mode
    levels = SiteLevels({"s": site})
    with torch.no_grad():
        levels.theta.fill_(0.3)
    levels.set_thresholds()
    levels.attach()
    x = torch.randn(2, 6, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x.requires_grad_(True)
    y = site(x)
    t = levels.base["s"]
    t = t if isinstance(t, torch.Tensor) else torch.tensor(t, dtype=torch.float64)
    eff = t * math.exp(0.3)
    keep = x.detach().abs() > eff
    if mode == "last-half":
        keep[:, :3] = True
    xr = x.detach().clone().requires_grad_(True)
    want = F.linear(xr * keep, site.weight, site.bias)
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    g = torch.randn_like(y)
    y.backward(g)
    want.backward(g)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-12, atol=1e-12)
    used_grad = g @ site.weight.detach()  # dL/dused [2, 6, 12]
    s = torch.sigmoid((x.detach().abs().log() - t.log() - 0.3) / BETA)
    ds = -s * (1 - s) / BETA
    contrib = used_grad * x.detach() * ds
    if mode == "last-half":
        contrib = contrib[:, 3:]
    torch.testing.assert_close(levels.theta.grad[0].double(), contrib.sum(), rtol=1e-5, atol=1e-8)


def test_fractions_and_projection() -> None:
    """F_j counts the measured log-ratios <= theta_j (brute force); project() shifts every
    offset by one delta that restores the weighted sparsity measured at theta = 0."""
    a, b = _site(False), SparseLinear.wrap(torch.nn.Linear(12, 20).double(), 0.3)
    levels = SiteLevels({"a": a, "b": b})
    xs = [
        torch.randn(3, 8, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
        for i in range(3)
    ]

    def forward(x: torch.Tensor) -> None:
        a(x)
        b(x)

    levels.measure(forward, xs)
    assert levels.sorted is not None
    ratios_a = torch.cat([x[:, 4:].abs().log().reshape(-1) - math.log(0.6) for x in xs])
    # the sample is drawn from these values: its fraction below 0 is close to theirs
    assert (
        abs(float(levels.fractions(torch.zeros(2))[0]) - float((ratios_a <= 0).double().mean()))
        < 0.02
    )
    theta = torch.tensor([0.4, -0.7], dtype=torch.float64)
    brute = (levels.sorted <= theta.unsqueeze(1)).double().mean(1)
    torch.testing.assert_close(levels.fractions(theta), brute)
    goal = levels.goal
    with torch.no_grad():
        levels.theta.copy_(torch.tensor([1.0, 0.5]))
    before = levels.theta.detach().clone()
    delta = levels.project()
    torch.testing.assert_close(levels.theta.detach() - before, torch.full((2,), delta))
    # F is a step function (432 distinct inputs here): within one step of site a's
    assert abs(levels.weighted(levels.theta.detach()) - goal) <= 1.0 / 432


def test_levels_lower_the_kl_and_keep_the_weighted_sparsity(
    llama: torch.nn.Module, tmp_path: Path
) -> None:
    randomise_norms(llama)
    data = _windows()
    state = make_method("teal", sparsity=0.5).calibrate(llama, data)
    base = TuneConfig(steps=30, lr=1e-2, rows=True)
    plain = tune_gains(llama, state, data, base)
    cfg = TuneConfig(steps=30, lr=1e-2, rows=True, levels=True)
    tuned = tune_gains(llama, state, data, cfg)
    ids = torch.cat(data)
    assert _kl(llama, tuned, ids) < _kl(llama, plain, ids) < _kl(llama, state, ids)
    moved = [float(tuned.thresholds[p]) / float(state.thresholds[p]) for p in state.thresholds]
    assert max(moved) / min(moved) > 1.05  # the levels moved apart
    lo, hi = tuned.tuning["level_offsets"]
    assert lo <= 0 <= hi and tuned.tuning["levels"] is True
    # the weighted sparsity on the tuning windows' second halves stays where calibration put it
    sparse = copy.deepcopy(llama)
    apply_state(sparse, tuned).set_mode("last-half")
    with torch.no_grad():
        sparse(ids)
    realised, _ = realised_sparsity(sparse)
    assert abs(realised - tuned.tuning["level_sparsity"]) < 0.03, realised
    assert abs(realised - 0.5) < 0.05, realised
    for p, t in tuned.targets.items():
        assert 0.0 <= t < 1.0, (p, t)
    assert tune_gains(llama, state, data, cfg) == tuned  # deterministic
    path = tuned.save(tmp_path / "s.safetensors")
    assert load_state(path) == tuned


@pytest.mark.parametrize(
    ("method", "match"),
    [("wina", "threshold sites"), ("cats", "gated-MLP")],
)
def test_levels_need_threshold_sites(llama: torch.nn.Module, method: str, match: str) -> None:
    data = _windows()
    state = make_method(method, sparsity=0.5).calibrate(llama, data)
    with pytest.raises(SparseError, match=match):
        tune_gains(llama, state, data, TuneConfig(steps=2, levels=True))


def test_bad_levels_flag_is_one_line() -> None:
    with pytest.raises(SparseError, match="tune levels must be true or false"):
        TuneConfig(steps=2, levels=1)  # type: ignore[arg-type]
