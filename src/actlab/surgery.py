"""Model surgery: replace the activation modules of any ``nn.Module``, and prove it worked.

    report = swap_activations(model, {"gelu": "crrelu"})               # every GELU site
    report = swap_activations(model, {"*": "crrelu(eps=0.02)"}, where="encoder.layer.[0-2]")
    print(report)                                                      # a table of sites

``mapping`` maps a source activation *kind* to a target spec. Kinds are canonical names
("gelu", "gelu_tanh", "silu", "relu", ...; see :func:`identify_activation`) or "*" for every
activation (except identities such as transformers' ``LinearActivation``); an explicit kind
wins over "*". Activation modules are recognised whatever their origin (actlab, ``torch.nn``,
Hugging Face transformers, timm ``act_layer`` classes) without importing those libraries. A target is anything :func:`actlab.create_activation` accepts; every site gets
a fresh module (an instance is deep-copied), so each site learns its own parameters.

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

Hugging Face models: when ``model.config.hidden_act`` (``hidden_activation`` for Gemma)
names a kind whose every site was replaced by one target spec, the config is set to a string
that rebuilds that target and the string is registered with
:mod:`actlab.integrations.transformers`, so ``save_pretrained`` / ``from_pretrained`` round-trip
(a loading process must call ``actlab.integrations.transformers.register()`` first, or load
with ``actlab.integrations.transformers.from_pretrained``). Partial swaps leave the config
alone and say so in ``report.notes``.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from actlab._surgery.checks import FunctionalCall, dynamic_functional_calls, static_functional_calls
from actlab._surgery.kinds import NOT_WILDCARD, WILDCARD, identify_activation, resolve_kind
from actlab._surgery.report import SurgeryError, SurgeryWarning, SwapReport, SwapSite
from actlab.registry import ActivationSpec, canonical_name, create_activation

__all__ = [
    "SurgeryError",
    "SurgeryWarning",
    "SwapReport",
    "SwapSite",
    "identify_activation",
    "swap_activations",
]

_CONFIG_ATTRS = ("hidden_act", "hidden_activation")


@dataclass
class _Site:
    path: str
    parent: nn.Module
    name: str
    module: nn.Module
    kind: str
    in_scope: bool


def _globs(where: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if where is None:
        return None
    globs = (where,) if isinstance(where, str) else tuple(where)
    if not globs or not all(isinstance(g, str) and g for g in globs):
        raise ValueError("where= must be a non-empty glob string or a list of them, e.g. 'encoder.*'")
    return globs


def _matches(path: str, globs: tuple[str, ...] | None) -> bool:
    return globs is None or any(fnmatch.fnmatchcase(path, g) for g in globs)


def _in_scope(path: str, globs: tuple[str, ...] | None) -> bool:
    """True when ``path`` or one of its ancestors' paths matches a glob."""
    if globs is None:
        return True
    parts = path.split(".") if path else [""]
    return any(_matches(".".join(parts[: i + 1]), globs) for i in range(len(parts)))


def _walk(
    model: nn.Module, globs: tuple[str, ...] | None, skip: set[int] | None = None
) -> Iterator[tuple[str, nn.Module, bool, _Site | None]]:
    """Yield ``(path, module, in_scope, site)`` for each module once (first path wins).

    ``site`` is set for activation modules; the walk does not descend into activations or
    into modules whose id is in ``skip``.
    """
    seen: set[int] = set()
    skip = skip or set()

    def visit(module: nn.Module, prefix: str, scoped: bool) -> Iterator[tuple[str, nn.Module, bool, _Site | None]]:
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            path = f"{prefix}.{name}" if prefix else name
            in_scope = scoped or _matches(path, globs)
            kind = identify_activation(child)
            if kind is not None:
                yield path, child, in_scope, _Site(path, module, name, child, kind, in_scope)
                continue
            if id(child) in seen or id(child) in skip:
                continue
            seen.add(id(child))
            yield path, child, in_scope, None
            yield from visit(child, path, in_scope)

    root_scoped = _matches("", globs)
    yield "", model, root_scoped, None
    seen.add(id(model))
    yield from visit(model, "", root_scoped)


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
        raise TypeError(f"target {spec!r} did not build an nn.Module (got {type(module).__name__})")
    return module


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
        raise TypeError(
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
    if strict:
        raise SurgeryError("; ".join(problems) if len(problems) == 1 else "\n- " + "\n- ".join(problems))
    for p in problems:
        report.warnings.append(p)
        warnings.warn(p, SurgeryWarning, stacklevel=3)


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
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"swap_activations needs an nn.Module, got {type(model).__name__}")
    targets = _normalise_mapping(mapping)
    globs = _globs(where)
    root_kind = identify_activation(model)
    if root_kind is not None and _target_for(root_kind, targets) is not None:
        raise ValueError(
            f"the model itself is a {root_kind} activation and cannot be replaced in place; "
            "build the new one with actlab.create_activation(...)"
        )
    walked = list(_walk(model, globs))
    if globs is not None and not any(scoped for _, _, scoped, _ in walked):
        examples = ", ".join(repr(p) for p, _, _, _ in walked[1:6])
        raise ValueError(f"where={where!r} matches no module path; paths look like {examples}")

    report = SwapReport()
    scoped_sites = [s for _, _, _, s in walked if s is not None and s.in_scope]
    report.found = dict(Counter(s.kind for s in scoped_sites))
    planned = [(s, t) for s in scoped_sites if (t := _target_for(s.kind, targets)) is not None]
    source_kinds = {s.kind for s, _ in planned} | (set(targets) - {WILDCARD})

    problems: list[str] = []
    found = ", ".join(sorted(report.found)) or "none"
    for key in targets:
        hit = any(s.kind not in NOT_WILDCARD for s in scoped_sites) if key == WILDCARD else key in report.found
        if not hit:
            report.unmatched.append(key)
            what = "activation" if key == WILDCARD else f"{key} activation"
            problems.append(f"no {what} found; found kinds: {found}")
    scope_modules = [(p, m) for p, m, scoped, site in walked if scoped and site is None]
    problems += [_functional_message(c) for c in static_functional_calls(scope_modules, source_kinds)]
    _raise_or_warn(problems, strict, report)

    undo: list[tuple[nn.Module, str, nn.Module]] = []
    config_undo: list[tuple[Any, str, Any]] = []
    try:
        inserted: set[int] = set()
        for site, spec in planned:
            new = _build(spec)
            setattr(site.parent, site.name, new)
            undo.append((site.parent, site.name, site.module))
            inserted.add(id(new))
            report.sites.append(
                SwapSite(site.path, type(site.module).__qualname__, site.kind, spec_string(new), repr(new))
            )
        post = _residual_problems(model, globs, source_kinds, inserted)
        if example_inputs is not None and source_kinds:
            calls = dynamic_functional_calls(model, example_inputs, source_kinds, inserted)
            post += [_functional_message(c) for c in calls if _in_scope(c.path, globs)]
        _raise_or_warn(post, strict, report)
        _sync_config(model, report, inserted, config_undo)
    except BaseException:
        for parent, name, old in reversed(undo):
            setattr(parent, name, old)
        for config, attr, value in config_undo:
            setattr(config, attr, value)
        raise
    return report


def _residual_problems(
    model: nn.Module, globs: tuple[str, ...] | None, kinds: set[str], inserted: set[int]
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


def _is_transformers_config(config: object) -> bool:
    return any(c.__module__.startswith("transformers") for c in type(config).__mro__)


def _sync_config(
    model: nn.Module, report: SwapReport, inserted: set[int], undo: list[tuple[Any, str, Any]]
) -> None:
    """Point ``config.hidden_act`` at the new activation when every site of its kind moved."""
    config = getattr(model, "config", None)
    if config is None or not _is_transformers_config(config) or not report.sites:
        return
    swapped = {s.old_kind for s in report.sites}
    attrs = [a for a in _CONFIG_ATTRS if isinstance(getattr(config, a, None), str)]
    if not attrs:
        nested = [
            f"config.{name}.{a}"
            for name, sub in vars(config).items()
            for a in _CONFIG_ATTRS
            if hasattr(sub, "to_dict") and isinstance(getattr(sub, a, None), str)
        ]
        if nested:
            report.notes.append(
                f"{', '.join(nested)} not updated (nested configs are left alone); set them "
                "by hand before save_pretrained if the swap should survive a reload"
            )
        return
    try:
        from actlab.integrations import transformers as hf

        for attr in attrs:
            old = getattr(config, attr)
            kind = hf.hidden_act_kind(old)
            if kind is None or kind not in swapped:
                continue
            sites = [s for _, _, _, s in _walk(model, None) if s is not None]
            left = [s.path for s in sites if s.kind == kind and id(s.module) not in inserted]
            now = {s.path: s.module for s in sites}
            keys = {hf.hidden_act_for(now[r.path]) for r in report.sites if r.old_kind == kind}
            if left or len(keys) != 1 or None in keys:
                why = (f"{len(left)} {kind} site(s) were not swapped" if left
                       else "the new activations have no single config string")
                report.notes.append(
                    f"config.{attr} left as {old!r}: {why}, so a model rebuilt from this config "
                    "(from_pretrained) would not match; save the state dict instead"
                )
                continue
            key = keys.pop()
            assert key is not None
            if key != old:
                hf.register(key)
                undo.append((config, attr, old))
                setattr(config, attr, key)
                report.config[attr] = [old, key]
    except ImportError as e:
        report.notes.append(f"config left unchanged: {e}")
