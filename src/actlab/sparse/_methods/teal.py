"""TEAL: training-free magnitude sparsity on the inputs of all 7 projections of a block.

Liu et al., "Training-Free Activation Sparsity in Large Language Models" (TEAL),
arXiv 2408.14690, https://github.com/FasterDecoding/TEAL.

For each projection P of a Llama block, ``P(x) ~ W s_t(x)`` with ``s_t(x)_i = x_i`` if
``|x_i| > t`` else 0. q, k and v read the same attention input, gate and up the same MLP input;
o and down their own. The threshold of a projection with target sparsity s is the exact
s-quantile of |x| over the calibration tokens of its input (dense model), so about a fraction
s of its input entries is zeroed. (The authors take icdf(0.5 + s/2) of a signed histogram,
which assumes a symmetric zero-mean distribution; the exact quantile of |x| does not. The
histogram is available as ``quantile="histogram"``.)

Allocation:

- ``"uniform"``: every projection at s.
- ``"greedy"`` (TEAL's per-block search): all 7 start at 0; repeatedly raise the projection
  whose step ``step / w_P`` hurts the block output least (mean squared error against the
  dense block output on dense block inputs) until the parameter-weighted sparsity
  ``sum_P w_P s_P / sum_P w_P`` reaches s exactly (the last step is cut to land on it).
  ``w_P`` is P's parameter count relative to q_proj, from the config: q = o = 1,
  k = v = n_kv_heads / n_heads, gate = up = down = d_ff / (n_heads * head_dim)
  (d_ff / d for Llama). The authors' table has wrong k/v weights for MHA/GQA models.

Across layers (``layer_allocation=``, actlab's addition):

- ``"uniform"`` (default): every block at the target s.
- ``"damage"``: each block's sparsity from measured end-to-end damage curves (the KL divergence
  from the dense model when only that block is sparsified, at a few levels, on
  ``damage_tokens`` calibration tokens), allocated greedily so that the parameter-weighted mean
  over blocks is s (:mod:`actlab.sparse._layer_alloc`). The in-block ``allocation`` then
  spreads each block's own target. Costs ``6 x blocks`` forwards of those tokens.

- ``"fisher"``: one global allocation over every input of every block from the diagonal
  empirical Fisher of the LM loss (:mod:`actlab.sparse._fisher`): site sparsities such that
  the damage per weight not read, ``F_i x_i^2 / cost``, has one threshold for the whole model.
  Replaces the in-block ``allocation``. One dense forward+backward of the calibration text.
- ``"inputs"``: one sparsity per input type (attention input, o input, MLP input, down input,
  the same in every block) from measured damage curves: the KL divergence from the dense model
  with that input type of every block sparsified at a few levels (dense quantiles, on
  ``damage_tokens`` calibration tokens), allocated greedily so the parameter-weighted mean is
  s (:func:`actlab.sparse._layer_alloc.input_damage`; the first half of each calibration
  sequence stays dense, as a dense prefill does). Replaces the in-block ``allocation``.
  On a rotated model the attention input is several times cheaper to sparsify than the MLP
  input, which this moves sparsity to. Costs ``4 x 6`` forwards of those tokens.
- ``"sites"``: one sparsity per site (one input of one block) from its own damage curve (that
  input of that block sparsified alone), allocated by the same greedy: both the fragile
  blocks and the fragile input types get less. Replaces the in-block ``allocation``. Costs
  ``4 x blocks x 6`` forwards of ``damage_tokens`` tokens (SmolLM2: 720).

The damage curves and the Fisher statistics treat the first ``prefill`` fraction (0.5) of
each calibration sequence as a dense prefill: they score the positions after it and, for
the curves, sparsify only those. Scoring every position sparsifies the attention sink, which
decoding after a dense prefill never does, and overstates the attention input's damage.

Criterion (``criterion=``, actlab's addition):

- ``"magnitude"`` (TEAL): drop ``x_i`` when ``|x_i| <= t``.
- ``"weighted"``: drop when ``|x_i| c_i <= t`` with ``c_i = ||W[:, i]||_2`` over the stacked
  readers of that input (WINA's score, as a calibrated threshold instead of a per-token top-k).
- ``"fisher"``: ``c_i = sqrt(E[(dL/dx_i)^2])`` (the loss sensitivity of that input channel).
  Both give per-channel thresholds ``t / c_i`` (the kernels take them as they are); ``t`` is
  the s-quantile of ``|x_i| c_i`` over the calibration tokens and channels.

Calibration order (``calibration=``):

- ``"sequential"`` (default): block by block and, inside a block, input by input (attention
  input, o input, MLP input, down input), each threshold is the quantile of the input that
  site sees once everything before it is sparsified. The realised sparsity on the
  calibration text then equals the target (up to ties).
- ``"dense"`` (the authors'): every quantile is taken on the dense model's activations; the
  sites after the first sparse one then zero more or less than their target.

Rotation (``rotation=``, an addition of actlab's, not in the paper):

- ``None`` (default): the model as it is.
- ``"pca"``: calibrate and sparsify the model rotated block by block into the principal axes
  of its normalised block inputs (:func:`actlab.sparse.pca_bases`; LaRoSA's idea,
  arXiv 2507.01299), with the RMSNorm weights folded into the projections. The dense function
  is unchanged; the inputs of q/k/v/gate/up concentrate their energy in few coordinates, so
  the same sparsity costs far less quality. The state carries the bases and ``apply`` rotates
  the model before wrapping it. Price: one dense ``d x d`` change of basis of the residual per
  block per token (counted by the reports as dense work: ~9% of SmolLM2's block
  parameters); ``rotation_group=k`` shares one basis among k consecutive blocks (1/k of that
  overhead; ``0``: one basis for the whole model, no overhead). Llama-style RMSNorm blocks
  only (not Gemma's sandwich norms).
- ``"sparse"``: the PCA basis refined for the target sparsity by ``rotation_rounds`` rounds of
  hard-threshold orthogonal Procrustes (:func:`actlab.sparse.sparse_basis`): PCA packs energy
  into a fixed subspace, while TEAL keeps a different set of coordinates for every token; the
  refined basis minimises the energy the per-token threshold actually drops (on SmolLM2 at
  50%, the relative output error of q|k|v and gate|up falls by 30-45% against PCA on the
  calibration tokens). Same runtime cost and state as ``"pca"`` (only the bases differ).

The greedy search scores a block on its own inputs (dense ones, or those of the sparsified
blocks before it in ``"sequential"``), against that block's dense output on the same inputs,
at the positions after the ``prefill`` fraction of each sequence: the first positions carry
the attention sink's massive hidden states, whose errors would otherwise decide the search.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from actlab.sparse._base import METHODS, SparsityReport, install
from actlab.sparse._fisher import FisherStats, fisher_allocation, fisher_stats
from actlab.sparse._histogram import histogram_icdf
from actlab.sparse._layer_alloc import LEVELS, allocate, damage_curves
from actlab.sparse._modules import SparseLinear, exact_quantile
from actlab.sparse._orthogonal import orthogonalize, pca_bases
from actlab.sparse._replay import Call, LayerReplay, hidden_of, record_block_calls
from actlab.sparse._sites import (
    INPUT_OF,
    PROJECTIONS,
    Batch,
    batch_ids,
    batch_rows,
    calibration_batches,
    find_blocks,
)
from actlab.sparse._state import SparseError, SparsityState, Threshold, check_sparsity

__all__ = ["Teal", "block_weights", "greedy_allocation"]

ALLOCATIONS = ("uniform", "greedy")
LAYER_ALLOCATIONS = ("uniform", "damage", "fisher", "inputs", "sites")
ROTATIONS = (None, "pca", "sparse")
GROUPS = ("attn_in", "o_in", "mlp_in", "down_in")  # the inputs in forward order
READER = {"attn_in": "q_proj", "o_in": "o_proj", "mlp_in": "gate_proj", "down_in": "down_proj"}
CALIBRATIONS = ("sequential", "dense")
CRITERIA = ("magnitude", "weighted", "fisher")
QUANTILES = ("exact", "histogram")


def _block_params(model: nn.Module, block: Any) -> float:
    total = 0
    for path in block.projections().values():
        w = model.get_submodule(path).weight
        assert isinstance(w, torch.Tensor)
        total += int(w.numel())
    return float(total)


def _input_params(model: nn.Module, blocks: list[Any]) -> dict[str, float]:
    """Parameters reading each input type, summed over ``blocks``."""
    out = dict.fromkeys(GROUPS, 0.0)
    for b in blocks:
        for n, path in b.projections().items():
            w = model.get_submodule(path).weight
            assert isinstance(w, torch.Tensor)
            out[INPUT_OF[n]] += float(w.numel())
    return out


def _split_first(data: list[Batch], tokens: int) -> list[Batch]:
    """``data`` with its first batch cut after the first rows holding ``tokens`` tokens (the
    greedy search scores whole recorded calls; a batch of 8 rows of 256 would make it score
    2048 tokens for 512 asked). Thresholds still see every row."""
    ids = batch_ids(data[0])
    rows = max(1, -(-tokens // int(ids.shape[1])))
    if rows >= ids.shape[0]:
        return data
    return [batch_rows(data[0], 0, rows), batch_rows(data[0], rows, None), *data[1:]]


def block_weights(config: Any) -> dict[str, float]:
    """Parameter count of each projection relative to q_proj, from a transformers config."""
    try:
        n_heads = int(config.num_attention_heads)
        n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
        d = int(config.hidden_size)
        d_ff = int(config.intermediate_size)
    except (AttributeError, TypeError, ValueError):
        raise SparseError(
            "TEAL's greedy allocation needs a transformers config with num_attention_heads, "
            "hidden_size and intermediate_size (model.config)"
        ) from None
    head_dim = int(getattr(config, "head_dim", None) or d // n_heads)
    attn = n_heads * head_dim
    kv = n_kv / n_heads
    mlp = d_ff / attn
    return {
        "q_proj": 1.0,
        "k_proj": kv,
        "v_proj": kv,
        "o_proj": 1.0,
        "gate_proj": mlp,
        "up_proj": mlp,
        "down_proj": mlp,
    }


def greedy_allocation(
    target: float,
    weights: dict[str, float],
    error: Any,
    *,
    step: float = 0.05,
    cap: float = 0.99,
) -> dict[str, float]:
    """TEAL's greedy search: per-projection sparsities whose weighted mean is ``target``.

    ``error(sparsities) -> float`` scores a candidate (lower is better). Each round tries
    raising every projection by ``step / w`` (cut at ``cap`` and at the target) and keeps
    the best; ties go to the first projection in ``weights`` order.
    """
    total = sum(weights.values())
    cap = max(cap, target)
    s = dict.fromkeys(weights, 0.0)
    need = target * total
    done = 0.0
    while need - done > 1e-9 * total:
        best: tuple[float, str, float] | None = None
        for p, w in weights.items():
            inc = min(step / w, cap - s[p], (need - done) / w)
            if inc <= 0:
                continue
            err = float(error({**s, p: s[p] + inc}))
            if best is None or err < best[0]:
                best = (err, p, inc)
        if best is None:  # every projection at the cap (cannot happen: cap >= target)
            break
        _, p, inc = best
        s[p] += inc
        done += weights[p] * inc
    return s


@METHODS.register("teal", paper="arXiv 2408.14690", sites="inputs of q,k,v,o,gate,up,down")
class Teal:
    """TEAL magnitude thresholds (see the module docstring).

    Args:
        sparsity: target fraction of zeroed input entries per block, in [0, 1).
        allocation: ``"uniform"`` or ``"greedy"`` (parameter-weighted per block).
        calibration: ``"sequential"`` (default) or ``"dense"`` (the authors').
        quantile: ``"exact"`` (s-quantile of |x|, default) or ``"histogram"`` (the authors'
            ``icdf(0.5 + s/2)`` of a signed histogram, :func:`histogram_icdf`).
        bins: histogram bins between the 1st and 99th percentiles (TEAL: 10000).
        step: greedy step in weighted sparsity (TEAL: 0.05).
        greedy_tokens: the greedy search scores a block on (at least) this many calibration
            tokens, the first whole rows (thresholds always use every token); the search runs
            the block ~7 x target x (sum of weights) / step times.
        rotation: ``None``, ``"pca"`` or ``"sparse"`` (rotate the model first, see the module
            docstring).
        rotation_group: blocks sharing one basis (1: one per block; 0: one for the model).
        rotation_rounds: refinement rounds of the ``"sparse"`` basis.
        layer_allocation: ``"uniform"``, ``"damage"`` (per-block targets), ``"inputs"`` (per
            input type targets) or ``"fisher"``
            (per-input targets from one global Fisher allocation), see above.
        criterion: ``"magnitude"`` (TEAL), ``"weighted"`` or ``"fisher"`` (per-channel).
        damage_tokens: calibration tokens the damage curves are measured on.
        prefill: fraction of each calibration sequence the damage curves, the Fisher
            statistics and the greedy search treat as a dense prefill (0: score every position).
        min_tokens: calibration needs at least this many tokens.
    """

    def __init__(
        self,
        sparsity: float,
        allocation: str = "uniform",
        calibration: str = "sequential",
        quantile: str = "exact",
        criterion: str = "magnitude",
        bins: int = 10_000,
        step: float = 0.05,
        greedy_tokens: int = 512,
        rotation: str | None = None,
        rotation_group: int = 1,
        rotation_rounds: int = 20,
        layer_allocation: str = "uniform",
        damage_tokens: int = 512,
        prefill: float = 0.5,
        min_tokens: int = 64,
    ) -> None:
        self.sparsity = check_sparsity(sparsity)
        for what, value, allowed in (
            ("allocation", allocation, ALLOCATIONS),
            ("calibration", calibration, CALIBRATIONS),
            ("quantile", quantile, QUANTILES),
            ("criterion", criterion, CRITERIA),
            ("layer_allocation", layer_allocation, LAYER_ALLOCATIONS),
        ):
            if value not in allowed:
                raise SparseError(f"TEAL {what} must be one of {', '.join(allowed)}; got {value!r}")
        if criterion != "magnitude" and quantile != "exact":
            raise SparseError(f"TEAL criterion={criterion!r} needs quantile='exact'")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise SparseError(f"TEAL bins must be a positive integer, e.g. 10000; got {bins!r}")
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step <= 1:
            raise SparseError(f"TEAL step must be in (0, 1], e.g. 0.05; got {step!r}")
        for what, n in (("greedy_tokens", greedy_tokens), ("damage_tokens", damage_tokens)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise SparseError(f"{what} must be a positive integer; got {n!r}")
        if rotation not in ROTATIONS:
            raise SparseError(f"TEAL rotation must be None, 'pca' or 'sparse'; got {rotation!r}")
        if isinstance(rotation_group, bool) or not isinstance(rotation_group, int):
            raise SparseError(f"rotation_group must be an integer >= 0; got {rotation_group!r}")
        if rotation_group < 0:
            raise SparseError(f"rotation_group must be >= 0 (0: one basis); got {rotation_group}")
        if isinstance(rotation_rounds, bool) or not isinstance(rotation_rounds, int):
            raise SparseError(f"rotation_rounds must be an integer >= 1; got {rotation_rounds!r}")
        if rotation_rounds < 1:
            raise SparseError(f"rotation_rounds must be >= 1; got {rotation_rounds}")
        if (
            isinstance(prefill, bool)
            or not isinstance(prefill, (int, float))
            or not 0 <= prefill < 1
        ):
            raise SparseError(
                f"TEAL prefill must be a fraction in [0, 1), e.g. 0.5; got {prefill!r}"
            )
        if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 1:
            raise SparseError(f"min_tokens must be a positive integer; got {min_tokens!r}")
        self.params: dict[str, Any] = {
            "sparsity": self.sparsity,
            "allocation": allocation,
            "calibration": calibration,
            "quantile": quantile,
            "criterion": criterion,
            "bins": bins,
            "step": float(step),
            "greedy_tokens": greedy_tokens,
            "rotation": rotation,
            "rotation_group": rotation_group,
            "rotation_rounds": rotation_rounds,
            "layer_allocation": layer_allocation,
            "damage_tokens": damage_tokens,
            "prefill": float(prefill),
            "min_tokens": min_tokens,
        }

    def calibrate(self, model: nn.Module, batches: Iterable[Batch]) -> SparsityState:
        """Thresholds for every projection of every block (the model is not changed)."""
        blocks = find_blocks(model)
        data = calibration_batches(model, batches, min_tokens=self.params["min_tokens"])
        bases: dict[str, torch.Tensor] = {}
        if self.params["rotation"] is not None and self.sparsity > 0:
            refine = self.params["rotation_rounds"] if self.params["rotation"] == "sparse" else 0
            bases = pca_bases(
                model,
                data,
                group=self.params["rotation_group"],
                refine=refine,
                sparsity=self.sparsity,
            )
            model = copy.deepcopy(model)  # the caller's model is not changed
            orthogonalize(model, "pca", bases=bases)
        per_block = {b.path: self.sparsity for b in blocks}
        fisher: FisherStats | None = None
        per_site: dict[tuple[str, str], float] | None = None
        wants = (self.params["criterion"], self.params["layer_allocation"])
        if "fisher" in wants and self.sparsity > 0:
            fisher = fisher_stats(model, data, blocks, prefill=self.params["prefill"])
            if self.params["layer_allocation"] == "fisher":
                per_site = fisher_allocation(fisher, self.sparsity)
        measure = {"tokens": self.params["damage_tokens"], "prefill": self.params["prefill"]}
        if self.params["layer_allocation"] == "damage" and self.sparsity > 0:
            curves = damage_curves(model, blocks, data, by="block", **measure)
            size = {b.path: _block_params(model, b) for b in blocks}
            per_block = allocate(curves, LEVELS, size, self.sparsity)
        if self.params["layer_allocation"] == "inputs" and self.sparsity > 0:
            curves = damage_curves(model, blocks, data, by="type", **measure)
            share = _input_params(model, blocks)
            by_type = allocate(curves, LEVELS, share, self.sparsity)
            per_site = {(b.path, g): by_type[g] for b in blocks for g in GROUPS}
        if self.params["layer_allocation"] == "sites" and self.sparsity > 0:
            curves = damage_curves(model, blocks, data, by="site", **measure)
            sizes = {(b.path, g): n for b in blocks for g, n in _input_params(model, [b]).items()}
            per_site = allocate(curves, LEVELS, sizes, self.sparsity)
        greedy = self.params["allocation"] == "greedy" and self.sparsity > 0
        weights = block_weights(getattr(model, "config", None)) if greedy else {}
        if greedy:  # the search scores whole calls: give it the first rows it needs as one
            data = _split_first(data, self.params["greedy_tokens"])
        sequential = self.params["calibration"] == "sequential"
        ab = self.params["quantile"] == "exact"  # the histogram bins signed values
        calls = record_block_calls(model, data, blocks, hidden="first" if sequential else "all")
        hidden: list[torch.Tensor] | None = None  # inputs of the current block (None: dense)
        thresholds: dict[str, Threshold] = {}
        targets: dict[str, float] = {}
        for block, block_calls in zip(blocks, calls):
            replay = LayerReplay(model, block)
            with replay.dense():
                acts = replay.inputs([READER[g] for g in GROUPS], block_calls, hidden, absolute=ab)
            by_input = {g: acts[READER[g]] for g in GROUPS}
            scales = self._scales(replay, block.path, fisher)
            target = per_block[block.path]
            if per_site is not None:
                alloc = {n: per_site[(block.path, INPUT_OF[n])] for n in PROJECTIONS}
            elif target <= 0:
                alloc = dict.fromkeys(PROJECTIONS, 0.0)
            elif not greedy:
                alloc = dict.fromkeys(PROJECTIONS, target)
            else:
                alloc = self._greedy(replay, block_calls, hidden, by_input, scales, weights, target)
            for g in GROUPS:
                if sequential and g != "attn_in":  # the input as the sparsified sites leave it
                    x = replay.inputs([READER[g]], block_calls, hidden, absolute=ab)
                    by_input[g] = x[READER[g]]
                replay.set(
                    {
                        n: self._threshold(by_input[g], alloc[n], scales[g])
                        for n in PROJECTIONS
                        if INPUT_OF[n] == g
                    }
                )
            for n, path in block.projections().items():
                thresholds[path] = replay.proj[n].threshold
                targets[path] = alloc[n]
            if sequential:
                hidden = replay.run(block_calls, hidden)
            del replay
        return SparsityState("teal", dict(self.params), thresholds, targets, bases)

    def _greedy(
        self,
        replay: LayerReplay,
        calls: list[Call],
        hidden: list[torch.Tensor] | None,
        by_input: dict[str, torch.Tensor],
        scales: dict[str, torch.Tensor | None],
        weights: dict[str, float],
        target: float,
    ) -> dict[str, float]:
        # score on the first batches holding greedy_tokens tokens (thresholds use them all)
        inputs = hidden if hidden is not None else hidden_of(calls)  # [B, T, d] each
        keep, seen = 0, 0
        while keep < len(calls) and seen < self.params["greedy_tokens"]:
            seen += int(inputs[keep].shape[:-1].numel())
            keep += 1
        calls = calls[:keep]
        hidden = hidden[:keep] if hidden is not None else None
        with replay.dense():
            dense = [y.float() for y in replay.run(calls, hidden)]
        cache: dict[tuple[str, float], Threshold] = {}

        def thr(n: str, s: float) -> Threshold:
            key = (INPUT_OF[n], round(s, 12))
            if key not in cache:
                cache[key] = self._threshold(by_input[key[0]], s, scales[key[0]])
            return cache[key]

        def error(alloc: dict[str, float]) -> float:
            replay.set({n: thr(n, s) for n, s in alloc.items()})
            outs = replay.run(calls, hidden)  # [B, T, d] each
            err = 0.0
            for y, d in zip(outs, dense):
                p = int(self.params["prefill"] * y.shape[-2])  # score after the prefill
                err += float((y[..., p:, :].float() - d[..., p:, :]).pow(2).mean())
            return err

        try:
            return greedy_allocation(target, weights, error, step=self.params["step"])
        finally:
            replay.set(dict.fromkeys(PROJECTIONS, -1.0))

    def _scales(
        self, replay: LayerReplay, block: str, fisher: FisherStats | None
    ) -> dict[str, torch.Tensor | None]:
        """Per input: the channel weights ``c_i`` of the criterion (None: magnitude).

        ``"weighted"``: ``c_i = ||W[:, i]||_2`` over the rows of every projection reading that
        input (q|k|v stacked, gate|up stacked); ``"fisher"``: ``c_i = sqrt(E[(dL/dx_i)^2])``
        of that input (:mod:`actlab.sparse._fisher`). Siblings share one threshold vector.
        """
        if self.params["criterion"] == "magnitude":
            return dict.fromkeys(GROUPS, None)
        out: dict[str, torch.Tensor | None] = {}
        for g in GROUPS:
            if fisher is not None and self.params["criterion"] == "fisher":
                out[g] = fisher.fisher[(block, g)].sqrt()
                continue
            rows = [replay.proj[n].weight.detach().float() for n in PROJECTIONS if INPUT_OF[n] == g]
            out[g] = torch.cat(rows).norm(dim=0).cpu()  # [d_in]
        return out

    def _threshold(self, x: torch.Tensor, s: float, scale: torch.Tensor | None = None) -> Threshold:
        """Threshold of sparsity ``s`` on captured inputs (|x| for exact, signed x else).

        With channel weights ``scale`` (criterion ``"weighted"``): the s-quantile ``t`` of
        ``|x_i| c_i`` over tokens and channels, returned per channel as ``t / c_i``.
        """
        if s <= 0:
            return -1.0
        if scale is not None:
            c = scale.clamp_min(torch.finfo(torch.float32).tiny)
            t = exact_quantile(x * c, s)  # x is |x| here: [tokens, d_in] * [d_in]
            return (t / c).float()
        if self.params["quantile"] == "exact":
            return exact_quantile(x, s)
        return histogram_icdf(x, 0.5 + s / 2, bins=self.params["bins"])

    def apply(self, model: nn.Module, state: SparsityState) -> SparsityReport:
        """Wrap every projection named in ``state`` in a :class:`SparseLinear`."""
        find_blocks(model)
        return install(model, state, SparseLinear)
