"""Attention entropy per head, normalised entropy, and the collapse / overload bands.

Entropy-Guided Attention (Jha & Reagen, arXiv 2501.03489): for head h of layer l with
attention probabilities a (queries i x keys j),

    E(l, h) = -(1/T) Σ_i Σ_j a_ij log a_ij        (nats; the mean over queries of row entropy)

We use xlogy (0 log 0 = 0) instead of the paper's log(a + ε), which differs by O(ε). The
normalised entropy divides each row's entropy by its maximum log n_i, where n_i is the number
of keys row i can attend to: n_i = i + 1 under a causal mask (the paper's "log i", 1-based),
T without a mask, fewer with padding. ``norm="support"`` (default) counts n_i as the keys with
a_ij > 0, which covers all three cases; ``norm="causal"`` forces n_i = i + 1; ``norm="full"``
uses T. Rows with n_i <= 1 carry no normalised entropy and are skipped.

Bands (relative to M, the largest head entropy in the model): "collapse" E < M/4, "healthy"
M/4 <= E <= 3M/4, "overload" E > 3M/4. Healthy models keep most heads in the middle band;
entropic overload is a large share in the top band, entropy collapse a large share near 0.

The probe hooks modules returning attention probabilities: a 4-D tensor (B, H, Tq, Tk) as the
output or as an element of an output tuple (transformers attention modules with
``attn_implementation="eager"``; ``nn.Softmax`` modules in hand-written attention). 3-D
(B, Tq, Tk) head-averaged weights count as one head. Queries are sampled (``sample`` rows per
call) and the statistics are reduced on device.

Fused-kernel attention (``F.scaled_dot_product_attention``) never materialises the
probabilities. For modules in the timm / nanoGPT layout (a fused ``qkv`` or ``c_attn`` Linear
child, a head count ``num_heads`` / ``n_head``; ``scale`` if set, else 1/sqrt(head_dim);
causal when ``is_causal`` / ``causal`` is set or the class name contains "Causal") the probe hooks
``qkv`` instead and recomputes softmax(q k^T · scale) for the sampled queries only: the same
probabilities, at a small fraction of the attention cost. Attention masks other than causal, and q/k
normalisation layers, are not applied there.

Padding: the ``attention_mask=`` keyword of the model call (captured by the manager), or
``p.set_context(attention_mask=mask)``, with the (B, T) mask of the batch gives the rows of
padded queries weight 0 (padded keys already get probability 0 and drop out of the
support count).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from actlab.probes.base import Probe, ProbeArgumentError, Row, draw
from actlab.probes.manager import register_probe

__all__ = [
    "AttentionEntropyProbe",
    "attention_probs",
    "row_entropy",
    "entropy_bands",
    "use_eager_attention",
]

Norm = Literal["support", "causal", "full"]


def attention_probs(output: Any, module: nn.Module | None = None) -> Tensor | None:
    """Attention probabilities in a module output, as (B, H, Tq, Tk); None if absent.

    A bare 4-D floating tensor is taken as probabilities; a bare 3-D one only when the module
    is an ``nn.Softmax`` (one head). In a tuple the first 4-D floating tensor wins, or for
    ``nn.MultiheadAttention`` its 3-D head-averaged weights.
    """
    if isinstance(output, Tensor):
        if output.is_floating_point() and output.ndim == 4:
            return output
        if output.is_floating_point() and output.ndim == 3 and isinstance(module, nn.Softmax):
            return output.unsqueeze(1)
        return None
    if isinstance(output, (tuple, list)):
        for o in output:
            if isinstance(o, Tensor) and o.is_floating_point() and o.ndim == 4:
                return o
        if isinstance(module, nn.MultiheadAttention) and len(output) > 1:
            w = output[1]
            if isinstance(w, Tensor) and w.ndim == 3:
                return w.unsqueeze(1)
    return None


def row_entropy(p: Tensor) -> Tensor:
    """-Σ_j p_j log p_j over the last dimension (nats), exact at p = 0."""
    return -torch.special.xlogy(p, p).sum(dim=-1)


def _row_max(p: Tensor, q_idx: Tensor, norm: Norm) -> Tensor:
    """log n_i for every sampled row: p is (k, H, Tk), q_idx (k,) the query positions."""
    if norm == "support":
        n = (p > 0).sum(dim=-1).float()
    elif norm == "causal":
        n = (q_idx + 1).clamp(max=p.shape[-1]).float()[:, None].expand(p.shape[:2])
    elif norm == "full":
        n = torch.full(p.shape[:2], float(p.shape[-1]), device=p.device)
    else:
        raise ValueError(f"norm must be 'support', 'causal' or 'full', got {norm!r}")
    return torch.log(n)


@register_probe(description="attention entropy per head, normalised, collapse / overload bands")
class AttentionEntropyProbe(Probe):
    """Per-head mean row entropy (nats) and row entropy normalised by its maximum."""

    name = "attention"
    target = "attention"

    def __init__(self, *, norm: Norm = "support", where: str | list[str] | None = None) -> None:
        super().__init__(where=where)
        if norm not in ("support", "causal", "full"):
            raise ProbeArgumentError(f"norm must be 'support', 'causal' or 'full', got {norm!r}")
        self.norm: Norm = norm
        self.qkv_layout: dict[str, tuple[int, float | None, bool]] = {}
        self.reset()

    def resolve_sites(self, sites: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
        out: list[tuple[str, nn.Module]] = []
        for name, m in sites:
            info = _qkv_layout(m)
            if info is None:
                out.append((name, m))
            else:
                self.qkv_layout[name] = info
                lin = _fused_qkv(m)
                assert lin is not None
                out.append((name, lin))
        return out

    def reset(self) -> None:
        self.acc: dict[str, Tensor] = {}  # (H, 4): Σ entropy, n rows, Σ normalised, n normed
        self.seq: dict[str, int] = {}
        self.missing: dict[str, int] = {}  # calls whose output held no probabilities
        self._reset_staging()

    def update(self, name: str, module: nn.Module, output: Any) -> None:
        if not self.sampling(name, module):
            return
        layout = self.qkv_layout.get(name)
        if layout is not None and isinstance(output, Tensor) and output.ndim == 3:
            self._stage_qkv(name, output, *layout)
            return
        a = attention_probs(output, module)
        if a is None:
            self.missing[name] = self.missing.get(name, 0) + 1
            return
        b, _, tq, _ = a.shape
        rows, k = b * tq, self.ctx.sample
        if rows > k:
            r = draw(self.ctx.rng(f"{self.name}/{name}"), rows, k, a.device)
        else:
            r = torch.arange(rows, device=a.device)
        bi, qi = r // tq, r % tq
        w = None
        mask = self.ctx.attention_mask()
        if mask is not None and tuple(mask.shape) == (b, tq):
            w = mask.to(a.device)[bi, qi].float()  # padded queries weigh 0
        self.stage(name, ("probs", a[bi, :, qi, :], qi, w))  # (k, H, Tk), (k,), (k,)

    def _stage_qkv(
        self, name: str, qkv: Tensor, heads: int, scale: float | None, causal: bool
    ) -> None:
        """Stage what is needed to recompute sampled rows from a fused qkv output (B, T, 3D).

        Short sequences (T <= sample): sample // T whole sequences are kept and all their
        queries scored at reduce time (one batched matmul). Long ones: ``sample`` queries of
        one drawn sequence are scored now.
        """
        b, t, d3 = qkv.shape
        g = self.ctx.rng(f"{self.name}/{name}")
        k = self.ctx.sample
        if t <= k:
            m = min(b, max(1, k // t))
            keep = torch.from_numpy(np.sort(g.choice(b, m, replace=False))).to(qkv.device)
            sub = qkv.clone() if m == b else qkv.index_select(0, keep)
            self.stage(name, ("qkv", sub, (heads, scale, causal), None))
            return
        d = d3 // 3
        hd = d // heads
        b0 = int(g.integers(b))
        qi = draw(g, t, k, qkv.device)
        q = qkv[b0, qi, :d].float().reshape(k, heads, hd)
        kk = qkv[b0, :, d : 2 * d].float().reshape(t, heads, hd)
        s = torch.einsum("khd,thd->kht", q, kk) * (scale if scale is not None else hd**-0.5)
        if causal:
            future = torch.arange(t, device=qkv.device)[None, :] > qi[:, None]
            s = s.masked_fill(future[:, None, :], float("-inf"))
        self.stage(name, ("probs", torch.softmax(s, dim=-1), qi, None))

    @staticmethod
    def _qkv_probs(
        sub: Tensor, heads: int, scale: float | None, causal: bool
    ) -> tuple[Tensor, Tensor]:
        """All rows of softmax(q k^T · scale) for whole sequences: ((m*T, H, T), (m*T,))."""
        m, t, d3 = sub.shape
        d = d3 // 3
        hd = d // heads
        q = sub[..., :d].float().reshape(m, t, heads, hd).transpose(1, 2)  # (m, H, T, hd)
        kk = sub[..., d : 2 * d].float().reshape(m, t, heads, hd).transpose(1, 2)
        s = (q @ kk.transpose(-1, -2)) * (scale if scale is not None else hd**-0.5)
        if causal:
            s = s.masked_fill(
                torch.triu(torch.ones(t, t, dtype=torch.bool, device=sub.device), 1), float("-inf")
            )
        p = torch.softmax(s, dim=-1).transpose(1, 2).reshape(-1, heads, t)
        return p, torch.arange(t, device=sub.device).repeat(m)

    def reduce(self, name: str, items: list[tuple[Any, ...]]) -> None:
        if items[0][0] == "qkv":
            p, qi = self._qkv_probs(torch.cat([it[1] for it in items]), *items[0][2])
        else:
            p = torch.cat([it[1] for it in items]).float()
            qi = torch.cat([it[2] for it in items])
        w = None
        if any(it[3] is not None for it in items):
            w = torch.cat(
                [it[3] if it[3] is not None else p.new_ones(it[1].shape[0]) for it in items]
            )[:, None]  # (k, 1) query weights
        h, tk = p.shape[1], p.shape[2]
        ent = row_entropy(p)  # (k, H)
        lmax = _row_max(p, qi, self.norm)
        ok = (lmax > 1e-12).float()
        normed = torch.where(ok > 0, ent / lmax.clamp_min(1e-12), torch.zeros_like(ent))
        if w is not None:
            ent, normed, ok = ent * w, normed * w, ok * w
        n_rows = (w.sum() if w is not None else p.new_tensor(float(p.shape[0]))).double()
        vec = torch.stack(
            [ent.sum(0).double(), n_rows.expand(h), normed.sum(0).double(), ok.sum(0).double()],
            dim=1,
        )
        self.seq[name] = tk
        if name in self.acc and self.acc[name].shape == vec.shape:
            self.acc[name] += vec
        else:
            self.acc[name] = vec

    def summary(self) -> dict[str, Row]:
        self.flush()
        out: dict[str, Row] = {}
        for name, acc in self.acc.items():
            for head, (es, n, ns, nn_) in enumerate(acc.tolist()):
                out[f"{name}#h{head}"] = {
                    "layer": name,
                    "head": head,
                    "entropy": es / n if n else float("nan"),
                    "entropy_norm": ns / nn_ if nn_ else float("nan"),
                    "max_entropy": math.log(self.seq[name]) if self.seq[name] > 1 else 0.0,
                    "rows": int(n),
                }
        bands = entropy_bands(list(out.values()))
        for row, band in zip(out.values(), bands["band_of_row"], strict=True):
            row["band"] = band
        for name, calls in self.missing.items():
            if name not in self.acc:
                out[name] = {
                    "layer": name,
                    "note": f"no attention probabilities in {calls} call(s); load the model "
                    "with attn_implementation='eager' (see use_eager_attention)",
                }
        return out


def _fused_qkv(m: nn.Module) -> nn.Linear | None:
    for attr in ("qkv", "c_attn"):
        lin = getattr(m, attr, None)
        if isinstance(lin, nn.Linear) and lin.out_features % 3 == 0:
            return lin
    return None


def _qkv_layout(m: nn.Module) -> tuple[int, float | None, bool] | None:
    """(heads, scale, causal) for attention modules with a fused qkv Linear, else None."""
    qkv = _fused_qkv(m)
    if qkv is None:
        return None
    heads = next(
        (
            getattr(m, a)
            for a in ("num_heads", "n_head", "n_heads", "heads")
            if isinstance(getattr(m, a, None), int)
        ),
        None,
    )
    if heads is None or (qkv.out_features // 3) % heads:
        return None
    scale = getattr(m, "scale", None)
    causal = bool(
        getattr(m, "is_causal", False)
        or getattr(m, "causal", False)
        or "Causal" in type(m).__name__
    )
    return heads, float(scale) if isinstance(scale, (int, float)) else None, causal


def entropy_bands(rows: list[Row], key: str = "entropy") -> dict[str, Any]:
    """Band of every head and the share per band, overall and per layer.

    ``rows``: dicts with ``layer`` and ``key``. Returns ``M``, ``band_of_row`` (aligned with
    rows), ``shares`` {band: fraction}, ``per_layer`` {layer: {band: fraction}} and
    ``verdict``: "healthy" when the middle band holds at least half of the heads, otherwise
    "entropic overload" or "entropy collapse", whichever outer band is larger.
    """
    vals = [float(r[key]) for r in rows if key in r and not math.isnan(float(r[key]))]
    if not vals:
        return {
            "M": float("nan"),
            "band_of_row": ["" for _ in rows],
            "shares": {},
            "per_layer": {},
            "verdict": "no data",
        }
    m = max(vals)
    names: list[str] = []
    for r in rows:
        v = float(r.get(key, float("nan")))
        if math.isnan(v):
            names.append("")
        elif v < m / 4:
            names.append("collapse")
        elif v > 3 * m / 4:
            names.append("overload")
        else:
            names.append("healthy")

    def shares(bs: list[str]) -> dict[str, float]:
        bs = [x for x in bs if x]
        return {k: bs.count(k) / len(bs) for k in ("collapse", "healthy", "overload")} if bs else {}

    per_layer: dict[str, list[str]] = {}
    for r, bnd in zip(rows, names, strict=True):
        per_layer.setdefault(str(r.get("layer", "")), []).append(bnd)
    total = shares(names)
    if total.get("healthy", 0.0) >= 0.5:
        verdict = "healthy"
    elif total.get("overload", 0.0) >= total.get("collapse", 0.0):
        verdict = "entropic overload"
    else:
        verdict = "entropy collapse"
    return {
        "M": m,
        "band_of_row": names,
        "shares": total,
        "per_layer": {k: shares(v) for k, v in per_layer.items()},
        "verdict": verdict,
    }


def use_eager_attention(model: nn.Module) -> str | None:
    """Switch a transformers model to eager attention (so attention modules return their
    probabilities); returns the previous implementation name, or None for other models."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "_attn_implementation"):
        return None
    previous = str(config._attn_implementation)
    setter = getattr(model, "set_attn_implementation", None)
    if callable(setter):
        setter("eager")
    else:
        config._attn_implementation = "eager"
    return previous
