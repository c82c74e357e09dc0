"""Hostile layer specs: each is refused with one line (a LayerSpecError), nothing evaluated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torch import nn

from actlab.layers import LayerSpecError, canonical_layer_spec, create_layer, get_layer_info

NORM = {"num_features": 4}
MLP = {"in_features": 4, "hidden_features": 8, "out_features": 4}

# (spec, slot arguments, words the one-line error must contain)
CASES: list[tuple[Any, dict[str, Any], str]] = [
    ("", NORM, "layer spec"),
    ("   ", NORM, "layer spec"),
    ("rmsnorm(", NORM, "cannot parse layer spec"),
    ("rmsnrom", NORM, "Did you mean: rmsnorm"),
    ("nosuch", NORM, "unknown layer 'nosuch'. Available: "),
    ("rmsnorm(1e-5)", NORM, "by keyword"),
    ("rmsnorm(**{'eps': 1})", NORM, "'**' is not allowed"),
    ("rmsnorm(eps=1, eps=2)", NORM, "given twice"),
    ("rmsnorm(eps=nan)", NORM, "literal"),
    ("rmsnorm(eps=1e999)", NORM, "finite"),
    ("rmsnorm(eps=-1)", NORM, "eps must be > 0"),
    ("rmsnorm(eps=0)", NORM, "eps must be > 0"),
    ("rmsnorm(eps='1e-5')", NORM, "must be a number"),
    ("rmsnorm(affine='no')", NORM, "True or False"),
    ("rmsnorm(foo=1)", NORM, "no parameter 'foo'"),
    ("rmsnorm(num_features=8)", NORM, "set by the model"),
    ("batchnorm(momentum=2)", NORM, "momentum"),
    ("glu(act='nosuch')", MLP, "unknown activation"),
    ("glu(act=3)", MLP, "act"),
    ("mlp(in_features=3)", MLP, "set by the model"),
    ("mlp", {"hidden_features": 8}, "give hidden_features and out_features"),
    ("sigmoid_attn(bias=nan)", {}, "literal"),
    ("__import__('os').system('touch pwned')", NORM, "must be a name or a call"),
    ("rmsnorm(eps=__import__('os'))", NORM, "literal"),
    ("x" * 5000, NORM, "longer than"),
    ("rmsnorm\x00", NORM, "cannot parse"),
    ("(" * 900, NORM, "cannot parse"),
    (3, NORM, "str, class or factory"),
    (None, NORM, "str, class or factory"),
    (nn.LayerNorm(4), NORM, "not the instance"),
    (lambda num_features: 3, NORM, "not a module"),
    (lambda: nn.Identity(), NORM, "cannot build layer"),
]


@pytest.mark.parametrize(("spec", "args", "words"), CASES, ids=[repr(c[0])[:40] for c in CASES])
def test_hostile_layer_specs_get_one_line(
    spec: Any, args: dict[str, Any], words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LayerSpecError) as e:
        create_layer(spec, **args)
    msg = str(e.value)
    assert words.lower() in msg.lower(), msg
    assert "\n" not in msg and len(msg) < 600
    assert isinstance(e.value, ValueError) and isinstance(e.value, KeyError)
    assert not (tmp_path / "pwned").exists()
    if isinstance(spec, str) and "num_features" not in spec and args is NORM:
        with pytest.raises(LayerSpecError):
            canonical_layer_spec(spec)


# switches given to a layer class directly (no spec string to check them): each must be a bool,
# never taken by its truth value ("no" is truthy, 0 is not)
SWITCHES: list[tuple[str, dict[str, Any], str]] = [
    ("af_kan", MLP, "fused"),
    ("af_kan", MLP, "series"),
    ("relu_kan", MLP, "fused"),
    ("s_kan", MLP, "fused"),
    ("polynorm", {}, "fused"),
    ("evonorm_b0", NORM, "fused"),
    ("evonorm_s0", NORM, "fused"),
    ("evonorm_b0", NORM, "apply_act"),
    ("evonorm_s0", NORM, "apply_act"),
]


@pytest.mark.parametrize(
    ("name", "args", "key"), SWITCHES, ids=[f"{c[0]}-{c[2]}" for c in SWITCHES]
)
@pytest.mark.parametrize("value", ["no", 0, 1, None])
def test_layer_switches_must_be_bools(
    name: str, args: dict[str, Any], key: str, value: Any
) -> None:

    cls = get_layer_info(name).factory
    with pytest.raises(ValueError, match=rf"^{name}: {key} must be True or False, got "):
        cls(**args, **{key: value})
    m = cls(**args, **{key: False})  # a bool is taken as it is
    assert isinstance(m, nn.Module)
