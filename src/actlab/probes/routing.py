"""MoE routing entropy, expert load and routing fluctuation between checkpoints.

For a router producing logits z over E experts, p(e|x) = softmax(z)_e and per token

    H(x) = -Σ_e p(e|x) log p(e|x)        (nats; normalised by log E as well)

The probe reports the token-mean of H, the expert load (share of tokens whose top-1 expert is
e) and the entropy of that load. Routing fluctuation (as in the BlockFFN / MoE-dynamics
literature) is the fraction of tokens whose top-1 expert differs between two checkpoints run
on the same tokens: the probe records the top-1 expert of the first ``max_tokens`` tokens it
sees per layer (in order, not sampled, so two runs over the same inputs line up) and
:func:`routing_fluctuation` compares two such records, or two logit tensors.

Router outputs are found as the first floating tensor of the module output; its last
dimension is the expert axis. Default sites: modules named ``*router`` or ``*.gate``.
With a padding mask (the model call's ``attention_mask=``, see :class:`ProbeContext`) and
router outputs of (B, T, E) or flattened (B*T, E) tokens, padded tokens are left out.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from actlab.probes.base import Probe, Row, first_tensor
from actlab.probes.manager import register_probe

__all__ = ["RoutingProbe", "routing_entropy", "routing_fluctuation"]


def routing_entropy(logits: Tensor) -> Tensor:
    """Per-token routing entropy (nats) of router logits (..., E)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def routing_fluctuation(
    a: Tensor | Probe, b: Tensor | Probe, layer: str | None = None
) -> float | dict[str, float]:
    """Fraction of tokens whose top-1 expert changes between two checkpoints.

    With two logit tensors (..., E) of the same tokens: one float. With two RoutingProbes that
    saw the same inputs: {layer: fraction} over their common layers (or one float for
    ``layer``), compared over the tokens both recorded.
    """
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape:
            raise ValueError(f"logit shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        return float((a.argmax(-1) != b.argmax(-1)).float().mean())
    if isinstance(a, RoutingProbe) and isinstance(b, RoutingProbe):
        layers = [layer] if layer is not None else sorted(set(a.top1) & set(b.top1))
        out: dict[str, float] = {}
        for name in layers:
            if name not in a.top1 or name not in b.top1:
                raise KeyError(f"layer {name!r} was not recorded by both probes")
            ta, tb = torch.cat(a.top1[name]), torch.cat(b.top1[name])
            n = min(ta.numel(), tb.numel())
            if n == 0:
                raise ValueError(f"no tokens recorded for layer {name!r}")
            out[name] = float((ta[:n].cpu() != tb[:n].cpu()).float().mean())
        return out[layer] if layer is not None else out
    raise TypeError(
        f"compare two logit tensors or two RoutingProbes, got {type(a).__name__} "
        f"and {type(b).__name__}"
    )


@register_probe(description="MoE routing entropy, expert load, top-1 record for fluctuation")
class RoutingProbe(Probe):
    """Token-mean routing entropy, expert load and a top-1 record for fluctuation."""

    name = "routing"
    target = "router"

    def __init__(self, *, where: str | list[str] | None = None) -> None:
        super().__init__(where=where)
        self.reset()

    def reset(self) -> None:
        self.acc: dict[str, Tensor] = {}  # [Σ H, n tokens]
        self.load: dict[str, Tensor] = {}  # (E,) top-1 counts
        self.top1: dict[str, list[Tensor]] = {}  # first max_tokens top-1 ids, int16
        self.recorded: dict[str, int] = {}

    def update(self, name: str, module: nn.Module, output: Any) -> None:
        z = first_tensor(output)
        if z is None or z.ndim < 1 or z.shape[-1] < 2:
            return
        z = z.reshape(-1, z.shape[-1])
        am = self.ctx.attention_mask()  # padded tokens leave routing statistics
        if am is not None and z.shape[0] == am.numel():
            mask = self.ctx.token_mask(z.view(int(am.shape[0]), int(am.shape[1]), -1))
            if mask is not None:
                z = z.index_select(0, mask.rows_on(z.device))
                if z.shape[0] == 0:
                    return
        e = int(z.shape[-1])
        ent = routing_entropy(z)
        top = z.argmax(dim=-1)
        vec = torch.stack(
            [
                ent.sum().double(),
                torch.tensor(float(z.shape[0]), dtype=torch.float64, device=z.device),
            ]
        )
        counts = torch.bincount(top, minlength=e)
        if name in self.acc and self.load[name].numel() == e:
            self.acc[name] += vec
            self.load[name] += counts
        else:
            self.acc[name], self.load[name] = vec, counts
        room = self.ctx.max_tokens - self.recorded.get(name, 0)
        if room > 0:
            keep = top[:room].to(torch.int16)
            self.top1.setdefault(name, []).append(keep)
            self.recorded[name] = self.recorded.get(name, 0) + int(keep.numel())

    def summary(self) -> dict[str, Row]:
        out: dict[str, Row] = {}
        for name, acc in self.acc.items():
            h_sum, n = acc.tolist()
            load = self.load[name].double()
            e = load.numel()
            share = load / load.sum().clamp_min(1)
            load_h = float(-torch.special.xlogy(share, share).sum())
            out[name] = {
                "experts": e,
                "entropy": h_sum / n,
                "entropy_norm": h_sum / n / math.log(e),
                "load": [float(x) for x in share.tolist()],
                "load_entropy_norm": load_h / math.log(e),
                "tokens": int(n),
            }
        return out
