"""CATS: one threshold per layer on the gate activation; up and down skip zeroed channels.

Lee et al., "CATS: Contextually-Aware Thresholding for Sparsity in Large Language Models",
arXiv 2404.08763, https://github.com/ScalingIntelligence/CATS.

For a gated MLP ``down(act(gate(x)) * up(x))`` (SiLU for Llama, GELU-tanh for Gemma), let
``a = act(gate(x))``. CATS keeps ``a_i`` where ``|a_i| > t`` and zeroes it otherwise, so
channel i of up_proj (row i) and of down_proj (column i) need not be computed or read; the
gate itself stays dense. The layer threshold t is the exact s-quantile of |a| over the
calibration tokens (the authors use a histogram of the dense model), taken block by block on
the inputs each MLP sees once the blocks before it are sparsified.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from actlab.sparse._base import METHODS, SparsityReport, install
from actlab.sparse._modules import SparseGatedMLP, exact_quantile
from actlab.sparse._replay import LayerReplay, gate_activations, record_block_calls
from actlab.sparse._sites import Batch, calibration_batches, find_blocks
from actlab.sparse._state import SparseError, SparsityState, Threshold, check_sparsity

__all__ = ["Cats"]


@METHODS.register("cats", paper="arXiv 2404.08763", sites="gated MLP activation")
class Cats:
    """CATS thresholds (see the module docstring).

    Args:
        sparsity: target fraction of zeroed gate activations per layer, in [0, 1).
        min_tokens: calibration needs at least this many tokens.
    """

    def __init__(self, sparsity: float, min_tokens: int = 64) -> None:
        self.sparsity = check_sparsity(sparsity)
        if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 1:
            raise SparseError(f"min_tokens must be a positive integer; got {min_tokens!r}")
        self.params: dict[str, Any] = {"sparsity": self.sparsity, "min_tokens": min_tokens}

    def calibrate(self, model: nn.Module, batches: Iterable[Batch]) -> SparsityState:
        """One threshold per MLP: the s-quantile of |act(gate_proj(x))| on the inputs that
        MLP sees once the blocks before it are sparsified (so realised = target)."""
        blocks = find_blocks(model)
        data = calibration_batches(model, batches, min_tokens=self.params["min_tokens"])
        calls = record_block_calls(model, data, blocks, hidden="first")
        hidden: list[torch.Tensor] | None = None
        thresholds: dict[str, Threshold] = {}
        targets: dict[str, float] = {}
        s = self.sparsity
        for block, block_calls in zip(blocks, calls):
            replay = LayerReplay(model, block, gated=True)
            assert replay.mlp is not None
            acts = gate_activations(replay, block_calls, hidden)
            replay.mlp.threshold = exact_quantile(acts, s) if s > 0 else -1.0
            thresholds[block.mlp] = replay.mlp.threshold
            targets[block.mlp] = s
            hidden = replay.run(block_calls, hidden)
        return SparsityState("cats", dict(self.params), thresholds, targets)

    def apply(self, model: nn.Module, state: SparsityState) -> SparsityReport:
        """Wrap every MLP named in ``state`` in a :class:`SparseGatedMLP`."""
        find_blocks(model)
        return install(model, state, SparseGatedMLP)
