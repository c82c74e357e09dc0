"""swap_activations on toy models: sites, scope, targets, report and every verification."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from actlab import swap_activations
from actlab.activations import GELU as ActlabGELU
from actlab.activations import CRReLU, kernel_mode
from actlab.surgery import SurgeryError, SurgeryWarning, SwapReport, identify_activation


@pytest.fixture(autouse=True)
def _eager_kernels():
    with kernel_mode("eager"):  # no torch.compile on the shared CPUs
        yield


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 8),
        nn.GELU(),
        nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.GELU()),
        nn.Linear(8, 2),
    )


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.ModuleList([Block() for _ in range(3)])
        self.head = nn.Sequential(nn.Linear(4, 4), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.encoder:
            x = block(x)
        return self.head(x)


class FunctionalGelu(nn.Module):
    """Calls F.gelu in forward: surgery cannot replace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x) + F.gelu(self.fc(x))  # the functional call


class HiddenGelu(nn.Module):
    """Calls F.gelu in a helper method and a tensor method: only the run-time check sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.GELU()

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x) + x.relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x)) + self._mix(x)


# ---------------------------------------------------------------- identification
def test_identify_torch_and_actlab_modules() -> None:
    assert identify_activation(nn.GELU()) == "gelu"
    assert identify_activation(nn.GELU(approximate="tanh")) == "gelu_tanh"
    assert identify_activation(nn.SiLU()) == "silu"
    assert identify_activation(nn.ReLU6()) == "relu6"
    assert identify_activation(nn.LeakyReLU(0.2)) == "leaky_relu"
    assert identify_activation(nn.PReLU()) == "prelu"
    assert identify_activation(CRReLU()) == "crrelu"
    assert identify_activation(ActlabGELU()) == "gelu"
    assert identify_activation(nn.Linear(2, 2)) is None
    assert identify_activation(nn.Identity()) is None
    assert identify_activation(nn.Softmax(dim=-1)) is None


def test_identify_subclasses_only_when_forward_is_inherited() -> None:
    class Plain(nn.ReLU):
        pass

    class Other(nn.ReLU):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    assert identify_activation(Plain()) == "relu"
    assert identify_activation(Other()) is None


def test_identify_transformers_activations() -> None:
    acts = pytest.importorskip("transformers.activations")
    expected = {
        "gelu": "gelu",
        "gelu_python": "gelu",
        "gelu_new": "gelu_tanh",
        "gelu_pytorch_tanh": "gelu_tanh",
        "gelu_python_tanh": "gelu_tanh",
        "gelu_fast": "gelu_tanh",
        "gelu_accurate": "gelu_tanh",
        "quick_gelu": "quick_gelu",
        "gelu_10": "clipped_gelu",
        "silu": "silu",
        "swish": "silu",
        "relu": "relu",
        "relu2": "relu2",
        "relu6": "relu6",
        "mish": "mish",
        "tanh": "tanh",
        "sigmoid": "sigmoid",
        "laplace": "laplace",
        "linear": "linear",
    }
    for key, kind in expected.items():
        assert identify_activation(acts.ACT2FN[key]) == kind, key
    for key in acts.ACT2CLS:
        if key != "xielu":  # builds parameters and logs a CUDA warning; identified by name
            assert identify_activation(acts.ACT2FN[key]) is not None, key


def test_identify_timm_classes_by_name_without_timm() -> None:
    def fake(module: str, name: str) -> nn.Module:
        cls = type(name, (nn.Module,), {"forward": lambda self, x: x})
        cls.__module__ = module
        return cls()

    assert identify_activation(fake("timm.layers.activations", "GELUTanh")) == "gelu_tanh"
    assert identify_activation(fake("timm.layers.activations", "Swish")) == "silu"
    assert identify_activation(fake("timm.models.layers.activations", "QuickGELU")) == "quick_gelu"
    assert identify_activation(fake("timm.layers.activations_me", "HardSwishMe")) == "hardswish"
    assert identify_activation(fake("mylib.layers", "Swish")) is None
    model = nn.Sequential(nn.Linear(2, 2), fake("timm.layers.activations", "GELU"))
    assert swap_activations(model, {"gelu": "crrelu"}).counts() == {"gelu": 1}


def test_transformers_identity_classes_compute_their_kind() -> None:
    """The same-function claims behind the HF kind table."""
    acts = pytest.importorskip("transformers.activations")
    x = torch.linspace(-6, 6, 241, dtype=torch.float64)
    tanh_ref = nn.GELU(approximate="tanh")(x)
    for key in ("gelu_new", "gelu_fast", "gelu_accurate", "gelu_pytorch_tanh"):
        torch.testing.assert_close(acts.ACT2FN[key](x), tanh_ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(acts.ACT2FN["gelu"](x), F.gelu(x))
    torch.testing.assert_close(acts.ACT2FN["silu"](x), F.silu(x))


# ---------------------------------------------------------------- swapping
def test_swap_gelu_sites_in_nested_sequential() -> None:
    model = mlp()
    x = torch.randn(5, 4)
    before = model(x)
    report = swap_activations(model, {"gelu": "crrelu"})
    assert [s.path for s in report.sites] == ["1", "2.2"]
    assert isinstance(model[1], CRReLU) and isinstance(model[2][2], CRReLU)
    assert isinstance(model[2][1], nn.ReLU)  # untouched
    assert report.counts() == {"gelu": 2} and len(report) == 2
    assert report.found == {"gelu": 2, "relu": 1}
    assert not torch.allclose(model(x), before)


def test_identity_swap_keeps_outputs() -> None:
    model = Net()
    x = torch.randn(3, 4)
    before = model(x)
    report = swap_activations(model, {"gelu": "gelu", "silu": "silu"}, example_inputs=x)
    assert report.counts() == {"gelu": 3, "silu": 1}
    assert all(isinstance(b.act, ActlabGELU) for b in model.encoder)
    torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)


def test_nested_paths_and_where_glob() -> None:
    model = Net()
    report = swap_activations(model, {"gelu": "relu"}, where="encoder.[01]")
    assert [s.path for s in report.sites] == ["encoder.0.act", "encoder.1.act"]
    assert isinstance(model.encoder[2].act, nn.GELU)
    report = swap_activations(model, {"*": "tanh"}, where=["*.2.act", "head"])
    assert [s.path for s in report.sites] == ["encoder.2.act", "head.1"]


def test_where_matching_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="matches no module path"):
        swap_activations(Net(), {"gelu": "relu"}, where="decoder.*")


def test_wildcard_and_explicit_key_precedence() -> None:
    model = Net()
    report = swap_activations(model, {"*": "crrelu", "silu": "mish"})
    assert report.counts() == {"gelu": 3, "silu": 1}
    assert type(model.head[1]).__name__ == "Mish"
    assert all(isinstance(b.act, CRReLU) for b in model.encoder)


def test_targets_instance_class_and_call_string() -> None:
    model = Net()
    template = CRReLU(eps=0.05)
    swap_activations(model, {"gelu": template})
    sites = [b.act for b in model.encoder]
    assert all(isinstance(a, CRReLU) and a is not template for a in sites)
    assert [a.eps.item() for a in sites] == pytest.approx([0.05] * 3)

    model = Net()
    swap_activations(model, {"gelu": nn.Tanh, "silu": CRReLU})
    assert all(isinstance(b.act, nn.Tanh) for b in model.encoder)
    assert isinstance(model.head[1], CRReLU)

    model = Net()
    report = swap_activations(model, {"gelu": "crrelu(eps=0.02)"})
    assert [b.act.eps.item() for b in model.encoder] == pytest.approx([0.02] * 3)
    assert report.sites[0].new_spec.startswith("crrelu(eps=0.02")


def test_each_site_gets_its_own_parameter() -> None:
    shared = nn.GELU()
    model = nn.Sequential(nn.Linear(4, 4), shared, nn.Linear(4, 4), shared)
    report = swap_activations(model, {"gelu": CRReLU(eps=0.03)})
    assert len(report) == 2
    a, b = model[1], model[3]
    assert a is not b and a.eps is not b.eps
    with torch.no_grad():
        a.eps.fill_(0.5)
    assert b.eps.item() == pytest.approx(0.03)
    assert len(list(model.parameters())) == 4 + 2


def test_alias_keys_resolve() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.GELU(approximate="tanh"), nn.GELU())
    report = swap_activations(model, {"gelu_new": "relu"})
    assert [s.path for s in report.sites] == ["1"] and report.sites[0].old_kind == "gelu_tanh"


def test_report_table_and_dict() -> None:
    report = swap_activations(Net(), {"gelu": "crrelu"})
    assert isinstance(report, SwapReport)
    text = str(report)
    assert "encoder.0.act" in text and "GELU" in text and "crrelu" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["counts"] == {"gelu": 3}
    site = data["sites"][0]
    assert site["path"] == "encoder.0.act" and site["old_class"] == "GELU"
    assert site["old_kind"] == "gelu" and site["new_repr"].startswith("CRReLU(")
    assert site["new_spec"] == "crrelu"  # only non-default hyper-parameters are written


# ---------------------------------------------------------------- errors and verification
def test_unknown_kind_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown activation kind 'gleu'.*Did you mean: gelu"):
        swap_activations(Net(), {"gleu": "relu"})


def test_bad_target_fails_before_touching_the_model() -> None:
    model = Net()
    with pytest.raises(ValueError, match="unknown activation"):
        swap_activations(model, {"gelu": "crelu_typo"})
    assert isinstance(model.encoder[0].act, nn.GELU)


def test_zero_matches_strict_and_lenient() -> None:
    model = Net()
    with pytest.raises(SurgeryError, match="no relu activation found; found kinds: gelu, silu"):
        swap_activations(model, {"relu": "crrelu"})
    with pytest.warns(SurgeryWarning, match="no relu activation found"):
        report = swap_activations(model, {"relu": "crrelu", "silu": "tanh"}, strict=False)
    assert report.unmatched == ["relu"] and report.counts() == {"silu": 1}
    assert "no relu activation found" in str(report)


def test_static_check_finds_functional_gelu() -> None:
    model = nn.Sequential(FunctionalGelu())
    with pytest.raises(SurgeryError) as info:
        swap_activations(model, {"gelu": "crrelu"})
    msg = str(info.value)
    import inspect

    lines, start = inspect.getsourcelines(FunctionalGelu.forward)
    line = start + next(i for i, t in enumerate(lines) if "F.gelu" in t)
    assert f"gelu is still called functionally in 0 (FunctionalGelu.forward, line {line})" in msg
    assert "patch that forward or pass strict=False" in msg
    assert isinstance(model[0].act, nn.GELU)  # nothing was changed


def test_static_check_respects_kinds_and_scope() -> None:
    model = nn.Sequential(FunctionalGelu(), nn.Sequential(nn.Linear(4, 4), nn.SiLU()))
    swap_activations(model, {"silu": "crrelu"})  # F.gelu is not a requested kind
    swap_activations(model, {"gelu": "crrelu"}, where="0.act")  # FunctionalGelu is not in scope


def test_lenient_mode_records_warnings_and_swaps() -> None:
    model = nn.Sequential(FunctionalGelu())
    with pytest.warns(SurgeryWarning):
        report = swap_activations(
            model, {"gelu": "crrelu"}, strict=False, example_inputs=torch.randn(2, 4)
        )
    assert len(report) == 1 and isinstance(model[0].act, CRReLU)
    assert any("FunctionalGelu.forward, line" in w for w in report.warnings)  # static
    assert any("FunctionalGelu.forward, seen at run time" in w for w in report.warnings)
    assert "warning: gelu is still called functionally" in str(report)


def test_dynamic_check_finds_hidden_calls_and_rolls_back() -> None:
    model = nn.Sequential(HiddenGelu())
    x = torch.randn(2, 4)
    swap_activations(model, {"gelu": "crrelu"})  # static check cannot see the helper
    model = nn.Sequential(HiddenGelu())
    with pytest.raises(
        SurgeryError,
        match=r"gelu is still called functionally in 0 \(HiddenGelu.forward, seen at run time\)",
    ):
        swap_activations(model, {"gelu": "crrelu"}, example_inputs=x)
    assert isinstance(model[0].act, nn.GELU)  # rolled back
    with pytest.raises(SurgeryError, match="relu is still called functionally in 0"):
        swap_activations(
            nn.Sequential(HiddenGelu(), nn.ReLU()), {"relu": "tanh"}, example_inputs=(x,)
        )


def test_dynamic_check_ignores_calls_inside_activations_and_removes_hooks() -> None:
    model = Net()
    x = torch.randn(2, 4)
    swap_activations(model, {"gelu": ActlabGELU(), "silu": "silu"}, example_inputs={"x": x})
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_hooks_removed_when_forward_raises() -> None:
    model = Net()
    with pytest.raises(RuntimeError):
        swap_activations(model, {"gelu": "crrelu"}, example_inputs=torch.randn(2, 5))
    assert isinstance(model.encoder[0].act, nn.GELU)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_root_activation_cannot_be_replaced() -> None:
    with pytest.raises(ValueError, match="cannot be replaced in place"):
        swap_activations(nn.GELU(), {"gelu": "relu"})


def test_new_activations_follow_the_device_of_their_site() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.ReLU6(), nn.PReLU()).to("meta")
    report = swap_activations(model, {"gelu": nn.PReLU, "relu6": nn.PReLU, "prelu": nn.PReLU})
    assert len(report) == 3 and all(isinstance(m, nn.PReLU) for m in model[1:])
    assert all(p.device.type == "meta" for p in model.parameters())  # not left on the CPU
