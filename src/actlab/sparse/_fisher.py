"""Loss-aware sparsity: Fisher-weighted channel thresholds and one global allocation.

Zeroing the entry ``x_i`` of a projection's input changes the LM loss by about
``-g_i x_i + 1/2 H_ii x_i^2`` (``g = dL/dx``); at a trained model the first term averages
out and the diagonal Fisher ``F_i = E[g_i^2]`` stands in for ``H_ii`` (Optimal Brain Damage,
LeCun et al. 1990). So the expected damage of dropping entry ``i`` of one token is
``e_i = F_i x_i^2``, while dropping it saves reading one column of the weights: ``cost``
values (the summed ``out_features`` of the projections reading that input; q|k|v share the
attention input, gate|up the MLP input). Minimising the summed damage for a given number of
weights not read (parameter-weighted sparsity ``s``) gives, with one Lagrange multiplier
``lambda`` for the whole model,

    drop x_i  iff  F_i x_i^2 / cost < lambda   <=>   |x_i| < sqrt(lambda * cost / F_i),

a per-channel threshold at every site whose *shape* is ``1 / sqrt(F_i)`` (the criterion
``|x_i| sqrt(F_i)``, what :class:`~actlab.sparse.Teal` calls ``criterion="fisher"``) and
whose *level* comes from the global ``lambda`` (``layer_allocation="fisher"``): fragile
blocks and inputs (first and last blocks, attention) get low sparsity, robust ones high,
all from one dense forward+backward of the calibration text. This is actlab's criterion, not
a published method; ``F`` is the empirical Fisher (the true next tokens' loss), measured on
the dense model, and the damages are treated as additive (the measured perplexity says how
far that carries).

With ``prefill`` (a fraction of each sequence) the statistics describe decoding after a dense
prefill: the loss counts only the predictions made at positions ``>= prefill * T`` and ``F``
and the sampled ``|x|`` are taken at those positions only. Without it, the first tokens (the
attention sink, whose keys and values every later position reads) dominate the attention
input's Fisher, although decoding never sparsifies them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from actlab.sparse._sites import INPUT_OF, PROJECTIONS, Batch, Block, _device
from actlab.sparse._state import SparseError

__all__ = ["FisherStats", "fisher_allocation", "fisher_stats"]

GROUPS = ("attn_in", "o_in", "mlp_in", "down_in")
READER = {"attn_in": "q_proj", "o_in": "o_proj", "mlp_in": "gate_proj", "down_in": "down_proj"}


@dataclass
class FisherStats:
    """Per site ``(block path, input)``: ``fisher`` ``E[g^2]`` per channel ``[d_in]``, a sample
    of ``|x|`` ``[n, d_in]`` (dense model) and ``cost`` (summed out_features of its readers)."""

    fisher: dict[tuple[str, str], torch.Tensor]
    sample: dict[tuple[str, str], torch.Tensor]
    cost: dict[tuple[str, str], int]
    tokens: int


def fisher_stats(
    model: nn.Module,
    data: Sequence[Batch],
    blocks: Sequence[Block],
    *,
    sample_every: int = 4,
    prefill: float = 0.0,
) -> FisherStats:
    """One dense forward+backward of ``model`` per batch with the next-token loss.

    The parameters are frozen for the pass (their gradients are not computed) and given back
    their ``requires_grad`` afterwards; the model is not changed. ``sample_every``: every
    k-th token's inputs are kept for :func:`fisher_allocation`. ``prefill``: the first
    ``int(prefill * T)`` positions of each sequence count as a dense prefill (module docstring).
    """
    if isinstance(sample_every, bool) or not isinstance(sample_every, int) or sample_every < 1:
        raise SparseError(f"sample_every must be a positive integer; got {sample_every!r}")
    if isinstance(prefill, bool) or not isinstance(prefill, (int, float)) or not 0 <= prefill < 1:
        raise SparseError(f"prefill must be a fraction in [0, 1); got {prefill!r}")
    modules = dict(model.named_modules())
    fisher: dict[tuple[str, str], torch.Tensor] = {}
    sample: dict[tuple[str, str], list[torch.Tensor]] = {}
    cost: dict[tuple[str, str], int] = {}
    for b in blocks:
        for g in GROUPS:
            cost[(b.path, g)] = sum(
                int(modules[b.proj(n)].weight.shape[0]) for n in PROJECTIONS if INPUT_OF[n] == g
            )
    handles = []

    def pre(_m: nn.Module, args: tuple[Any, ...], key: tuple[str, str]) -> None:
        x = args[0]
        if not isinstance(x, torch.Tensor) or not x.requires_grad:
            return
        p = int(prefill * x.shape[-2])  # x: [B, T, d_in]
        flat = x.detach()[..., p:, :].reshape(-1, x.shape[-1])  # [B * (T - p), d_in]
        sample.setdefault(key, []).append(flat[::sample_every].abs().float().cpu())

        def grad(gr: torch.Tensor) -> None:
            tail = gr.detach()[..., p:, :].float().reshape(-1, gr.shape[-1])
            sq = tail.pow(2).sum(0).cpu()  # [d_in]
            fisher[key] = fisher[key] + sq if key in fisher else sq

        x.register_hook(grad)

    for b in blocks:
        for g in GROUPS:
            m = modules[b.proj(READER[g])]
            handles.append(
                m.register_forward_pre_hook(lambda mod, a, key=(b.path, g): pre(mod, a, key))
            )
    get_emb = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    if not isinstance(emb, nn.Module):
        raise SparseError("the Fisher criterion needs a causal LM with get_input_embeddings()")
    handles.append(emb.register_forward_hook(lambda _m, _a, y: y.detach().requires_grad_()))
    frozen = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    dev = _device(model)
    tokens = 0
    try:
        for p in frozen:
            p.requires_grad_(False)
        model.eval()
        with torch.enable_grad():
            for batch in data:
                ids = (batch["input_ids"] if isinstance(batch, dict) else batch).to(dev)
                kwargs = {k: v.to(dev) for k, v in batch.items()} if isinstance(batch, dict) else {}
                kwargs["input_ids"] = ids
                dense = int(prefill * ids.shape[1])  # prefill positions
                if ids.shape[1] - dense < 2:
                    raise SparseError(
                        f"calibration sequences of {ids.shape[1]} tokens leave no prediction "
                        f"after a prefill of {dense}; use longer windows or a smaller prefill"
                    )
                labels = ids.clone()
                labels[:, : dense + 1] = -100  # label j is predicted at position j - 1 >= dense
                out = model(**kwargs, labels=labels, use_cache=False)
                loss = out.loss
                if loss is None or not loss.requires_grad:
                    raise SparseError("the model returned no differentiable loss for its labels")
                (loss * ids.shape[0]).backward()  # sum over sequences of the per-token mean
                tokens += int(ids.shape[0] * (ids.shape[1] - dense))
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(True)
        model.train(was)
    missing = [k for k in cost if k not in fisher]
    if missing:
        raise SparseError(f"no gradient reached {missing[0][0]} ({missing[0][1]})")
    return FisherStats(
        fisher={k: v / max(tokens, 1) for k, v in fisher.items()},
        sample={k: torch.cat(v) for k, v in sample.items()},
        cost=cost,
        tokens=tokens,
    )


def fisher_allocation(
    stats: FisherStats, target: float, *, cap: float = 0.95, iters: int = 100
) -> dict[tuple[str, str], float]:
    """Per site, the sparsity that one global ``lambda`` gives (see the module docstring).

    ``lambda`` is found by bisection (in log space) so that the parameter-weighted sparsity
    ``sum_site w s_site / sum_site w`` (``w = d_in * cost``) is ``target`` on the sampled
    dense inputs; each site's share is cut at ``cap``.
    """
    if not 0.0 <= target < 1.0:
        raise SparseError(f"sparsity must be in [0, 1); got {target}")
    cap = max(cap, target)
    if target == 0:
        return dict.fromkeys(stats.fisher, 0.0)
    scores: dict[tuple[str, str], torch.Tensor] = {}
    weight: dict[tuple[str, str], float] = {}
    for k, f in stats.fisher.items():
        x = stats.sample[k].double()  # [n, d_in]
        e = (x.pow(2) * f.double()) / stats.cost[k]  # damage per weight not read
        scores[k] = e.reshape(-1).sort().values
        weight[k] = float(x.shape[1] * stats.cost[k])
    total = sum(weight.values())

    def spread(lam: float) -> dict[tuple[str, str], float]:
        out = {}
        for k, e in scores.items():
            frac = float(torch.searchsorted(e, torch.tensor([lam], dtype=e.dtype))) / e.numel()
            out[k] = min(frac, cap)
        return out

    def mean(alloc: Mapping[tuple[str, str], float]) -> float:
        return sum(weight[k] * s for k, s in alloc.items()) / total

    positive = torch.cat([e[e > 0] for e in scores.values()])
    lo = float(positive.min()) / 2 if positive.numel() else 1e-30
    hi = float(max(float(e[-1]) for e in scores.values())) * 2 + 1e-30
    for _ in range(iters):  # geometric bisection: the scores span many decades
        mid = (lo * hi) ** 0.5
        if mean(spread(mid)) < target:
            lo = mid
        else:
            hi = mid
    return spread(hi)
