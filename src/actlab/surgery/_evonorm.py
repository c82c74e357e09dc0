"""``replace_bn_act``: each BatchNorm2d -> ReLU pair of a conv net becomes one EvoNorm layer.

EvoNorm (Liu et al. 2020, arXiv 2004.02967) is a normalisation *and* activation layer, so it
replaces the pair: the BatchNorm2d slot gets ``evonorm_b0`` / ``evonorm_s0`` (any registered
norm layer with ``includes_act``, e.g. ``"evonorm_s0(groups=8)"``) and the ReLU slot gets
``nn.Identity``. A BatchNorm2d whose output does not go straight into a ReLU (the last BN of a
residual branch: ``relu(bn2(x) + shortcut)``) is kept, and listed in the report's notes.

Pairs are found by data flow, not by names: the model runs once (eval mode, no grad, training
flags restored) on ``example_inputs`` with hooks recording which tensor each BatchNorm2d
returned and which tensor each ReLU module received. A ReLU is paired with a BN when every
call of it received that BN's output. A ReLU module that is also applied to something else
(torchvision's BasicBlock reuses ``self.relu`` after the residual add) cannot become an
Identity: that is an error naming the module (give each site its own ReLU). Functional
``F.relu`` calls are not modules and are never paired. Without ``example_inputs`` the input is
a (2, C, 32, 32) batch, C = the in_channels of the model's first Conv2d.

All or nothing: every pair is replaced in one :func:`replace_modules` call, so a failure
leaves the model as it was. The report lists every replaced slot (BN -> EvoNorm, ReLU ->
Identity); its notes list the pairs and the BatchNorm2d layers kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from actlab.layers import create_layer, get_layer_info
from actlab.registry import parse_spec
from actlab.surgery._kinds import identify_activation
from actlab.surgery._replace import replace_modules
from actlab.surgery._report import ReplacementReport, SurgeryError, SurgeryInputError
from actlab.surgery._walk import globs_of, in_scope

__all__ = ["find_bn_act_pairs", "replace_bn_act"]


def _example(model: nn.Module) -> tuple[Tensor, ...]:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise SurgeryInputError(
            "replace_bn_act: the model has no Conv2d to size an example input from; "
            "pass example_inputs=(a batch the model accepts,)"
        )
    p = next(model.parameters())
    return (torch.randn(2, conv.in_channels, 32, 32, device=p.device, dtype=p.dtype),)


def _paths(model: nn.Module) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for path, m in model.named_modules(remove_duplicate=False):
        out.setdefault(id(m), []).append(path)
    return out


def find_bn_act_pairs(
    model: nn.Module, example_inputs: Any = None
) -> tuple[list[tuple[str, str]], list[str]]:
    """(BatchNorm2d path, ReLU path) pairs by data flow, and the BatchNorm2d paths left alone.

    Raises :class:`SurgeryError` (one line) for a ReLU module applied both to a BN's output and
    to something else, and for a paired module held at several paths.
    """
    if example_inputs is None:
        example_inputs = _example(model)
    if not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    relus = [m for m in model.modules() if identify_activation(m) == "relu"]
    made: dict[int, tuple[Tensor, nn.Module]] = {}  # id(output) -> (output kept alive, bn)
    fed: dict[int, list[nn.Module | None]] = {id(r): [] for r in relus}

    def after_bn(m: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            made[id(out)] = (out, m)

    def before_relu(m: nn.Module, args: Any) -> None:
        x = args[0] if args else None
        hit = made.get(id(x)) if isinstance(x, Tensor) else None
        fed[id(m)].append(hit[1] if hit is not None and hit[0] is x else None)

    handles = [b.register_forward_hook(after_bn) for b in bns]
    handles += [r.register_forward_pre_hook(before_relu) for r in relus]
    modes = {id(m): m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    except Exception as e:  # noqa: BLE001 -- the dry run's failure is the caller's input
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SurgeryInputError(
            f"replace_bn_act: the model did not run on the example input ({msg}); pass "
            "example_inputs=(a batch the model accepts,)"
        ) from None
    finally:
        for h in handles:
            h.remove()
        for m in model.modules():
            m.training = modes.get(id(m), m.training)

    paths = _paths(model)
    pairs: list[tuple[str, str]] = []
    paired: set[int] = set()
    for r in relus:
        srcs = fed[id(r)]
        bn_srcs = {id(b): b for b in srcs if b is not None}
        if not bn_srcs:
            continue
        where = paths[id(r)][0]
        if None in srcs or len(bn_srcs) > 1:
            raise SurgeryError(
                f"replace_bn_act: the ReLU at {where!r} is applied to a BatchNorm2d output and "
                "also to other tensors, so it cannot become an Identity; give each site its "
                "own ReLU module"
            )
        (bn,) = bn_srcs.values()
        for m in (bn, r):
            if len(paths[id(m)]) > 1:
                raise SurgeryError(
                    f"replace_bn_act: {type(m).__name__} is held at several paths "
                    f"({', '.join(paths[id(m)][:3])}); give each site its own module"
                )
        pairs.append((paths[id(bn)][0], where))
        paired.add(id(bn))
    kept = [paths[id(b)][0] for b in bns if id(b) not in paired]
    return pairs, kept


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str):
        raise SurgeryInputError(f"kind= must be a layer spec string, got {type(kind).__name__}")
    name, _ = parse_spec(kind)
    info = get_layer_info(name)
    probe = create_layer(kind, num_features=4) if info.kind == "norm" else None
    if probe is None or not getattr(probe, "includes_act", False) or info.layout != "first":
        raise SurgeryInputError(
            f"replace_bn_act: kind={kind!r} is not a normalisation-activation layer over "
            "channels; use 'evonorm_b0' or 'evonorm_s0' (parameters allowed, e.g. "
            "'evonorm_s0(groups=8)')"
        )


def replace_bn_act(
    model: nn.Module,
    kind: str = "evonorm_b0",
    *,
    example_inputs: Any = None,
    where: str | Iterable[str] | None = None,
) -> ReplacementReport:
    """Replace every BatchNorm2d -> ReLU pair of ``model`` by one ``kind`` layer (in place).

    ``kind`` is a layer spec of a norm-activation layer (``evonorm_b0``, ``evonorm_s0``, with
    parameters if wanted); each new layer is built for the BN's channel count on the BN's
    device and dtype. ``example_inputs`` (a tensor or tuple of the model's arguments) drives the
    one dry run that finds the pairs (default: a (2, C, 32, 32) batch). ``where=`` globs restrict
    the replaced paths (a pair is replaced when both its modules are in scope). Returns the
    :class:`ReplacementReport` (``report.table()``); raises :class:`SurgeryError` if no pair
    is found.
    """
    if not isinstance(model, nn.Module):
        raise SurgeryInputError(f"replace_bn_act needs an nn.Module, got {type(model).__name__}")
    _check_kind(kind)
    globs = globs_of(where)
    pairs, kept = find_bn_act_pairs(model, example_inputs)
    outside = [(b, r) for b, r in pairs if not (in_scope(b, globs) and in_scope(r, globs))]
    pairs = [p for p in pairs if p not in outside]
    kept += [b for b, _ in outside]
    if not pairs:
        raise SurgeryError(
            "replace_bn_act: no BatchNorm2d whose output goes straight into a ReLU module"
            + (f" within where={where!r}" if where is not None else "")
            + f" (BatchNorm2d layers: {len(kept)}); nothing to replace"
        )
    bn_paths = {b for b, _ in pairs}
    relu_paths = {r for _, r in pairs}

    def build(path: str, old: nn.Module) -> nn.Module:
        if path in relu_paths:
            return nn.Identity()
        assert isinstance(old, nn.BatchNorm2d)
        ref = old.weight if old.weight is not None else old.running_mean
        new = create_layer(kind, num_features=old.num_features)
        return new.to(device=ref.device, dtype=ref.dtype) if ref is not None else new

    report = replace_modules(
        model, lambda path, m: path in bn_paths or path in relu_paths, build, where=where
    )
    report.notes.extend(f"pair: {b} + {r} -> {kind}" for b, r in pairs)
    if kept:
        report.notes.append(f"BatchNorm2d kept (not followed by a ReLU): {', '.join(kept)}")
    return report
