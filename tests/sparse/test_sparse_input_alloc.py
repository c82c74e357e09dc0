"""TEAL ``layer_allocation="inputs"``: one sparsity per input type from measured damage curves.

``input_damage`` is checked against a brute force (the model with every site of one input type
wrapped by a zeroing SparseLinear at the dense quantile, KL from the dense logits in float64),
the curves are 0 at nothing zeroed and grow with the level, and the allocation's
parameter-weighted sparsity equals the target, with each site calibrated to its type's share.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actlab.sparse import INPUT_OF, PROJECTIONS, SparseError, find_blocks, make_method
from actlab.sparse._layer_alloc import input_damage


def _brute_force(
    model: nn.Module, batches: list[torch.Tensor], g: str, s: float, prefill: float
) -> float:
    """KL(dense || only input type g zeroed below its dense s-quantile after the first
    ``prefill`` fraction of positions), per position after the prefill."""
    blocks = find_blocks(model)
    inputs: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for b in blocks:
        for n in PROJECTIONS:
            if INPUT_OF[n] != g:
                continue
            path = b.proj(n)
            hooks.append(
                model.get_submodule(path).register_forward_pre_hook(
                    lambda _m, a, p=path: inputs.setdefault(p, []).append(a[0].detach())
                )
            )
    with torch.no_grad():
        dense = [model(input_ids=x, use_cache=False).logits.double() for x in batches]
    for h in hooks:
        h.remove()
    sparse = copy.deepcopy(model)
    for path, xs in inputs.items():
        x = torch.cat([v.reshape(-1, v.shape[-1]) for v in xs]).abs()
        t = float(torch.quantile(x.double().flatten(), s))  # linear, as TEAL's
        lin = sparse.get_submodule(path)

        def zero(_m: nn.Module, a: tuple[torch.Tensor, ...], t: float = t) -> tuple:
            x = a[0]
            p = int(prefill * x.shape[1])
            out = x.clone()
            out[:, p:] = x[:, p:] * (x[:, p:].abs() > t)
            return (out,)

        lin.register_forward_pre_hook(zero)
    kl, n = 0.0, 0
    with torch.no_grad():
        for x, ref in zip(batches, dense):
            logp = F.log_softmax(sparse(input_ids=x, use_cache=False).logits.double(), -1)
            r = F.log_softmax(ref, -1)
            p = int(prefill * r.shape[1])
            r, logp = r[:, p:], logp[:, p:]
            kl += float((r.exp() * (r - logp)).sum())
            n += r.shape[0] * r.shape[1]
    return kl / n


@pytest.mark.parametrize("prefill", [0.0, 0.5])
def test_input_damage_matches_brute_force(
    llama: nn.Module, batches: list[torch.Tensor], prefill: float
) -> None:
    levels = (0.3, 0.7)
    blocks = find_blocks(llama)
    curves = input_damage(llama, blocks, batches, levels=levels, tokens=10_000, prefill=prefill)
    assert set(curves) == {"attn_in", "o_in", "mlp_in", "down_in"}
    for g, row in curves.items():
        for s, got in zip(levels, row):
            want = _brute_force(llama, batches, g, s, prefill)
            assert got == pytest.approx(want, rel=1e-3, abs=5e-8), (g, s)  # float32 logits
        assert row[0] >= 0.0 and row[1] > row[0]


def test_inputs_allocation_meets_the_weighted_target(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    target = 0.5
    state = make_method("teal", sparsity=target, layer_allocation="inputs").calibrate(
        llama, batches
    )
    blocks = find_blocks(llama)
    by_type: dict[str, set[float]] = {}
    size, weighted = 0.0, 0.0
    for b in blocks:
        for n, path in b.projections().items():
            s = state.targets[path]
            by_type.setdefault(INPUT_OF[n], set()).add(round(s, 9))
            w = float(llama.get_submodule(path).weight.numel())
            size += w
            weighted += w * s
    assert weighted / size == pytest.approx(target, abs=1e-6)
    assert all(len(v) == 1 for v in by_type.values()), by_type  # one sparsity per input type
    assert len({next(iter(v)) for v in by_type.values()}) > 1  # and the types differ


def test_inputs_allocation_is_refused_with_a_bad_name(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    with pytest.raises(SparseError, match="layer_allocation must be one of"):
        make_method("teal", sparsity=0.5, layer_allocation="input")
    with pytest.raises(SparseError, match="prefill must be a fraction"):
        input_damage(llama, find_blocks(llama), batches, prefill=1.0)
