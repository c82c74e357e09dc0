"""Block-by-block replay of a decoder layer on recorded inputs (calibration without full passes).

One dense forward of the model records, for every block, the positional arguments and keyword
arguments of its forward (attention mask, position embeddings, ...). :class:`LayerReplay`
then runs a private copy of one block, with every projection wrapped in a
:class:`SparseLinear`, on any hidden states: dense, or the output of the already
sparsified blocks before it. Calibrating in that order makes the thresholds of later sites
see the inputs they will see once the model is sparsified, so the realised sparsity on the
calibration text matches the target.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from actlab.sparse._modules import SparseGatedMLP, SparseLinear
from actlab.sparse._sites import PROJECTIONS, Batch, Block, run_model
from actlab.sparse._state import Threshold

__all__ = [
    "Call",
    "LayerReplay",
    "ffn_terms",
    "gate_activations",
    "hidden_of",
    "record_block_calls",
]

Call = tuple[tuple[Any, ...], dict[str, Any]]


def _hidden(call: Call) -> torch.Tensor:
    args, kwargs = call
    h = args[0] if args else kwargs["hidden_states"]
    assert isinstance(h, torch.Tensor)
    return h


def _with_hidden(call: Call, hidden: torch.Tensor) -> Call:
    args, kwargs = call
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


_DROPPED = torch.empty(0)


@torch.no_grad()
def record_block_calls(
    model: nn.Module, data: list[Batch], blocks: list[Block], *, hidden: str = "all"
) -> list[list[Call]]:
    """Per block, per batch: the (args, kwargs) of its dense forward (no KV cache).

    ``hidden="first"`` keeps the hidden states of the first block only (the others are
    replaced by an empty tensor): a sequential calibration feeds each block the output of
    the one before, so that saves ``blocks x tokens x d`` floats.
    """
    modules = dict(model.named_modules())
    out: list[list[Call]] = [[] for _ in blocks]
    handles = []
    for i, b in enumerate(blocks):

        def pre(_m: nn.Module, args: Any, kwargs: Any, i: int = i) -> None:
            call: Call = (tuple(args), dict(kwargs))
            out[i].append(_with_hidden(call, _DROPPED) if hidden == "first" and i else call)

        handles.append(modules[b.path].register_forward_pre_hook(pre, with_kwargs=True))
    was = model.training
    model.eval()
    try:
        for batch in data:
            run_model(model, batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return out


class LayerReplay:
    """A private copy of ``block`` with its 7 projections wrapped, run on recorded calls.

    ``gated=True`` also wraps the copy's MLP in a :class:`SparseGatedMLP` (``self.mlp``).
    """

    def __init__(self, model: nn.Module, block: Block, *, gated: bool = False) -> None:
        self.layer = copy.deepcopy(model.get_submodule(block.path))
        self.layer.eval()
        self.proj: dict[str, SparseLinear] = {}
        for name, path in block.projections().items():
            rel = path[len(block.path) + 1 :] if block.path else path
            parent, _, attr = rel.rpartition(".")
            old = self.layer.get_submodule(rel)
            new = SparseLinear.wrap(old)  # type: ignore[arg-type]
            new.counting = False
            setattr(self.layer.get_submodule(parent), attr, new)
            self.proj[name] = new
        self.mlp: SparseGatedMLP | None = None
        if gated:
            rel = block.mlp[len(block.path) + 1 :] if block.path else block.mlp
            parent, _, attr = rel.rpartition(".")
            self.mlp = SparseGatedMLP(self.layer.get_submodule(rel))
            self.mlp.counting = False
            setattr(self.layer.get_submodule(parent), attr, self.mlp)

    def set(self, thresholds: Mapping[str, Threshold]) -> None:
        """Set the thresholds of some projections (by name, ``"q_proj"`` ...)."""
        for n, t in thresholds.items():
            self.proj[n].threshold = t

    @contextmanager
    def dense(self) -> Iterator[None]:
        """Run dense inside the block (thresholds restored after)."""
        saved = {n: m.threshold for n, m in self.proj.items()}
        self.set(dict.fromkeys(PROJECTIONS, -1.0))
        try:
            yield
        finally:
            self.set(saved)

    @torch.no_grad()
    def run(
        self, calls: Iterable[Call], hidden: list[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        """Block outputs for each call (with its hidden states replaced by ``hidden[j]``)."""
        outs = []
        for j, call in enumerate(calls):
            if hidden is None and _hidden(call) is _DROPPED:
                raise RuntimeError("this call was recorded without its hidden states; pass them")
            args, kwargs = _with_hidden(call, hidden[j]) if hidden is not None else call
            y = self.layer(*args, **kwargs)
            outs.append(y[0] if isinstance(y, tuple) else y)
        return outs

    @torch.no_grad()
    def inputs(
        self,
        names: Iterable[str],
        calls: list[Call],
        hidden: list[torch.Tensor] | None = None,
        *,
        absolute: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Inputs (``|x|`` unless ``absolute=False``) of the named projections over all calls,
        float32 ``[tokens, d]`` each."""
        got: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        handles = []
        for n in got:

            def pre(_m: nn.Module, a: tuple[Any, ...], n: str = n) -> None:
                x = a[0].detach()
                x = x.reshape(-1, x.shape[-1])
                got[n].append((x.abs() if absolute else x).float().cpu())

            handles.append(self.proj[n].register_forward_pre_hook(pre))
        try:
            self.run(calls, hidden)
        finally:
            for h in handles:
                h.remove()
        return {n: torch.cat(v) for n, v in got.items()}


@torch.no_grad()
def gate_activations(
    replay: LayerReplay, calls: list[Call], hidden: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """|act(gate_proj(x))| of a gated replay over all calls, float32 ``[tokens, d_ff]``."""
    mlp = replay.mlp
    if mlp is None:
        raise ValueError("gate_activations needs LayerReplay(..., gated=True)")
    got: list[torch.Tensor] = []

    def post(_m: nn.Module, _a: tuple[Any, ...], y: torch.Tensor) -> None:
        a = mlp.act_fn(y.detach())
        got.append(a.reshape(-1, a.shape[-1]).abs().float().cpu())

    h = mlp.gate_proj.register_forward_hook(post)
    try:
        replay.run(calls, hidden)
    finally:
        h.remove()
    return torch.cat(got)


@torch.no_grad()
def ffn_terms(
    replay: LayerReplay, calls: list[Call], hidden: list[torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(act(gate_proj(x)), up_proj(x))`` of a gated replay over all calls, signed float32
    ``[tokens, d_ff]`` each (what the MLP computes before any channel is zeroed)."""
    mlp = replay.mlp
    if mlp is None:
        raise ValueError("ffn_terms needs LayerReplay(..., gated=True)")
    gate: list[torch.Tensor] = []
    up: list[torch.Tensor] = []

    def on_gate(_m: nn.Module, _a: tuple[Any, ...], y: torch.Tensor) -> None:
        a = mlp.act_fn(y.detach())
        gate.append(a.reshape(-1, a.shape[-1]).float().cpu())

    def on_up(_m: nn.Module, _a: tuple[Any, ...], y: torch.Tensor) -> None:
        up.append(y.detach().reshape(-1, y.shape[-1]).float().cpu())

    hs = [mlp.gate_proj.register_forward_hook(on_gate), mlp.up_proj.register_forward_hook(on_up)]
    try:
        replay.run(calls, hidden)
    finally:
        for h in hs:
            h.remove()
    return torch.cat(gate), torch.cat(up)


def hidden_of(calls: list[Call]) -> list[torch.Tensor]:
    """The hidden-state input of each recorded call."""
    return [_hidden(c) for c in calls]
