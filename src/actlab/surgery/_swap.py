"""``swap_activations``: replace the activation modules of any ``nn.Module``, and prove it.

It is a client of :func:`actlab.surgery.replace_modules`: it plans the sites (activation
kinds, ``where``), runs the checks that need no change first, then lets ``replace_modules``
install the new modules, run the post-checks below as its ``check`` and roll everything
back when one fails.

    report = swap_activations(model, {"gelu": "crrelu"})               # every GELU site
    report = swap_activations(model, {"*": "crrelu(eps=0.02)"}, where="encoder.layer.[0-2]")
    print(report)                                                      # a table of sites

``mapping`` maps a source activation *kind* to a target spec. Kinds are canonical names
("gelu", "gelu_tanh", "silu", "relu", ...; see :func:`identify_activation`) or "*" for every
activation (except identities such as transformers' ``LinearActivation``); an explicit kind
wins over "*". Activation modules are recognised whatever their origin (actlab, ``torch.nn``,
Hugging Face transformers, timm ``act_layer`` classes) without importing those libraries. A target
is anything :func:`actlab.create_activation` accepts; every site gets a fresh module (an instance is
deep-copied), so each site learns its own parameters.

``where`` is a glob (or several) over module paths, matched with :func:`fnmatch.fnmatchcase`;
a module is in scope when its own path or the path of one of its ancestors matches, so
``where="encoder.layer.0"`` covers that whole block.

Verification (each problem raises :class:`SurgeryError` when ``strict``; with
``strict=False`` it is recorded in ``report.warnings`` and issued as a
:class:`SurgeryWarning`):

1. every mapping key matched at least one site;
2. no non-activation module in scope calls a source kind functionally in its ``forward``
   source (``F.gelu(x)``, ``torch.tanh(x)``, ...), which module surgery cannot replace;
3. after the swap no module of a source kind is left in scope;
4. with ``example_inputs``, one forward pass records functional calls of the source kinds
   made outside activation modules (this also sees helper methods and ``x.relu()``).

Checks 1-2 run before the model is touched. When check 3 or 4 fails under ``strict`` (or the
example forward pass raises), every replaced module is put back before the error propagates,
so a failed call leaves the model as it was. On success the model is modified in place.
A module shared by several paths gets one fresh activation per path, placed on the device
of the module it replaces (or of its parent, for a parameterless activation).

Hugging Face models (the ``"transformers-config"`` hook of
:mod:`actlab.integrations.transformers`, run by ``replace_modules``): when
``model.config.hidden_act`` (``hidden_activation`` for Gemma)
names a kind whose every site was replaced by one target spec, the config is set to a string
that rebuilds that target and the string is registered with
:mod:`actlab.integrations.transformers`, so ``save_pretrained`` / ``from_pretrained`` round-trip
(a loading process must call ``actlab.integrations.transformers.register()`` first, or load
with ``actlab.integrations.transformers.from_pretrained``). Partial swaps leave the config
alone and say so in ``report.notes``.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from actlab.registry import ActivationSpec, canonical_name, create_activation
from actlab.surgery._checks import (
    FunctionalCall,
    dynamic_functional_calls,
    static_functional_calls,
)
from actlab.surgery._kinds import NOT_WILDCARD, WILDCARD, identify_activation, resolve_kind
from actlab.surgery._replace import _warn_or_raise, replace_modules
from actlab.surgery._report import (
    ReplacementReport,
    SurgeryInputError,
    SwapReport,
    SwapSite,
)
from actlab.surgery._walk import Globs, globs_of, in_scope, iter_slots, unique_slots

__all__ = ["spec_string", "swap_activations"]


@dataclass
class _Site:
    path: str
    parent: nn.Module
    name: str
    module: nn.Module
    kind: str
    in_scope: bool


def _walk(
    model: nn.Module, globs: Globs, skip: set[int] | None = None
) -> Iterator[tuple[str, nn.Module, bool, _Site | None]]:
    """Yield ``(path, module, in_scope, site)``: the root, then every activation slot (with
    ``site`` set) and every other module once (its in-scope path winning).

    The walk does not descend into activations or into modules whose id is in ``skip``
    (those are not yielded unless they are activations).
    """
    skip = skip or set()

    def descend(slot: Any) -> bool:
        return identify_activation(slot.module) is None and id(slot.module) not in skip

    yield "", model, globs is None or in_scope("", globs), None
    others: dict[int, tuple[str, nn.Module, bool]] = {id(model): ("", model, True)}
    order: list[tuple[str, nn.Module, bool, _Site | None] | int] = []
    for slot in unique_slots(iter_slots(model, globs, descend=descend)):
        kind = identify_activation(slot.module)
        if kind is not None:
            site = _Site(slot.path, slot.parent, slot.name, slot.module, kind, slot.in_scope)
            order.append((slot.path, slot.module, slot.in_scope, site))
            continue
        key = id(slot.module)
        if key in skip:
            continue
        if key not in others:
            others[key] = (slot.path, slot.module, slot.in_scope)
            order.append(key)
        elif slot.in_scope and not others[key][2]:
            others[key] = (slot.path, slot.module, True)
    for item in order:
        if isinstance(item, int):
            yield (*others[item], None)
        else:
            yield item


def _target_for(kind: str, targets: dict[str, ActivationSpec]) -> ActivationSpec | None:
    if kind in targets:
        return targets[kind]
    if WILDCARD in targets and kind not in NOT_WILDCARD:
        return targets[WILDCARD]
    return None


def _build(spec: ActivationSpec) -> nn.Module:
    if isinstance(spec, nn.Module):
        return copy.deepcopy(spec)
    module = create_activation(spec)
    if not isinstance(module, nn.Module):
        raise SurgeryInputError(
            f"target {spec!r} did not build an nn.Module (got {type(module).__name__})"
        )
    return module


def _on_device_of(new: nn.Module, old: nn.Module, parent: nn.Module) -> nn.Module:
    """``new`` moved to the device of the old module (or, parameterless, of its parent)."""
    modules = (old, parent)
    ref = next((t for m in modules for t in (*m.parameters(), *m.buffers())), None)
    return new.to(device=ref.device) if ref is not None else new


def spec_string(module: nn.Module) -> str:
    """A short description of a target module: its actlab call string, else its repr."""
    spec = getattr(module, "spec", None)
    if canonical_name(module) and callable(spec):
        return str(spec())
    return repr(module)


def _functional_message(call: FunctionalCall) -> str:
    return (
        f"{call.kind} is still called functionally in {call.path or '<root>'} "
        f"({call.location}); module surgery cannot replace functional calls - "
        "patch that forward or pass strict=False"
    )


def _normalise_mapping(mapping: Mapping[str, ActivationSpec]) -> dict[str, ActivationSpec]:
    if not isinstance(mapping, Mapping) or not mapping:
        raise SurgeryInputError(
            "mapping must be a non-empty dict from activation kind to target spec, "
            "e.g. {'gelu': 'crrelu'}"
        )
    targets: dict[str, ActivationSpec] = {}
    for key, spec in mapping.items():
        kind = resolve_kind(key)
        if kind in targets:
            raise ValueError(f"mapping names kind {kind!r} twice (via {key!r}); keep one entry")
        _build(spec)  # fail on a bad target before touching the model
        targets[kind] = spec
    return targets


def _raise_or_warn(problems: list[str], strict: bool, report: SwapReport) -> None:
    if not problems:
        return
    if strict and len(problems) > 1:
        problems = ["\n- " + "\n- ".join(problems)]  # the historical multi-problem form
    lenient = ReplacementReport()
    _warn_or_raise(problems, strict, lenient, stacklevel=4)
    report.warnings += lenient.warnings


def swap_activations(
    model: nn.Module,
    mapping: Mapping[str, ActivationSpec],
    where: str | Iterable[str] | None = None,
    *,
    example_inputs: Any = None,
    strict: bool = True,
) -> SwapReport:
    """Replace activation modules of ``model`` in place according to ``mapping``.

    See the module docstring for the mapping, ``where`` and the verification steps.
    ``example_inputs`` (a tensor, a tuple of positional arguments or a mapping of keyword
    arguments) enables the run-time check. Returns a :class:`SwapReport`.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
        >>> swap_activations(model, {"gelu": "crrelu"}).counts()
        {'gelu': 1}
    """
    if not isinstance(model, nn.Module):
        raise SurgeryInputError(f"swap_activations needs an nn.Module, got {type(model).__name__}")
    targets = _normalise_mapping(mapping)
    globs = globs_of(where)
    root_kind = identify_activation(model)
    if root_kind is not None and _target_for(root_kind, targets) is not None:
        raise ValueError(
            f"the model itself is a {root_kind} activation and cannot be replaced in place; "
            "build the new one with actlab.create_activation(...)"
        )
    walked = list(_walk(model, globs))
    if globs is not None and not any(scoped for _, _, scoped, _ in walked):
        examples = ", ".join(repr(p) for p, _, _, _ in walked[1:6])
        raise SurgeryInputError(
            f"where={where!r} matches no module path; paths look like {examples}"
        )

    report = SwapReport()
    scoped_sites = [s for _, _, _, s in walked if s is not None and s.in_scope]
    report.found = dict(Counter(s.kind for s in scoped_sites))
    planned = [(s, t) for s in scoped_sites if (t := _target_for(s.kind, targets)) is not None]
    source_kinds = {s.kind for s, _ in planned} | (set(targets) - {WILDCARD})

    problems: list[str] = []
    found = ", ".join(sorted(report.found)) or "none"
    for key in targets:
        if key == WILDCARD:
            hit = any(s.kind not in NOT_WILDCARD for s in scoped_sites)
        else:
            hit = key in report.found
        if not hit:
            report.unmatched.append(key)
            what = "activation" if key == WILDCARD else f"{key} activation"
            problems.append(f"no {what} found; found kinds: {found}")
    scope_modules = [(p, m) for p, m, scoped, site in walked if scoped and site is None]
    calls = static_functional_calls(scope_modules, source_kinds)
    problems += [_functional_message(c) for c in calls]
    _raise_or_warn(problems, strict, report)

    plan = {s.path: (s, spec) for s, spec in planned}
    kinds = {s.path: s.kind for s, _ in planned}

    def verify(model: nn.Module, done: ReplacementReport) -> None:
        report.sites = [
            SwapSite(
                r.path, type(r.old).__qualname__, kinds[r.path], spec_string(r.new), repr(r.new)
            )
            for r in done.sites
        ]
        inserted = {id(r.new) for r in done.sites}
        post = _residual_problems(model, globs, source_kinds, inserted)
        if example_inputs is not None and source_kinds:
            calls = dynamic_functional_calls(model, example_inputs, source_kinds, inserted)
            post += [_functional_message(c) for c in calls if in_scope(c.path, globs)]
        _raise_or_warn(post, strict, report)

    if not plan:  # nothing to replace (lenient: the unmatched keys were warned about)
        verify(model, ReplacementReport())
        return report
    done = replace_modules(
        model,
        lambda path, module: path in plan and plan[path][0].module is module,
        lambda path, old: _on_device_of(_build(plan[path][1]), old, plan[path][0].parent),
        where=where,
        strict=strict,
        check=verify,
    )
    report.config.update(done.config)
    report.notes += done.notes
    report.warnings += [w for w in done.warnings if w not in report.warnings]
    return report


def _residual_problems(
    model: nn.Module, globs: Globs, kinds: set[str], inserted: set[int]
) -> list[str]:
    left: dict[str, list[str]] = {}
    for path, module, scoped, site in _walk(model, globs, skip=inserted):
        if site is not None and scoped and site.kind in kinds and id(module) not in inserted:
            left.setdefault(site.kind, []).append(path)
    return [
        f"{kind} activation still present after the swap at {', '.join(paths)}; "
        "its parent did not accept the replacement - replace it by hand or pass strict=False"
        for kind, paths in left.items()
    ]
