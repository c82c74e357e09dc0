"""CETT: cumulative errors of tail truncation of an FFN (Sparsing Law, arXiv 2411.02335).

An FFN ends in a down projection ``y = W h`` (W: d x d_ff, h: the down projection's input,
``act(gate(x)) * up(x)`` in gated MLPs such as Llama's, ``act(fc1(x))`` otherwise). Neuron i
contributes ``n_i = W[:, i] h_i`` to y, so ``|n_i| = |h_i| ||W[:, i]||_2``. Truncating the
tail, the set D(ε) of neurons with ``|n_i| < ε``, leaves the per-token error

    CETT(ε) = || Σ_{i ∈ D(ε)} n_i ||_2 / || Σ_i n_i ||_2 = ||W (h ⊙ 1[D])||_2 / ||W h||_2

(the bias of the down projection, if any, is never truncated and is left out of both norms;
the paper's models have none). Aggregation, as in the Sparsing Law paper: a layer's CETT at ε
is the mean of the per-token ratios over the sampled tokens (tokens whose ``W h`` is exactly
zero, or that hold NaN / inf, have no ratio and are left out); its sparsity at ε is the
fraction of (token, neuron) entries in D(ε), and the activation ratio is 1 - sparsity.

CETT-τ sparsity: per layer, ε is the largest truncation threshold whose CETT is <= τ, found
by bisection over the exact candidate set (the sorted distinct values of |n_i| over the
sample; ε = c truncates the entries strictly below c, so each candidate is the largest ε
giving its truncation set). The per-token error is not monotone in ε (adding a vector to a
sum can shrink it), so, as in the paper's binary search, the answer is a crossing: CETT(ε) <=
τ and CETT at the next candidate > τ; where the curve is monotone (the usual case, and always
when W has orthogonal columns) it is the largest such ε.

``criterion="neuron"`` (default, the paper's) ranks entries by ``|h_i| ||W[:, i]||``;
``criterion="magnitude"`` by ``|h_i|`` alone (TEAL-style thresholds on the input). Per-neuron
thresholds on |h_i| follow from ε: ``ε / ||W[:, i]||`` (neuron) or ``ε`` (magnitude), see
:meth:`CETTProbe.thresholds`; zeroing ``h_i`` where ``|h_i| < t_i`` realises the truncation.

PPL-p% sparsity (the paper's headline, p = 1) is a search over τ around this probe: for a
given τ take every layer's thresholds (:meth:`CETTProbe.thresholds`), run the model with them
applied to the down projections' inputs, and bisect τ until ``exp(loss_sparse - loss_dense)
= 1 + p / 100``; the sparsity at that τ is the PPL-p% sparsity. :func:`ppl_p_search` is that
bisection; the sparsified evaluation it calls (``loss_at(τ) -> (loss, sparsity)``) belongs to
:mod:`actlab.sparse` (probes do not change what a model computes).

Sites: the down projection (an ``nn.Linear``) of each transformer block's MLP, read through
its input (``site = "input"``): a Linear child named ``down_proj``, ``fc2``, ``w2``,
``dense_4h_to_h``, ``c_proj``, ``fc_out`` or ``wo`` whose parent also holds a Linear whose
output width equals its input width (the up / gate / fc1 projection). ``where=`` globs that
name Linear modules are taken as they are (e.g. ``"*.output.dense"`` for BERT); globs naming
other modules are searched for a down projection inside them.

Memory: per layer a uniform reservoir of at most ``min(tokens, max_tokens)`` rows of h
(float32), plus a reference to the layer (its weight is read at summary time). Cost: each
hook call samples ``sample`` rows; the search runs at summary time, about log2(rows x d_ff)
evaluations of one (rows x d_ff) @ (d_ff x d) product per layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from actlab.probes.base import (
    Probe,
    ProbeArgumentError,
    Reservoir,
    Row,
    check_float,
    check_int,
    first_tensor,
    sample_rows,
)
from actlab.probes.manager import register_probe

__all__ = [
    "CETTProbe",
    "CETTPoint",
    "DOWN_NAMES",
    "cett",
    "cett_search",
    "down_projections",
    "neuron_magnitudes",
    "PPLPoint",
    "ppl_p_search",
]

Criterion = Literal["neuron", "magnitude"]
DOWN_NAMES = ("down_proj", "fc2", "w2", "dense_4h_to_h", "c_proj", "fc_out", "wo")


def _check_criterion(criterion: Any) -> Criterion:
    if criterion not in ("neuron", "magnitude"):
        raise ProbeArgumentError(
            f"criterion must be 'neuron' (|h_i|*||W[:, i]||) or 'magnitude' (|h_i|), "
            f"got {criterion!r}"
        )
    return criterion  # type: ignore[no-any-return]


def _check_tau(tau: Any) -> float:
    t = check_float("tau", tau, 0.0)
    if t >= 1.0:
        raise ProbeArgumentError(f"tau must be a CETT tolerance in [0, 1), got {tau!r}")
    return t


def _check_pair(h: Tensor, weight: Tensor) -> None:
    if not isinstance(h, Tensor) or not isinstance(weight, Tensor):
        raise ProbeArgumentError("h and weight must be tensors")
    if h.ndim != 2 or weight.ndim != 2 or h.shape[1] != weight.shape[1]:
        raise ProbeArgumentError(
            f"h must be (tokens, d_ff) and weight (d, d_ff) with the same d_ff, "
            f"got {tuple(h.shape)} and {tuple(weight.shape)}"
        )
    if not h.is_floating_point() or not weight.is_floating_point():
        raise ProbeArgumentError(
            f"h and weight must be floating-point tensors, got {h.dtype} and {weight.dtype}"
        )


def neuron_magnitudes(h: Tensor, weight: Tensor, criterion: Criterion = "neuron") -> Tensor:
    """|n_i| = |h_i| ||W[:, i]||_2 (``"neuron"``) or |h_i| (``"magnitude"``), shape of h."""
    _check_criterion(criterion)
    if criterion == "magnitude":
        return h.abs()
    return h.abs() * weight.norm(dim=0).to(h.dtype)


def _usable(h: Tensor, full: Tensor) -> Tensor:
    """Tokens with a finite, nonzero output and finite entries (the others have no ratio)."""
    return (full > 0) & torch.isfinite(full) & torch.isfinite(h).all(dim=1)


def _ratios(h: Tensor, weight: Tensor, mags: Tensor, eps: float, full: Tensor) -> Tensor:
    err = (h * (mags < eps)) @ weight.T
    return err.norm(dim=1) / full


def cett(h: Tensor, weight: Tensor, eps: float, criterion: Criterion = "neuron") -> float:
    """Token-averaged CETT of a (tokens, d_ff) input ``h`` of the down projection ``weight``
    (d, d_ff) when the entries with magnitude < ``eps`` are truncated (tokens with W h = 0
    are left out; NaN when none is left)."""
    _check_pair(h, weight)
    w = weight.detach().to(h.dtype)
    h = h.detach()
    full = (h @ w.T).norm(dim=1)
    keep = _usable(h, full)
    if not bool(keep.any()):
        return float("nan")
    h = h[keep]
    return float(_ratios(h, w, neuron_magnitudes(h, w, criterion), eps, full[keep]).mean())


@dataclass(frozen=True)
class CETTPoint:
    """The result of a CETT-τ search on one layer.

    ``eps``: the truncation threshold (entries with magnitude < eps are cut); ``cett``: the
    token-averaged CETT there; ``sparsity``: the fraction of (token, neuron) entries cut;
    ``tokens``: tokens used (those with W h != 0); ``evaluations``: CETT evaluations made;
    ``cut_max``: the largest magnitude that is cut (0 when none is): every threshold in
    (cut_max, eps] gives the same truncation, and :meth:`margin_eps` is its midpoint.
    """

    tau: float
    eps: float
    cett: float
    sparsity: float
    tokens: int
    evaluations: int
    cut_max: float = 0.0

    @property
    def activation_ratio(self) -> float:
        return 1.0 - self.sparsity

    @property
    def margin_eps(self) -> float:
        """A threshold as far as possible from both ends of (cut_max, eps]: rounding the
        per-neuron thresholds derived from it cannot move an entry across."""
        return 0.5 * (self.cut_max + self.eps) if math.isfinite(self.eps) else self.eps


def cett_search(
    h: Tensor, weight: Tensor, tau: float = 0.2, criterion: Criterion = "neuron"
) -> CETTPoint:
    """The largest ε (a crossing, see the module docstring) whose token-averaged CETT is <=
    ``tau``, by bisection over the exact candidate set, with the sparsity there.

    ``h``: (tokens, d_ff) inputs of the down projection; ``weight``: its (d, d_ff) weight.
    Computed in h's dtype (pass float64 for a reference)."""
    _check_pair(h, weight)
    tau = _check_tau(tau)
    _check_criterion(criterion)
    w = weight.detach().to(h.dtype)
    h = h.detach()
    if not bool(torch.isfinite(w).all()):
        raise ProbeArgumentError("weight holds NaN or inf; CETT needs a finite down projection")
    full = (h @ w.T).norm(dim=1)
    keep = _usable(h, full)
    n = int(keep.sum())
    if n == 0:
        raise ProbeArgumentError(
            "no token has a finite, nonzero down-projection output; feed real activations"
        )
    h, full = h[keep], full[keep]
    mags = neuron_magnitudes(h, w, criterion)
    cands = torch.unique(mags.flatten())  # sorted ascending
    m = int(cands.numel())
    evals = 0

    def at(j: int) -> tuple[float, float]:
        eps = float(cands[j]) if j < m else math.inf
        return eps, float(_ratios(h, w, mags, eps, full).mean())

    # j = 0 cuts nothing (CETT 0 <= tau); j = m cuts everything (CETT 1 > tau)
    lo, hi = 0, m
    best = (float(cands[0]), 0.0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        eps, c = at(mid)
        evals += 1
        if c <= tau:
            lo, best = mid, (eps, c)
        else:
            hi = mid
    eps, c = best
    sparsity = float((mags < eps).double().mean())
    cut_max = float(cands[lo - 1]) if lo > 0 else 0.0
    return CETTPoint(tau, eps, c, sparsity, n, evals, cut_max)


def _down_in(parent: nn.Module) -> list[tuple[str, nn.Linear]]:
    kids = dict(parent.named_children())
    out: list[tuple[str, nn.Linear]] = []
    for name in DOWN_NAMES:
        down = kids.get(name)
        if not isinstance(down, nn.Linear):
            continue
        feeds = any(
            isinstance(k, nn.Linear) and k is not down and k.out_features == down.in_features
            for k in kids.values()
        )
        if feeds:
            out.append((name, down))
    return out


def down_projections(root: nn.Module, prefix: str = "") -> list[tuple[str, nn.Linear]]:
    """The FFN down projections inside ``root`` as (qualified name, Linear) pairs: a Linear
    child named in :data:`DOWN_NAMES` whose parent also holds a Linear feeding it."""
    out: list[tuple[str, nn.Linear]] = []
    for name, m in root.named_modules(prefix=prefix):
        for child, down in _down_in(m):
            out.append((f"{name}.{child}" if name else child, down))
    return out


@register_probe(description="CETT of each FFN down projection; CETT-tau sparsity (Sparsing Law)")
class CETTProbe(Probe):
    """Per FFN: the largest truncation threshold with CETT <= τ and the sparsity there."""

    name = "cett"
    target = "block"
    site = "input"

    def __init__(
        self,
        *,
        tau: float = 0.2,
        criterion: Criterion = "neuron",
        tokens: int = 512,
        where: str | list[str] | None = None,
    ) -> None:
        super().__init__(where=where)
        self.tau = _check_tau(tau)
        self.criterion: Criterion = _check_criterion(criterion)
        self.tokens = check_int("tokens", tokens)
        self.reset()

    def resolve_sites(self, sites: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
        out: list[tuple[str, nn.Module]] = []
        seen: set[int] = set()
        for name, m in sites:
            found = [(name, m)] if isinstance(m, nn.Linear) else down_projections(m, name)
            for label, lin in found:
                if id(lin) not in seen:
                    seen.add(id(lin))
                    out.append((label, lin))
        if sites and not out and self.where is not None:
            raise ProbeArgumentError(
                f"cett's where={list(self.where)!r} names no nn.Linear and no FFN down "
                f"projection ({', '.join(DOWN_NAMES)}); name the down projection, e.g. "
                f"'*.mlp.down_proj'"
            )
        return out

    def reset(self) -> None:
        self.samples: dict[str, Reservoir] = {}
        self.layers: dict[str, nn.Module] = {}
        self._reset_staging()

    def update(self, name: str, module: nn.Module, output: Any) -> None:
        h = first_tensor(output)
        weight = getattr(module, "weight", None)
        if h is None or h.ndim < 2 or h.numel() == 0 or not isinstance(weight, Tensor):
            return
        if weight.ndim != 2 or weight.shape[1] != h.shape[-1]:
            raise ProbeArgumentError(
                f"layer {name!r}: input width {h.shape[-1]} does not match the weight "
                f"{tuple(weight.shape)}; cett needs a Linear down projection"
            )
        if not self.sampling(name, module):
            return
        mask = self.ctx.token_mask(h) if h.ndim == 3 else None
        if mask is not None and mask.rows.size == 0:
            return
        if h.ndim > 3:  # a Linear reads the last axis: every other axis indexes tokens
            h = h.reshape(-1, h.shape[-1])
        rows = sample_rows(h, self.ctx.sample, self.ctx.rng(f"{self.name}/{name}"), mask)
        res = self.samples.get(name)
        if res is None or (res.rows is not None and res.rows.shape[1] != rows.shape[1]):
            cap = min(self.tokens, self.ctx.max_tokens)
            res = self.samples[name] = Reservoir(cap, self.ctx.generator(f"{self.name}/{name}"))
        res.add(rows.reshape(-1, h.shape[-1]))
        self.layers[name] = module

    def _weight(self, name: str, like: Tensor) -> Tensor:
        w = self.layers[name].weight
        assert isinstance(w, Tensor)
        return w.detach().to(like.device, like.dtype)

    def search(self, tau: float | None = None) -> dict[str, CETTPoint]:
        """The CETT-τ point of every layer seen (``tau`` defaults to the probe's)."""
        t = self.tau if tau is None else _check_tau(tau)
        out: dict[str, CETTPoint] = {}
        for name, res in self.samples.items():
            if res.rows is None:
                continue
            h = res.rows
            w = self._weight(name, h)
            if not bool(torch.isfinite(w).all()):
                raise ProbeArgumentError(f"layer {name!r}: its weight holds NaN or inf")
            if not bool(_usable(h, (h @ w.T).norm(dim=1)).any()):
                continue  # no sampled token had a finite, nonzero output: no ratio to report
            out[name] = cett_search(h, w, t, self.criterion)
        return out

    def overall_sparsity(
        self, tau: float | None = None, *, points: dict[str, CETTPoint] | None = None
    ) -> float:
        """The fraction of FFN neurons skipped at the CETT-τ points, over all layers
        (per-layer sparsities weighted by their widths; NaN when no layer was seen).
        ``points``: the result of :meth:`search` at ``tau``, when already computed."""
        pts = self.search(tau) if points is None else points
        units = {n: int(self.samples[n].rows.shape[1]) for n in pts}  # type: ignore[union-attr]
        total = sum(units.values())
        if not total:
            return float("nan")
        return sum(pts[n].sparsity * units[n] for n in pts) / total

    def thresholds(
        self, tau: float | None = None, *, points: dict[str, CETTPoint] | None = None
    ) -> dict[str, Tensor]:
        """Per-layer, per-neuron thresholds on |h_i| (float32, d_ff) realising the CETT-τ
        truncation: zero ``h_i`` where ``|h_i| < t_i`` (the input of the layer's Linear).
        Derived from :attr:`CETTPoint.margin_eps` (same truncation of the sample as ``eps``,
        robust to rounding). ``points``: the result of :meth:`search` at ``tau``, if at hand."""
        out: dict[str, Tensor] = {}
        for name, pt in (self.search(tau) if points is None else points).items():
            h = self.samples[name].rows
            assert h is not None
            eps = pt.margin_eps
            if self.criterion == "magnitude":
                out[name] = torch.full((h.shape[1],), eps, dtype=torch.float32)
            else:
                norms = self._weight(name, h).norm(dim=0).float().cpu()
                out[name] = eps / norms  # a zero column: inf (that neuron never matters)
        return out

    def summary(self) -> dict[str, Row]:
        out: dict[str, Row] = {}
        for name, pt in self.search().items():
            res = self.samples[name]
            assert res.rows is not None
            out[name] = {
                "units": int(res.rows.shape[1]),
                "tau": pt.tau,
                "criterion": self.criterion,
                "eps": pt.eps,
                "cett": pt.cett,
                "sparsity": pt.sparsity,
                "activation_ratio": pt.activation_ratio,
                "tokens": pt.tokens,
                "tokens_seen": int(res.seen),
            }
        return out


@dataclass(frozen=True)
class PPLPoint:
    """The result of a PPL-p% search: the largest CETT tolerance ``tau`` found whose
    perplexity ratio ``exp(loss - dense_loss)`` is <= 1 + p / 100, that ratio, the sparsity
    ``loss_at`` reported there, and the number of evaluations made."""

    p: float
    tau: float
    ppl_ratio: float
    sparsity: float
    evaluations: int


def ppl_p_search(
    loss_at: Callable[[float], tuple[float, float]],
    dense_loss: float,
    p: float = 1.0,
    *,
    tau_max: float = 0.99,
    steps: int = 12,
) -> PPLPoint:
    """PPL-p% sparsity (Sparsing Law): bisect the CETT tolerance τ in [0, tau_max] for the
    largest τ whose perplexity rises by at most p%.

    ``loss_at(τ)`` runs the model with every FFN truncated at its CETT-τ thresholds and
    returns ``(mean token loss in nats, sparsity)``; ``dense_loss`` is the dense model's loss
    on the same tokens. τ = 0 truncates nothing, so it is the starting point (its sparsity
    is that of ``loss_at(0)``, evaluated only when no larger τ qualifies). ``steps``
    bisection steps give τ to tau_max / 2**steps; like the paper's search this finds a
    crossing when the loss is not monotone in τ."""
    p = check_float("p", p, 0.0, strict=True)
    dense = check_float("dense_loss", dense_loss)
    hi_tau = _check_tau(tau_max)
    steps = check_int("steps", steps, 1, 40)
    limit = 1.0 + p / 100.0
    evals = 0

    def ratio(tau: float) -> tuple[float, float]:
        nonlocal evals
        loss, sparsity = loss_at(tau)
        evals += 1
        loss = float(loss)
        if not math.isfinite(loss):
            return math.inf, float(sparsity)
        return math.exp(loss - dense), float(sparsity)

    r_hi, s_hi = ratio(hi_tau)
    if r_hi <= limit:
        return PPLPoint(p, hi_tau, r_hi, s_hi, evals)
    lo, hi = 0.0, hi_tau
    best: tuple[float, float] | None = None
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        r, s = ratio(mid)
        if r <= limit:
            lo, best = mid, (r, s)
        else:
            hi = mid
    if best is None:
        best = ratio(0.0)
    return PPLPoint(p, lo, best[0], best[1], evals)
