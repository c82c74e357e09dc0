"""Module *slots*: every ``(parent, attribute name)`` that holds a child module, with its path.

A slot is where surgery replaces a module: ``setattr(parent, name, new)``. The walk follows
``nn.Module._modules`` (so ``nn.Sequential``, ``nn.ModuleList`` and ``nn.ModuleDict`` are
plain parents whose names are ``"0"``, ``"1"`` or the dict keys). A module held by several
slots (a *shared* instance) yields one slot per path; its own children are walked once, so a
child slot inside a shared module is replaced once and the change is seen through every path.

``where`` globs (:func:`fnmatch.fnmatchcase` over dotted paths) put a slot in scope when its
own path or the path of one of its ancestors matches; a shared module is in scope when any of
its paths is.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from torch import nn

from actlab.surgery._report import SurgeryInputError

__all__ = ["Globs", "Slot", "globs_of", "in_scope", "iter_slots", "path_matches"]

Globs = tuple[str, ...] | None


@dataclass(frozen=True)
class Slot:
    """``parent.<name>`` holds ``module``; ``path`` is its dotted path from the root."""

    path: str
    parent: nn.Module
    name: str
    module: nn.Module
    in_scope: bool

    @property
    def key(self) -> tuple[int, str]:
        return id(self.parent), self.name


def globs_of(where: str | Iterable[str] | None) -> Globs:
    """``where`` as a tuple of globs (None: everything); one-line error on a bad value."""
    if where is None:
        return None
    if isinstance(where, (str, bytes)):
        globs: tuple[object, ...] = (where,)
    elif isinstance(where, Iterable):
        globs = tuple(where)
    else:
        globs = ()
    if not globs or not all(isinstance(g, str) and g for g in globs):
        raise SurgeryInputError(
            "where= must be a non-empty glob string or a list of them, e.g. 'encoder.*'"
        )
    return globs  # type: ignore[return-value]


def path_matches(path: str, globs: Globs) -> bool:
    """True when ``path`` itself matches one of ``globs`` (None matches everything)."""
    return globs is None or any(fnmatch.fnmatchcase(path, g) for g in globs)


def in_scope(path: str, globs: Globs) -> bool:
    """True when ``path`` or one of its ancestors' paths matches a glob."""
    if globs is None:
        return True
    parts = path.split(".") if path else [""]
    return any(path_matches(".".join(parts[: i + 1]), globs) for i in range(len(parts)))


def iter_slots(
    model: nn.Module,
    globs: Globs,
    descend: Callable[[Slot], bool] = lambda slot: True,
) -> Iterator[Slot]:
    """Every slot below ``model`` once (a slot first met out of scope and later in scope is
    yielded again, in scope: keep the last one per :attr:`Slot.key`).

    ``descend(slot)`` says whether to walk into ``slot.module``; each module is walked into
    at most once per scope state, so shared modules and reference cycles terminate.
    """
    walked: dict[int, bool] = {id(model): path_matches("", globs)}

    def visit(module: nn.Module, prefix: str, scoped: bool) -> Iterator[Slot]:
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            path = f"{prefix}.{name}" if prefix else name
            child_scoped = scoped or path_matches(path, globs)
            slot = Slot(path, module, name, child, child_scoped)
            yield slot
            if not descend(slot):
                continue
            before = walked.get(id(child))
            if before is not None and (before or not child_scoped):
                continue
            walked[id(child)] = child_scoped
            yield from visit(child, path, child_scoped)

    yield from visit(model, "", walked[id(model)])


def unique_slots(slots: Iterable[Slot]) -> list[Slot]:
    """One slot per ``(parent, name)``, the in-scope version winning, in first-seen order."""
    out: dict[tuple[int, str], Slot] = {}
    for slot in slots:
        old = out.get(slot.key)
        if old is None or (slot.in_scope and not old.in_scope):
            out[slot.key] = slot
    return list(out.values())
