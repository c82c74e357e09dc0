"""Across-layer allocation: interpolation, the greedy against a brute-force grid on convex
curves, the weighted target, and TEAL's ``layer_allocation="damage"`` on a tiny Llama (damage
curves non-negative and growing, per-block targets averaging to the target, realised sparsity
on the calibration text matching each block's target)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from sparse_helpers import logits
from torch import nn

from actlab.sparse import SparseError, apply_state, find_blocks, make_method
from actlab.sparse._layer_alloc import LEVELS, allocate, block_damage, interpolate


def test_interpolate_through_origin_and_levels() -> None:
    lv, vals = (0.2, 0.5), (1.0, 4.0)
    assert interpolate(lv, vals, 0.0) == 0.0
    assert interpolate(lv, vals, 0.1) == pytest.approx(0.5)
    assert interpolate(lv, vals, 0.35) == pytest.approx(2.5)
    assert interpolate(lv, vals, 0.9) == 4.0
    with pytest.raises(SparseError):
        interpolate(lv, (1.0,), 0.3)


def test_greedy_matches_brute_force_on_convex_curves() -> None:
    g = torch.Generator().manual_seed(0)
    levels = (0.25, 0.5, 0.75)
    for _ in range(5):
        curves = {}
        for k in "abc":
            a = float(torch.rand(1, generator=g)) + 0.1
            curves[k] = [a * x * x for x in levels]  # convex, D(0) = 0
        weights = {"a": 1.0, "b": 2.0, "c": 1.0}
        target = 0.4
        got = allocate(curves, levels, weights, target, step=0.01)
        total = sum(weights.values())
        assert sum(weights[k] * got[k] for k in got) / total == pytest.approx(target, abs=1e-9)

        def cost(alloc: dict[str, float], curves: dict = curves) -> float:
            return sum(interpolate(levels, curves[k], alloc[k]) for k in alloc)

        best = float("inf")
        grid = [i / 100 for i in range(0, 76)]
        for sa, sb in itertools.product(grid, grid):
            sc = target * total - sa - 2 * sb
            if 0 <= sc <= 0.75:
                best = min(best, cost({"a": sa, "b": sb, "c": sc}))
        assert cost(got) <= best + 1e-3


def test_allocate_checks_its_sites() -> None:
    with pytest.raises(SparseError, match="same sites"):
        allocate({"a": [1.0]}, (0.5,), {"b": 1.0}, 0.3)


def test_damage_curves_and_teal_layer_allocation(
    llama: nn.Module, batches: list[torch.Tensor]
) -> None:
    blocks = find_blocks(llama)
    curves = block_damage(llama, blocks, batches, tokens=48)
    one_row = block_damage(llama, blocks, batches, tokens=20)  # the first sequence only
    first = block_damage(llama, blocks, [batches[0][:1]], tokens=10_000)
    assert one_row == first
    assert set(curves) == {b.path for b in blocks}
    for row in curves.values():
        assert len(row) == len(LEVELS) and all(v >= -1e-7 for v in row)
        assert row[-1] > row[0]
    method = make_method("teal", sparsity=0.5, layer_allocation="damage", damage_tokens=48)
    state = method.calibrate(llama, batches)
    per_block = []
    for b in blocks:
        targets = [state.targets[p] for p in b.projections().values()]
        assert len(set(targets)) == 1  # uniform inside the block
        per_block.append(targets[0])
    assert sum(per_block) / len(per_block) == pytest.approx(0.5, abs=1e-9)
    sparse = copy.deepcopy(llama)
    rep = apply_state(sparse, state)
    rep.reset_counts()
    logits(sparse, batches)
    for path, r in rep.realised().items():
        assert abs(r - state.targets[path]) <= 0.02, (path, r)
    with pytest.raises(SparseError, match="layer_allocation"):
        make_method("teal", sparsity=0.5, layer_allocation="random")
    with pytest.raises(SparseError, match="damage_tokens"):
        make_method("teal", sparsity=0.5, damage_tokens=0)
