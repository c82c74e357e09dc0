"""The import structure of actlab: the one-way flow of DESIGN.md, no cycles, no private imports.

- the import-linter contracts of ``pyproject.toml`` ``[tool.importlinter]`` (the same check as
  ``lint-imports`` in ``make test``): layers, private modules, the root facade, acyclic
  siblings;
- no import cycle between any two modules of actlab (strongly connected components of the
  module graph, Tarjan), function-level and ``TYPE_CHECKING`` imports included;
- no private *name* (``from actlab.X import _y``, which import-linter cannot see when ``_y``
  is not a module) imported from another package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "actlab"

grimp = pytest.importorskip("grimp", reason="import-linter (test extras) installs grimp")
try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs tomli on 3.10")


def test_the_contracts_are_declared() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["root_package"] == "actlab"
    kinds = {c["type"] for c in config["contracts"]}
    assert kinds == {"layers", "private_modules", "protected", "acyclic_siblings"}
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    assert layers["exhaustive"] is True  # every top-level module has a deliberate place
    names = [layer.replace(":", "|").split("|") for layer in layers["layers"]]
    order = [n.strip() for layer in names for n in layer]
    # the chain of DESIGN.md, top to bottom
    chain = ["cli", "report", "search", "bench", "train", "surgery", "activations", "registry"]
    assert [n for n in order if n in chain] == chain


def test_import_linter_contracts_are_kept() -> None:
    pytest.importorskip("importlinter", reason="import-linter is in the test extras")
    code = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "0 broken" in out, out


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted; singletons included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def test_strongly_connected_finds_cycles() -> None:
    g = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": [], "e": ["e"]}
    comps = sorted(strongly_connected(g))
    assert comps == [["a", "b", "c"], ["d"], ["e"]]
    chain = {f"m{i}": [f"m{i + 1}"] for i in range(5000)}  # deep: no recursion limit
    assert len(strongly_connected(chain)) == 5001


def test_no_module_level_import_cycles() -> None:
    g = grimp.build_graph("actlab", cache_dir=None)
    edges = {m: g.find_modules_directly_imported_by(m) for m in g.modules}
    cycles = [c for c in strongly_connected(edges) if len(c) > 1]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def _package(module: str) -> str:
    """``actlab.X`` for any module inside it (``actlab`` for the root package itself)."""
    return ".".join(module.split(".")[:2])


def test_no_private_names_imported_across_packages() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        importer = ".".join(parts)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module.split(".")[0] != "actlab":
                continue
            if _package(node.module) == _package(importer):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    bad.append(f"{importer}:{node.lineno} imports {node.module}.{alias.name}")
    assert not bad, "private names imported across packages: " + "; ".join(bad)
