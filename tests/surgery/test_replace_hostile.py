"""Hostile inputs to ``actlab.surgery.replace_modules`` (and ``find_modules``).

Each case is one bad argument. Our own errors must be a ValueError with a one-line message
naming the problem; an exception raised by the caller's own ``match``/``build``/``check``/
hook is passed through unchanged. In every case the model must be exactly as before (same
module objects, same parameters, same values). ``python tests/surgery/test_replace_hostile.py``
prints the table (clear / unclear / traceback / silent).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from actlab.surgery import SurgeryError, find_modules, replace_modules, swap_activations


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(4, 4), nn.GELU()) for _ in range(2))
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def new_silu(path: str, old: nn.Module) -> nn.Module:
    return nn.SiLU()


class UserError(Exception):
    """Raised by the caller's own callables: must come through unchanged."""


def _raise(*_: Any) -> Any:
    raise UserError("the caller's own failure")


_SHARED = nn.SiLU()


def _build_third_fails() -> Callable[[str, nn.Module], nn.Module]:
    calls: list[str] = []

    def build(path: str, old: nn.Module) -> nn.Module:
        calls.append(path)
        if len(calls) == 2:
            return 42  # type: ignore[return-value]
        return nn.SiLU()

    return build


def rm(model: nn.Module, *args: Any, **kw: Any) -> Any:
    return replace_modules(model, *args, **kw)


# (case id, call on a fresh Net, expected: a substring of the one-line ValueError, or UserError)
Case = tuple[str, Callable[[Net], Any], "str | type[Exception]"]
CASES: list[Case] = [
    ("model-str", lambda m: replace_modules("model", nn.GELU, new_silu), "nn.Module"),  # type: ignore[arg-type]
    ("model-none", lambda m: replace_modules(None, nn.GELU, new_silu), "nn.Module"),  # type: ignore[arg-type]
    ("model-class", lambda m: replace_modules(Net, nn.GELU, new_silu), "nn.Module"),  # type: ignore[arg-type]
    ("find-model-int", lambda m: find_modules(3, nn.GELU), "nn.Module"),  # type: ignore[arg-type]
    ("match-int", lambda m: rm(m, 3, new_silu), "match="),
    ("match-none", lambda m: rm(m, None, new_silu), "match="),
    ("match-instance", lambda m: rm(m, nn.GELU(), new_silu), "pass its class (GELU)"),
    ("match-non-module-class", lambda m: rm(m, int, new_silu), "the class int"),
    ("match-empty-tuple", lambda m: rm(m, (), new_silu), "an empty tuple"),
    ("match-mixed-tuple", lambda m: rm(m, (nn.GELU, int), new_silu), "a tuple holding type"),
    ("match-unknown-kind", lambda m: rm(m, "gleu", new_silu), "Did you mean: gelu"),
    ("match-empty-kind", lambda m: rm(m, "", new_silu), "unknown activation kind"),
    ("match-returns-none", lambda m: rm(m, lambda p, x: None, new_silu), "True or False"),
    (
        "match-returns-tensor",
        lambda m: rm(m, lambda p, x: torch.tensor(True), new_silu),
        "True or False",
    ),
    ("match-raises", lambda m: rm(m, _raise, new_silu), UserError),
    ("match-nothing", lambda m: rm(m, nn.Conv2d, new_silu), "matched no module"),
    ("match-kind-absent", lambda m: rm(m, "relu", new_silu), "matched no module"),
    ("match-root", lambda m: rm(m, lambda p, x: True, new_silu), "the model itself"),
    ("match-root-class", lambda m: rm(m, Net, new_silu), "the model itself"),
    ("build-none", lambda m: rm(m, nn.GELU, None), "build="),
    ("build-str", lambda m: rm(m, nn.GELU, "silu"), "build="),
    ("build-instance", lambda m: rm(m, nn.GELU, nn.SiLU()), "build="),
    ("build-returns-int", lambda m: rm(m, nn.GELU, lambda p, o: 1), "build returned int"),
    ("build-returns-none", lambda m: rm(m, nn.GELU, lambda p, o: None), "build returned NoneType"),
    (
        "build-returns-class",
        lambda m: rm(m, nn.GELU, lambda p, o: nn.SiLU),
        "return an instance, e.g. SiLU()",
    ),
    ("build-second-returns-int", lambda m: rm(m, nn.GELU, _build_third_fails()), "build returned"),
    ("build-returns-old", lambda m: rm(m, nn.GELU, lambda p, o: o), "old module itself"),
    ("build-returns-shared", lambda m: rm(m, nn.GELU, lambda p, o: _SHARED), "same module"),
    (
        "build-returns-model-part",
        lambda m: rm(m, nn.GELU, lambda p, o: m.blocks[0][0]),
        "already at 'blocks.0.0'",
    ),
    ("build-returns-root", lambda m: rm(m, nn.GELU, lambda p, o: m), "already at '<root>'"),
    ("build-raises", lambda m: rm(m, nn.GELU, _raise), UserError),
    ("where-no-match", lambda m: rm(m, nn.GELU, new_silu, where="decoder.*"), "matches no module"),
    ("where-empty-str", lambda m: rm(m, nn.GELU, new_silu, where=""), "where="),
    ("where-empty-list", lambda m: rm(m, nn.GELU, new_silu, where=[]), "where="),
    ("where-int", lambda m: rm(m, nn.GELU, new_silu, where=3), "where="),
    ("where-list-int", lambda m: rm(m, nn.GELU, new_silu, where=["blocks", 3]), "where="),
    ("where-bytes", lambda m: rm(m, nn.GELU, new_silu, where=b"blocks"), "where="),
    ("where-no-match-in-scope", lambda m: rm(m, nn.GELU, new_silu, where="head"), "no module"),
    (
        "strict-str",
        lambda m: rm(m, nn.GELU, new_silu, strict="yes"),
        "strict= must be True or False",
    ),
    ("hooks-int", lambda m: rm(m, nn.GELU, new_silu, hooks=1), "hooks= must be"),
    ("check-str", lambda m: rm(m, nn.GELU, new_silu, check="yes"), "check="),
    ("on-replaced-int", lambda m: rm(m, nn.GELU, new_silu, on_replaced=[1]), "on_replaced="),
    ("check-raises", lambda m: rm(m, nn.GELU, new_silu, check=_raise), UserError),
    ("on-replaced-raises", lambda m: rm(m, nn.GELU, new_silu, on_replaced=_raise), UserError),
    (
        "cut-tied-weight",
        lambda m: rm(m, lambda p, x: p == "head", lambda p, o: nn.Linear(4, 10)),
        "breaks the weight tying of head.weight with embed.weight",
    ),
    (
        "cut-tied-weight-embed",
        lambda m: rm(m, nn.Embedding, lambda p, o: nn.Embedding(10, 4)),
        "breaks the weight tying of embed.weight with head.weight",
    ),
]


def snapshot(model: nn.Module) -> tuple[Any, ...]:
    return (
        [(p, id(m)) for p, m in model.named_modules(remove_duplicate=False)],
        [(n, id(p)) for n, p in model.named_parameters(remove_duplicate=False)],
        [v.clone() for v in model.state_dict().values()],
    )


def unchanged(model: nn.Module, snap: tuple[Any, ...]) -> bool:
    now = snapshot(model)
    values = all(torch.equal(a, b) for a, b in zip(now[2], snap[2], strict=True))
    return now[0] == snap[0] and now[1] == snap[1] and values


def classify(case: Case) -> str:
    """clear / unclear / traceback / silent / changed (the model was modified)."""
    _, call, expect = case
    model = Net()
    snap = snapshot(model)
    try:
        call(model)
        verdict = "silent"
    except ValueError as e:
        msg = str(e).strip()
        ok = isinstance(expect, str) and "\n" not in msg and expect in msg
        verdict = "clear" if ok else "unclear"
    except UserError:
        verdict = "clear" if expect is UserError else "unclear"
    except Exception:
        verdict = "traceback"
    if not unchanged(model, snap):
        verdict = "changed"
    return verdict


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_replace_modules(case: Case) -> None:
    _, call, expect = case
    model = Net()
    snap = snapshot(model)
    if isinstance(expect, str):
        with pytest.raises(ValueError) as info:
            call(model)
        msg = str(info.value).strip()
        assert "\n" not in msg and expect in msg, msg
    else:
        with pytest.raises(expect):
            call(model)
    assert unchanged(model, snap)
    assert model.head.weight is model.embed.weight


def sw(model: nn.Module, mapping: Any, **kw: Any) -> Any:
    return swap_activations(model, mapping, **kw)


# swap_activations, a client of replace_modules: the same contract
SWAP_CASES: list[Case] = [
    ("swap-model-str", lambda m: sw("m", {"gelu": "relu"}), "nn.Module"),
    ("swap-model-none", lambda m: sw(None, {"gelu": "relu"}), "nn.Module"),  # type: ignore[arg-type]
    ("swap-mapping-empty", lambda m: sw(m, {}), "non-empty dict"),
    ("swap-mapping-list", lambda m: sw(m, [("gelu", "relu")]), "non-empty dict"),
    ("swap-key-int", lambda m: sw(m, {3: "relu"}), "mapping keys must be"),
    ("swap-key-unknown", lambda m: sw(m, {"gleu": "relu"}), "Did you mean: gelu"),
    ("swap-target-unknown", lambda m: sw(m, {"gelu": "nope"}), "unknown activation"),
    ("swap-target-none", lambda m: sw(m, {"gelu": None}), "activation"),
    ("swap-where-no-match", lambda m: sw(m, {"gelu": "relu"}, where="x.*"), "matches no module"),
    ("swap-where-int", lambda m: sw(m, {"gelu": "relu"}, where=3), "where="),
    ("swap-no-match", lambda m: sw(m, {"silu": "relu"}), "no silu activation found"),
    ("swap-root", lambda m: sw(nn.GELU(), {"gelu": "relu"}), "cannot be replaced in place"),
]


@pytest.mark.parametrize("case", SWAP_CASES, ids=[c[0] for c in SWAP_CASES])
def test_hostile_swap_activations(case: Case) -> None:
    test_hostile_replace_modules(case)


def test_lenient_still_reports_in_one_line() -> None:
    model = Net()
    with pytest.warns(UserWarning) as record:
        report = replace_modules(model, nn.Conv2d, new_silu, strict=False)
    assert len(report) == 0 and all("\n" not in str(w.message) for w in record)


def test_errors_are_surgery_errors_or_input_errors() -> None:
    with pytest.raises(SurgeryError):
        replace_modules(Net(), nn.Conv2d, new_silu)
    with pytest.raises(TypeError):  # bad arguments are also TypeErrors, as before
        replace_modules("x", nn.GELU, new_silu)  # type: ignore[arg-type]


if __name__ == "__main__":
    counts: dict[str, int] = {}
    for c in CASES + SWAP_CASES:
        v = classify(c)
        counts[v] = counts.get(v, 0) + 1
        print(f"{c[0]:32s} {v}")
    print(counts)
    sys.exit(0 if set(counts) == {"clear"} else 1)
