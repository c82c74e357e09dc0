"""WINA: weight-informed top-k activation sparsity on the inputs of all 7 projections.

Chen et al., "WINA: Weight Informed Neuron Activation for Accelerating Large Language Model
Inference", arXiv 2505.19427, https://github.com/microsoft/wina.

For each projection ``y = W x`` of a Llama block (``W`` is ``[out, in]``), per token WINA keeps
the ``k`` entries of ``x`` with the largest score ``|x_i| * ||W[:, i]||_2`` and zeroes the
others: the contribution of input i to ``y`` is ``x_i W[:, i]``, whose norm is exactly that
score, so this minimises the output error when the columns of ``W`` are orthogonal. With a
target sparsity s of a site, ``round(s * in_features)`` entries are zeroed on every token, so
the realised sparsity equals the target by construction (to ``0.5 / in_features``) on any
text, and there is nothing to calibrate: ``calibrate`` only checks the model and the text and
writes one fraction per projection (the column norms are recomputed from the weights at
apply time, see :class:`~actlab.sparse._topk.SparseTopKLinear`).

Every projection uses its *own* column norms. (The released code applies column norms only
to the k_proj and gate_proj inputs and plain magnitude elsewhere; here q/v share the input of
k but rank it with their own weights.) ``projections={"o_proj": 0.3, ...}`` overrides the
target of a projection in every block; the others get ``sparsity``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from actlab.sparse._base import METHODS, SparsityReport, install
from actlab.sparse._sites import PROJECTIONS, Batch, calibration_batches, find_blocks
from actlab.sparse._state import SparseError, SparsityState, Threshold, check_sparsity
from actlab.sparse._topk import SparseTopKLinear

__all__ = ["Wina"]


@METHODS.register("wina", paper="arXiv 2505.19427", sites="inputs of q,k,v,o,gate,up,down")
class Wina:
    """WINA top-k masks (see the module docstring).

    Args:
        sparsity: fraction of each projection's input entries zeroed per token, in [0, 1).
        projections: optional per-projection targets, e.g. ``{"o_proj": 0.3}`` (JSON dict).
        min_tokens: calibration needs at least this many tokens.
    """

    def __init__(
        self,
        sparsity: float,
        projections: Mapping[str, float] | None = None,
        min_tokens: int = 64,
    ) -> None:
        self.sparsity = check_sparsity(sparsity)
        if projections is not None and not isinstance(projections, Mapping):
            raise SparseError(
                "WINA projections must be a dict such as {'o_proj': 0.3}; "
                f"got {type(projections).__name__}"
            )
        over: dict[str, float] = {}
        for name, s in dict(projections or {}).items():
            if name not in PROJECTIONS:
                raise SparseError(
                    f"WINA projections: unknown projection {name!r}; "
                    f"one of {', '.join(PROJECTIONS)}"
                )
            over[name] = check_sparsity(s, f"WINA sparsity of {name}")
        if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 1:
            raise SparseError(f"min_tokens must be a positive integer; got {min_tokens!r}")
        self.targets = {n: over.get(n, self.sparsity) for n in PROJECTIONS}
        self.params: dict[str, Any] = {
            "sparsity": self.sparsity,
            "projections": over or None,
            "min_tokens": min_tokens,
        }

    def calibrate(self, model: nn.Module, batches: Iterable[Batch]) -> SparsityState:
        """One fraction per projection of every block (checks the model and the text only)."""
        blocks = find_blocks(model)
        calibration_batches(model, batches, min_tokens=self.params["min_tokens"])
        thresholds: dict[str, Threshold] = {}
        targets: dict[str, float] = {}
        for block in blocks:
            for n, path in block.projections().items():
                s = self.targets[n]
                thresholds[path] = s if s > 0 else -1.0
                targets[path] = s
        return SparsityState("wina", dict(self.params), thresholds, targets)

    def apply(self, model: nn.Module, state: SparsityState) -> SparsityReport:
        """Wrap every projection named in ``state`` in a :class:`SparseTopKLinear`."""
        find_blocks(model)
        for path, t in state.thresholds.items():
            if isinstance(t, torch.Tensor):
                raise SparseError(
                    f"WINA state: {path!r} holds {t.numel()} channel thresholds; WINA needs one "
                    "sparsity fraction per site (recalibrate with method 'wina')"
                )
            if t >= 1.0:
                raise SparseError(
                    f"WINA state: {path!r} must hold a sparsity fraction below 1, got {t!r}"
                )
        return install(model, state, SparseTopKLinear)
