"""Across-layer allocation: sparsities per block, input type or site from measured damage curves.

TEAL's greedy search spreads a block's sparsity over its 7 projections; it does not move
sparsity *between* blocks, although the first and last blocks of a small model are far more
fragile than the middle ones. Here each block ``l`` gets a damage curve

    D_l(s) = KL(p_dense || p_l,s)   (mean over calibration positions)

where ``p_l,s`` is the model with only block ``l`` sparsified, every projection at sparsity
``s`` (dense-quantile thresholds), measured at a few ``levels`` and linearly interpolated with
``D_l(0) = 0`` (made non-decreasing). :func:`allocate` then raises, step by step, the block
whose damage grows least per unit of parameter-weighted sparsity, until the weighted mean
reaches the target: the greedy solution of ``min sum_l D_l(s_l)`` subject to
``sum_l w_l s_l = target sum_l w_l``, optimal when the curves are convex (tested against a
brute-force grid search). Treating the damages as additive ignores their interaction; the
measured perplexities say how far that carries.

The same curves per input type (``D_g``: that input of every block sparsified) or per site
(``D_(l,g)``: one input of one block) feed the same greedy (:func:`damage_curves`). All of
them keep the first half of each sequence dense and score the positions after it, as
decoding after a dense prefill does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from actlab.sparse._calls import cache_of, forward_logits
from actlab.sparse._modules import exact_quantile
from actlab.sparse._sites import (
    INPUT_OF,
    PROJECTIONS,
    Batch,
    Block,
    _device,
    batch_ids,
    batch_rows,
    run_model,
)
from actlab.sparse._state import SparseError

__all__ = [
    "LEVELS",
    "allocate",
    "block_damage",
    "damage_curves",
    "first_tokens",
    "input_damage",
    "interpolate",
]

K = TypeVar("K", bound=Hashable)
LEVELS = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)
READER = {"attn_in": "q_proj", "o_in": "o_proj", "mlp_in": "gate_proj", "down_in": "down_proj"}


def interpolate(levels: Sequence[float], values: Sequence[float], s: float) -> float:
    """Piecewise-linear ``D(s)`` through ``(0, 0)`` and ``(levels[i], values[i])``; flat after
    the last level."""
    if len(levels) != len(values) or not levels:
        raise SparseError("a damage curve needs one value per level")
    px, py = 0.0, 0.0
    for x, y in zip(levels, values):
        if s <= x:
            return py + (y - py) * (s - px) / (x - px) if x > px else y
        px, py = x, y
    return py


def monotone(values: Sequence[float]) -> list[float]:
    """``values`` made non-decreasing (running maximum, starting from 0)."""
    out, top = [], 0.0
    for v in values:
        top = max(top, float(v))
        out.append(top)
    return out


def allocate(
    curves: Mapping[K, Sequence[float]],
    levels: Sequence[float],
    weights: Mapping[K, float],
    target: float,
    *,
    step: float = 0.01,
    cap: float | None = None,
) -> dict[K, float]:
    """Per-site sparsities with ``sum w s / sum w = target`` minimising the summed damage
    greedily (see the module docstring). ``cap`` (default: the last level) bounds each site."""
    if set(curves) != set(weights):
        raise SparseError("damage curves and weights must name the same sites")
    cap = max(float(levels[-1]) if cap is None else cap, target)
    total = sum(weights.values())
    s = dict.fromkeys(curves, 0.0)
    curve = {k: monotone(v) for k, v in curves.items()}
    need, done = target * total, 0.0
    while need - done > 1e-9 * total:
        best: tuple[float, K, float] | None = None
        for k, w in weights.items():
            inc = min(step, cap - s[k], (need - done) / w)
            if inc <= 1e-12:
                continue
            cost = interpolate(levels, curve[k], s[k] + inc) - interpolate(levels, curve[k], s[k])
            rate = cost / (inc * w)
            if best is None or rate < best[0]:
                best = (rate, k, inc)
        if best is None:
            break
        _, k, inc = best
        s[k] += inc
        done += inc * weights[k]
    return s


def _head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Final norm + LM head (+ Gemma's logit soft-cap) of a transformers causal LM."""
    base = getattr(model, "model", None)
    norm = getattr(base, "norm", None)
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    if not isinstance(norm, nn.Module) or not isinstance(head, nn.Module):
        raise SparseError(
            "layer allocation needs a transformers causal LM with model.norm and an LM head "
            "(Llama, Mistral, Qwen2, Gemma); use layer_allocation='uniform'"
        )
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)

    def logits(h: torch.Tensor) -> torch.Tensor:
        z = head(norm(h)).float()
        return torch.tanh(z / cap) * cap if cap else z

    return logits


def _kl_add(kl: float, n: int, ref: torch.Tensor, logp: torch.Tensor) -> tuple[float, int]:
    """``kl`` and position count ``n`` plus ``sum KL(ref || logp)`` over the positions of
    log-probabilities ``[B, T, vocab]``."""
    return kl + float((ref.exp() * (ref - logp)).sum()), n + ref.shape[0] * ref.shape[1]


class _Tail:
    """The logits of the positions after a dense prefill of one batch, recomputed on demand.

    With token-id batches the prefill runs once, densely, into a KV cache, and each
    :meth:`logits` call runs only the positions after it on a copy of that cache (half the
    work at ``prefill=0.5``); otherwise (batches given as keyword dicts, or no prefill) the
    whole sequence runs and the zeroing hooks must keep its first ``dense`` positions dense
    (``dense`` is 0 on the cached path)."""

    def __init__(self, model: nn.Module, batch: Batch, prefill: float) -> None:
        self.model, self.batch = model, batch
        ids = batch_ids(batch)
        self.p = int(prefill * ids.shape[1])
        self.cache: Any = None
        if self.p > 0 and not isinstance(batch, dict):
            ids = ids.to(_device(model))
            self.tail = ids[:, self.p :]
            self.cache = cache_of(forward_logits(model, ids[:, : self.p], 1, cache=True))
        self.dense = 0 if self.cache is not None else self.p  # positions the hooks keep

    def logits(self) -> torch.Tensor:
        """float64 logits ``[B, T - p, vocab]`` of the positions after the prefill (the KLs
        are differences of nearby log-probabilities: float32 rounding is ~1% of them)."""
        if self.cache is not None:
            cache = copy.deepcopy(self.cache)
            out = forward_logits(self.model, self.tail, self.tail.shape[1], cache)
            return out.logits.double()
        return run_model(self.model, self.batch).logits.double()[:, self.p :]


def first_tokens(data: list[Batch], tokens: int) -> list[Batch]:
    """The first whole rows (sequences) of ``data`` holding at least ``tokens`` tokens."""
    use: list[Batch] = []
    seen = 0
    for b in data:
        ids = batch_ids(b)
        rows = min(ids.shape[0], -(-(tokens - seen) // ids.shape[1]))
        use.append(batch_rows(b, 0, rows))
        seen += rows * ids.shape[1]
        if seen >= tokens:
            break
    return use


BY = ("block", "type", "site")


def block_damage(
    model: nn.Module, blocks: list[Block], data: list[Batch], **kwargs: Any
) -> dict[Any, list[float]]:
    """``D_l(s)`` at ``levels`` for every block ``l`` (the module docstring):
    :func:`damage_curves` with ``by="block"``."""
    return damage_curves(model, blocks, data, by="block", **kwargs)


def input_damage(
    model: nn.Module, blocks: list[Block], data: list[Batch], **kwargs: Any
) -> dict[Any, list[float]]:
    """``D_g(s)`` for each input type ``g`` (``attn_in``, ``o_in``, ``mlp_in``, ``down_in``)
    with that input of *every* block sparsified: :func:`damage_curves` with ``by="type"``.
    On a rotated model the attention input becomes far cheaper to sparsify than the MLP input
    (measured on SmolLM2), which a per-block allocation cannot exploit."""
    return damage_curves(model, blocks, data, by="type", **kwargs)


@torch.no_grad()
def damage_curves(
    model: nn.Module,
    blocks: list[Block],
    data: list[Batch],
    *,
    by: str,
    levels: Sequence[float] = LEVELS,
    tokens: int = 512,
    prefill: float = 0.5,
    progress: Callable[[str], None] | None = None,
) -> dict[Any, list[float]]:
    """Damage curves ``D_k(s)`` at ``levels``: the KL divergence from the dense model with the
    sites of group ``k`` zeroed below their dense ``s``-quantile (all other sites dense), on
    the first batches of ``data`` holding ``tokens`` tokens. A site is one input (``attn_in``,
    ``o_in``, ``mlp_in``, ``down_in``) of one block; ``by`` groups them: ``"block"`` (key: the
    block's path; its four inputs together), ``"type"`` (key: the input type, in every block)
    or ``"site"`` (key: ``(block path, input type)``; ``4 x blocks`` curves, each
    ``len(levels)`` forwards of those tokens).

    As in decoding after a dense prefill, the first ``prefill`` fraction of each sequence stays
    dense and the KL is taken over the positions after it: sparsifying the first tokens (the
    attention sink) damages every later position through their keys and values, which real
    decoding never does (on SmolLM2 that made the attention input look 3x too costly)."""
    if by not in BY:
        raise SparseError(f"damage curves group sites by one of {', '.join(BY)}; got {by!r}")
    if isinstance(prefill, bool) or not isinstance(prefill, (int, float)) or not 0 <= prefill < 1:
        raise SparseError(f"prefill must be a fraction in [0, 1); got {prefill!r}")
    use = first_tokens(data, tokens)
    sites = {
        (b.path, g): [model.get_submodule(b.proj(n)) for n in PROJECTIONS if INPUT_OF[n] == g]
        for b in blocks
        for g in READER
    }

    def key_of(site: tuple[str, str]) -> Any:
        return site[0] if by == "block" else site[1] if by == "type" else site

    seen: dict[tuple[str, str], list[torch.Tensor]] = {}
    hooks = []
    for b in blocks:
        for g, r in READER.items():

            def grab(_m: nn.Module, a: tuple[Any, ...], key: tuple[str, str] = (b.path, g)) -> None:
                seen.setdefault(key, []).append(a[0].detach().abs().reshape(-1, a[0].shape[-1]))

            hooks.append(model.get_submodule(b.proj(r)).register_forward_pre_hook(grab))
    try:
        for u in use:
            run_model(model, u)
    finally:
        for h in hooks:
            h.remove()
    missing = [k for k in sites if k not in seen]
    if missing:
        raise SparseError(f"block {missing[0][0]} never ran on the calibration batches")
    thresholds = {k: [exact_quantile(torch.cat(v), s) for s in levels] for k, v in seen.items()}
    seen.clear()
    tails = [_Tail(model, u, prefill) for u in use]
    dense_logp = [F.log_softmax(t.logits(), -1) for t in tails]  # [B, T - p, vocab]
    groups: dict[Any, list[tuple[str, str]]] = {}
    for site in sites:
        groups.setdefault(key_of(site), []).append(site)
    curves: dict[Any, list[float]] = {}
    running = [0]  # the dense positions of the tail being run (read by the hooks)
    for key, members in groups.items():
        row = []
        for i in range(len(levels)):
            hooks = []
            for site in members:
                t = float(thresholds[site][i])

                def zero(_m: nn.Module, a: tuple[Any, ...], t: float = t) -> tuple[Any, ...]:
                    x = a[0]  # [B, T, d]: the positions after the prefill (all of them, or
                    keep = x.abs() > t  # the whole sequence when there is no prefix cache)
                    keep[..., : running[0], :] = True
                    return (x * keep, *a[1:])

                hooks.extend(m.register_forward_pre_hook(zero) for m in sites[site])
            try:
                kl, n = 0.0, 0
                for tail, ref in zip(tails, dense_logp):
                    running[0] = tail.dense
                    kl, n = _kl_add(kl, n, ref, F.log_softmax(tail.logits(), -1))
            finally:
                for h in hooks:
                    h.remove()
            row.append(kl / n)
        curves[key] = row
        if progress is not None:
            progress(f"  damage of {key}: " + ", ".join(f"{v:.4f}" for v in row))
    return curves
