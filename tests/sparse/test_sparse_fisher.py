"""Loss-aware TEAL: the weighted / Fisher criteria and the global Fisher allocation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sparse_helpers import captured_inputs, logits, tiny_llama
from torch import nn

from actlab.sparse import SparseError, apply_state, find_blocks, make_method
from actlab.sparse._fisher import FisherStats, fisher_allocation, fisher_stats
from actlab.sparse._sites import INPUT_OF, PROJECTIONS

GROUPS = ("attn_in", "o_in", "mlp_in", "down_in")
NORM_OF = {"attn_in": "input_layernorm", "mlp_in": "post_attention_layernorm"}


def _fisher_brute_force(
    model: nn.Module, batches: list[torch.Tensor], block: str, group: str, prefill: float = 0.0
):
    """E[(dL/dx)^2] of a block's attention / MLP input: a zero perturbation added to the norm's
    output, differentiated by autograd (float64). With ``prefill``: the loss of the predictions
    made after the first ``p = int(prefill * T)`` positions, the gradient at those positions."""
    m = model  # float64
    total = torch.zeros(m.config.hidden_size, dtype=torch.float64)
    n = 0
    norm = m.get_submodule(f"{block}.{NORM_OF[group]}")
    for ids in batches:
        p = int(prefill * ids.shape[1])
        delta = torch.zeros(*ids.shape, m.config.hidden_size, dtype=torch.float64)
        delta.requires_grad_(True)
        h = norm.register_forward_hook(lambda _m, _a, y, d=delta: y + d)
        try:
            logits = m(input_ids=ids, use_cache=False).logits  # [B, T, vocab]
            nll = F.cross_entropy(
                logits[:, p:-1].reshape(-1, logits.shape[-1]), ids[:, p + 1 :].reshape(-1)
            )
            (g,) = torch.autograd.grad(nll * ids.shape[0], delta)
        finally:
            h.remove()
        total += g[:, p:].reshape(-1, g.shape[-1]).pow(2).sum(0)
        n += ids.shape[0] * (ids.shape[1] - p)
    return total / n


@pytest.mark.parametrize("prefill", [0.0, 0.5])
def test_fisher_stats_match_autograd(batches: list[torch.Tensor], prefill: float) -> None:
    model = tiny_llama(layers=2).double()
    blocks = find_blocks(model)
    stats = fisher_stats(model, batches, blocks, sample_every=1, prefill=prefill)
    T = batches[0].shape[1]
    p = int(prefill * T)
    assert stats.tokens == sum(b.shape[0] * (b.shape[1] - p) for b in batches)
    for b in blocks:
        for g in ("attn_in", "mlp_in"):
            ref = _fisher_brute_force(model, batches, b.path, g, prefill)
            got = stats.fisher[(b.path, g)].double()
            assert torch.allclose(got, ref, rtol=1e-4, atol=1e-12), (b.path, g)
        # the sampled inputs are |x| of the reading projection after the prefill, every token
        x = captured_inputs(model, batches, b.proj("down_proj"))  # [sequences * T, d]
        x = x.reshape(-1, T, x.shape[-1])[:, p:].reshape(-1, x.shape[-1])
        assert torch.allclose(stats.sample[(b.path, "down_in")].double(), x.abs(), atol=1e-6)
    cfg = model.config
    assert stats.cost[(blocks[0].path, "attn_in")] == cfg.hidden_size + 2 * (
        cfg.num_key_value_heads * cfg.hidden_size // cfg.num_attention_heads
    )
    assert stats.cost[(blocks[0].path, "mlp_in")] == 2 * cfg.intermediate_size
    assert all(p.requires_grad for p in model.parameters())  # given back


def _stats(rng: torch.Generator) -> FisherStats:
    keys = [("b0", "attn_in"), ("b0", "down_in"), ("b1", "mlp_in")]
    dims = {"attn_in": 6, "down_in": 10, "mlp_in": 8}
    cost = {"attn_in": 12, "down_in": 6, "mlp_in": 20}
    return FisherStats(
        fisher={k: torch.rand(dims[k[1]], generator=rng) + 0.1 for k in keys},
        sample={k: torch.randn(50, dims[k[1]], generator=rng).abs() for k in keys},
        cost={k: cost[k[1]] for k in keys},
        tokens=50,
    )


@pytest.mark.parametrize("target", [0.1, 0.4, 0.7])
def test_fisher_allocation_is_the_cheapest_set_of_entries(target: float) -> None:
    """Brute force: sort every sampled entry by damage per weight saved and take them in
    order until the parameter-weighted sparsity reaches the target."""
    stats = _stats(torch.Generator().manual_seed(1))
    alloc = fisher_allocation(stats, target, cap=1.0)
    weight = {k: x.shape[1] * stats.cost[k] for k, x in stats.sample.items()}
    total = sum(weight.values())
    got = sum(weight[k] * s for k, s in alloc.items()) / total
    entry = max(weight[k] / stats.sample[k].numel() for k in weight) / total  # one entry's share
    assert abs(got - target) <= entry + 1e-12
    entries = []
    for k, x in stats.sample.items():
        e = x.double().pow(2) * stats.fisher[k].double() / stats.cost[k]
        entries += [(float(v), k) for v in e.reshape(-1)]
    entries.sort()
    taken = dict.fromkeys(stats.sample, 0)
    done = 0.0
    for _, k in entries:
        if done >= target - 1e-12:
            break
        taken[k] += 1
        done += weight[k] / stats.sample[k].numel() / total
    for k in stats.sample:
        assert alloc[k] == pytest.approx(taken[k] / stats.sample[k].numel(), abs=1.5 / 50), k


def test_fisher_allocation_caps_and_zero() -> None:
    stats = _stats(torch.Generator().manual_seed(2))
    assert set(fisher_allocation(stats, 0.0).values()) == {0.0}
    alloc = fisher_allocation(stats, 0.6, cap=0.7)
    assert max(alloc.values()) <= 0.7 + 1e-12
    with pytest.raises(SparseError, match=r"\[0, 1\)"):
        fisher_allocation(stats, 1.0)


@pytest.mark.parametrize("criterion", ["weighted", "fisher"])
def test_channel_criteria_thresholds_and_realised_sparsity(
    llama: nn.Module, batches: list[torch.Tensor], criterion: str
) -> None:
    """Per-channel thresholds t / c_i with t the s-quantile of |x_i| c_i; siblings share one
    vector; the realised sparsity on the calibration text equals the target per site."""
    state = make_method("teal", sparsity=0.5, criterion=criterion).calibrate(llama, batches)
    block = find_blocks(llama)[0]
    proj = block.projections()
    t_q = state.thresholds[proj["q_proj"]]
    assert isinstance(t_q, torch.Tensor) and t_q.shape == (llama.config.hidden_size,)
    for n in ("k_proj", "v_proj"):
        assert torch.equal(state.thresholds[proj[n]], t_q)
    x = captured_inputs(llama, batches, proj["q_proj"]).abs()  # first site: dense inputs
    if criterion == "weighted":
        w = torch.cat([llama.get_submodule(proj[n]).weight for n in ("q_proj", "k_proj", "v_proj")])
        c = w.detach().double().norm(dim=0)
    else:
        stats = fisher_stats(llama, batches, [block], prefill=0.5)  # TEAL's default
        c = stats.fisher[(block.path, "attn_in")].double().sqrt()
    t = torch.quantile((x * c).reshape(-1), 0.5)
    assert torch.allclose(t_q.double(), t / c, rtol=1e-4)
    report = apply_state(llama, state)
    report.reset_counts()
    logits(llama, batches)
    for path, r in report.realised().items():
        assert abs(r - 0.5) <= 0.01, (path, r)


def test_fisher_layer_allocation_hits_the_weighted_target(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    state = make_method(
        "teal", sparsity=0.4, criterion="fisher", layer_allocation="fisher"
    ).calibrate(llama, batches)
    sizes = {p: llama.get_submodule(p).weight.numel() for p in state.targets}
    mean = sum(sizes[p] * s for p, s in state.targets.items()) / sum(sizes.values())
    assert mean == pytest.approx(0.4, abs=0.01)
    assert len({round(s, 6) for s in state.targets.values()}) > 2  # not uniform
    for b in find_blocks(llama):  # siblings of one input get one target
        for g in GROUPS:
            names = [n for n in PROJECTIONS if INPUT_OF[n] == g]
            assert len({state.targets[b.proj(n)] for n in names}) == 1
    report = apply_state(llama, state)
    report.reset_counts()
    logits(llama, batches)
    realised = report.realised()
    got = sum(sizes[p] * realised[p] for p in sizes) / sum(sizes.values())
    assert got == pytest.approx(0.4, abs=0.01)


def test_criterion_errors(llama: nn.Module) -> None:
    with pytest.raises(SparseError, match="criterion must be one of"):
        make_method("teal", sparsity=0.5, criterion="entropy")
    with pytest.raises(SparseError, match="needs quantile='exact'"):
        make_method("teal", sparsity=0.5, criterion="fisher", quantile="histogram")
    with pytest.raises(SparseError, match="sample_every"):
        ids = [torch.ones(1, 4, dtype=torch.long)]
        fisher_stats(llama, ids, find_blocks(llama), sample_every=0)
    with pytest.raises(SparseError, match="prefill must be a fraction"):
        fisher_stats(llama, ids, find_blocks(llama), prefill=1.0)
    with pytest.raises(SparseError, match="leave no prediction after a prefill") as e:
        fisher_stats(llama, [torch.ones(1, 2, dtype=torch.long)], find_blocks(llama), prefill=0.5)
    assert "\n" not in str(e.value)
