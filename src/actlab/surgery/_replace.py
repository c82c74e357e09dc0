"""``replace_modules``: the one module-replacement primitive, all-or-nothing.

    report = replace_modules(model, nn.GELU, lambda name, old: CRReLU())
    report = replace_modules(model, "silu", lambda name, old: create_activation("crrelu"),
                             where="model.layers.[0-3].*")
    report = replace_modules(model, lambda name, m: isinstance(m, nn.Linear) and "mlp" in name,
                             lambda name, old: LoRALinear(old))        # wraps the old module

Steps: validate the arguments (one-line :class:`SurgeryInputError`), walk the slots
(:mod:`._walk`), call ``build`` once per matched slot *before* touching the model, install
the new modules with ``setattr`` on their parents, verify (parents accepted them, no weight
tying was cut, the caller's ``check``), run the ``on_replaced`` hooks. When any of that
raises, every slot gets its old module back and every :meth:`ReplacementReport.setattr`
of a hook is undone, so the model is exactly as before (same module objects, same
parameters, same ``_modules`` order) and the exception propagates.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

from torch import nn

from actlab.registry import Registry
from actlab.surgery._kinds import NOT_WILDCARD, WILDCARD, identify_activation, resolve_kind
from actlab.surgery._report import (
    Replacement,
    ReplacementReport,
    SurgeryError,
    SurgeryInputError,
    SurgeryWarning,
)
from actlab.surgery._walk import Globs, Slot, globs_of, iter_slots, path_matches, unique_slots

__all__ = [
    "Builder",
    "Hook",
    "Matcher",
    "find_modules",
    "on_replaced",
    "replace_modules",
    "replacement_hooks",
]

Matcher = Callable[[str, nn.Module], bool] | type[nn.Module] | tuple[type[nn.Module], ...] | str
Builder = Callable[[str, nn.Module], nn.Module]
Hook = Callable[[nn.Module, ReplacementReport], None]

# Global hooks run after every successful replacement. Integrations register theirs on import;
# the loader imports them (by name) before the first replacement, so surgery never imports
# the layers above it.
_HOOKS: Registry[Hook] = Registry(
    "replacement hook", loader="actlab.integrations.*", error=SurgeryInputError
)


def on_replaced(name: str) -> Callable[[Hook], Hook]:
    """Register ``hook(model, report)`` to run after every successful :func:`replace_modules`.

    Hooks run after the modules are installed and verified, in name order; a hook that
    raises rolls the whole replacement back. Hooks change state through
    ``report.setattr(obj, attr, value)`` so that the rollback undoes it too. Registering a
    name again replaces the earlier hook. The transformers integration registers
    ``"transformers-config"`` (``config.hidden_act`` follows a swapped activation)::

        @on_replaced("my-config")
        def _sync(model: nn.Module, report: ReplacementReport) -> None:
            if report.sites and hasattr(model, "my_config"):
                report.setattr(model.my_config, "patched", True)
    """
    if not isinstance(name, str) or not name.strip():
        raise SurgeryInputError("on_replaced needs a non-empty hook name, e.g. 'my-config'")

    def deco(hook: Hook) -> Hook:
        if not callable(hook):
            raise SurgeryInputError(f"on_replaced({name!r}) needs a callable (model, report)")
        if name in _HOOKS:
            _HOOKS.remove(name)
        return _HOOKS.add(name, hook)

    return deco


def replacement_hooks() -> list[str]:
    """Names of the registered global ``on_replaced`` hooks."""
    return _HOOKS.names()


def _describe(match: object) -> str:
    if isinstance(match, type):
        return match.__qualname__
    if isinstance(match, tuple):
        return "(" + ", ".join(_describe(m) for m in match) + ")"
    if isinstance(match, str):
        return repr(match)
    return str(getattr(match, "__name__", type(match).__name__))


def _is_module_class(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def _matcher(match: Matcher) -> Callable[[str, nn.Module], bool]:
    """``match`` as a predicate ``(path, module) -> bool``; one-line error on a bad value."""
    if isinstance(match, str):
        try:
            kind = resolve_kind(match, where="for match=")
        except ValueError as e:
            raise SurgeryInputError(str(e)) from None
        if kind == WILDCARD:
            return lambda path, m: identify_activation(m) not in (None, *NOT_WILDCARD)
        return lambda path, m: identify_activation(m) == kind
    if _is_module_class(match):
        return lambda path, m: isinstance(m, match)  # type: ignore[arg-type]
    if isinstance(match, tuple) and match and all(_is_module_class(t) for t in match):
        return lambda path, m: isinstance(m, match)
    if isinstance(match, nn.Module):
        raise SurgeryInputError(
            f"match= got a {type(match).__name__} instance; pass its class "
            f"({type(match).__name__}) or a callable (name, module) -> bool"
        )
    if callable(match) and not isinstance(match, type):
        fn = match

        def checked(path: str, m: nn.Module) -> bool:
            result = fn(path, m)
            if not isinstance(result, bool):
                raise SurgeryInputError(
                    f"match returned {type(result).__name__} for {path or '<root>'!r}; "
                    "it must return True or False"
                )
            return result

        return checked
    if isinstance(match, type):
        got = f"the class {match.__name__}, which is not an nn.Module"
    elif isinstance(match, tuple):
        bad = [t for t in match if not _is_module_class(t)]
        got = f"a tuple holding {type(bad[0]).__name__} {bad[0]!r}" if bad else "an empty tuple"
    else:
        got = type(match).__name__
    raise SurgeryInputError(
        "match= must be a callable (name, module) -> bool, an nn.Module class or a tuple of "
        f"them, or an activation kind such as 'gelu'; got {got}"
    )


def _callables(value: Hook | Sequence[Hook] | None, what: str) -> list[Hook]:
    if value is None:
        return []
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not all(callable(h) and not isinstance(h, nn.Module) for h in items):
        raise SurgeryInputError(f"{what}= must be a callable (model, report) or a list of them")
    return items  # type: ignore[return-value]


def _walk_sites(
    model: nn.Module, is_match: Callable[[str, nn.Module], bool], globs: Globs
) -> tuple[list[Slot], list[Slot]]:
    """(every slot, the matched ones); matched modules are not walked into."""
    matched: dict[tuple[int, str, str], bool] = {}

    def hit(slot: Slot) -> bool:
        key = (*slot.key, slot.path)
        if key not in matched:
            matched[key] = slot.in_scope and is_match(slot.path, slot.module)
        return matched[key]

    slots = unique_slots(iter_slots(model, globs, descend=lambda s: not hit(s)))
    return slots, [s for s in slots if hit(s)]


def find_modules(
    model: nn.Module, match: Matcher, *, where: str | Iterable[str] | None = None
) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` of every slot :func:`replace_modules` would replace (a dry run).

    A module held at two paths is listed at both; matched modules are not searched inside.

    >>> find_modules(nn.Sequential(nn.Linear(2, 2), nn.GELU()), nn.GELU)
    [('1', GELU(approximate='none'))]
    """
    if not isinstance(model, nn.Module):
        raise SurgeryInputError(f"find_modules needs an nn.Module, got {type(model).__name__}")
    _, sites = _walk_sites(model, _matcher(match), globs_of(where))
    return [(s.path, s.module) for s in sites]


def _warn_or_raise(
    problems: list[str], strict: bool, report: ReplacementReport, stacklevel: int = 3
) -> None:
    if not problems:
        return
    if strict:
        raise SurgeryError(problems[0] if len(problems) == 1 else "; ".join(problems))
    for p in problems:
        report.warnings.append(p)
        warnings.warn(p, SurgeryWarning, stacklevel=stacklevel)


def _build_all(model: nn.Module, sites: list[Slot], build: Builder) -> list[tuple[Slot, nn.Module]]:
    """Call ``build`` for every site before anything is installed; check what it returns."""
    present = {id(m) for m in model.modules()}
    first: dict[int, str] = {}
    built: list[tuple[Slot, nn.Module]] = []
    for slot in sites:
        new = build(slot.path, slot.module)
        where = repr(slot.path)
        if _is_module_class(new):
            cls = getattr(new, "__name__", "?")
            raise SurgeryInputError(
                f"build returned the class {cls} for {where}; return an instance, e.g. {cls}()"
            )
        if not isinstance(new, nn.Module):
            raise SurgeryInputError(
                f"build returned {type(new).__name__} for {where}; it must return an nn.Module "
                "(a fresh one per site)"
            )
        if new is slot.module:
            raise SurgeryInputError(
                f"build returned the old module itself for {where}; return a new module, or "
                "leave that path out of match="
            )
        if id(new) in first:
            raise SurgeryInputError(
                f"build returned the same module for {first[id(new)]!r} and {where}; return "
                "a fresh module per site (e.g. copy.deepcopy(template))"
            )
        if id(new) in present:
            at = next((p for p, m in model.named_modules() if m is new), "?")
            raise SurgeryInputError(
                f"build returned the module already at {at or '<root>'!r} for {where}; return "
                "a fresh module per site (e.g. copy.deepcopy(it))"
            )
        first[id(new)] = slot.path
        built.append((slot, new))
    return built


def _holders(model: nn.Module) -> dict[int, list[tuple[str, nn.Module]]]:
    """id(parameter) -> (qualified name, owning module) for every module that owns it."""
    out: dict[int, list[tuple[str, nn.Module]]] = {}
    for path, module in model.named_modules():
        for name, p in module._parameters.items():
            if p is not None:
                out.setdefault(id(p), []).append((f"{path}.{name}" if path else name, module))
    return out


def _tie_problems(
    sites: list[Replacement], holders: dict[int, list[tuple[str, nn.Module]]]
) -> list[str]:
    """Parameters a replaced module shared with a module outside it that the new one lost."""
    problems: list[str] = []
    for r in sites:
        inside = {id(m) for m in r.old.modules()}
        kept = {id(p) for p in r.new.parameters()}
        for name, p in r.old.named_parameters():
            others = [q for q, m in holders.get(id(p), []) if id(m) not in inside]
            if others and id(p) not in kept:
                problems.append(
                    f"replacing {r.path!r} breaks the weight tying of {r.path}.{name} with "
                    f"{others[0]}: the new module does not hold that parameter - reuse it in "
                    "build (e.g. new.weight = old.weight) or pass strict=False"
                )
    return problems


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _notes(slots: list[Slot], sites: list[Replacement]) -> list[str]:
    """Shared stateful modules split across paths; hooks left on replaced modules."""
    notes: list[str] = []
    paths: dict[int, list[str]] = {}
    for s in slots:
        paths.setdefault(id(s.module), []).append(s.path)
    done: set[int] = set()
    replaced = {r.path for r in sites}
    for r in sites:
        if id(r.old) in done:
            continue
        done.add(id(r.old))
        others = [p for p in paths.get(id(r.old), []) if p != r.path]
        if others and _has_state(r.old):
            kept = [p for p in others if p not in replaced]
            tail = (
                f"; {', '.join(map(repr, kept))} keep the old one"
                if kept
                else " (no longer shared)"
            )
            notes.append(
                f"the module at {r.path!r} was shared with {', '.join(map(repr, others))}: each "
                f"replaced path got its own new module{tail}"
            )
        hooks = sum(
            len(d)
            for d in (
                r.old._forward_hooks,
                r.old._forward_pre_hooks,
                r.old._backward_hooks,
                r.old._backward_pre_hooks,
            )
        )
        if hooks:
            notes.append(
                f"{hooks} hook(s) registered on the module at {r.path!r} stay with the old "
                "module; register them on the new one if they are still needed"
            )
    return notes


def _put_back(parent: nn.Module, name: str, old: nn.Module) -> None:
    """Restore ``parent.<name>``; never raises, so one stubborn parent cannot stop a rollback."""
    try:
        setattr(parent, name, old)
    except Exception:  # noqa: BLE001 - the slot is restored directly below
        pass
    if parent._modules.get(name) is not old:
        parent._modules[name] = old


def replace_modules(
    model: nn.Module,
    match: Matcher,
    build: Builder,
    *,
    where: str | Iterable[str] | None = None,
    strict: bool = True,
    check: Hook | Sequence[Hook] | None = None,
    on_replaced: Hook | Sequence[Hook] | None = None,
    hooks: bool = True,
) -> ReplacementReport:
    """Replace every module of ``model`` that ``match`` selects with ``build(path, old)``.

    Args:
        model: any ``nn.Module`` (Hugging Face and timm models included); changed in place.
        match: which modules to replace: a callable ``(path, module) -> bool``, an
            ``nn.Module`` class or tuple of classes (``isinstance``), or an activation kind
            (``"gelu"``, ``"silu"``, ``"*"`` for any activation; see
            :func:`identify_activation`). Matched modules are replaced whole: their children
            are not visited.
        build: ``(path, old_module) -> nn.Module``, called once per matched path, before the
            model is touched. It must return a fresh module per path; it may wrap or reuse
            ``old_module`` and its parameters (that is how weight tying is kept).
        where: glob(s) over dotted module paths; a module is in scope when its path or an
            ancestor's matches (``"encoder.layer.0"`` covers that block). Must match a path.
        strict: when True (default), matching nothing, cutting a weight tie or a parent
            that does not accept its new module raises :class:`SurgeryError` (after the
            rollback); when False each is a :class:`SurgeryWarning` recorded in
            ``report.warnings`` (a refused slot keeps its old module).
        check: ``(model, report) -> None`` (or a list) run after installation; raise to roll
            back.
        on_replaced: extra hooks ``(model, report) -> None`` for this call, run after the
            registered global ones (:func:`on_replaced`); ``hooks=False`` skips the global
            ones.

    Slots, sharing and the root: a slot is a ``(parent, attribute)`` pair, so children of
    ``nn.Sequential``, ``nn.ModuleList`` (``"layers.0"``) and ``nn.ModuleDict``
    (``"heads.cls"``) are replaced like any attribute. A module held at several paths gets
    one fresh build per matched path (a path left unmatched keeps the old module; the report
    notes a split stateful module). The model itself (the root) is never replaced: a match
    on it raises :class:`SurgeryInputError` (build the new model directly instead).

    Untouched modules keep their identity, parameters and hooks; hooks registered on a
    replaced module stay on the old module (noted in the report); hooks on its parent keep
    firing. Weight tying (``lm_head.weight is embed.weight``) survives unless a replaced
    module drops a parameter that a module outside it shares: that is an error (strict).

    All or nothing: if ``build``, a check or a hook raises, every slot gets its old module
    back, hook changes made through ``report.setattr`` are undone, and the error propagates.

    Example:
        >>> from torch import nn
        >>> from actlab.surgery import replace_modules
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
        >>> report = replace_modules(model, nn.GELU, lambda path, old: nn.SiLU())
        >>> report.paths, type(model[1]).__name__
        (['1'], 'SiLU')
    """
    if not isinstance(model, nn.Module):
        raise SurgeryInputError(f"replace_modules needs an nn.Module, got {type(model).__name__}")
    is_match = _matcher(match)
    if not callable(build) or isinstance(build, nn.Module):
        raise SurgeryInputError(
            "build= must be a callable (path, old_module) -> new module, e.g. "
            f"lambda path, old: nn.SiLU(); got {type(build).__name__}"
        )
    for flag, value in (("strict", strict), ("hooks", hooks)):
        if not isinstance(value, bool):
            raise SurgeryInputError(f"{flag}= must be True or False, got {value!r}")
    extra = _callables(on_replaced, "on_replaced")
    checks = _callables(check, "check")
    globs = globs_of(where)

    if path_matches("", globs) and is_match("", model):
        raise SurgeryInputError(
            f"match={_describe(match)} selects the model itself, which cannot be replaced in "
            "place; build the new model directly, or match the modules inside it"
        )
    slots, sites = _walk_sites(model, is_match, globs)
    if globs is not None and not path_matches("", globs) and not any(s.in_scope for s in slots):
        examples = ", ".join(repr(s.path) for s in slots[:5]) or "none (the model has no children)"
        raise SurgeryInputError(
            f"where={where!r} matches no module path; paths look like {examples}"
        )

    report = ReplacementReport()
    if not sites:
        scope = f" within where={where!r}" if globs is not None else ""
        kinds = sorted({type(s.module).__name__ for s in slots if s.in_scope})[:6]
        seen = ", ".join(kinds) or "none"
        _warn_or_raise(
            [f"match={_describe(match)} matched no module{scope}; module classes there: {seen}"],
            strict,
            report,
        )
        return report

    holders = _holders(model)
    built = _build_all(model, sites, build)
    undo: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        refused: list[str] = []
        for slot, new in built:
            undo.append((slot.parent, slot.name, slot.module))
            setattr(slot.parent, slot.name, new)
            if slot.parent._modules.get(slot.name) is not new:
                _put_back(slot.parent, slot.name, slot.module)
                refused.append(
                    f"{type(slot.parent).__name__} at {slot.path.rpartition('.')[0] or '<root>'!r} "
                    f"did not accept the replacement of {slot.path!r} - replace it by hand or "
                    "leave it out of match="
                )
                continue
            report.sites.append(Replacement(slot.path, slot.module, new))
        report.notes += _notes(slots, report.sites)
        for fn in checks:
            fn(model, report)
        _warn_or_raise(refused + _tie_problems(report.sites, holders), strict, report)
        for fn in [h for _, h in _HOOKS.items()] if hooks else []:
            fn(model, report)
        for fn in extra:
            fn(model, report)
    except BaseException:
        for parent, name, old in reversed(undo):
            _put_back(parent, name, old)
        for step in reversed(report._undo):
            step()
        raise
    report._undo.clear()
    return report
