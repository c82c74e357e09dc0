"""PPL-p% sparsity on a tiny Llama: the point found keeps the perplexity within p%, a larger
tolerance would not (or τ is at its bound), and the per-layer sparsities are the CETT points."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from actlab.sparse import SparseError, ppl_p_sparsity


def test_ppl_p_point_on_tiny_llama(llama: nn.Module, batches: list[torch.Tensor]) -> None:
    windows = torch.cat(batches)
    res = ppl_p_sparsity(llama, batches, windows, p=5.0, tokens=96, steps=6)
    assert res.point.ppl_ratio <= 1.05 + 1e-9
    assert 0.0 <= res.sparsity < 1.0
    assert math.isfinite(res.dense_ppl) and res.dense_ppl > 1
    assert set(res.per_layer) == {f"model.layers.{i}.mlp.down_proj" for i in range(2)}
    assert all(0.0 <= s < 1.0 for s in res.per_layer.values())
    with pytest.raises(SparseError, match="windows"):
        ppl_p_sparsity(llama, batches, windows[0], p=1.0)
