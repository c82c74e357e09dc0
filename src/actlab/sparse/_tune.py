"""Tuning the normalisation gains of a sparsified model to the dense model's predictions.

Thresholds fix *which* entries a sparsified model drops; the damage of dropping them is partly
systematic (the dropped entries shrink every later hidden state, and the next blocks read
smaller or shifted inputs), and a per-channel rescaling can undo that part. The gains of the
model's normalisation layers (RMSNorm / LayerNorm weights: two per Llama block plus the final
norm, ~35k parameters on SmolLM2-135M, 0.03% of its weights) are exactly such rescalings. With
the thresholds held fixed, this module fits them by distillation:

    min_g  E_windows [ 1/|P| sum_{t in P} KL( p_dense(. | x_<=t) || p_sparse,g(. | x_<=t) ) ]

where ``P`` are the positions of the second half of each calibration window, which the sparse
model computes sparsely after a dense first half (the sparse modules in mode ``"last-half"``:
what decoding after a dense prefill computes, in one forward), ``p_dense`` is the unchanged
dense model's next-token distribution (computed alongside, never stored) and Adam updates
only the gains, its learning rate decayed to 0 by a cosine over the steps. Nothing else in
the model changes; the tuned gains travel in the :class:`~actlab.sparse.SparsityState`
(``gains``, ``tuning``) and ``apply`` writes them into the model after any rotation. This is
a lightweight post-calibration step of actlab's, not a published method: it *trains* 35k
parameters on the calibration text (the held-out text is never seen), which the strictly
training-free methods do not. The thresholds were calibrated on the dense model and are not
recalibrated: the realised sparsity is measured, as always, on held-out text. Cost: one dense
forward of every tuning window (its final hidden states of the scored positions are kept:
:class:`_Teacher`), then ``steps`` x (the LM head on those states + one sparse forward and
backward) of ``batch`` windows; both models' LM heads run on the scored positions only.

``rows=True`` also tunes one factor per output row of every sparsified linear (the TEAL sites,
or the gate / up / down linears of a gated-MLP site): ``W' = diag(r) W`` with ``r`` starting
at 1, ~156k more parameters on SmolLM2 (0.1% of its weights). The factors undo what a
per-channel gain cannot: the shrinkage of each projection's *output* when its small inputs are
dropped (o_proj and down_proj write straight into the residual stream). They travel in the
state as ``scales`` and ``apply`` multiplies the weights' rows by them after any rotation.
While tuning they act on the linears' outputs (``y = r * (W x) + b``, the same function), so
their gradient is elementwise and no weight gradient is formed.

``rank=r`` also tunes a low-rank correction of every sparsified linear's weight,
``W' = diag(r) (W + U V)`` (``U [out, r]`` from zeros, ``V [r, in]`` random, scaled by
``1 / sqrt(in)``): it reads the input the linear reads, with the entries dropped, so it can
re-route what the dropped entries carried through the surviving ones, which no per-row or
per-channel factor can. Tuned, the factors are merged into the weights by ``apply``
(``lowrank`` in the state): the sparse model reads the same weight bytes as without them,
and the kernels are unchanged. At rank 8 that is ~2.4M parameters on SmolLM2 (1.8% of its
weights) trained on the calibration text, so it is a light sparsity-aware fine-tuning by
distillation, further from training-free than the gains; the held-out evaluation says what
it buys and whether it over-fits.

``weights=True`` tunes the weights of every sparsified linear themselves, at their own learning
rate ``weights_lr`` (the same cosine decay): ``W' = diag(r) (W + dW + U V)``, with ``dW`` the
change Adam made (``deltas`` in the state; ``apply`` adds them like the corrections). That is
sparsity-aware fine-tuning of the block linears by distillation (~106M parameters on SmolLM2,
79% of its weights; the embeddings, LM head and gains' roles are unchanged), the farthest
from training-free of these options: a step forms every linear's weight gradient (about 1.25x
the time of a rank-8 step) and Adam keeps two float32 moments per weight; the state holds
the changes in float32 (as large as the linears' weights).

``hidden=λ`` adds a feature-distillation term to the KL, after SquareHead (Kurtic et al.,
"Sparse Fine-tuning for Inference Acceleration of Large Language Models", arXiv 2310.06927,
for weight-sparse fine-tuning): the output of every block on the scored positions is pulled
towards the dense model's,

    loss = KL + λ · 1/L sum_l  sum_{t in P} ||h_lt - d_lt||² / sum_{t in P} ||d_lt||²

(``h_lt`` the output of block ``l`` at position ``t``, ``d_lt`` the dense model's: a normalised
mean-squared error per block, so every block counts alike whatever the size of its residual
stream; the paper divides by the variance of the dense features instead of their energy). The
KL alone says only how the last layer's distribution moved; the per-block term gives every
block's tuned weights a target of their own, which the paper found to stabilise fine-tuning
and recover accuracy at high weight sparsity. The dense block outputs of the scored positions
are cached once with the final hidden states (bfloat16: SmolLM2, 30 blocks, 512 windows of
256 tokens, 2.3 GB; past 4 GB the dense forward runs every step instead).

WINA's sites rank inputs by ``|x_i| ||W[:, i]||``, and the weight they are deployed with is
the merged ``diag(r) (W + U V)``: before every step the tuning pins those norms on its sites
(:meth:`~actlab.sparse.SparseTopKLinear.pin_norms`, the current factors), so it trains through
the masks the merged model computes, not the raw weight's.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from actlab.sparse._base import apply_state
from actlab.sparse._calls import forward_logits
from actlab.sparse._modules import SparseGatedMLP, SparseLinear
from actlab.sparse._sites import find_blocks
from actlab.sparse._state import SparseError, SparsityState
from actlab.sparse._topk import SparseTopKLinear, column_norms

__all__ = [
    "TUNE_KEYS",
    "TuneConfig",
    "gain_parameters",
    "scaled_linears",
    "split_tune",
    "tune_gains",
]


@dataclass(frozen=True)
class TuneConfig:
    """``steps`` Adam steps from learning rate ``lr`` (cosine decay to 0) on ``batch``
    calibration windows each, drawn with seed ``seed``; ``rows`` also tunes the output-row
    scales of the sparsified linears, ``rank > 0`` low-rank corrections of their weights,
    ``weights`` their weights themselves at learning rate ``weights_lr``; ``hidden > 0`` adds
    the per-block feature distillation term at that weight (module docstring)."""

    steps: int
    lr: float = 1e-3
    batch: int = 4
    seed: int = 0
    rows: bool = False
    rank: int = 0
    weights: bool = False
    weights_lr: float = 5e-5
    hidden: float = 0.0

    def __post_init__(self) -> None:
        for what, n, lo in (("steps", self.steps, 1), ("batch", self.batch, 1)) + (
            ("seed", self.seed, 0),
            ("rank", self.rank, 0),
        ):
            if isinstance(n, bool) or not isinstance(n, int) or n < lo:
                raise SparseError(f"tune {what} must be an integer >= {lo}; got {n!r}")
        for what, lr, eg in (("lr", self.lr, "1e-3"), ("weights_lr", self.weights_lr, "5e-5")):
            bad = isinstance(lr, bool) or not isinstance(lr, (int, float))
            if bad or not math.isfinite(lr) or lr <= 0:
                raise SparseError(f"tune {what} must be a positive number, e.g. {eg}; got {lr!r}")
        h = self.hidden
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h < 0:
            raise SparseError(f"tune hidden must be a number >= 0 (0: off), e.g. 1.0; got {h!r}")
        for what, flag in (("rows", self.rows), ("weights", self.weights)):
            if not isinstance(flag, bool):
                raise SparseError(f"tune {what} must be true or false; got {flag!r}")


TUNE_KEYS = tuple(f"tune_{f.name}" for f in fields(TuneConfig))  # method-parameter spelling


def split_tune(params: dict[str, Any]) -> tuple[dict[str, Any], TuneConfig | None]:
    """A method's parameters without the ``tune_*`` keys, and the tuning they ask for (None
    without ``tune_steps`` or with ``tune_steps=0``)."""
    rest = {k: v for k, v in params.items() if k not in TUNE_KEYS}
    given = {k.removeprefix("tune_"): v for k, v in params.items() if k in TUNE_KEYS}
    if not given.get("steps"):
        if len(given) > ("steps" in given):
            extra = ", ".join(f"tune_{k}" for k in sorted(given) if k != "steps")
            raise SparseError(f"{extra} given without tune_steps; set tune_steps=N (e.g. 120)")
        return rest, None
    return rest, TuneConfig(**given)


def gain_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights (and LayerNorm biases) of the model's normalisation layers, by path.

    A normalisation layer is a module whose class name ends in ``Norm`` (``LlamaRMSNorm``,
    ``Gemma3RMSNorm``, ``nn.LayerNorm``) and that has parameters of its own."""
    out: dict[str, nn.Parameter] = {}
    for path, m in model.named_modules():
        if not type(m).__name__.endswith("Norm"):
            continue
        for name, p in m.named_parameters(recurse=False):
            out[f"{path}.{name}" if path else name] = p
    return out


def scaled_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The linears a row-scale tuning scales, by path: every :class:`SparseLinear` site and
    the ``gate_proj`` / ``up_proj`` / ``down_proj`` linears of every :class:`SparseGatedMLP`."""
    out: dict[str, nn.Linear] = {}
    for path, m in model.named_modules():
        if isinstance(m, SparseLinear):
            out[path] = m
        elif isinstance(m, SparseGatedMLP):
            for name in ("gate_proj", "up_proj", "down_proj"):
                sub = getattr(m, name)
                if isinstance(sub, nn.Linear):
                    out[f"{path}.{name}"] = sub
    return out


class _RowScale(nn.Module):
    """Output-row factors ``r`` (trainable, starting at 1) of one linear, applied to its output
    by a forward hook: ``y = r * (W x) + b`` is ``diag(r) W x + b``, the linear with its weight
    rows scaled, but the backward needs only ``dL/dr = sum_t dL/dy_t * (W x_t)`` (elementwise)
    instead of the weight's gradient (a GEMM of the forward's size, which a parametrisation
    ``W -> diag(r) W`` makes autograd compute)."""

    def __init__(self, rows: int, like: torch.Tensor) -> None:
        super().__init__()
        self.r = nn.Parameter(torch.ones(rows, dtype=like.dtype, device=like.device))

    def attach(self, linear: nn.Linear) -> None:
        linear.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, y: torch.Tensor) -> torch.Tensor:
        bias = getattr(module, "bias", None)
        if bias is None:
            return y * self.r  # (..., out) * (out,)
        return (y - bias) * self.r + bias


class _LowRank(nn.Module):
    """A low-rank correction ``U V`` (``U [out, r]`` from zeros, ``V [r, in]`` random) of one
    linear's weight: ``y = W x + U (V x)`` on the input ``x`` the linear reads (entries
    dropped). On a :class:`SparseLinear` it is the module's ``correction``; on a plain linear
    (a gated MLP's) a forward hook. Attach it before the row scale: ``diag(r) (W + U V)``."""

    def __init__(self, linear: nn.Linear, rank: int, gen: torch.Generator) -> None:
        super().__init__()
        w = linear.weight
        v = torch.randn(rank, linear.in_features, generator=gen, dtype=torch.float64)
        self.v = nn.Parameter((v / math.sqrt(linear.in_features)).to(w.device, w.dtype))
        u = torch.zeros(linear.out_features, rank, dtype=w.dtype, device=w.device)
        self.u = nn.Parameter(u)

    def attach(self, linear: nn.Linear) -> None:
        if isinstance(linear, SparseLinear):
            linear.correction = self.forward
        else:
            linear.register_forward_hook(lambda m, args, y: y + self.forward(args[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.v), self.u)  # [..., in] -> [..., r] -> [..., out]


def _capture(
    model: nn.Module, paths: list[str], keep: int, out: list[torch.Tensor], detach: bool
) -> list[Any]:
    """Forward hooks appending the output of each block ``paths`` (in the order the blocks
    run) on the last ``keep`` positions, ``[b, keep, d]``, to ``out``; returns the handles."""

    def hook(module: nn.Module, args: Any, y: Any) -> None:
        h = (y[0] if isinstance(y, tuple) else y)[:, -keep:]
        out.append(h.detach() if detach else h)

    return [model.get_submodule(p).register_forward_hook(hook) for p in paths]


class _Teacher:
    """The dense model's logits of the scored positions of any tuning window, from its final
    hidden states computed once: the dense model never changes, so each step's teacher
    forward repeated the same work (a third of a step's products). Per step only the LM head
    runs, on the cached inputs it saw. The cache is checked on its first batch: where the
    head's output is not the model's logits (a model that post-processes them, e.g. a final
    soft cap), or the cache would exceed ``max_bytes``, the full forward runs every step.
    With ``blocks`` (block paths) the outputs of those blocks on the scored positions are
    cached too, in bfloat16, for the feature-distillation term; where they would exceed
    ``block_bytes`` nothing is cached and the full forward (with the blocks hooked) runs
    every step."""

    def __init__(
        self,
        model: nn.Module,
        windows: torch.Tensor,
        keep: int,
        batch: int,
        device: torch.device,
        blocks: list[str] | None = None,
        max_bytes: int = 1 << 30,
        block_bytes: int = 4 << 30,
    ) -> None:
        self.model, self.keep, self.paths = model, keep, list(blocks or [])
        self.hidden: torch.Tensor | None = None
        self.blocks: torch.Tensor | None = None  # [n, L, keep, d] bfloat16
        get_head = getattr(model, "get_output_embeddings", None)
        head = get_head() if callable(get_head) else None
        if not isinstance(head, nn.Module):
            return
        n = windows.shape[0]
        width = getattr(head, "in_features", None)
        p = next(model.parameters())
        if not isinstance(width, int):
            return
        size = n * keep * width
        if size * p.element_size() > max_bytes or size * 2 * len(self.paths) > block_bytes:
            return
        self.head: nn.Module = head
        seen: list[torch.Tensor] = []
        hook = head.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
        outs: list[torch.Tensor] = []
        handles = _capture(model, self.paths, keep, outs, detach=True)
        parts: list[torch.Tensor] = []
        block_parts: list[torch.Tensor] = []
        try:
            with torch.no_grad():
                for i in range(0, n, batch):
                    logits = forward_logits(model, windows[i : i + batch].to(device), keep).logits
                    h = seen.pop()[:, -keep:]  # [b, keep, d]: the head's input, scored positions
                    if not parts and not torch.allclose(
                        head(h).float(), logits[:, -keep:].float(), rtol=1e-5, atol=1e-5
                    ):
                        return  # the logits are not the head's output: no cache
                    parts.append(h.clone())
                    if self.paths:  # L x [b, keep, d] -> [b, L, keep, d]
                        block_parts.append(torch.stack(outs, 1).to(torch.bfloat16))
                        outs.clear()
        finally:
            hook.remove()
            for handle in handles:
                handle.remove()
        self.hidden = torch.cat(parts)  # [n, keep, d]
        if self.paths:
            self.blocks = torch.cat(block_parts)

    def targets(
        self, index: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The dense logits ``[b, keep, V]`` of windows ``index`` (token ids ``ids``) and, with
        blocks, their block outputs ``[b, L, keep, d]`` (float32)."""
        with torch.no_grad():
            if self.hidden is not None:
                blocks = None if self.blocks is None else self.blocks[index].float()
                return self.head(self.hidden[index]), blocks
            outs: list[torch.Tensor] = []
            handles = _capture(self.model, self.paths, self.keep, outs, detach=True)
            try:
                logits = forward_logits(self.model, ids, self.keep).logits[:, -self.keep :]
            finally:
                for handle in handles:
                    handle.remove()
            return logits, (torch.stack(outs, 1).float() if self.paths else None)

    def logits(self, index: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The dense logits ``[b, keep, V]`` of windows ``index`` (token ids ``ids``)."""
        return self.targets(index, ids)[0]


def _feature_loss(student: list[torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
    """SquareHead's term: the mean over blocks of ``sum ||h - h_dense||² / sum ||h_dense||²``
    (``student``: L x ``[b, keep, d]``; ``dense``: ``[b, L, keep, d]``)."""
    terms = []
    for i, h in enumerate(student):
        t = dense[:, i]
        terms.append((h.float() - t).square().sum() / t.square().sum().clamp_min(1e-30))
    return torch.stack(terms).mean()


def _topk_factored(
    linears: dict[str, nn.Linear], rows: dict[str, _RowScale], lowrank: dict[str, _LowRank]
) -> dict[str, SparseTopKLinear]:
    """The top-k sites (WINA's) among ``linears`` that carry tuned factors."""
    return {
        p: lin
        for p, lin in linears.items()
        if isinstance(lin, SparseTopKLinear) and (p in rows or p in lowrank)
    }


def _pin_merged_norms(
    sites: dict[str, SparseTopKLinear], rows: dict[str, _RowScale], lowrank: dict[str, _LowRank]
) -> None:
    """Pin on each top-k site of ``sites`` (:func:`_topk_factored`) the column norms of the
    weight ``apply`` will merge, ``diag(r) (W + U V)`` with the current factors: its masks
    then rank the inputs as the deployed model's do."""
    with torch.no_grad():
        for path, lin in sites.items():
            w = lin.weight
            if path in lowrank:
                w = w + lowrank[path].u @ lowrank[path].v  # [out, r] @ [r, in]
            if path in rows:
                w = w * rows[path].r.unsqueeze(1)
            lin.pin_norms(column_norms(w))


def _windows(batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """The calibration windows ``[n, T]`` of the most common length T (shorter ones dropped)."""
    rows = [r for b in batches for r in (b if b.ndim == 2 else b.unsqueeze(0))]
    if not rows:
        raise SparseError("no calibration windows to tune on")
    lengths = [int(r.numel()) for r in rows]
    length = max(set(lengths), key=lambda n: (lengths.count(n), n))
    if length < 4:
        raise SparseError(f"tuning needs windows of at least 4 tokens; got {length}")
    return torch.stack([r for r in rows if r.numel() == length])


def _kl(dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(softmax(dense) || softmax(sparse)), logits ``[..., V]``."""
    p = F.log_softmax(dense.float(), -1)
    q = F.log_softmax(sparse.float(), -1)
    return (p.exp() * (p - q)).sum(-1).mean()


def tune_gains(
    model: nn.Module,
    state: SparsityState,
    batches: Iterable[torch.Tensor],
    config: TuneConfig,
    *,
    progress: Callable[[str], None] | None = None,
) -> SparsityState:
    """``state`` plus the normalisation gains of ``model`` tuned to it (module docstring).

    ``model`` is the dense model ``state`` was calibrated on; it is not changed (a copy is
    sparsified and tuned, in float32 whatever its dtype). ``batches`` are calibration token
    ids ``[B, T]`` (the windows of the most common length are used). Returns a new state with
    ``gains`` and ``tuning`` (the configuration, the windows and the mean KL of the first and
    last tenth of the steps; no times, so the same inputs give an equal state). A state that
    sparsifies nothing is returned unchanged.
    """
    if not isinstance(state, SparsityState):
        raise SparseError(f"tune_gains needs a SparsityState, got {type(state).__name__}")
    if state.gains:
        raise SparseError("the state's gains are tuned already; tune the untuned state")
    windows = _windows(batches)
    n, length = windows.shape
    if all(not isinstance(t, torch.Tensor) and t < 0 for t in state.thresholds.values()):
        return state  # nothing sparsified: the dense gains are optimal (KL 0)
    device = next(model.parameters()).device
    student = copy.deepcopy(model).float()  # Adam on half-precision gains would stall
    apply_state(student, state)
    sites = [m for m in student.modules() if isinstance(m, (SparseLinear, SparseGatedMLP))]
    gains = gain_parameters(student)
    if not gains:
        raise SparseError(
            f"{type(model).__name__} has no normalisation layers (modules named *Norm) to tune"
        )
    for s in sites:  # the student is a throw-away copy: its settings need no restoring
        s.mode, s.counting = "last-half", False
    was = model.training
    model.eval()
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    for p in gains.values():
        p.requires_grad_(True)
    rows: dict[str, _RowScale] = {}
    lowrank: dict[str, _LowRank] = {}
    init = torch.Generator().manual_seed(config.seed + 1)  # the V factors' draw
    linears = scaled_linears(student)
    for path, lin in linears.items():
        if config.rank:  # first: the row scale multiplies the corrected output
            lowrank[path] = _LowRank(lin, config.rank, init)
            lowrank[path].attach(lin)
        if config.rows:
            rows[path] = _RowScale(lin.out_features, lin.weight)
            rows[path].attach(lin)
    pinned = _topk_factored(linears, rows, lowrank)  # empty unless WINA with factors
    trained = list(gains.values()) + [s.r for s in rows.values()]
    trained += [p for c in lowrank.values() for p in (c.u, c.v)]
    groups: list[dict[str, Any]] = [{"params": list(trained)}]
    dense_w: dict[str, torch.Tensor] = {}  # the linears' weights before tuning (weights=True)
    if config.weights:
        for path, lin in linears.items():
            dense_w[path] = lin.weight.detach().clone()
            lin.weight.requires_grad_(True)
        weights = [lin.weight for lin in linears.values() if isinstance(lin.weight, nn.Parameter)]
        groups.append({"params": weights, "lr": config.weights_lr})
        trained += weights
    opt = torch.optim.Adam(groups, lr=config.lr)
    # cosine decay to 0 over the steps: the small batches' noise settles instead of
    # leaving the gains wherever the last steps threw them
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * t / config.steps))
    )
    gen = torch.Generator().manual_seed(config.seed)
    half = length // 2  # predictions at positions half .. T-2: sparse after a dense first half
    keep = length - half  # logits of positions half .. T-1 only: the LM head runs on those
    kls: list[float] = []
    feats: list[float] = []  # the feature term (hidden > 0)
    paths = [b.path for b in find_blocks(student)] if config.hidden else []
    got: list[torch.Tensor] = []  # the student's block outputs of the current step
    handles = _capture(student, paths, keep, got, detach=False)
    start = time.perf_counter()
    try:
        if progress is not None:
            progress(f"  tune: the dense model's outputs on {n} windows (once)")
        teacher = _Teacher(model, windows, keep, config.batch, device, blocks=paths)
        for step in range(config.steps):
            index = torch.randint(0, n, (min(config.batch, n),), generator=gen)
            ids = windows[index].to(device)
            _pin_merged_norms(pinned, rows, lowrank)
            dense, dense_blocks = teacher.targets(index, ids)
            got.clear()
            kl = _kl(dense[:, :-1], forward_logits(student, ids, keep).logits[:, -keep:-1])
            loss = kl
            if dense_blocks is not None:
                feat = _feature_loss(got, dense_blocks)
                feats.append(float(feat.detach()))
                loss = kl + config.hidden * feat
            if not torch.isfinite(loss):
                raise SparseError(
                    f"tuning diverged at step {step} (loss {float(loss.detach())}); lower tune_lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            kls.append(float(kl.detach()))
            if progress is not None and (step % 20 == 0 or step == config.steps - 1):
                extra = f", feature {feats[-1]:.4f}" if feats else ""
                progress(
                    f"  tune: step {step + 1}/{config.steps}, KL {kls[-1]:.4f}{extra} "
                    f"({time.perf_counter() - start:.0f} s)"
                )
    finally:
        for handle in handles:
            handle.remove()
        model.train(was)
    tenth = max(1, len(kls) // 10)
    given = asdict(config)
    if not config.hidden:  # states tuned without it keep the keys they always had
        given.pop("hidden")
    tuning = {
        **given,
        "windows": n,
        "window": length,
        "params": sum(int(p.numel()) for p in trained),
        "kl_first": sum(kls[:tenth]) / tenth,
        "kl_last": sum(kls[-tenth:]) / tenth,
    }
    if feats:
        tuning["feature_first"] = sum(feats[:tenth]) / tenth
        tuning["feature_last"] = sum(feats[-tenth:]) / tenth
    return SparsityState(
        state.method,
        dict(state.params),
        dict(state.thresholds),
        dict(state.targets),
        dict(state.bases),
        gains={k: p.detach() for k, p in gains.items()},
        tuning=tuning,
        scales={k: s.r.detach() for k, s in rows.items()},
        lowrank={k: (c.u.detach(), c.v.detach()) for k, c in lowrank.items()},
        deltas={k: linears[k].weight.detach() - w for k, w in dense_w.items()},
    )
