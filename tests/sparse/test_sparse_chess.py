"""CHESS on a tiny random Llama: channel thresholds and q/o thresholds against a full-model
float64 brute force, realised sparsity, sparsity 0, save/load, generate, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from sparse_helpers import captured_inputs, logits, partial, quantile64
from torch import nn

from actlab.sparse import (
    SparseError,
    SparseGatedMLP,
    SparseLinear,
    apply_state,
    find_blocks,
    load_state,
    make_method,
)
from actlab.sparse._methods.chess import channel_thresholds


def brute_force_chess(
    dense: nn.Module, batches: list[torch.Tensor], s: float, attention: bool = True
) -> dict[str, object]:
    params = {"sparsity": s, "attention": attention}
    done: dict[str, object] = {}
    for block in find_blocks(dense):
        if attention:
            for n in ("q_proj", "o_proj"):
                model = partial(dense, "chess", params, done)
                done[block.proj(n)] = quantile64(captured_inputs(model, batches, block.proj(n)), s)
        model = partial(dense, "chess", params, done)
        g = captured_inputs(model, batches, f"{block.mlp}.gate_proj", output=True)
        u = captured_inputs(model, batches, f"{block.mlp}.up_proj", output=True)
        a = torch.nn.functional.silu(g)
        e_up = (u * u).mean(0)
        t = quantile64(a * a * e_up, s)  # importance >= 0, so |.| changes nothing
        done[block.mlp] = torch.sqrt(t / e_up)
    return done


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("sparsity", [0.3, 0.6])
def test_thresholds_match_brute_force(
    llama: nn.Module, batches: list[torch.Tensor], sparsity: float, attention: bool
) -> None:
    state = make_method("chess", sparsity=sparsity, attention=attention).calibrate(llama, batches)
    ref = brute_force_chess(llama, batches, sparsity, attention)
    assert set(state.thresholds) == set(ref)
    assert len(ref) == (3 if attention else 1) * 2
    for path, t in ref.items():
        got = state.thresholds[path]
        if isinstance(t, torch.Tensor):
            torch.testing.assert_close(got.double(), t, rtol=1e-4, atol=1e-7)
        else:
            assert got == pytest.approx(t, rel=1e-5, abs=1e-7), path


def test_channel_thresholds_closed_form() -> None:
    gate = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    up = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # channel 1 never contributes
    t = channel_thresholds(gate, up, 0.5)
    # importance: channel 0 -> [1, 9], channel 1 -> [0, 0]; T = quantile([1, 9, 0, 0], .5) = .5
    assert t[0].item() == pytest.approx((0.5 / 1.0) ** 0.5) and t[1].item() == float("inf")
    assert torch.equal(channel_thresholds(gate, up, 0.0), torch.full((2,), -1.0).double())


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.7])
def test_realised_sparsity_on_calibration_data(
    llama: nn.Module, batches: list[torch.Tensor], sparsity: float
) -> None:
    method = make_method("chess", sparsity=sparsity)
    report = method.apply(llama, method.calibrate(llama, batches))
    kinds = {type(m) for m in report.modules.values()}
    assert kinds == {SparseLinear, SparseGatedMLP}
    assert isinstance(llama.model.layers[0].self_attn.k_proj, nn.Linear)
    assert not isinstance(llama.model.layers[0].self_attn.k_proj, SparseLinear)  # KV exact
    report.reset_counts()
    logits(llama, batches)
    for path, r in report.realised().items():
        assert abs(r - sparsity) <= 0.01, (path, r)


def test_sparsity_zero_save_load_generate(
    llama: nn.Module, batches: list[torch.Tensor], tmp_path
) -> None:
    dense = copy.deepcopy(llama)
    zero = copy.deepcopy(llama)
    method = make_method("chess", sparsity=0.0)
    method.apply(zero, method.calibrate(zero, batches))
    for a, b in zip(logits(zero, batches), logits(dense, batches)):
        assert torch.equal(a, b)
    method = make_method("chess", sparsity=0.5)
    state = method.calibrate(llama, batches)
    method.apply(llama, state)
    loaded = load_state(state.save(tmp_path / "chess.safetensors"))
    assert loaded == state
    apply_state(dense, loaded)
    for a, b in zip(logits(llama, batches), logits(dense, batches)):
        assert torch.equal(a, b)
    out = dense.generate(batches[0][:1, :5], max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 10)


def test_bad_input(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    for kw, text in [
        ({"sparsity": 1.0}, r"\[0, 1\)"),
        ({"sparsity": 0.5, "attention": "yes"}, "True or False"),
        ({"sparsity": 0.5, "min_tokens": 0}, "min_tokens"),
    ]:
        with pytest.raises(SparseError, match=text):
            make_method("chess", **kw)
    with pytest.raises(SparseError, match="Llama-style"):
        make_method("chess", sparsity=0.5).calibrate(nn.Linear(3, 3), batches)
