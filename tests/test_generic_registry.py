"""The one generic Registry: registration, aliases, metadata, close-match errors, loaders."""

from __future__ import annotations

import sys
import types

import pytest

from actlab.registry import ACTIVATIONS, ActivationSpecError, Registry, RegistryError


def _reg() -> Registry[int]:
    r: Registry[int] = Registry("widget", hint="Run `x ls`.")
    r.add("alpha", 1, aliases=("a",), size="small")
    r.register("Beta", size="big")(2)
    return r


def test_lookup_aliases_metadata_and_case() -> None:
    r = _reg()
    assert r.get("ALPHA") == 1 and r.get(" a ") == 1 and r.get("beta") == 2
    assert r.resolve("A") == "alpha"
    assert r.meta("beta") == {"size": "big"}
    assert r.names() == ["alpha", "beta"] and list(r) == ["alpha", "beta"]
    assert r.names("b*") == ["beta"] and r.names(size="small") == ["alpha"]
    assert r.aliases() == {"a": "alpha"} and len(r) == 2
    assert "a" in r and "gamma" not in r and 3 not in r
    assert r.items() == [("alpha", 1), ("beta", 2)]


def test_unknown_names_get_one_line_with_close_matches_or_the_list() -> None:
    r = _reg()
    with pytest.raises(RegistryError) as e:
        r.get("alpah")
    msg = str(e.value)
    assert msg == "unknown widget 'alpah'. Did you mean: alpha? Run `x ls`." and "\n" not in msg
    with pytest.raises(RegistryError, match="Available: alpha, beta"):
        r.get("zzzzzz")
    with pytest.raises(RegistryError, match="must be a string"):
        r.get(3)  # type: ignore[arg-type]
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    with pytest.raises(RegistryError) as long:
        r.get("q" * 5000)
    assert len(str(long.value)) < 200


def test_duplicates_and_empty_names_are_refused_and_remove_forgets_aliases() -> None:
    r = _reg()
    with pytest.raises(RegistryError, match="already registered"):
        r.add("ALPHA", 3)
    with pytest.raises(RegistryError, match="already registered"):
        r.add("other", 3, aliases=("a",))
    with pytest.raises(RegistryError, match="non-empty"):
        r.add(" ", 3)
    r.remove("a")
    assert "alpha" not in r and "a" not in r
    r.add("alpha", 5, aliases=("a",))
    assert r.get("a") == 5


def test_loader_modules_fill_the_registry_on_the_first_lookup(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r: Registry[str] = Registry("gadget", loader="_actlab_gadgets", error=LookupError)
    sys.modules["_actlab_gadget_registry"] = types.SimpleNamespace(R=r)  # type: ignore[assignment]
    (tmp_path / "_actlab_gadgets.py").write_text(
        "import sys\nsys.modules['_actlab_gadget_registry'].R.add('one', '1')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "_actlab_gadgets" not in sys.modules
        assert r.get("one") == "1" and r.names() == ["one"]  # imported once, by name
        with pytest.raises(LookupError, match="unknown gadget 'two'"):
            r.get("two")
    finally:
        sys.modules.pop("_actlab_gadget_registry", None)
        sys.modules.pop("_actlab_gadgets", None)


def test_the_activation_registry_is_one_instance() -> None:
    assert "crrelu" in ACTIVATIONS and ACTIVATIONS.meta("crrelu")["family"] == "eafo"
    with pytest.raises(ActivationSpecError, match="Did you mean: gelu"):
        ACTIVATIONS.get("gleu")


def test_a_package_loader_imports_every_module_of_the_folder(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r: Registry[str] = Registry("gizmo", loader="_actlab_gizmos.*")
    sys.modules["_actlab_gizmo_registry"] = types.SimpleNamespace(R=r)  # type: ignore[assignment]
    pkg = tmp_path / "_actlab_gizmos"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("first", "second"):
        (pkg / f"{name}.py").write_text(
            f"import sys\nsys.modules['_actlab_gizmo_registry'].R.add({name!r}, {name!r})\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert r.names() == ["first", "second"]
    finally:
        for m in [m for m in sys.modules if m.startswith("_actlab_gizmo")]:
            sys.modules.pop(m)
