"""CHESS: channel-wise FFN thresholds and selective attention sparsity (q and o inputs only).

Zhang et al., "CHESS: Optimizing LLM Inference via Channel-Wise Thresholding and Selective
Sparsification", arXiv 2409.01366, https://github.com/ZeonfaiHo/CHESS.

FFN, channel-wise: for a gated MLP ``down(a * u)`` with ``a = act(gate(x))``, ``u = up(x)``,
zeroing channel i of a token costs about ``a_i^2 * E[u_i^2]`` (E over calibration tokens).
The layer threshold T is the s-quantile of that importance over all tokens and channels;
channel i is zeroed where ``|a_i| <= sqrt(T / E[u_i^2])`` (a per-channel threshold on the
gate activation, stored as a vector), so about a fraction s of the importances is dropped
and up/down skip those channels. The gate stays dense. A channel with ``E[u_i^2] = 0``
contributes nothing and is always zeroed.

Attention, selective: magnitude thresholds (the s-quantile of |x|, as TEAL) on the q_proj
input and the o_proj input only; k and v stay dense, so the KV cache stays exact.

Calibration is sequential (block by block, q then o then the FFN, each on the inputs it sees
once everything before it is sparsified), so the realised sparsity on the calibration text
equals the target.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from actlab.sparse._base import METHODS, SparsityReport, install
from actlab.sparse._modules import exact_quantile
from actlab.sparse._replay import LayerReplay, ffn_terms, record_block_calls
from actlab.sparse._sites import Batch, calibration_batches, find_blocks
from actlab.sparse._state import SparseError, SparsityState, Threshold, check_sparsity

__all__ = ["Chess", "channel_thresholds"]


def channel_thresholds(gate: torch.Tensor, up: torch.Tensor, sparsity: float) -> torch.Tensor:
    """CHESS's per-channel thresholds on |act(gate)| from calibration ``gate``, ``up``
    ``[tokens, d_ff]``: ``sqrt(T / E[up_i^2])`` with T the s-quantile of
    ``gate_i^2 * E[up_i^2]``; float64, ``inf`` for a channel whose ``E[up_i^2]`` is 0."""
    if sparsity <= 0:
        return torch.full((gate.shape[-1],), -1.0, dtype=torch.float64)
    e_up = up.double().pow(2).mean(0)
    importance = gate.double().pow(2) * e_up
    t = exact_quantile(importance, sparsity)
    out = torch.full_like(e_up, float("inf"))
    live = e_up > 0
    out[live] = torch.sqrt(t / e_up[live])
    return out


@METHODS.register("chess", paper="arXiv 2409.01366", sites="FFN channels; q and o inputs")
class Chess:
    """CHESS thresholds (see the module docstring).

    Args:
        sparsity: target fraction of zeroed FFN channel activations (and of the q and o
            input entries) per layer, in [0, 1).
        attention: also sparsify the q_proj and o_proj inputs (CHESS's selective attention).
        min_tokens: calibration needs at least this many tokens.
    """

    def __init__(self, sparsity: float, attention: bool = True, min_tokens: int = 64) -> None:
        self.sparsity = check_sparsity(sparsity)
        if not isinstance(attention, bool):
            raise SparseError(f"CHESS attention must be True or False; got {attention!r}")
        if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 1:
            raise SparseError(f"min_tokens must be a positive integer; got {min_tokens!r}")
        self.params: dict[str, Any] = {
            "sparsity": self.sparsity,
            "attention": attention,
            "min_tokens": min_tokens,
        }

    def calibrate(self, model: nn.Module, batches: Iterable[Batch]) -> SparsityState:
        """q/o thresholds and FFN channel thresholds, block by block (sequential)."""
        blocks = find_blocks(model)
        data = calibration_batches(model, batches, min_tokens=self.params["min_tokens"])
        calls = record_block_calls(model, data, blocks, hidden="first")
        s = self.sparsity
        hidden: list[torch.Tensor] | None = None
        thresholds: dict[str, Threshold] = {}
        targets: dict[str, float] = {}
        for block, block_calls in zip(blocks, calls):
            replay = LayerReplay(model, block, gated=True)
            assert replay.mlp is not None
            if self.params["attention"]:
                for n in ("q_proj", "o_proj"):  # in forward order: o sees the sparse q
                    x = replay.inputs([n], block_calls, hidden)[n]
                    replay.set({n: exact_quantile(x, s) if s > 0 else -1.0})
                    thresholds[block.proj(n)] = replay.proj[n].threshold
                    targets[block.proj(n)] = s
            gate, up = ffn_terms(replay, block_calls, hidden)
            channels = channel_thresholds(gate, up, s).float()
            replay.mlp.threshold = channels
            thresholds[block.mlp] = channels
            targets[block.mlp] = s
            hidden = replay.run(block_calls, hidden)
        return SparsityState("chess", dict(self.params), thresholds, targets)

    def apply(self, model: nn.Module, state: SparsityState) -> SparsityReport:
        """SparseLinear on q_proj / o_proj and a channel-wise SparseGatedMLP per block."""
        find_blocks(model)
        return install(model, state)
