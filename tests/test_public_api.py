"""Public surfaces: every ``__all__`` name resolves, lazy facades stay cheap and visible.

The lazy facades (``actlab``, ``actlab.bench``, ``actlab.report``) go through
:func:`actlab._lazy.lazy_exports`; their ``if TYPE_CHECKING:`` imports must name exactly the
lazily exported names, so IDEs and mypy see the same API the runtime serves.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

from actlab._lazy import lazy_exports

PACKAGES = [
    "actlab",
    "actlab.activations",
    "actlab.bench",
    "actlab.data",
    "actlab.executors",
    "actlab.expr",
    "actlab.layers",
    "actlab.models",
    "actlab.probes",
    "actlab.report",
    "actlab.search",
    "actlab.surgery",
    "actlab.train",
]
LAZY_FACADES = ["actlab", "actlab.bench", "actlab.report"]
HEAVY = ("transformers", "optuna", "sqlalchemy", "matplotlib", "scipy", "ray")


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_exported_name_resolves_and_is_listed(pkg: str) -> None:
    mod = importlib.import_module(pkg)
    names = list(mod.__all__)
    assert len(names) == len(set(names)), f"{pkg}.__all__ repeats a name"
    listed = dir(mod)
    for name in names:
        assert getattr(mod, name) is not None, f"{pkg}.{name}"
        assert name in listed, f"dir({pkg}) misses {name}"


def _lazy_table(mod: types.ModuleType) -> set[str]:
    """The names a facade serves through ``__getattr__`` (from its ``lazy_exports`` call)."""
    tree = ast.parse(Path(str(mod.__file__)).read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "lazy_exports"
            and isinstance(node.args[1], ast.Dict)
        ):
            return {str(k.value) for k in node.args[1].keys if isinstance(k, ast.Constant)}
    raise AssertionError(f"{mod.__name__} does not call lazy_exports")


def _type_checking_names(mod: types.ModuleType) -> set[str]:
    tree = ast.parse(Path(str(mod.__file__)).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                names |= {a.asname or a.name for a in imp.names}
    return names


@pytest.mark.parametrize("pkg", LAZY_FACADES)
def test_lazy_facade_declares_its_names_for_type_checkers(pkg: str) -> None:
    mod = importlib.import_module(pkg)
    lazy = _lazy_table(mod)
    assert lazy, pkg
    assert lazy <= set(mod.__all__), f"{pkg}: lazily served but not exported"
    assert _type_checking_names(mod) == lazy, f"{pkg}: TYPE_CHECKING imports != lazy names"
    for name in lazy:
        assert getattr(mod, name) is not None
        assert name in dir(mod)


def test_top_level_exports_surgery_primitive() -> None:
    import actlab
    from actlab.surgery import ReplacementReport, replace_modules, swap_activations

    assert actlab.replace_modules is replace_modules
    assert actlab.ReplacementReport is ReplacementReport
    assert actlab.swap_activations is swap_activations


def test_lazy_exports_unknown_name_and_submodule() -> None:
    getattr_, dir_ = lazy_exports(
        "actlab.bench", {"stats": None, "compare": "actlab.bench.comparison"}
    )
    assert getattr_("stats") is importlib.import_module("actlab.bench.stats")
    assert getattr_("compare") is importlib.import_module("actlab.bench.comparison").compare
    with pytest.raises(AttributeError, match="module 'actlab.bench' has no attribute 'nope'"):
        getattr_("nope")
    assert {"stats", "compare"} <= set(dir_())
    import actlab

    with pytest.raises(AttributeError):
        actlab.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "stmt", ["import actlab", "import actlab.bench", "import actlab.report", "dir(actlab)"]
)
def test_importing_facades_stays_cheap(stmt: str) -> None:
    code = (
        f"import sys, actlab\n{stmt}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"{stmt} imported {out.stdout.strip()}"
