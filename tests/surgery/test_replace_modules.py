"""replace_modules on toy models: matchers, containers, sharing, the root, rollback, hooks, ties."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

import actlab.surgery as surgery
from actlab.activations import CRReLU, kernel_mode
from actlab.surgery import (
    ReplacementReport,
    SurgeryError,
    SurgeryInputError,
    SurgeryWarning,
    find_modules,
    on_replaced,
    replace_modules,
    replacement_hooks,
    swap_activations,
)


@pytest.fixture(autouse=True)
def _eager_kernels():
    with kernel_mode("eager"):  # no torch.compile on the shared CPUs
        yield


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class Net(nn.Module):
    """Sequential, ModuleList, ModuleDict and plain attributes, nested."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.blocks = nn.ModuleList([Block() for _ in range(3)])
        self.heads = nn.ModuleDict({"cls": nn.Linear(4, 2), "aux": nn.Sequential(nn.SiLU())})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.heads["cls"](self.heads["aux"](x))


class Tied(nn.Module):
    """An embedding and an output head sharing one weight, like a language model."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.body = nn.Sequential(nn.Linear(4, 4), nn.GELU())
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(ids)))


class Wrapper(nn.Module):
    """Wraps the old module (keeps its parameters) and scales its output."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale


def snapshot(model: nn.Module) -> tuple[Any, ...]:
    return (
        [(p, id(m)) for p, m in model.named_modules(remove_duplicate=False)],
        [(n, id(p)) for n, p in model.named_parameters(remove_duplicate=False)],
        {k: v.clone() for k, v in model.state_dict().items()},
        [list(m._modules) for m in model.modules()],
    )


def assert_unchanged(model: nn.Module, snap: tuple[Any, ...]) -> None:
    now = snapshot(model)
    assert now[0] == snap[0] and now[1] == snap[1] and now[3] == snap[3]
    assert now[2].keys() == snap[2].keys()
    assert all(torch.equal(now[2][k], snap[2][k]) for k in snap[2])


# ---------------------------------------------------------------- matchers and containers
def test_match_by_class_replaces_in_every_container_kind() -> None:
    model = Net()
    x = torch.randn(3, 4)
    report = replace_modules(model, nn.Linear, lambda path, old: nn.Linear(4, old.out_features))
    assert report.paths == ["stem.0", "blocks.0.fc", "blocks.1.fc", "blocks.2.fc", "heads.cls"]
    assert isinstance(report, ReplacementReport) and len(report) == 5
    assert list(model.heads) == ["cls", "aux"]  # ModuleDict order kept
    assert model(x).shape == (3, 2)
    for r in report.sites:
        assert model.get_submodule(r.path) is r.new and r.old is not r.new


def test_match_by_tuple_callable_and_kind() -> None:
    model = Net()
    report = replace_modules(model, (nn.ReLU, nn.SiLU), lambda p, old: nn.Tanh())
    assert report.paths == ["stem.1", "heads.aux.0"]
    model = Net()
    report = replace_modules(
        model,
        lambda path, m: isinstance(m, nn.Linear) and path.startswith("blocks.1"),
        lambda p, old: nn.Linear(4, 4),
    )
    assert report.paths == ["blocks.1.fc"]
    model = Net()
    report = replace_modules(model, "gelu", lambda p, old: CRReLU())
    assert report.paths == [f"blocks.{i}.act" for i in range(3)]
    model = Net()
    report = replace_modules(model, "*", lambda p, old: nn.Identity())
    assert report.paths == ["stem.1", "blocks.0.act", "blocks.1.act", "blocks.2.act", "heads.aux.0"]


def test_where_globs_scope_and_matched_modules_are_not_entered() -> None:
    model = Net()
    report = replace_modules(model, nn.Linear, lambda p, o: nn.Linear(4, 4), where="blocks.[02]")
    assert report.paths == ["blocks.0.fc", "blocks.2.fc"]
    model = Net()
    seen: list[str] = []

    def match(path: str, m: nn.Module) -> bool:
        seen.append(path)
        return isinstance(m, Block)

    report = replace_modules(model, match, lambda p, old: Wrapper(old))
    assert report.paths == ["blocks.0", "blocks.1", "blocks.2"]
    assert not any(p.startswith("blocks.0.") for p in seen)  # a matched module is replaced whole
    assert isinstance(model.blocks[1], Wrapper) and model.blocks[1].inner is report.sites[1].old


def test_find_modules_is_a_dry_run() -> None:
    model = Net()
    snap = snapshot(model)
    found = find_modules(model, "gelu", where="blocks.1")
    assert [p for p, _ in found] == ["blocks.1.act"] and found[0][1] is model.blocks[1].act
    assert_unchanged(model, snap)


def test_report_table_and_dict() -> None:
    model = Net()
    report = replace_modules(model, nn.GELU, lambda p, old: CRReLU(eps=0.02))
    text = report.table()
    assert "replace_modules: 3 site(s) replaced" in text
    assert "blocks.0.act" in text and "GELU(approximate='none')" in text and "CRReLU(" in text
    assert str(report) == text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["sites"][0]["path"] == "blocks.0.act"
    assert data["sites"][0]["old_class"] == "GELU" and data["sites"][0]["new_class"] == "CRReLU"


# ---------------------------------------------------------------- the root and sharing
def test_the_root_is_never_replaced() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(SurgeryInputError, match="selects the model itself"):
        replace_modules(model, nn.Linear, lambda p, o: nn.Linear(2, 2))
    with pytest.raises(SurgeryInputError, match="selects the model itself"):
        replace_modules(Net(), lambda p, m: True, lambda p, o: nn.Identity())
    # where= that does not cover the root: only the children are candidates
    model = Net()
    report = replace_modules(model, lambda p, m: True, lambda p, o: nn.Identity(), where="stem")
    assert report.paths == ["stem"]


def test_shared_stateful_module_gets_one_build_per_path_and_a_note() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    calls: list[str] = []

    def build(path: str, old: nn.Module) -> nn.Module:
        calls.append(path)
        assert old is shared
        return nn.Linear(4, 4)

    report = replace_modules(model, nn.Linear, build)
    assert calls == ["0", "2"] and model[0] is not model[2]
    assert any("shared with '2'" in n and "no longer shared" in n for n in report.notes)

    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    report = replace_modules(model, nn.Linear, lambda p, o: nn.Linear(4, 4), where="2")
    assert model[0] is shared and model[2] is not shared
    assert any("'0' keep the old one" in n for n in report.notes)


def test_shared_stateless_activation_splits_silently() -> None:
    act = nn.GELU()
    model = nn.Sequential(nn.Linear(4, 4), act, nn.Linear(4, 4), act)
    report = replace_modules(model, nn.GELU, lambda p, o: CRReLU())
    assert report.paths == ["1", "3"] and model[1] is not model[3] and report.notes == []


def test_shared_container_is_walked_once_and_in_scope_through_any_path() -> None:
    block = Block()
    model = nn.ModuleDict({"a": block, "b": block})
    report = replace_modules(model, nn.GELU, lambda p, o: nn.SiLU())
    assert report.paths == ["a.act"] and isinstance(model["b"].act, nn.SiLU)
    block = Block()
    model = nn.ModuleDict({"a": block, "b": block})
    report = replace_modules(model, nn.GELU, lambda p, o: nn.SiLU(), where="b")
    assert report.paths == ["b.act"]


# ---------------------------------------------------------------- all or nothing
def test_failing_build_leaves_the_model_exactly_as_it_was() -> None:
    model = Net()
    snap = snapshot(model)

    def build(path: str, old: nn.Module) -> nn.Module:
        if path == "blocks.2.fc":
            raise RuntimeError("no memory left for blocks.2.fc")
        return nn.Linear(4, 4)

    with pytest.raises(RuntimeError, match="no memory left"):
        replace_modules(model, nn.Linear, build)
    assert_unchanged(model, snap)


def test_failing_check_and_hook_roll_back_modules_and_hook_changes() -> None:
    model = Net()
    model.config = type("Cfg", (), {"act": "gelu"})()
    snap = snapshot(model)

    def check(m: nn.Module, report: ReplacementReport) -> None:
        assert isinstance(m.blocks[0].act, nn.SiLU)  # installed when the check runs
        raise ValueError("the check says no")

    with pytest.raises(ValueError, match="the check says no"):
        replace_modules(model, nn.GELU, lambda p, o: nn.SiLU(), check=check)
    assert_unchanged(model, snap)

    def set_config(m: nn.Module, report: ReplacementReport) -> None:
        report.setattr(m.config, "act", "silu")
        report.setattr(m.config, "new_attr", 1)

    def fail(m: nn.Module, report: ReplacementReport) -> None:
        assert m.config.act == "silu"
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        replace_modules(model, nn.GELU, lambda p, o: nn.SiLU(), on_replaced=[set_config, fail])
    assert_unchanged(model, snap)
    assert model.config.act == "gelu" and not hasattr(model.config, "new_attr")

    report = replace_modules(model, nn.GELU, lambda p, o: nn.SiLU(), on_replaced=set_config)
    assert model.config.act == "silu" and len(report) == 3


def test_build_sees_the_untouched_model() -> None:
    model = Net()
    originals = [b.act for b in model.blocks]

    def build(path: str, old: nn.Module) -> nn.Module:
        assert [b.act for b in model.blocks] == originals  # nothing installed yet
        return nn.SiLU()

    replace_modules(model, nn.GELU, build)


def test_global_hooks_run_in_order_and_can_be_skipped() -> None:
    from actlab.surgery._replace import _HOOKS

    seen: list[int] = []

    @on_replaced("zz-test-hook")
    def _hook(model: nn.Module, report: ReplacementReport) -> None:
        seen.append(len(report))

    try:
        assert "zz-test-hook" in replacement_hooks()
        assert "transformers-config" in replacement_hooks()  # loaded from actlab.integrations
        replace_modules(Net(), nn.GELU, lambda p, o: nn.SiLU())
        replace_modules(Net(), nn.GELU, lambda p, o: nn.SiLU(), hooks=False)
        assert seen == [3]
    finally:
        _HOOKS.remove("zz-test-hook")


def test_lenient_no_match_warns_and_changes_nothing() -> None:
    model = Net()
    snap = snapshot(model)
    with pytest.warns(SurgeryWarning, match="matched no module"):
        report = replace_modules(model, nn.Conv2d, lambda p, o: nn.Identity(), strict=False)
    assert len(report) == 0 and report.warnings
    assert_unchanged(model, snap)


class Stubborn(nn.Module):
    """A parent whose ``__setattr__`` ignores (or refuses) new modules for ``act``."""

    def __init__(self, refuse: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.GELU()
        self.refuse = refuse
        self.ready = True

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "act" and getattr(self, "ready", False) and not isinstance(value, nn.GELU):
            if self.refuse:
                raise AttributeError("act is read-only here")
            return  # silently ignored
        super().__setattr__(name, value)


def test_a_parent_that_ignores_or_refuses_the_new_module() -> None:
    model = nn.Sequential(Stubborn(), nn.Sequential(nn.Linear(4, 4), nn.GELU()))
    snap = snapshot(model)
    with pytest.raises(SurgeryError, match=r"Stubborn at '0' did not accept the replacement"):
        replace_modules(model, nn.GELU, lambda p, o: nn.SiLU())
    assert_unchanged(model, snap)
    with pytest.warns(SurgeryWarning, match="did not accept"):
        report = replace_modules(model, nn.GELU, lambda p, o: nn.SiLU(), strict=False)
    assert report.paths == ["1.1"] and isinstance(model[0].act, nn.GELU)

    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.GELU()), Stubborn(refuse=True))
    snap = snapshot(model)
    with pytest.raises(AttributeError, match="read-only"):
        replace_modules(model, nn.GELU, lambda p, o: nn.SiLU())
    assert_unchanged(model, snap)


# ---------------------------------------------------------------- hooks and parameters
def test_untouched_hooks_and_parameters_are_left_alone() -> None:
    model = Net()
    fired: list[str] = []
    model.blocks[0].register_forward_hook(lambda m, a, o: fired.append("parent-post"))
    model.blocks[0].register_forward_pre_hook(lambda m, a: fired.append("parent-pre"))
    model.stem[0].register_forward_hook(lambda m, a, o: fired.append("untouched-post"))
    model.heads["cls"].register_forward_pre_hook(lambda m, a: fired.append("untouched-pre"))
    model.blocks[1].act.register_forward_hook(lambda m, a, o: fired.append("replaced"))
    params = {n: p for n, p in model.named_parameters()}

    report = replace_modules(model, nn.GELU, lambda p, o: CRReLU())
    assert any("1 hook(s) registered on the module at 'blocks.1.act'" in n for n in report.notes)
    model(torch.randn(2, 4))
    assert fired == ["untouched-post", "parent-pre", "parent-post", "untouched-pre"]
    after = dict(model.named_parameters())
    assert all(after[n] is p for n, p in params.items())
    assert {n for n in after if n not in params} == {f"blocks.{i}.act.eps" for i in range(3)}


# ---------------------------------------------------------------- weight tying
def test_tied_weights_survive_a_wrapper_and_a_body_swap() -> None:
    model = Tied()
    report = replace_modules(model, "gelu", lambda p, o: CRReLU())
    assert report.paths == ["body.1"] and model.head.weight is model.embed.weight
    report = replace_modules(model, lambda p, m: p == "head", lambda p, old: Wrapper(old))
    assert model.head.inner.weight is model.embed.weight
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 10)


def test_cutting_a_tie_is_an_error_and_rolls_back() -> None:
    model = Tied()
    snap = snapshot(model)
    with pytest.raises(SurgeryError, match=r"breaks the weight tying of head.weight with embed"):
        replace_modules(model, lambda p, m: p == "head", lambda p, o: nn.Linear(4, 10))
    assert_unchanged(model, snap)
    assert model.head.weight is model.embed.weight
    with pytest.warns(SurgeryWarning, match="breaks the weight tying"):
        report = replace_modules(
            model, lambda p, m: p == "head", lambda p, o: nn.Linear(4, 10), strict=False
        )
    assert report.warnings and model.head.weight is not model.embed.weight


# ---------------------------------------------------------------- swap_activations is a client
def test_swap_activations_goes_through_replace_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    import actlab.surgery._swap as swap_mod

    calls: list[dict[str, Any]] = []
    real = swap_mod.replace_modules

    def spy(*args: Any, **kwargs: Any) -> ReplacementReport:
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(swap_mod, "replace_modules", spy)
    model = Net()
    report = swap_activations(model, {"gelu": "crrelu"}, where="blocks")
    assert len(calls) == 1 and calls[0]["where"] == "blocks"
    assert [s.path for s in report.sites] == [f"blocks.{i}.act" for i in range(3)]
    assert surgery.replace_modules is real
