"""TEAL ``layer_allocation="inputs"`` / ``"sites"``: sparsities per input type or per site
from measured damage curves.

``damage_curves`` (by input type, by site, by block) is checked against a brute force (the
model with the chosen sites zeroed below the dense quantile after the prefill, KL from the dense
logits in float64), the curves grow with the level, and each allocation's parameter-weighted
sparsity equals the target, with each site calibrated to its share.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actlab.sparse import INPUT_OF, PROJECTIONS, SparseError, find_blocks, make_method
from actlab.sparse._layer_alloc import damage_curves, input_damage


def _brute_force(
    model: nn.Module,
    batches: list[torch.Tensor],
    g: str | Callable[[str, str], bool],
    s: float,
    prefill: float,
) -> float:
    """KL(dense || only the chosen sites zeroed below their dense s-quantile after the first
    ``prefill`` fraction of positions), per position after the prefill. ``g``: an input type
    (that input of every block) or a predicate on (block path, input type)."""
    blocks = find_blocks(model)
    pick = g if callable(g) else lambda _path, kind: kind == g
    inputs: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for b in blocks:
        for n in PROJECTIONS:
            if not pick(b.path, INPUT_OF[n]):
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
    # float64: the prefix-cached tail and the full forward then agree far below the thresholds'
    # spacing (in float32 an entry at a threshold may flip between the two: ~0.5% of the KL)
    llama = copy.deepcopy(llama).double()
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


def test_site_and_block_damage_match_brute_force(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    levels, prefill = (0.3, 0.7), 0.5
    llama = copy.deepcopy(llama).double()  # see test_input_damage_matches_brute_force
    blocks = find_blocks(llama)
    kw = {"levels": levels, "tokens": 10_000, "prefill": prefill}
    sites = damage_curves(llama, blocks, batches, by="site", **kw)
    assert set(sites) == {(b.path, g) for b in blocks for g in set(INPUT_OF.values())}
    for path, g in [(blocks[0].path, "attn_in"), (blocks[-1].path, "down_in")]:
        pick = lambda p, kind, path=path, g=g: p == path and kind == g  # noqa: E731
        for s, got in zip(levels, sites[(path, g)]):
            want = _brute_force(llama, batches, pick, s, prefill)
            assert got == pytest.approx(want, rel=1e-3, abs=5e-8), (path, g, s)
    per_block = damage_curves(llama, blocks, batches, by="block", **kw)
    assert set(per_block) == {b.path for b in blocks}
    b0 = blocks[0].path
    for s, got in zip(levels, per_block[b0]):
        want = _brute_force(llama, batches, lambda p, _kind: p == b0, s, prefill)
        assert got == pytest.approx(want, rel=1e-3, abs=5e-8), s
    with pytest.raises(SparseError, match="group sites by one of"):
        damage_curves(llama, blocks, batches, by="layer")


def test_sites_allocation_meets_the_weighted_target(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    target = 0.5
    state = make_method(
        "teal", sparsity=target, layer_allocation="sites", damage_tokens=64
    ).calibrate(llama, batches)
    size, weighted = 0.0, 0.0
    per_site: dict[tuple[str, str], set[float]] = {}
    for b in find_blocks(llama):
        for n, path in b.projections().items():
            s = state.targets[path]
            per_site.setdefault((b.path, INPUT_OF[n]), set()).add(round(s, 9))
            w = float(llama.get_submodule(path).weight.numel())
            size += w
            weighted += w * s
    assert weighted / size == pytest.approx(target, abs=1e-6)
    assert all(len(v) == 1 for v in per_site.values()), per_site  # siblings share a target
    assert len({next(iter(v)) for v in per_site.values()}) > 2  # not one per type or block


def test_inputs_allocation_is_refused_with_a_bad_name(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    with pytest.raises(SparseError, match="layer_allocation must be one of"):
        make_method("teal", sparsity=0.5, layer_allocation="input")
    with pytest.raises(SparseError, match="prefill must be a fraction"):
        input_damage(llama, find_blocks(llama), batches, prefill=1.0)
    with pytest.raises(SparseError, match="prefill must be a fraction"):
        make_method("teal", sparsity=0.5, prefill=-0.1)
