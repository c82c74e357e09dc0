"""Quality of a sparsified causal LM: perplexity and greedy agreement under a stated protocol.

Every window ``x_0 .. x_{L-1}`` is split into a context of ``prefill`` tokens (default
``L // 2``) and the positions after it. The *scored* predictions are the logits at
positions ``prefill .. L-2`` (predicting ``x_{prefill+1} .. x_{L-1}``): ``L - prefill - 1`` per
window, the same positions under every protocol, so perplexities are comparable:

- ``"decode"``: what real decoding does. ``x_0 .. x_{prefill-1}`` go through one dense forward
  (the sparse modules in mode ``"decode"`` leave multi-position forwards dense) that fills the
  KV cache; then each later token goes in alone with the cache, and those single-position
  forwards are sparse. All windows are decoded side by side as one batch (a batch row is
  sparsified per token, so batching changes nothing but speed).
- ``"all"``: one full forward, every position sparse (the context too).
- ``"last-half"``: TEAL's evaluation, one full forward in which positions ``L // 2`` onwards are
  sparse. With the default ``prefill = L // 2`` it computes what ``"decode"`` computes (the
  cache of the sparse positions is built from sparse inputs in both), in one forward (about
  4x less CPU time). In float32 the two differ by rounding only, but hard thresholds are
  discontinuous: rounding flips the entries that sit at a threshold and a flip changes the
  later positions. Measured on SmolLM2-135M, TEAL 50%, 8 windows of 256 tokens: perplexity
  37.30 (decode) vs 37.58 (last-half), 0.75% apart; decoding 8 or 3 windows side by side gave
  the same digits.

``perplexity = exp(mean NLL)`` over the scored predictions. The change against the dense model
comes with a 95% interval (:func:`delta_ci`): every window scores the same positions, so the
change is ``exp(mean_w d_w) - 1`` with ``d_w`` the paired per-window difference of mean NLLs
(sparse minus dense), and its Student-t interval over the windows (windows, not tokens, are
the independent units: neighbouring tokens' losses are correlated). SmolLM2-135M, TEAL at
40% untuned: 8 windows of 256 tokens (1016 predictions) gave +20.6% in +11.2 .. +30.8%; 64
windows +19.0% in +15.9 .. +22.2%. *Agreement* is the fraction of
scored positions where the sparse model's argmax equals the dense model's argmax under the
same protocol on the same windows. *Realised sparsity* is read from the modules' counts over
the sparsified forwards: per projection (q, k, v, o, gate, up, down; a gated-MLP site counts
for up and down, whose channels it skips, and leaves gate dense) and over block parameters,
``sum_P numel(W_P) s_P / sum_P numel(W_P)`` over the 7 projections of every block. The
embeddings and the LM head stay dense and are not counted. A rotated model (TEAL with
``rotation="pca"``) also reads one dense ``d x d`` change of basis per block per token: its
*overhead* is those entries over the block parameters, and its *effective* sparsity, the
fraction of block weight reads saved, is ``realised - overhead`` (``realised`` otherwise).

:func:`sparsity_curves` calibrates each (method, sparsity) once on the calibration windows,
evaluates it on the held-out windows and returns one row per point (sparsity 0 is the dense
model itself, evaluated once: sparsity 0 is bit-identical to it by construction and test).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from actlab.sparse._base import make_method
from actlab.sparse._calls import cache_of, forward_logits
from actlab.sparse._dense_cache import DenseCache
from actlab.sparse._modules import SparseGatedMLP, SparseLinear, check_mode
from actlab.sparse._sites import PROJECTIONS, find_blocks
from actlab.sparse._state import SparseError, SparsityState, check_sparsity
from actlab.sparse._tune import split_tune, tune_gains

__all__ = [
    "DEFAULT_SPARSITIES",
    "EvalResult",
    "compare_models",
    "curves_table",
    "evaluate",
    "realised_sparsity",
    "rotation_overhead",
    "sparsity_curves",
]

DEFAULT_SPARSITIES = (0.0, 0.25, 0.40, 0.50, 0.65, 0.80)
Progress = Callable[[str], None]
_SKIPPED = ("up_proj", "down_proj")  # the projections a gated-MLP site skips channels of


@dataclass
class EvalResult:
    """Perplexity, agreement and realised sparsity of one model on one set of windows."""

    protocol: str
    ppl: float
    nll: float
    windows: int
    window: int
    prefill: int
    scored: int
    seconds: float  # wall clock
    agreement: float | None = None
    realised: float = 0.0
    overhead: float = 0.0  # dense rotation entries read per token / block parameters
    by_projection: dict[str, float] = field(default_factory=dict)
    argmax: torch.Tensor | None = field(default=None, repr=False)  # [windows, scored/window]
    batch_size: int = 0
    cpu_seconds: float = 0.0  # process CPU time (all threads)
    caches: list[Any] | None = field(default=None, repr=False)  # dense prefill KV, per batch
    window_nll: torch.Tensor | None = field(default=None, repr=False)  # [windows] mean NLL, f64
    cached_from: str = ""  # the dense cache entry this result was read from, if any

    def row(self) -> dict[str, Any]:
        """The numbers as a flat dict (no tensors)."""
        return {
            "protocol": self.protocol,
            "ppl": self.ppl,
            "agreement": self.agreement,
            "realised": self.realised,
            "overhead": self.overhead,
            "effective": self.realised - self.overhead,
            **{f"realised_{k.removesuffix('_proj')}": v for k, v in self.by_projection.items()},
            "eval_windows": self.windows,
            "window": self.window,
            "prefill": self.prefill,
            "eval_tokens": self.windows * self.window,
            "scored": self.scored,
            "eval_seconds": self.seconds,
            "eval_cpu_seconds": self.cpu_seconds,
        }


def _sites(model: nn.Module) -> list[SparseLinear | SparseGatedMLP]:
    return [m for m in model.modules() if isinstance(m, (SparseLinear, SparseGatedMLP))]


def rotation_overhead(model: nn.Module) -> float:
    """Entries of the between-block rotations (``wina_rotation`` buffers of a rotated model)
    over the block projections' parameters: dense work a sparsified model adds per token."""
    extra = sum(int(b.numel()) for n, b in model.named_buffers() if n.endswith("wina_rotation"))
    if not extra:
        return 0.0
    total = 0
    for block in find_blocks(model):
        for n in PROJECTIONS:
            w = model.get_submodule(block.proj(n)).weight
            assert isinstance(w, torch.Tensor)
            total += int(w.numel())
    return extra / total if total else 0.0


def realised_sparsity(model: nn.Module) -> tuple[float, dict[str, float]]:
    """``(over block parameters, per projection)`` from the sparse modules' counts.

    Projections without a sparse module count 0 (dense). A projection whose site never ran
    a sparsified forward is nan.
    """
    by_path = {
        p: m for p, m in model.named_modules() if isinstance(m, (SparseLinear, SparseGatedMLP))
    }
    weighted = 0.0
    total = 0
    per: dict[str, list[tuple[int, float]]] = {n: [] for n in PROJECTIONS}
    for block in find_blocks(model):
        gated = by_path.get(block.mlp)
        for n in PROJECTIONS:
            path = block.proj(n)
            weight = model.get_submodule(path).weight
            assert isinstance(weight, torch.Tensor)
            size = int(weight.numel())
            site = by_path.get(path)
            if site is None and isinstance(gated, SparseGatedMLP) and n in _SKIPPED:
                site = gated
            s = 0.0 if site is None else site.realised
            per[n].append((size, s))
            weighted += size * s
            total += size
    by_projection = {
        n: sum(k * s for k, s in v) / sum(k for k, _ in v) for n, v in per.items() if v
    }
    return (weighted / total if total else math.nan), by_projection


def _score(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(NLL per position, argmax per position) in float32; logits ``[B, T, V]``."""
    lf = logits.float()
    nll = F.cross_entropy(lf.transpose(1, 2), targets, reduction="none")  # [B, T]
    return nll, lf.argmax(-1)


Scores = tuple[torch.Tensor, torch.Tensor, Any]  # NLL [B, S], argmax [B, S], prefill cache


@torch.inference_mode()
def _decode(model: nn.Module, ids: torch.Tensor, prefill: int, cache: Any = None) -> Scores:
    """Dense prefill forward, then one position at a time with the KV cache; ids ``[B, L]``.

    ``cache``: the KV cache of a dense prefill of the same ids (it is what the prefill
    forward here would compute, bit for bit: multi-position forwards stay dense in mode
    ``"decode"``), used instead of running the prefill; a copy of the cache after the
    prefill is returned for reuse.
    """
    if cache is None:
        out = forward_logits(model, ids[:, :prefill], 1, cache=True)
        cache = cache_of(out)
        if cache is None:
            raise SparseError(f"{type(model).__name__} returned no KV cache; 'decode' needs one")
    kept = copy.deepcopy(cache)
    nlls, tops = [], []
    for t in range(prefill, ids.shape[1] - 1):
        out = forward_logits(model, ids[:, t : t + 1], 1, cache=cache)
        new = cache_of(out)
        cache = cache if new is None else new
        nll, top = _score(out.logits[:, -1:], ids[:, t + 1 : t + 2])
        nlls.append(nll)
        tops.append(top)
    return torch.cat(nlls, 1), torch.cat(tops, 1), kept


@torch.inference_mode()
def _full(model: nn.Module, ids: torch.Tensor, prefill: int, cache: Any = None) -> Scores:
    """One forward over the whole window; the logits of positions prefill..L-2 scored."""
    length = ids.shape[1]
    out = forward_logits(model, ids, length - prefill)
    logits = out.logits[:, -(length - prefill) :][:, :-1]  # positions prefill .. L-2
    return (*_score(logits, ids[:, prefill + 1 :]), None)


def evaluate(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    protocol: str = "decode",
    prefill: int | None = None,
    reference: EvalResult | None = None,
    batch_size: int = 64,
    keep_prefill: bool = False,
    progress: Progress | None = None,
) -> EvalResult:
    """Perplexity (and agreement with ``reference``) of ``model`` on ``windows [n, L]``.

    The sparse modules of ``model`` are put in mode ``protocol`` and their counts reset
    first; ``reference`` is the dense model's result under the same protocol and windows.
    ``batch_size`` windows are decoded side by side (more is faster: decoding reads every
    weight once per step). ``keep_prefill=True`` (decode) keeps the dense prefill KV caches
    in the result; a later evaluation with that result as ``reference`` (same prefill and
    batch size) starts from copies of them instead of running the prefill again.
    """
    protocol = check_mode(protocol)
    if not isinstance(windows, torch.Tensor) or windows.ndim != 2 or windows.dtype != torch.long:
        raise SparseError("evaluation windows must be a LongTensor [windows, length]")
    n, length = windows.shape
    prefill = length // 2 if prefill is None else prefill
    if isinstance(prefill, bool) or not isinstance(prefill, int) or not 1 <= prefill <= length - 2:
        raise SparseError(
            f"prefill must be in 1..{length - 2} for windows of {length} tokens; got {prefill!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SparseError(f"batch_size must be a positive integer; got {batch_size!r}")
    if n == 0:
        raise SparseError("no evaluation windows")
    if reference is not None and (
        reference.argmax is None or reference.protocol != protocol or reference.windows != n
    ):
        raise SparseError("the reference must be the dense result of the same protocol/windows")
    for site in _sites(model):
        site.mode = protocol
        site.reset_counts()
    device = next(model.parameters()).device
    run = _decode if protocol == "decode" else _full
    given_caches: list[Any] | None = None
    if (
        reference is not None
        and reference.caches is not None
        and (reference.prefill, reference.batch_size) == (prefill, batch_size)
    ):
        given_caches = reference.caches
    start, cpu = time.perf_counter(), time.process_time()
    nlls, tops, caches = [], [], []
    for k, i in enumerate(range(0, n, batch_size)):
        given = None if given_caches is None else copy.deepcopy(given_caches[k])
        nll, top, cache = run(model, windows[i : i + batch_size].to(device), prefill, given)
        nlls.append(nll.cpu())
        tops.append(top.cpu())
        caches.append(cache)
        if progress is not None and n > batch_size:
            progress(f"  {protocol}: {min(i + batch_size, n)}/{n} windows")
    nll_all = torch.cat(nlls).double()
    top_all = torch.cat(tops)
    mean = float(nll_all.mean())
    realised, by_projection = realised_sparsity(model) if _sites(model) else (0.0, {})
    return EvalResult(
        protocol=protocol,
        ppl=math.exp(mean),
        nll=mean,
        windows=n,
        window=length,
        prefill=prefill,
        scored=int(nll_all.numel()),
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu,
        agreement=None if reference is None else _agreement(top_all, reference.argmax),
        realised=realised,
        overhead=rotation_overhead(model),
        by_projection=by_projection or dict.fromkeys(PROJECTIONS, 0.0),
        argmax=top_all,
        batch_size=batch_size,
        caches=caches if keep_prefill and protocol == "decode" else None,
        window_nll=nll_all.mean(1),  # [n, scored per window] -> [n]
    )


def delta_ci(
    result: EvalResult, reference: EvalResult, confidence: float = 0.95
) -> tuple[float, float]:
    """The ``confidence`` interval of the perplexity change of ``result`` against
    ``reference`` (same windows and protocol), in percent: ``100 (exp(m -+ h) - 1)`` with ``m``
    the mean of the paired per-window NLL differences and ``h`` its Student-t half-width over
    the windows. ``(nan, nan)`` for fewer than two windows."""
    a, b = result.window_nll, reference.window_nll
    if a is None or b is None or a.shape != b.shape:
        raise SparseError("delta_ci needs two results of the same windows (window_nll)")
    if not 0.0 < confidence < 1.0:
        raise SparseError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")
    n = int(a.numel())
    if n < 2:
        return math.nan, math.nan
    from scipy.stats import t as student_t

    d = (a - b).double()  # [windows]
    m = float(d.mean())
    h = float(student_t.ppf(0.5 + confidence / 2.0, n - 1)) * float(d.std()) / math.sqrt(n)
    return 100.0 * math.expm1(m - h), 100.0 * math.expm1(m + h)


def _agreement(top: torch.Tensor, ref: torch.Tensor | None) -> float:
    """Fraction of positions where the two argmax tensors agree."""
    assert ref is not None and ref.shape == top.shape
    return float(torch.eq(top, ref).double().mean())


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def sparsity_curves(
    model: nn.Module,
    calibration: Iterable[torch.Tensor],
    windows: torch.Tensor,
    *,
    methods: Sequence[str] = ("teal", "cats", "chess", "wina"),
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    protocol: str = "decode",
    prefill: int | None = None,
    batch_size: int = 64,
    progress: Progress | None = _stderr,
    tune_calibration: Iterable[torch.Tensor] | None = None,
    dense_cache: DenseCache | None = None,
) -> list[dict[str, Any]]:
    """One row per (method, sparsity): calibrate on ``calibration``, evaluate on ``windows``.

    The first row is the dense model (method ``"dense"``, sparsity 0). ``params[method]``
    are extra parameters of that method. A method entry ``"LABEL=METHOD"`` (e.g.
    ``"teal-pca=teal"`` with ``params["teal-pca"] = {"rotation": "pca"}``) runs a variant of a
    registered method under its own label. The keys ``tune_steps`` (``tune_lr``,
    ``tune_batch``, ``tune_seed``) in a label's parameters tune the normalisation gains of each
    of its points after calibration (:func:`actlab.sparse.tune_gains`, on
    ``tune_calibration``, by default the calibration windows; its time counts in
    ``calib_seconds``; what it did is the row's ``tuning``). ``dense_cache``: read the dense
    result from there when it holds it, else store it there (:mod:`actlab.sparse._dense_cache`).
    ``model`` itself is never changed (each point
    sparsifies a copy). Rows: method, params, target, realised (block parameters),
    realised_<proj>, ppl, delta_pct, agreement, protocol, token counts, seconds.
    """
    protocol = check_mode(protocol)
    targets = sorted({check_sparsity(s) for s in sparsities})
    calib = list(calibration)
    calib_tokens = sum(int(b.numel()) for b in calib)
    tune_windows = calib if tune_calibration is None else list(tune_calibration)
    say = progress or (lambda _line: None)
    variants = [_variant(m) for m in methods]
    for label, m in variants:  # every name and parameter checked before any work
        make_method(m, sparsity=0.0, **split_tune(dict((params or {}).get(label, {})))[0])
    untuned = any(
        split_tune(dict((params or {}).get(label, {})))[1] is None for label, _ in variants
    )
    dense = _evaluate_dense(
        model, windows, protocol, prefill, batch_size, say, keep=untuned, cache=dense_cache
    )
    common = {"calib_tokens": calib_tokens}
    rows = [_dense_row(dense, common)]
    for label, m in variants:
        extra, tune = split_tune(dict((params or {}).get(label, {})))
        for s in (t for t in targets if t > 0):
            method = make_method(m, sparsity=s, **extra)
            t0, c0 = time.perf_counter(), time.process_time()
            state = method.calibrate(model, calib)
            if tune is not None:
                state = tune_gains(model, state, tune_windows, tune, progress=say)
            calib_s, calib_cpu = time.perf_counter() - t0, time.process_time() - c0
            sparse = copy.deepcopy(model)
            method.apply(sparse, state)
            res = _evaluate_sparse(sparse, state, dense, windows, protocol, prefill, batch_size)
            del sparse
            info = {"calib_seconds": calib_s, "calib_cpu_seconds": calib_cpu, **common}
            rows.append(_point_row(label, state, s, res, dense, info))
            say(_point_line(rows[-1], res, calib_s))
    return rows


def compare_models(
    dense: nn.Module,
    sparse: nn.Module,
    state: SparsityState,
    windows: torch.Tensor,
    *,
    label: str | None = None,
    protocol: str = "decode",
    prefill: int | None = None,
    batch_size: int = 64,
    progress: Progress | None = _stderr,
    dense_cache: DenseCache | None = None,
) -> list[dict[str, Any]]:
    """The rows of :func:`sparsity_curves` for a model sparsified already (e.g. reloaded with
    :func:`actlab.sparse.load_sparse`): the dense model's row, then ``sparse``'s, scored
    against it on ``windows`` under ``protocol``. ``state`` is the sparse model's state (its
    method, target, parameters and tuning name the row; ``label`` overrides the method).
    ``dense_cache`` as in :func:`sparsity_curves`."""
    protocol = check_mode(protocol)
    if not _sites(sparse):
        raise SparseError("the sparse model has no sparse modules; apply a state to it first")
    say = progress or (lambda _line: None)
    ref = _evaluate_dense(
        dense, windows, protocol, prefill, batch_size, say, keep=not _tuned(state),
        cache=dense_cache,
    )  # fmt: skip
    res = _evaluate_sparse(sparse, state, ref, windows, protocol, prefill, batch_size)
    none = {"calib_seconds": 0.0, "calib_cpu_seconds": 0.0, "calib_tokens": 0}
    target = float(state.params.get("sparsity", 0.0))
    row = _point_row(label or state.method, state, target, res, ref, none)
    say(_point_line(row, res))
    return [_dense_row(ref, none), row]


def _evaluate_dense(
    model: nn.Module,
    windows: torch.Tensor,
    protocol: str,
    prefill: int | None,
    batch_size: int,
    say: Progress,
    keep: bool,
    cache: DenseCache | None = None,
) -> EvalResult:
    """The dense result; ``keep``: with its prefill caches, for untuned points to start from
    (a result read from ``cache`` has none: the sparse evaluations run their own prefill)."""
    key = ""
    if cache is not None:
        length = int(windows.shape[1]) if windows.ndim == 2 else 0
        key = cache.key(model, windows, protocol, length // 2 if prefill is None else prefill,
                        batch_size)  # fmt: skip
        hit = cache.load(key, int(windows.shape[0]))
        if hit is not None:
            dense = EvalResult(**hit, cached_from=str(cache.path(key)))
            say(f"dense: ppl {dense.ppl:.3f} read from {dense.cached_from} (evaluated in "
                f"{dense.seconds:.1f} s; --no-eval-cache evaluates again)")  # fmt: skip
            return dense
    say(f"dense: evaluating {windows.shape[0]} windows x {windows.shape[1]} tokens ({protocol})")
    dense = evaluate(
        model,
        windows,
        protocol=protocol,
        prefill=prefill,
        batch_size=batch_size,
        keep_prefill=keep,
        progress=say,
    )
    say(f"dense: ppl {dense.ppl:.3f} in {dense.seconds:.1f} s")
    if cache is not None:
        fields = {f.name: getattr(dense, f.name) for f in dataclasses.fields(dense)}
        path = cache.save(key, fields)
        if path is not None:
            say(f"dense: result cached in {path}")
    return dense


def _evaluate_sparse(
    sparse: nn.Module,
    state: SparsityState,
    dense: EvalResult,
    windows: torch.Tensor,
    protocol: str,
    prefill: int | None,
    batch_size: int,
) -> EvalResult:
    """:func:`evaluate` of a model sparsified with ``state`` against ``dense``. It starts from
    the dense prefill caches unless the state is tuned: tuning changes the weights the
    (dense-mode) prefill runs through, so a tuned model fills its KV caches with its own
    prefill, as it would when deployed."""
    reference = dataclasses.replace(dense, caches=None) if _tuned(state) else dense
    return evaluate(
        sparse,
        windows,
        protocol=protocol,
        prefill=prefill,
        reference=reference,
        batch_size=batch_size,
    )


def _tuned(state: SparsityState) -> bool:
    return bool(state.tuning or state.gains)


def _dense_row(dense: EvalResult, info: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "method": "dense",
        "dense_cached": dense.cached_from,
        "params": {},
        "tuning": {},
        "target": 0.0,
        **dense.row(),
        "agreement": 1.0,
        "delta_pct": 0.0,
        "delta_ci": [0.0, 0.0],
        "calib_seconds": 0.0,
        "calib_cpu_seconds": 0.0,
        **info,
    }


def _point_row(
    label: str,
    state: SparsityState,
    target: float,
    res: EvalResult,
    dense: EvalResult,
    info: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "method": label,
        "params": {k: v for k, v in state.params.items() if k != "sparsity"},
        "tuning": dict(state.tuning),
        "target": target,
        **res.row(),
        "delta_pct": 100.0 * (res.ppl / dense.ppl - 1.0),
        "delta_ci": list(delta_ci(res, dense)),
        **info,
    }


def _point_line(row: Mapping[str, Any], res: EvalResult, calib_s: float | None = None) -> str:
    return (
        f"{row['method']} s={row['target']:.2f}: realised {res.realised:.3f}"
        + (f" (effective {res.realised - res.overhead:.3f})" if res.overhead else "")
        + f", ppl {res.ppl:.3f} "
        f"({row['delta_pct']:+.1f}%, 95% CI {_ci(row)}), agreement {res.agreement:.3f}; "
        + ("" if calib_s is None else f"calibration {calib_s:.1f} s, ")
        + f"evaluation {res.seconds:.1f} s"
    )


def _variant(entry: str) -> tuple[str, str]:
    """``"label=method"`` -> (label, method); a plain name is its own label."""
    label, sep, method = str(entry).partition("=")
    if not sep:
        return label, label
    if not label or not method:
        raise SparseError(f"a method variant is LABEL=METHOD (e.g. teal-pca=teal); got {entry!r}")
    return label, method


def curves_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of curve rows: method, target, realised, effective (realised minus a
    rotation's dense overhead), ppl, Δ%, agreement, and the wall-clock (CPU) seconds of
    calibration and evaluation."""
    head = (
        "| method | target | realised (block params) | effective | ppl | Δ ppl % | 95% CI "
        "| agreement | calib s (cpu) | eval s (cpu) |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        agree = r.get("agreement")
        eff = r.get("effective", r["realised"])
        lines.append(
            f"| {r['method']} | {r['target']:.2f} | {r['realised']:.3f} | {eff:.3f} "
            f"| {r['ppl']:.3f} "
            f"| {r['delta_pct']:+.1f} | {_ci(r)} | {'–' if agree is None else f'{agree:.3f}'} "
            f"| {_secs(r, 'calib')} | {_secs(r, 'eval')} |"
        )
    return "\n".join(lines)


def _ci(row: Mapping[str, Any]) -> str:
    """``"+11.8 .. +14.0"`` from a row's ``delta_ci`` ("–" where it is missing or nan)."""
    ci = row.get("delta_ci")
    if not ci or any(not math.isfinite(v) for v in ci):
        return "–"
    return f"{ci[0]:+.1f} .. {ci[1]:+.1f}"


def _secs(row: Mapping[str, Any], what: str) -> str:
    wall = row.get(f"{what}_seconds", 0.0)
    cpu = row.get(f"{what}_cpu_seconds")
    return f"{wall:.1f}" if cpu is None else f"{wall:.1f} ({cpu:.1f})"
