"""Registry: specs, parsing safety, errors with suggestions, registration rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import actlab
from actlab.activations import CRReLU
from actlab.registry import ActivationSpecError, parse_spec, register_activation


def test_name_call_string_class_instance() -> None:
    assert isinstance(actlab.create_activation("crrelu"), CRReLU)
    m = actlab.create_activation("crrelu(eps=0.02)")
    assert m.eps.item() == pytest.approx(0.02)
    assert isinstance(actlab.create_activation(CRReLU), CRReLU)
    inst = CRReLU(eps=0.5)
    assert actlab.create_activation(inst) is inst
    assert actlab.create_activation("CRReLU").activation_name == "crrelu"  # case-insensitive
    assert actlab.create_activation("crrelu", eps=0.3).eps.item() == pytest.approx(0.3)
    assert actlab.create_activation(nn.GELU).__class__ is nn.GELU


def test_aliases_and_listing() -> None:
    assert actlab.create_activation("gelu_new").activation_name == "gelu_tanh"
    assert actlab.list_activations("gelu*") == ["gelu", "gelu_tanh"]
    assert "crrelu" in actlab.list_activations(family="eafo")
    assert actlab.get_activation_info("squared_relu").name == "relu2"


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ActivationSpecError, match="Did you mean: crrelu"):
        actlab.create_activation("crelu_")
    with pytest.raises(ActivationSpecError, match="unknown activation 'nonsense'"):
        actlab.create_activation("nonsense")


@pytest.mark.parametrize(
    "spec, msg",
    [
        ("crrelu(0.02)", "by keyword"),
        ("crrelu(eps=__import__('os'))", "literal"),
        ("crrelu(eps=1+x)", "literal"),
        ("os.system('true')", "must be a name or a call"),
        ("crrelu(**{'eps': 1})", r"\*\*"),
        ("crrelu(", "cannot parse"),
        ("", "empty"),
        ("crrelu(bogus=1)", "no parameter 'bogus'"),
        ("eafo(base='nope')", "unsupported value 'nope'"),
        ("x" * 2000, "longer than"),
    ],
)
def test_bad_specs_fail_clearly(spec: str, msg: str) -> None:
    with pytest.raises(ActivationSpecError, match=msg):
        actlab.create_activation(spec)


def test_parse_spec_literals_only() -> None:
    assert parse_spec("eafo(base='silu', eps=-0.1)") == ("eafo", {"base": "silu", "eps": -0.1})
    assert parse_spec("polyrelu(init=(0, 1, 0.5, 0.25))") == (
        "polyrelu",
        {"init": (0, 1, 0.5, 0.25)},
    )
    assert parse_spec(" relu ") == ("relu", {})


def test_spec_round_trips_hyperparameters() -> None:
    for spec in [
        "crrelu(eps=0.05, learnable=False)",
        "eafo(base='tanh', eps=0.2)",
        "leaky_relu(negative_slope=0.2)",
    ]:
        m = actlab.create_activation(spec)
        again = actlab.create_activation(m.spec())
        assert again.spec() == m.spec()
        x = torch.randn(50)
        torch.testing.assert_close(again(x), m(x))


def test_registration_rules() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_activation("relu", formula="f", paper="p")(
            type("X", (nn.Module,), {"__init__": lambda self, *, inplace=False: None})
        )

    class Positional(nn.Module):
        def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
            super().__init__()

    with pytest.raises(TypeError, match="keyword-only"):
        register_activation("positional_test", formula="f", paper="p")(Positional)

    class NoInplace(nn.Module):
        def __init__(self, *, alpha: float = 1.0) -> None:
            super().__init__()

    with pytest.raises(TypeError, match="inplace"):
        register_activation("noinplace_test", formula="f", paper="p")(NoInplace)


def test_param_groups_respect_weight_decay_option() -> None:
    model = nn.Sequential(
        nn.Linear(4, 4),
        actlab.create_activation("crrelu(weight_decay=False)"),
        nn.Linear(4, 2),
        actlab.create_activation("crrelu"),
    )
    groups = actlab.param_groups(model, 0.05)
    by_wd = {g["weight_decay"]: g["names"] for g in groups}
    assert by_wd[0.0] == ["1.eps"]
    assert "3.eps" in by_wd[0.05] and "0.weight" in by_wd[0.05]
    groups = actlab.param_groups(model, 0.05, exclude_1d=True)
    by_wd = {g["weight_decay"]: g["names"] for g in groups}
    assert set(by_wd[0.05]) == {"0.weight", "2.weight"}
    torch.optim.AdamW(groups, lr=1e-3)  # extra 'names' key is accepted by optimisers


def test_import_is_cheap_and_cpu_only() -> None:
    import subprocess
    import sys

    code = (
        "import sys, actlab; actlab.list_activations();"
        "heavy=('transformers','matplotlib','torch._dynamo','torch._inductor');"
        "bad=[m for m in heavy if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
