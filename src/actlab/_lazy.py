"""One helper for lazy package facades: names resolved from their modules on first access.

    __getattr__, __dir__ = lazy_exports(__name__, {"compare": "actlab.bench.comparison"})

A package lists its lazily exported names once; the module-level ``__getattr__`` imports the
owning module on each access (nothing is cached, so a monkeypatched module attribute is what
the facade returns), and ``__dir__`` lists them next to the eager names. A
value of ``None`` stands for the submodule of that name (``{"stats": None}`` makes
``pkg.stats`` the module ``pkg.stats``). Packages keep an ``if TYPE_CHECKING:`` block that
imports the same names, so IDEs and mypy see the real types.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, names: Mapping[str, str | None]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``names`` (name -> module).

    A module of ``None`` means the submodule ``package.name`` itself.
    """
    table = dict(names)

    def __getattr__(name: str) -> Any:
        try:
            target = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        if target is None:
            value: Any = importlib.import_module(f"{package}.{name}")
        else:
            value = getattr(importlib.import_module(target), name)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__
