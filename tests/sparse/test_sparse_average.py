"""average_states: the uniform average ("model soup") of tuning runs of one calibration."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from sparse_helpers import VOCAB, randomise_norms

from actlab.sparse import (
    SparseError,
    SparsityState,
    TuneConfig,
    apply_state,
    average_states,
    load_state,
    make_method,
    tune_gains,
)


def _windows(n: int = 8, length: int = 24) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, VOCAB, (2, length), generator=g) for _ in range(n // 2)]


@pytest.fixture
def runs(llama: torch.nn.Module) -> tuple[torch.nn.Module, SparsityState, list[SparsityState]]:
    """A tiny Llama, its calibrated TEAL state and three tuning runs of it (seeds 0, 1, 2)
    with gains, row scales, rank-2 corrections and weight changes."""
    randomise_norms(llama)
    data = _windows()
    state = make_method("teal", sparsity=0.5).calibrate(llama, data)
    runs = [
        tune_gains(
            llama,
            state,
            data,
            TuneConfig(steps=4, lr=1e-2, seed=s, rows=True, rank=2, weights=True, weights_lr=1e-3),
        )
        for s in range(3)
    ]
    return llama, state, runs


def test_the_average_is_the_mean_of_each_part_in_float64(runs: tuple) -> None:
    model, _, members = runs
    soup = average_states(members)
    k = len(members)
    for name in soup.gains:
        want = sum(m.gains[name].double() for m in members) / k
        torch.testing.assert_close(soup.gains[name].double(), want, rtol=1e-6, atol=1e-7)
    # the applied weight: diag(mean r) (W + mean dW + mean U_k V_k), from the dense weight
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sparse = copy.deepcopy(model)
    apply_state(sparse, soup)
    params = dict(sparse.named_parameters())
    for name in soup.deltas:
        r = sum(m.scales[name].double() for m in members) / k
        dw = sum(m.deltas[name].double() for m in members) / k
        uv = sum(m.lowrank[name][0].double() @ m.lowrank[name][1].double() for m in members) / k
        want = (before[f"{name}.weight"].double() + dw + uv) * r[:, None]
        torch.testing.assert_close(params[f"{name}.weight"].double(), want, rtol=1e-5, atol=1e-6)
        assert soup.lowrank[name][0].shape[1] == 3 * members[0].lowrank[name][0].shape[1]
    assert soup.thresholds == members[0].thresholds and soup.targets == members[0].targets


def test_the_average_of_copies_of_one_run_is_that_run(runs: tuple) -> None:
    model, _, members = runs
    soup = average_states([members[0], members[0]])
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    apply_state(a, soup)
    apply_state(b, members[0])
    ids = torch.cat(_windows())
    with torch.no_grad():
        torch.testing.assert_close(a(ids).logits, b(ids).logits, rtol=1e-5, atol=1e-5)


def test_the_tuning_record_names_the_members_and_round_trips(runs: tuple, tmp_path) -> None:
    _, _, members = runs
    soup = average_states(members)
    t = soup.tuning
    assert t["average"] == 3 and [m["seed"] for m in t["members"]] == [0, 1, 2]
    assert (t["rows"], t["rank"], t["weights"], t["steps"]) == (True, 2, True, 4)
    assert "seed" not in t and "kl_last" not in t  # they differ between the members
    back = load_state(soup.save(tmp_path / "soup.safetensors"))
    assert back == soup


def test_bad_input_is_one_line(runs: tuple) -> None:
    model, state, members = runs
    with pytest.raises(SparseError, match="at least 2 tuned states; got 1"):
        average_states(members[:1])
    with pytest.raises(SparseError, match="state 1 is not tuned"):
        average_states([members[0], state])
    with pytest.raises(SparseError, match="state 1 is a dict"):
        average_states([members[0], {}])  # type: ignore[list-item]
    other = make_method("teal", sparsity=0.3).calibrate(model, _windows())
    other_tuned = tune_gains(model, other, _windows(), TuneConfig(steps=1, rows=True))
    with pytest.raises(SparseError, match="another method, parameters or targets"):
        average_states([members[0], other_tuned])
    moved = dataclasses.replace(members[1], thresholds={k: 2.0 for k in members[1].thresholds})
    with pytest.raises(SparseError, match="other thresholds than state 0"):
        average_states([members[0], moved])
    rows_only = tune_gains(model, state, _windows(), TuneConfig(steps=1, rows=True))
    with pytest.raises(SparseError, match="tuned other lowrank than state 0"):
        average_states([members[0], rows_only])
