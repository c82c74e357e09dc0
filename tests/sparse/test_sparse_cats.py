"""CATS on a tiny random Llama: per-layer thresholds on |act(gate)| against a full-model
float64 brute force, masks, realised sparsity, sparsity 0, save/load, generate, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from sparse_helpers import captured_inputs, logits, partial, quantile64, tiny_llama
from torch import nn

from actlab.sparse import (
    SparseError,
    SparseGatedMLP,
    SparsityState,
    apply_state,
    find_blocks,
    load_state,
    make_method,
)


def brute_force_cats(
    dense: nn.Module, batches: list[torch.Tensor], sparsity: float
) -> dict[str, float]:
    """Layer by layer: the s-quantile of |SiLU(gate_proj(x))| (float64) with the MLPs before
    it already sparsified."""
    done: dict[str, float] = {}
    for block in find_blocks(dense):
        model = partial(dense, "cats", {"sparsity": sparsity}, done)
        g = captured_inputs(model, batches, f"{block.mlp}.gate_proj", output=True)
        done[block.mlp] = quantile64(torch.nn.functional.silu(g), sparsity)
    return done


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.8])
def test_thresholds_match_brute_force(
    llama: nn.Module, batches: list[torch.Tensor], sparsity: float
) -> None:
    state = make_method("cats", sparsity=sparsity).calibrate(llama, batches)
    ref = brute_force_cats(llama, batches, sparsity)
    assert set(state.thresholds) == set(ref) == {"model.layers.0.mlp", "model.layers.1.mlp"}
    for path, t in ref.items():
        assert state.thresholds[path] == pytest.approx(t, rel=1e-5, abs=1e-7), path


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.65, 0.9])
def test_realised_sparsity_on_calibration_data(
    llama: nn.Module, batches: list[torch.Tensor], sparsity: float
) -> None:
    method = make_method("cats", sparsity=sparsity)
    report = method.apply(llama, method.calibrate(llama, batches))
    report.reset_counts()
    logits(llama, batches)
    for path, r in report.realised().items():
        assert abs(r - sparsity) <= 0.01, (path, r)


def test_masks_match_brute_force(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    """The sparsified MLP output = down over the kept channels only (float64)."""
    dense = copy.deepcopy(llama)
    method = make_method("cats", sparsity=0.5)
    state = method.calibrate(llama, batches)
    method.apply(llama, state)
    mlp = dense.get_submodule("model.layers.1.mlp")
    x = captured_inputs(llama, batches, "model.layers.1.mlp")  # the sparse model's MLP input
    out = captured_inputs(llama, batches, "model.layers.1.mlp", output=True)
    t = state.thresholds["model.layers.1.mlp"]
    g = x @ mlp.gate_proj.weight.double().T
    a = torch.nn.functional.silu(g)
    u = x @ mlp.up_proj.weight.double().T
    keep = a.abs() > t
    w_down = mlp.down_proj.weight.double()
    for i in range(0, x.shape[0], 7):
        idx = keep[i].nonzero().flatten()
        ref = w_down[:, idx] @ (a[i, idx] * u[i, idx])
        torch.testing.assert_close(out[i], ref, rtol=1e-4, atol=1e-5)


def test_sparsity_zero_is_bit_identical(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    dense = copy.deepcopy(llama)
    method = make_method("cats", sparsity=0)
    report = method.apply(llama, method.calibrate(llama, batches))
    assert all(isinstance(m, SparseGatedMLP) for m in report.modules.values())
    for a, b in zip(logits(llama, batches), logits(dense, batches)):
        assert torch.equal(a, b)
    prompt = batches[1][:1, :5]
    assert torch.equal(
        llama.generate(prompt, max_new_tokens=5, do_sample=False),
        dense.generate(prompt, max_new_tokens=5, do_sample=False),
    )


def test_save_load_round_trip_and_generate(
    llama: nn.Module, batches: list[torch.Tensor], tmp_path
) -> None:
    fresh = copy.deepcopy(llama)
    keys = set(llama.state_dict())
    method = make_method("cats", sparsity=0.6)
    state = method.calibrate(llama, batches)
    method.apply(llama, state)
    assert set(llama.state_dict()) == keys
    loaded = load_state(state.save(tmp_path / "cats.safetensors"))
    assert loaded == state
    apply_state(fresh, loaded)
    for a, b in zip(logits(llama, batches), logits(fresh, batches)):
        assert torch.equal(a, b)
    out = fresh.generate(batches[0][:1, :4], max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 10)


def test_bad_input(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    with pytest.raises(SparseError, match="min_tokens"):
        make_method("cats", sparsity=0.5, min_tokens=-3)
    with pytest.raises(SparseError, match="too short"):
        make_method("cats", sparsity=0.5, min_tokens=1000).calibrate(llama, batches)
    with pytest.raises(SparseError, match="Llama-style"):
        make_method("cats", sparsity=0.5).calibrate(nn.GRU(4, 4), batches)
    state = make_method("cats", sparsity=0.5).calibrate(llama, batches)
    wrong = SparsityState("cats", state.params, {"model.layers.0.mlp.up_proj": 0.1})
    before = copy.deepcopy(llama.state_dict())
    with pytest.raises(SparseError, match="CATS needs a gated MLP"):
        apply_state(llama, wrong)
    assert not any(isinstance(m, SparseGatedMLP) for m in llama.modules())
    assert all(torch.equal(before[k], v) for k, v in llama.state_dict().items())
    apply_state(llama, state)
    with pytest.raises(SparseError, match="already sparsified"):
        apply_state(llama, state)


def test_four_layers() -> None:
    model = tiny_llama(layers=4, seed=7)
    ids = torch.randint(3, 97, (3, 30), generator=torch.Generator().manual_seed(2))
    method = make_method("cats", sparsity=0.4)
    report = method.apply(model, method.calibrate(model, [ids]))
    report.reset_counts()
    logits(model, [ids])
    assert len(report.modules) == 4
    assert all(abs(r - 0.4) <= 0.01 for r in report.realised().values())
