"""Helpers of the sparse tests: a tiny random Llama, logits, and brute-force float64 references."""

from __future__ import annotations

import copy

import torch
import transformers
from torch import nn

from actlab.sparse import SparsityState, apply_state

VOCAB = 97


def randomise_norms(model: nn.Module) -> None:
    """Random RMSNorm weights in [0.5, 1.5): folding them is then exercised (init: all ones)."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))


def assert_realised(
    dense: nn.Module, state: SparsityState, batches: list[torch.Tensor], target: float
) -> None:
    """A copy of ``dense`` sparsified with ``state`` zeroes ``target`` (within 2 points) of
    every site's inputs on ``batches``."""
    fresh = copy.deepcopy(dense)
    rep = apply_state(fresh, state)
    rep.reset_counts()
    logits(fresh, batches)
    for path, r in rep.realised().items():
        assert abs(r - target) <= 0.02, (path, r)


def tiny_llama(layers: int = 2, seed: int = 0) -> nn.Module:
    """LlamaForCausalLM, hidden 64, 4 heads / 2 kv heads (GQA), d_ff 128, random weights."""
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


def logits(model: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(input_ids=b, use_cache=False).logits for b in batches]


def captured_inputs(
    model: nn.Module, batches: list[torch.Tensor], path: str, *, output: bool = False
) -> torch.Tensor:
    """The input (or output) of module ``path`` over full forwards, float64 ``[tokens, d]``."""
    got: list[torch.Tensor] = []
    mod = model.get_submodule(path)
    if output:
        h = mod.register_forward_hook(lambda _m, _a, y: got.append(y.detach().double()))
    else:
        h = mod.register_forward_pre_hook(lambda _m, a: got.append(a[0].detach().double()))
    try:
        logits(model, batches)
    finally:
        h.remove()
    return torch.cat([g.reshape(-1, g.shape[-1]) for g in got])


def partial(dense: nn.Module, method: str, params: dict, thresholds: dict[str, float]) -> nn.Module:
    """A copy of ``dense`` with only ``thresholds`` applied (full-model brute force)."""
    m = copy.deepcopy(dense)
    if thresholds:
        apply_state(m, SparsityState(method, params, dict(thresholds)))
    return m


def quantile64(x: torch.Tensor, q: float) -> float:
    """float64 quantile of |x| (torch.quantile, linear interpolation)."""
    return float(torch.quantile(x.abs().reshape(-1).double(), q))
