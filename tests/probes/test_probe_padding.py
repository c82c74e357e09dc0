"""Padded batches: with an ``attention_mask`` (the model call's keyword, or set_context), only
real tokens count in every per-token statistic. The padded positions hold values that would
change each statistic; the probes must agree with brute force over the real tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import actlab.probes as P

B, T, D = 3, 32, 16
PAD_VALUE = 1.0e4  # positive and huge: no zeros, alive units, a massive max, a shifted mean


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # block_sites wants parameterised blocks
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x * self.scale)


class Toy(nn.Module):
    """A text-model-like root: forward(x, attention_mask=None), (B, T, D) everywhere."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(2))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, D, generator=g)
    x[:, :, 0] = -1.0  # unit 0 never active on a real token: dead unless padding counts
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 20:] = 0  # right padding
    mask[1, :5] = 0  # left padding
    mask[2, 9:] = 0
    x[mask == 0] = PAD_VALUE
    return x, mask


def run(
    x: torch.Tensor, *, kwarg: torch.Tensor | None = None, context: torch.Tensor | None = None
) -> P.ProbeTable:
    net = Toy()
    probes: list[str | P.Probe] = [
        "sparsity",
        "distribution",
        "massive",
        "entropy",
        P.SparsityProbe(window=10**9),
    ]
    with P.probe(net, probes=probes, sample=10_000, where=None) as p, torch.no_grad():
        if context is not None:
            p.set_context(attention_mask=context)
        net(x, attention_mask=kwarg) if kwarg is not None else net(x)
    return p.summary()


def chunk_sparsity(a: torch.Tensor, mask: torch.Tensor, length: int = 8) -> float:
    """CLS over aligned chunks made of real tokens only (brute force)."""
    vals = []
    for b in range(a.shape[0]):
        for c in range(a.shape[1] // length):
            if bool(mask[b, c * length : (c + 1) * length].all()):
                vals.append(float((a[b, c * length : (c + 1) * length] > 0).any(0).float().mean()))
    return 1.0 - float(np.mean(vals))


@pytest.mark.parametrize("how", ["kwarg", "context"])
def test_every_per_token_statistic_counts_real_tokens_only(how: str) -> None:
    x, mask = padded_batch()
    table = run(x, kwarg=mask) if how == "kwarg" else run(x, context=mask)
    real = mask.bool()
    act = torch.relu(x)  # every site sees relu(x) (block 1: relu(relu(x)) = relu(x))
    rows = act[real]  # (n_real, D)
    sp = table.get("sparsity", "blocks.0.act")
    assert sp["tokens_sampled"] == int(real.sum())
    assert sp["zero_frac"] == pytest.approx(float((rows == 0).float().mean()))
    assert sp["tls"] == pytest.approx(float(1 - (rows > 0).float().mean()))
    assert sp["cls_8"] == pytest.approx(chunk_sparsity(act, mask))
    dead = table.get("sparsity_1", "blocks.0.act")["dead_rate"]
    assert dead == pytest.approx(float(((rows > 0).sum(0) == 0).float().mean()))  # unit 0
    assert dead > 0
    dist = table.get("distribution", "blocks.0.act")  # the ReLU's input: x
    xr = x[real].double()
    assert dist["n"] == xr.numel() and dist["max"] == pytest.approx(float(xr.max()))
    assert dist["mean"] == pytest.approx(float(xr.mean()), rel=1e-5)
    m = table.get("massive", "blocks.0")
    assert m["max_abs"] == pytest.approx(float(rows.max()))
    assert m["median_abs"] == pytest.approx(float(rows.abs().flatten().median()))
    for tok in m["top_tokens"]:
        assert bool(real[tok["batch"], tok["position"]])
    assert table.get("entropy", "blocks.0.act")["rows"] == int(real.sum())


def test_without_a_mask_every_token_counts_and_the_mask_does_not_linger() -> None:
    x, mask = padded_batch()
    net = Toy()
    with P.probe(net, probes=["massive"]) as p, torch.no_grad():
        net(x, attention_mask=mask)
        assert p.ctx.forward_mask is None  # cleared when the call returns
        p.reset()
        net(x)  # no mask: the padded values count
    assert p.summary().get("massive", "blocks.0")["max_abs"] == PAD_VALUE
    # a mask without padding takes the unmasked path and gives the same numbers
    with P.probe(net, probes=["sparsity"], sample=10_000) as q, torch.no_grad():
        net(x, attention_mask=torch.ones(B, T, dtype=torch.long))
    assert q.summary().get("sparsity", "blocks.0.act")["tokens_sampled"] == B * T


def test_mask_of_another_shape_is_ignored_and_flattened_router_rows_are_masked() -> None:
    x, mask = padded_batch()
    other = torch.ones(B, T + 1, dtype=torch.long)
    assert run(x, kwarg=other).get("sparsity", "blocks.0.act")["tokens_sampled"] == B * T

    class Routed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.router = nn.Linear(D, 4)

        def forward(
            self, h: torch.Tensor, attention_mask: torch.Tensor | None = None
        ) -> torch.Tensor:
            return self.router(h.reshape(-1, D))  # (B*T, E), as Mixtral routers do

    net = Routed()
    with P.probe(net, probes=["routing"]) as p, torch.no_grad():
        net(x, attention_mask=mask)
    assert p.summary().get("routing", "router")["tokens"] == int(mask.sum())
