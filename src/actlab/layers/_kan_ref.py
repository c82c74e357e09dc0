"""Plain float64 references of the KAN-family layers and Fourier-KArAt (the test matrix's).

Written independently of the vectorised layers: explicit loops over output nodes, input nodes
and basis functions, scalar formulas (Chebyshev as cos(j arccos u), B-splines by the
recursive Cox-de Boor definition, SiLU as x / (1 + exp(-x))). Slow on purpose; tiny shapes
only. Each takes ``(module, x, mask)`` as ``register_layer(reference=)`` expects and is
differentiable (torch ops on slices), so gradients can be compared too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["af_kan_ref", "fourier_karat_ref", "relu_kan_ref", "s_kan_ref"]


def _u(layer: Any, x: Tensor) -> Tensor:
    return torch.tanh(x) if layer.range.input_norm == "tanh" else x


def _relu_r(u: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    a = torch.clamp(u - lo, min=0.0)
    b = torch.clamp(hi - u, min=0.0)
    return (a * b * 4.0 / ((hi - lo) ** 2)) ** 2


# ----------------------------------------------------------------------------- ReLU-KAN
def _relu_layer(layer: Any, x: Tensor) -> Tensor:
    u = _u(layer, x)
    n_in, n_out, n = layer.in_features, layer.out_features, layer.grid + layer.k
    w, bias = layer.linear.weight, layer.linear.bias
    outs = []
    for j in range(n_out):
        acc = torch.zeros_like(u[..., 0]) + (bias[j] if bias is not None else 0.0)
        for i in range(n_in):
            for b in range(n):
                acc = acc + w[j, i * n + b] * _relu_r(u[..., i], layer.low[i, b], layer.high[i, b])
        outs.append(acc)
    return torch.stack(outs, -1)


def relu_kan_ref(m: Any, x: Tensor, mask: Tensor | None = None) -> Tensor:
    return _relu_layer(m.layer2, _relu_layer(m.layer1, x))


# ------------------------------------------------------------------------------- AF-KAN
def _silu(v: Tensor) -> Tensor:
    return v / (1.0 + torch.exp(-v))


def _af_layer(layer: Any, x: Tensor) -> Tensor:
    name = type(layer.act).__name__.lower()
    act = _silu if "silu" in name or "swish" in name else layer.act
    u = _u(layer, x)
    n_in, n = layer.in_features, layer.grid + layer.k
    combine = {
        "quad1": lambda a, b: (a * b) ** 2,
        "quad2": lambda a, b: a * b + a**2 + b**2,
        "sum": lambda a, b: a + b,
        "prod": lambda a, b: a * b,
        "sum_prod": lambda a, b: a + b + a * b,
        "cubic1": lambda a, b: (a + b) * (a**2 + b**2),
        "cubic2": lambda a, b: (a * b) ** 3,
    }[layer.func]
    f = [
        [combine(act(u[..., i] - layer.low[b]), act(layer.high[b] - u[..., i])) for b in range(n)]
        for i in range(n_in)
    ]
    full = torch.stack([torch.stack(row, -1) for row in f], -2)  # (..., in, G)
    if layer.func_norm == "batch":
        lo, hi = full.min(), full.max()
        full = (full - lo) / (hi - lo) if float((hi - lo).detach()) > 0 else full - lo
    elif layer.func_norm == "sample":
        lead = full.shape[:-2]
        flat = full.reshape(*lead, -1)
        lo = flat.min(-1).values[..., None, None]
        hi = flat.max(-1).values[..., None, None]
        full = (full - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    temp = torch.clamp(layer.temperature, min=1.0)
    scores = [
        (sum(full[..., i, b] * layer.attn.weight[0, b] for b in range(n)) + layer.attn.bias[0])
        / temp
        for i in range(n_in)
    ]
    e = torch.stack(scores, -1)
    a = torch.exp(e - e.max(-1, keepdim=True).values)
    a = a / a.sum(-1, keepdim=True)  # softmax over the input nodes
    z = torch.stack([a[..., i] * full[..., i, :].sum(-1) for i in range(n_in)], -1)
    if layer.use_norm:
        mean = z.mean(-1, keepdim=True)
        var = ((z - mean) ** 2).mean(-1, keepdim=True)
        z = (z - mean) / torch.sqrt(var + layer.norm.eps) * layer.norm.weight + layer.norm.bias
    h = act(z)
    return torch.stack(
        [
            sum(layer.weight[j, i] * h[..., i] for i in range(n_in))
            for j in range(layer.out_features)
        ],
        -1,
    )


def af_kan_ref(m: Any, x: Tensor, mask: Tensor | None = None) -> Tensor:
    return _af_layer(m.layer2, _af_layer(m.layer1, x))


# -------------------------------------------------------------------------------- S-KAN
def _bspline_rec(u: Tensor, knots: list[float], j: int, p: int) -> Tensor:
    if p == 0:
        return ((u >= knots[j]) & (u < knots[j + 1])).to(u.dtype)
    left = (u - knots[j]) / (knots[j + p] - knots[j]) * _bspline_rec(u, knots, j, p - 1)
    right = (
        (knots[j + p + 1] - u)
        / (knots[j + p + 1] - knots[j + 1])
        * _bspline_rec(u, knots, j + 1, p - 1)
    )
    return left + right


def _space(name: str, u: Tensor, b: int, grid: int, k: int) -> Tensor:
    n, h = grid + k, 2.0 / grid
    if name == "bspline":
        knots = [-1.0 + (j - k) * h for j in range(grid + 2 * k + 1)]
        return _bspline_rec(u, knots, b, k)
    if name == "rbf":
        c = -1.0 + 2.0 * b / (n - 1) if n > 1 else -1.0
        w = 2.0 / (n - 1) if n > 1 else 2.0
        return torch.exp(-(((u - c) / w) ** 2))
    if name == "chebyshev":
        return torch.cos(b * torch.arccos(u))
    lo = -1.0 + (b - k) * h
    return _relu_r(
        u, torch.tensor(lo, dtype=u.dtype), torch.tensor(lo + (k + 1) * h, dtype=u.dtype)
    )


def _s_layer(layer: Any, x: Tensor) -> Tensor:
    u = _u(layer, x)
    n_in, n = layer.in_features, layer.grid + layer.k
    if bool((layer.chosen >= 0).all()):
        alpha = torch.zeros(n_in, len(layer.spaces), dtype=x.dtype)
        for i, c in enumerate(layer.chosen.tolist()):
            alpha[i, c] = 1.0
    else:
        t = layer.tau()
        e = torch.exp(layer.logits / t - (layer.logits / t).max(-1, keepdim=True).values)
        alpha = e / e.sum(-1, keepdim=True)
    w, bias = layer.linear.weight, layer.linear.bias
    phi = {
        (i, b): sum(
            alpha[i, p] * _space(s, u[..., i], b, layer.grid, layer.k)
            for p, s in enumerate(layer.spaces)
        )
        for i in range(n_in)
        for b in range(n)
    }
    return torch.stack(
        [
            sum(w[j, i * n + b] * phi[i, b] for i in range(n_in) for b in range(n))
            + (bias[j] if bias is not None else 0.0)
            for j in range(layer.out_features)
        ],
        -1,
    )


def s_kan_ref(m: Any, x: Tensor, mask: Tensor | None = None) -> Tensor:
    return _s_layer(m.layer2, _s_layer(m.layer1, x))


# ------------------------------------------------------------------------ Fourier-KArAt
def fourier_karat_ref(m: Any, s: Tensor, mask: Tensor | None = None) -> Tensor:
    n_b, n_h, n_q, n_k = s.shape
    out = torch.zeros_like(s)
    for bb in range(n_b):
        for hh in range(n_h):
            g = 0 if m.heads == 1 else hh
            for i in range(n_q):
                vis = [k for k in range(n_k) if mask is None or bool(mask[i, k])]
                z = []
                for c in range(m.rank):
                    acc = s.new_zeros(())
                    for k in vis:
                        for t in range(m.terms):
                            w = (t + 1) * m.omega * s[bb, hh, i, k]
                            acc = acc + m.cos_coef[g, t, k, c] * torch.cos(w)
                            acc = acc + m.sin_coef[g, t, k, c] * torch.sin(w)
                    z.append(acc / max(len(vis), 1))
                for j in vis:
                    out[bb, hh, i, j] = sum(z[c] * m.up[g, c, j] for c in range(m.rank))
    return out
