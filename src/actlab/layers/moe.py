"""A small mixture-of-experts MLP block with three router kinds (an ``mlp``-kind layer).

    y = Σ_e g_e(x) · E_e(x)           E_e: a small MLP fc1 (D -> h) -> act -> fc2 (h -> D_out)

Routers (``router=``), W the router's bias-free D x E projection, τ the temperature:

    softmax   z = W x / τ,         g = softmax(z)                       the classic gate
              Shazeer et al. 2017, "Outrageously Large Neural Networks" (arXiv 1701.06538)
    act       z = act(W x) / τ,    g = softmax(z)        activation dense-to-sparse gate
              Nguyen et al. 2024, "Is Temperature Sample Efficient for Softmax Gaussian
              Mixture of Experts?" (arXiv 2401.13875); act = relu by default (``router_act``)
    blockffn  z = RMSNorm(relu(W x)), g = z              ReLU + RMSNorm router, no softmax
              Song et al. 2025, "BlockFFN" (thunlp/BlockFFN): relu zeros switch experts off

Mixing: dense by default (``top_k=0``: every expert with a non-zero gate runs), as both gate
papers define it; ``top_k=k`` keeps the k largest gates per token (softmax/act: the softmax
over the k kept logits, i.e. renormalised as in Mixtral; blockffn: the kept values as they
are; with the relu router act, logits tied at 0 are broken in ``torch.topk``'s order, so
prefer a smooth ``router_act`` with top-k). Experts whose gate is zero for a token are not
computed for it (tokens are gathered per expert), so blockffn's relu sparsity and top-k save
compute. No load-balancing loss is added.

Sizing: ``expert_hidden=0`` (default) sizes each expert so that the parameters *active per
token* (router + k experts, k = top_k or all experts) equal those of the dense MLP
``mlp`` with the slot's ``hidden_features`` (:func:`equal_active_expert_hidden`). The router
module is named ``router`` and returns z (tokens, E), so the routing probe
(``actlab.probes``, target ``router``) finds it: its entropy is that of softmax(z), which is
the gate itself for the softmax and act routers (for blockffn, softmax of the gate values).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import is_lazy

from actlab.layers._finite import checked_finite
from actlab.layers._registry import act_module, register_layer
from actlab.layers.mlp import Mlp

__all__ = ["MoeMlp", "Router", "equal_active_expert_hidden", "moe_reference"]

ROUTERS = ("act", "softmax", "blockffn")


def equal_active_expert_hidden(
    in_features: int,
    hidden_features: int,
    experts: int,
    top_k: int = 0,
    out_features: int | None = None,
    bias: bool = True,
    router: str = "act",
) -> int:
    """Expert width h whose active parameters (router + k experts) <= a dense MLP's.

    Dense: D·H + H·D_out (+ H + D_out biases). MoE per token: D·E (+ E for blockffn's RMSNorm
    gain) + k·(D·h + h·D_out (+ h + D_out)), k = ``top_k`` or ``experts`` (dense mixing).
    Returns the largest such h (>= 1, else a ValueError naming the sizes).
    """
    out = out_features or in_features
    k = top_k or experts
    dense = in_features * hidden_features + hidden_features * out
    dense += (hidden_features + out) if bias else 0
    fixed = in_features * experts + (experts if router == "blockffn" else 0)
    fixed += k * out if bias else 0
    per_unit = k * (in_features + out + (1 if bias else 0))
    h = (dense - fixed) // per_unit
    if h < 1:
        raise ValueError(
            f"moe: {experts} experts (top_k={top_k}) cannot match the active parameters of a "
            f"{in_features}->{hidden_features}->{out} MLP; use fewer experts or a wider MLP"
        )
    return int(h)


class Router(nn.Module):
    """z (tokens, E) from x (tokens, D): ``W x / τ``, ``act(W x) / τ`` or ``RMSNorm(relu(W x))``."""

    def __init__(
        self, in_features: int | None, experts: int, kind: str, act: Any, tau: float
    ) -> None:
        super().__init__()
        self.kind, self.tau = kind, float(tau)
        self.proj: nn.Module = (
            nn.LazyLinear(experts, bias=False)
            if in_features is None
            else nn.Linear(in_features, experts, bias=False)
        )
        self.act = act_module(act) if kind == "act" else None
        self.norm = nn.RMSNorm(experts, eps=1e-6) if kind == "blockffn" else None

    def forward(self, x: Tensor) -> Tensor:
        a = self.proj(x)  # (N, E)
        if self.norm is not None:
            return self.norm(torch.relu(a))
        if self.act is not None:
            a = self.act(a)
        return a / self.tau

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, tau={self.tau}"


def _gates(z: Tensor, kind: str, top_k: int) -> Tensor:
    """Mixing weights (N, E) from router outputs z (N, E); zero where an expert is off."""
    if kind == "blockffn":
        if not top_k:
            return z
        idx = z.topk(top_k, dim=-1).indices  # (N, k)
        return torch.zeros_like(z).scatter(-1, idx, z.gather(-1, idx))
    if not top_k:
        return torch.softmax(z, dim=-1)
    vals, idx = z.topk(top_k, dim=-1)  # (N, k)
    return torch.zeros_like(z).scatter(-1, idx, torch.softmax(vals, dim=-1))


def _reference(m: Any, x: Tensor, mask: Tensor | None = None) -> Tensor:
    return moe_reference(m, x)


@register_layer(
    "moe",
    kind="mlp",
    lazy=("in_features",),
    aliases=("moe_mlp",),
    formula="sum_e g_e E_e(x), g = softmax(act(Wx)/tau) | softmax(Wx/tau) | RMSNorm(relu(Wx))",
    paper="arXiv 2401.13875 (activation gate); Shazeer et al. 2017; BlockFFN (thunlp)",
    reference=_reference,
)
class MoeMlp(nn.Module):
    """MoE MLP: ``experts`` small MLPs mixed by a router (see the module docstring)."""

    def __init__(
        self,
        in_features: int | None = None,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = "gelu",
        drop: float = 0.0,
        bias: bool = True,
        experts: int = 4,
        top_k: int = 0,
        router: str = "act",
        router_act: str = "relu",
        tau: float = 1.0,
        expert_hidden: int = 0,
    ) -> None:
        super().__init__()
        if router not in ROUTERS:
            raise ValueError(f"moe: router must be one of {', '.join(ROUTERS)}, got {router!r}")
        if not 2 <= experts <= 4096:
            raise ValueError(f"moe: experts must be in 2..4096, got {experts}")
        if not 0 <= top_k <= experts:
            raise ValueError(f"moe: top_k must be in 0..experts ({experts}), got {top_k}")
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"moe: tau must be a finite number > 0, got {tau}")
        if expert_hidden < 0:
            raise ValueError(
                f"moe: expert_hidden must be >= 0 (0 = equal active), got {expert_hidden}"
            )
        if in_features is None and (hidden_features is None or out_features is None):
            raise ValueError(
                "moe: give hidden_features and out_features when in_features is inferred "
                "from the input"
            )
        hidden = hidden_features or 4 * int(in_features or 0)
        out = out_features or int(in_features or 0)
        if expert_hidden == 0:
            d = in_features if in_features is not None else out  # lazy: size as if D = D_out
            expert_hidden = equal_active_expert_hidden(d, hidden, experts, top_k, out, bias, router)
        self.top_k, self.out_features, self.expert_hidden = int(top_k), out, int(expert_hidden)
        self.router = Router(in_features, experts, router, router_act, tau)
        self.experts = nn.ModuleList(
            Mlp(in_features, self.expert_hidden, out, act_layer, drop, bias) for _ in range(experts)
        )

    def forward(self, x: Tensor) -> Tensor:
        d = int(getattr(self.router.proj, "in_features", 0))  # 0 while lazily unsized
        if x.ndim < 1 or (d and x.shape[-1] != d):
            raise ValueError(
                f"moe was built for {d} input features (last axis), got shape {tuple(x.shape)}"
            )
        ps = [p for p in self.parameters() if not is_lazy(p)]
        if ps and not checked_finite(self, ps):  # one native call on the CPU
            raise ValueError(
                "moe: non-finite parameters (router or experts); reload finite weights"
            )
        lead = x.shape[:-1]
        xf = x.reshape(-1, x.shape[-1])  # (N, D)
        gates = _gates(self.router(xf), self.router.kind, self.top_k)  # (N, E)
        if self.top_k == 0 and self.router.kind != "blockffn":  # dense: every expert, all tokens
            out = sum(
                (gates[:, e : e + 1] * ex(xf) for e, ex in enumerate(self.experts)),
                xf.new_zeros(xf.shape[0], self.out_features),
            )
        else:
            out = xf.new_zeros(xf.shape[0], self.out_features)
            for e, ex in enumerate(self.experts):
                idx = gates[:, e].nonzero().squeeze(1)  # tokens routed to expert e
                if idx.numel():
                    out = out.index_add(0, idx, gates[idx, e : e + 1] * ex(xf[idx]))
        return out.reshape(*lead, self.out_features)

    def active_parameters(self) -> int:
        """Parameters used per token: the router and k experts (k = top_k or all)."""
        k = self.top_k or len(self.experts)
        per = sum(p.numel() for p in self.experts[0].parameters())
        return sum(p.numel() for p in self.router.parameters()) + k * per

    def extra_repr(self) -> str:
        return (
            f"experts={len(self.experts)}, top_k={self.top_k}, expert_hidden={self.expert_hidden}"
        )


def moe_reference(m: Any, x: Tensor) -> Tensor:
    """Plain float64 MoE: every expert on every token, masked by the reference gates.

    Expects the block's default activations (relu router act, exact-GELU experts) unless the
    router is softmax/blockffn; the gates are recomputed from the formulas above.
    """
    x = x.double()
    xf = x.reshape(-1, x.shape[-1])
    a = xf @ m.router.proj.weight.double().T  # (N, E)
    kind, tau = m.router.kind, m.router.tau
    if kind == "blockffn":
        r = torch.relu(a)
        z = r / torch.sqrt((r * r).mean(-1, keepdim=True) + 1e-6) * m.router.norm.weight.double()
    else:
        z = (torch.relu(a) if kind == "act" else a) / tau
    if m.top_k:
        keep = torch.zeros_like(z, dtype=torch.bool)
        keep.scatter_(-1, z.topk(m.top_k, -1).indices, True)
        if kind == "blockffn":
            g = torch.where(keep, z, torch.zeros_like(z))
        else:
            g = torch.where(keep, torch.exp(z - z.max(-1, keepdim=True).values), 0.0)
            g = g / g.sum(-1, keepdim=True)
    else:
        g = z if kind == "blockffn" else torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)
    y = torch.zeros(xf.shape[0], m.out_features, dtype=torch.float64)
    for e, ex in enumerate(m.experts):
        h = xf @ ex.fc1.weight.double().T + ex.fc1.bias.double()
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
        y = y + g[:, e : e + 1] * (h @ ex.fc2.weight.double().T + ex.fc2.bias.double())
    return y.reshape(*x.shape[:-1], m.out_features)
